"""The numbers a reviewer recomputed and found wrong or mislabelled (issue 20's "Which map to
trust", reviewed again): pairs of methods corrected for how many are compared, NaN scores left
out and counted, small scores not rounded to 0, the sanity word with a failed random logit,
peaks shared by several pixels, boxes thinner than a pixel, maps with no inside / outside
ratio counted apart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_trust_section import GOOD, METRIC, column, sanity_of, synthetic
from explain import stats, trustlines
from explain.annotations import box_mask, localisation
from explain.measures import peak_inside
from explain.methodtable import method_table
from explain.sanity_records import PARTLY, _beside


def test_three_methods_compare_each_pair_at_a_bonferroni_level():
    rng = np.random.default_rng(2)
    scores = {m: list(np.asarray(GOOD) + rng.normal(0, 0.05, 8)) for m in ("a", "b", "c")}
    summary = synthetic(scores, {"random": [v - 0.3 for v in GOOD]})
    _, col = column(summary, ["a", "b", "c"])
    pairs = [p for p in col.comparisons if p.b_kind == "method"]
    versus_base = [p for p in col.comparisons if p.b_kind == "baseline"]
    assert len(pairs) == 3 and len(versus_base) == 3
    assert [p.confidence for p in pairs] == [pytest.approx(1 - 0.05 / 3, abs=1e-6)] * 3
    assert {p.confidence for p in versus_base} == {0.95}
    for p in pairs:  # the interval is the one stats draws at that level, and the text says so
        diff = [x - y for x, y in zip(scores[p.a], scores[p.b])]
        low, high = stats.intervals([diff], seed=0, confidence=1 - 0.05 / 3)[0]
        assert (p.low, p.high) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))
        assert "98.3% CI" in p.text and "(95% for the 3 method pairs together)" in p.text
    wider = stats.intervals([diff], seed=0)[0]
    assert high - low > wider[1] - wider[0]


def test_two_methods_keep_the_plain_95_percent_interval():
    summary = synthetic({"a": [v + 0.1 for v in GOOD], "b": GOOD})
    _, col = column(summary, ["a", "b"])
    (pair,) = col.comparisons
    assert pair.confidence == 0.95 and "95% CI [" in pair.text and "together" not in pair.text
    assert pair.verdict == "a better"


def test_a_nan_score_is_left_out_counted_and_never_reaches_the_json():
    values = list(GOOD)
    summary = synthetic({"gradcam": [v + 0.3 for v in values], "layercam": values},
                        {"random": [v - 0.3 for v in values]})
    summary.images[2].cams[0].faithfulness[METRIC] = float("nan")  # gradcam, cat, image 2
    table = method_table(summary, ["gradcam", "layercam"])
    col = next(c for c in table.columns if c.key == METRIC)
    cell = col.cells["gradcam"]
    assert cell.left_out == 1 and cell.maps == 15 and cell.images == 8
    expected = np.mean([v + 0.3 for v in values])  # image 2 keeps its dog map: same number
    assert cell.mean == pytest.approx(expected, abs=1e-6)
    assert col.cells["layercam"].left_out is None
    assert cell.beats_baselines is True and cell.place == 1
    evidence = trustlines.build(summary, table)
    assert evidence.trusted == "gradcam"
    text = json.dumps(evidence.dump(), allow_nan=False)  # raises on a NaN
    assert '"left_out": 1' in text


def test_a_method_with_no_finite_score_stays_in_the_table_line_and_page(tmp_path):
    """Every map of one method NaN on a metric: the method is not dropped from that column
    (it was: no cell, no count); the table, the record, its line and the page say so."""
    from explain.config import Config
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    summary = synthetic({"gradcam": [float("nan")] * len(GOOD), "layercam": GOOD},
                        {"random": [v - 0.3 for v in GOOD]})
    summary.config = Config.model_validate({"model": {"file": "m.pth"}, "images": ["a.jpg"],
                                            "target_layers": ["x"], "metrics": [METRIC],
                                            "methods": ["gradcam", "layercam"]})
    table = method_table(summary, ["gradcam", "layercam"])
    col = next(c for c in table.columns if c.key == METRIC)
    assert "gradcam" not in col.cells and col.unscored == {"gradcam": 2 * len(GOOD)}
    assert col.cells["layercam"].maps == 2 * len(GOOD)
    summary.trust = trustlines.build(summary, table)
    row = next(r for r in summary.trust.rows if r.name == "gradcam")
    assert row.metrics == {} and row.unscored == {METRIC: 2 * len(GOOD)}
    line = summary.trust.lines[0]
    assert line.method == "gradcam" and \
        f"{col.label}: no finite number in its {2 * len(GOOD)} map(s)" in line.text
    json.dumps(summary.trust.dump(), allow_nan=False)
    (tmp_path / "run").mkdir()
    page = render_pages(RunFolder(tmp_path / "run"), ReportData(summary))["report.html"]
    table_html = page[page.index('class="method-table"'):]
    gradcam_row = table_html[table_html.index("<th>gradcam"):table_html.index("<th>layercam")]
    assert f"none of its {2 * len(GOOD)} map(s) has a finite number" in gradcam_row


def test_scores_of_a_millionth_keep_their_digits():
    tiny = [3e-7 + 1e-9 * i for i in range(8)]
    summary = synthetic({"a": tiny, "b": [v / 3 for v in tiny]})
    _, col = column(summary, ["a", "b"])
    assert col.cells["a"].mean == pytest.approx(np.mean(tiny), rel=1e-6)
    assert 0 < col.cells["b"].low < col.cells["b"].high
    (pair,) = col.comparisons
    assert pair.verdict == "a better" and 0 < pair.low < pair.difference < pair.high


def test_a_failed_random_logit_is_named_in_the_word_and_the_conclusion():
    summary = synthetic({"eigencam": [v + 0.3 for v in GOOD]}, {"random": GOOD})
    summary.sanity = sanity_of({"eigencam": (0.2, 1.0)})  # passes, but not its random logit
    table = method_table(summary, ["eigencam"])
    evidence = trustlines.build(summary, table)
    assert evidence.lines[0].sanity == PARTLY
    assert evidence.trusted == "eigencam"
    assert evidence.conclusion.startswith("trust eigencam: the only method")
    assert "but its random-logit check fails: its map barely depends on the class" in \
        evidence.conclusion


def test_a_sanity_number_beside_its_threshold_reads_on_its_side():
    assert _beside(0.4996, 0.5) == "0.4996" and _beside(0.5, 0.5) == "0.50"
    assert _beside(0.26, 0.5) == "0.26" and _beside(0.503, 0.5) == "0.50"


def test_a_peak_shared_by_pixels_is_a_hit_when_half_of_them_are_inside():
    cam = np.zeros((4, 6), np.float32)
    cam[1:3, 2:4] = 1.0  # a flat top of 4 pixels across the line x = 3
    left = np.zeros((4, 6), bool)
    left[:, :3] = True
    assert peak_inside(cam, left) and peak_inside(cam, ~left)  # 2 of 4 each side
    top = np.zeros((4, 6), bool)
    top[:2] = True
    corner = np.zeros((4, 6), bool)
    corner[1, 2] = True
    assert peak_inside(cam, top) and not peak_inside(cam, corner)  # 1 of 4: a miss
    single = np.zeros((4, 6), np.float32)
    single[3, 5] = 0.7
    assert not peak_inside(single, left) and peak_inside(single, ~left)
    assert not peak_inside(np.zeros((4, 6)), ~left)
    # the first maximum in row order no longer decides: a tie across the boxes of both.jpg
    assert localisation(cam, ~left, 0.5).pointing_hit is True
    # the report's glossary says the same rule (it said a tie 'counts the share inside')
    from explain.metrics import TABLE
    assert "at least half of them" in TABLE["pointing_hit"].glossary


def test_a_box_thinner_than_a_pixel_gets_the_pixels_it_overlaps():
    mask = box_mask([[56.56, 56.56, 57.23, 57.23]], (224, 224))
    assert sorted(map(tuple, np.argwhere(mask))) == [(56, 56), (56, 57), (57, 56), (57, 57)]
    mask = box_mask([[3.2, 3.2, 3.4, 3.4]], (8, 8))
    assert np.argwhere(mask).tolist() == [[3, 3]]
    cam = np.zeros((8, 8))
    cam[3, 3] = 1.0
    hit = localisation(cam, mask, 0.5)
    assert hit.pointing_hit and hit.energy_in_box == 1.0 and hit.box_iou == 1.0
    # a box holding pixel centres is as before
    assert np.argwhere(box_mask([[1, 1, 3, 3]], (8, 8))).tolist() == \
        [[1, 1], [1, 2], [2, 1], [2, 2]]


def test_task_means_count_the_maps_they_hold():
    from types import SimpleNamespace
    from explain.tasks.writers import task_summary
    inside = SimpleNamespace(score=0.9, energy_in_box=1.0, inside_outside=None)
    spread = SimpleNamespace(score=0.8, energy_in_box=0.5, inside_outside=2.0)
    cams = [SimpleNamespace(method="gradcam", detection=d, segment=None)
            for d in (inside, spread)]
    out = task_summary("detection", [SimpleNamespace(cams=cams)], ["gradcam"])
    assert out.means["gradcam"]["inside_outside"] == 2.0 and out.maps["gradcam"] == 2
    assert out.counted == {"gradcam": {"inside_outside": 1}}


def test_the_sanity_record_says_passes_only_when_both_checks_pass():
    from explain.sanity_records import SanityMethod, SanitySummary, Similarity

    def method(name, final, logit):
        sim = Similarity(spearman=logit, spearman_abs=logit, ssim=logit, ssim_abs=logit)
        return SanityMethod(method=name, verdict="pass" if final < 0.5 else "fail",
                            final=final, cascading=[], random_logit=sim,
                            logit_verdict="pass" if logit < 0.5 else "fail")
    record = SanitySummary(measure="spearman", threshold=0.5, logit_threshold=0.5, seed=0,
                           layers=["x"], not_randomised=0, maps=[],
                           methods=[method("gradcam", 0.2, 0.1), method("eigencam", 0.2, 1.0),
                                    method("guided", 0.9, 1.0)])
    words = {m: w for m, (w, _) in record.verdicts().items()}
    assert words == {"gradcam": "passes", "eigencam": PARTLY, "guided": "fails"}
    assert "1.00 with a random class's map (random logit fails" in record.verdicts()["eigencam"][1]


def test_a_number_without_an_interval_says_on_how_many_images_in_the_trust_lines(tmp_path):
    from explain.config import Config
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    summary = synthetic({"gradcam": [0.3]})
    summary.config = Config.model_validate({"model": {"file": "m.pth"}, "images": ["a.jpg"],
                                            "target_layers": ["x"], "metrics": [METRIC],
                                            "methods": ["gradcam"]})
    summary.trust = trustlines.build(summary, method_table(summary, ["gradcam"]))
    (tmp_path / "run").mkdir()
    page = render_pages(RunFolder(tmp_path / "run"), ReportData(summary))["report.html"]
    section = page[page.index('<section id="trust">'):page.index('<section id="run">')]
    assert "ROAD combined 0.300 <small>(n = 1 image)</small>" in section
    table = page[page.index('class="method-table"'):]
    assert "(n = 1 image)" not in table  # the cell says "1 image(s), 2 map(s)" already


def test_the_notebook_table_shows_the_reports_places_not_the_order_of_the_means():
    """A newcomer's three identical methods were ranked 1, 2, 3 in the notebook (by rounding
    noise in their means) while the report placed all three first; with 3 images the notebook
    ranked where the report says ranking is not yet meaningful."""
    from types import SimpleNamespace
    from explain.api.runview import _methods

    def rows(summary, methods):
        html = _methods(SimpleNamespace(methods=methods, summary=summary, images=summary.images))
        body = html[html.index("<tbody>"):] if "<tbody>" in html else html
        return html, [[c.split(">")[-1] for c in r.split("</td>")[:-1]]
                      for r in body.split("</tr>")[:-1]]
    same = [v + (2e-9 if i % 2 else -1e-9) for i, v in enumerate(GOOD)]  # mean above a's
    html, table = rows(synthetic({"a": GOOD, "b": same, "c": GOOD}), ["a", "b", "c"])
    assert [r[-1] for r in table[-3:]] == ["1", "1", "1"] and "#2" not in html and "*" not in html
    html, table = rows(synthetic({"a": [v + 0.3 for v in GOOD[:3]], "b": GOOD[:3]}), ["a", "b"])
    assert [r[-1] for r in table[-2:]] == ["-", "-"]
    assert f"no place yet: no metric is measured on at least {stats.MIN_IMAGES} images" in html


def test_intervals_stay_within_the_values_a_share_or_a_correlation_can_take():
    """A newcomer saw pointing game 37.5% [-5.8%, 80.8%], a baseline at [19.2%, 105.8%] and an
    agreement (a Pearson r) of 0.604 [-0.075, 1.128]: the t-widened intervals are cut to the
    metric's bounds (shares and IoU 0..1, agreement -1..1), differences to +-the span."""
    from explain.metrics import TABLE
    hits = {"a": [1.0, 0, 0, 1, 0, 0, 1, 0], "b": [1.0, 1, 1, 1, 1, 1, 1, 0]}
    summary = synthetic(hits, {"centre": [1.0, 1, 1, 0, 1, 1, 1, 1]})
    for image in summary.images:
        for rec in image.cams:
            rec.faithfulness = {"increase_in_confidence": rec.faithfulness[METRIC]}
            rec.agreement = 0.97 if image.id != "im3" else 0.2
        for base in image.baselines:
            base.scores = {"increase_in_confidence": base.scores[METRIC]}
    table = method_table(summary, ["a", "b"])
    col = next(c for c in table.columns if c.key == "increase_in_confidence")
    assert TABLE["increase_in_confidence"].bounds == (0.0, 1.0)
    a, b, centre = col.cells["a"], col.cells["b"], col.baselines["centre"]
    assert a.low == 0.0 and 0.375 < a.high < 1 and a.mean == 0.375
    assert b.high == 1.0 and centre.high == 1.0 and 0 < b.low < b.mean == 0.875
    assert all(-1.0 <= p.low <= p.high <= 1.0 for p in col.comparisons)
    agree = next(c for c in table.columns if c.key == "agreement")
    assert agree.cells["a"].high == 1.0 and agree.cells["a"].low < agree.cells["a"].mean < 1

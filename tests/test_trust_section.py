"""Issue 20, items 3-5: baselines in every ranking, intervals and paired comparisons in the
methods table, and the report's "Which map to trust" section, from records (synthetic ones
for the statistics, one small real run for the whole path)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from conftest import IMAGES, make_small_alexnet, write_config
from explain import baselines, stats, trustlines
from explain.config import Config, load_config
from explain.evidence import BaselineMap
from explain.methodtable import method_table
from explain.results import ImageEntry, MapRecord, RunSummary
from explain.writers.summary import csv_rows
from explain.runner import RunOptions, run
from explain.stats import cell as _num
from explain.writers.report import rebuild

METRIC = "road_combined"  # higher is better


def record(method: str, cls: str, value: float) -> MapRecord:
    return MapRecord(class_name=cls, method=method, peak_x=0, peak_y=0, peak_value=1,
                     mass_left=0.5, mass_right=0.5, mass_top=0.5, mass_bottom=0.5,
                     file=f"cams/{method}/x__{cls}.png", faithfulness={METRIC: value})


def synthetic(methods: dict[str, list[float]], bases: dict[str, list[float]] | None = None,
              classes=("cat", "dog")) -> RunSummary:
    """A summary whose image i has, per class, ``methods[m][i]`` as every map's score (and
    the baselines' scores likewise)."""
    n = len(next(iter(methods.values())))
    config = Config.model_validate({"model": {"file": "m.pth"}, "images": ["a.jpg"],
                                    "target_layers": ["x"], "methods": ["gradcam"],
                                    "metrics": [METRIC]})
    images = []
    for i in range(n):
        cams = [record(m, c, v[i]) for c in classes for m, v in methods.items()]
        base = [BaselineMap(class_name=c, baseline=b, scores={METRIC: v[i]})
                for c in classes for b, v in (bases or {}).items()]
        images.append(ImageEntry(id=f"im{i}", path=f"im{i}.jpg", input_size=[8, 8],
                                 probabilities={"cat": 0.5, "dog": 0.5}, predicted="cat",
                                 cams=cams, baselines=base))
    return RunSummary(name="t", config_file="t.yaml", output_dir=".", device="cpu",
                      config=config, versions={}, images=images,
                      durations_s={"cams": 2.0, "figures": 1.0})


RNG = np.random.default_rng(5)
GOOD = list(RNG.uniform(0.2, 0.4, 8))


def column(summary: RunSummary, methods: list[str]):
    table = method_table(summary, methods)
    return table, next(c for c in table.columns if c.key == METRIC)


# ---- paired comparisons ------------------------------------------------------------------

def test_identical_maps_are_not_different_and_get_no_rank_between_them():
    table, col = column(synthetic({"gradcam": GOOD, "layercam": list(GOOD)}),
                        ["gradcam", "layercam"])
    assert table.meaningful and table.images == 8
    (pair,) = col.comparisons
    assert (pair.verdict, pair.difference, pair.low, pair.high) == ("not different", 0, 0, 0)
    assert pair.text.startswith("no significant difference between gradcam and layercam")
    assert col.cells["gradcam"].place == col.cells["layercam"].place == 1
    assert col.leads == [] and table.place == {"gradcam": 1, "layercam": 1}


def test_a_clearly_better_map_is_significantly_better_and_ranked_first():
    worse = [v - 0.1 + d for v, d in zip(GOOD, RNG.normal(0, 0.01, 8))]
    table, col = column(synthetic({"layercam": worse, "gradcam": GOOD}),
                        ["layercam", "gradcam"])
    (pair,) = col.comparisons
    assert pair.verdict == "gradcam better" and pair.low < 0 and pair.high < 0  # layercam - gradcam
    # said from the winner's side (a newcomer read 'better' beside 'layercam − gradcam -0.05')
    assert re.fullmatch(r"gradcam better than layercam on ROAD combined: gradcam − layercam "
                        r"\+0\.\d+, 95% CI \[0\.\d+, 0\.\d+\] over 8 images", pair.text)
    assert pair.text.endswith(f"[{stats.figure(-pair.high)}, {stats.figure(-pair.low)}] "
                              f"over 8 images")
    assert (col.cells["gradcam"].place, col.cells["layercam"].place) == (1, 2)
    assert col.leads == ["gradcam"] and table.place == {"gradcam": 1, "layercam": 2}
    # the interval is the bootstrap of the per-image means over the images, seeded
    cell = col.cells["gradcam"]
    assert (cell.low, cell.high) == pytest.approx(stats.interval(GOOD, seed=0), abs=1e-6)
    assert cell.images == 8 and cell.maps == 16 and cell.mean == pytest.approx(np.mean(GOOD))


def test_maps_of_one_image_are_averaged_before_images_are_resampled():
    """Two classes with opposite numbers: the image's mean is what counts (n = images)."""
    summary = synthetic({"gradcam": GOOD})
    for image in summary.images:
        image.cams[1].faithfulness[METRIC] = 1.0 - image.cams[0].faithfulness[METRIC]
    _, col = column(summary, ["gradcam"])
    cell = col.cells["gradcam"]
    assert cell.mean == pytest.approx(0.5) and cell.low == pytest.approx(0.5)
    assert cell.high == pytest.approx(0.5) and cell.images == 8


def test_below_the_minimum_of_images_the_table_does_not_rank():
    few = GOOD[:stats.MIN_IMAGES - 1]
    summary = synthetic({"gradcam": few, "layercam": [v - 0.2 for v in few]})
    table, col = column(summary, ["gradcam", "layercam"])
    assert not table.meaningful and table.place == {} and col.leads == []
    assert all(c.place is None for c in col.cells.values())
    assert col.comparisons[0].verdict == "too few images"
    trust = trustlines.build(summary, table)
    assert trust.conclusion == f"no conclusion yet: {len(few)} image(s), no metric measured " \
                               f"on at least 5 (the minimum for a ranking): explain at " \
                               f"least 5 images, each with a faithfulness metric " \
                               f"(metrics:) or a box (annotations:)"
    assert trust.trusted is None and not trust.meaningful


# ---- baselines ---------------------------------------------------------------------------

def test_a_method_that_does_not_beat_a_baseline_is_marked_everywhere():
    centre = [v + 0.05 for v in GOOD]  # the centre baseline beats layercam
    noise = [v - 0.3 for v in GOOD]
    summary = synthetic({"gradcam": [v + 0.2 for v in GOOD], "layercam": GOOD},
                        {"random": noise, "centre": centre})
    table, col = column(summary, ["gradcam", "layercam"])
    assert table.baselines == ["random", "centre"]
    assert col.cells["gradcam"].beats_baselines is True
    assert (col.cells["layercam"].beats_baselines, col.cells["layercam"].not_beaten) == \
        (False, ["centre"])
    assert col.baselines["centre"].mean == pytest.approx(np.mean(centre))
    summary.trust = trustlines.build(summary, table)
    assert summary.trust.row("centre", "baseline").metrics[METRIC].images == 8
    assert summary.trust.row("layercam").metrics[METRIC].not_beaten == ["centre"]
    rows = csv_rows(summary)
    lay = next(r for r in rows if r["method"] == "layercam" and r["class"] == "cat")
    assert lay[f"{METRIC}.beats_baselines"] is False and lay["trusted"] is False
    assert lay[f"baseline.centre.{METRIC}"] == pytest.approx(centre[0])
    grad = next(r for r in rows if r["method"] == "gradcam")
    assert grad[f"{METRIC}.beats_baselines"] is True and grad["trusted"] is True
    assert grad[f"{METRIC}.ci_low"] == summary.trust.row("gradcam").metrics[METRIC].low
    # the conclusion: the only method that beats every baseline
    assert summary.trust.trusted == "gradcam"
    assert summary.trust.conclusion.startswith("trust gradcam: the only method that beats")
    assert summary.trust.conclusion.endswith(" (no sanity check ran: sanity.enabled: true "
                                             "checks that the maps change when the model's "
                                             "weights are randomised)")
    line = summary.trust.lines[1]
    assert line.method == "layercam" and line.beats_baselines is False
    assert line.sanity == "not run" and trustlines.cost_per_map(summary) == 2.0 / 32
    assert "beats every baseline: no" in line.text


def sanity_of(methods: dict[str, tuple[float, float]]):
    """A sanity record as the sanity writer makes it: method -> (final similarity, random-logit
    similarity), thresholds 0.5 (below: passes)."""
    from explain.sanity_records import SanityMethod, SanitySummary, Similarity

    def one(name, final, logit):
        sim = Similarity(spearman=logit, spearman_abs=logit, ssim=logit, ssim_abs=logit)
        return SanityMethod(method=name, verdict="pass" if final < 0.5 else "fail",
                            final=final, cascading=[], random_logit=sim,
                            logit_verdict="pass" if logit < 0.5 else "fail")
    return SanitySummary(measure="spearman", threshold=0.5, logit_threshold=0.5, seed=0,
                         layers=["x"], not_randomised=0, maps=[],
                         methods=[one(m, *v) for m, v in methods.items()])


def test_the_conclusion_follows_sanity_and_the_primary_metric():
    summary = synthetic({"gradcam": [v + 0.2 for v in GOOD], "layercam": [v + 0.1 for v in GOOD]},
                        {"random": [v - 0.3 for v in GOOD]})
    table = method_table(summary, ["gradcam", "layercam"])
    plain = trustlines.build(summary, table)
    assert plain.trusted == "gradcam" and "significantly better than layercam on ROAD combined" \
        in plain.conclusion
    view = SimpleNamespace(images=summary.images, durations_s={}, config=summary.config,
                           sanity=sanity_of({"gradcam": (0.9, 0.1), "layercam": (0.1, 0.1)}))
    checked = trustlines.build(view, table)
    assert [x.sanity for x in checked.lines] == ["fails", "passes"]
    assert checked.lines[0].sanity_detail.startswith("rank correlation 0.90 with the trained")
    assert checked.trusted == "layercam" and "sanity.enabled" not in checked.conclusion
    assert trustlines.cost_per_map(view) is None
    tie = synthetic({"gradcam": GOOD, "layercam": list(GOOD)}, {"random": [v - 0.3 for v in GOOD]})
    tied = trustlines.build(tie, method_table(tie, ["gradcam", "layercam"]))
    assert tied.trusted is None and tied.conclusion.startswith(
        "no method is clearly better: gradcam, layercam beat every baseline, but do not differ")


# ---- the baseline maps -------------------------------------------------------------------

def test_baseline_maps_are_the_library_randomcam_a_centre_gaussian_and_sobel_edges():
    from pytorch_grad_cam import RandomCAM
    from pytorch_grad_cam.sobel_cam import sobel_cam
    from explain.engine import seeded
    from explain.models.guard import non_inplace
    from helpers import cpu_engine
    model = make_small_alexnet()
    layer = model.features[10]
    x = torch.rand(2, 3, 64, 96)
    plan = SimpleNamespace(target_layers=[SimpleNamespace(module=layer)], model=model)
    with cpu_engine(model, [layer], ["gradcam"]) as engine:  # the run's pass, as a run has it
        acts = engine.run(x, [0], [0, 1]).activations
    assert [a.shape for a in acts] == [(2, 256, 3, 5)]
    ours = baselines.random_maps(plan, acts, (64, 96), [(1, 3, 42)])[0]
    # the library's own call on 3 copies of image 1, numpy seeded the same (inplace ReLUs
    # off, as in a run: the library's hook would see the conv's output overwritten)
    with seeded(42), non_inplace(model):
        cam = RandomCAM(model, [layer])
        theirs = cam(x[1:2].repeat(3, 1, 1, 1), None)
        cam.activations_and_grads.release()
    assert ours.shape == (3, 64, 96) and np.abs(ours - theirs).max() <= 1e-6
    assert len({float(m.sum()) for m in ours}) == 3  # its own random weights per class
    assert baselines.seed_for(0, "cat") != baselines.seed_for(0, "dog")
    centre = baselines.centre_map(40, 80)
    assert centre.max() == 1 and centre[19:21, 39:41].min() > 0.99
    # sigma = a quarter of each side (20 and 10 pixels here), relative to the peak pixel
    # (half a pixel off the centre on each axis)
    assert centre[20, 40 + 20] == pytest.approx(np.exp(-0.5 * ((20.5 / 20) ** 2 -
                                                               (0.5 / 20) ** 2)), rel=1e-5)
    assert centre[20 + 10, 40] == pytest.approx(np.exp(-0.5 * ((10.5 / 10) ** 2 -
                                                               (0.5 / 10) ** 2)), rel=1e-5)
    photo = cv2.cvtColor(cv2.imread(str(IMAGES / "cat.jpg")), cv2.COLOR_BGR2RGB)
    edges = baselines.edge_map(photo)
    sobel = sobel_cam(photo).astype(np.float32)
    assert np.array_equal(edges, sobel / sobel.max())
    assert not baselines.edge_map(np.zeros((8, 8, 3), np.float32)).any()


# ---- one real run ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A small AlexNet on 5 images (cat, dog, both and two flipped copies) with a
    faithfulness metric and a box on the 'both' images."""
    tmp = tmp_path_factory.mktemp("trust")
    pics = tmp / "pics"
    pics.mkdir()
    for k, name in enumerate(["cat.jpg", "dog.jpg", "both.jpg", "cat.jpg", "dog.jpg"]):
        img = cv2.imread(str(IMAGES / name))
        cv2.imwrite(str(pics / f"{k}_{name}"), cv2.flip(img, 1) if k >= 3 else img)
    torch.save(make_small_alexnet(), tmp / "small.pth")
    path = write_config(tmp, "study", model={"file": str(tmp / "small.pth")}, images=[str(pics)],
                        target_layers=["features.10"], preprocess={"size": 64},
                        methods=["gradcam", "layercam"], metrics=["drop_in_confidence"],
                        annotations={"boxes": {"2_both.jpg": {"cat": [0, 0, 224, 224],
                                                              "dog": [224, 0, 448, 224]}}},
                        output={"dir": str(tmp / "results")})
    summary = run(load_config(path), RunOptions(progress=False, log=lambda line: None))
    return summary, tmp / "results" / "study"


def test_a_run_records_baselines_intervals_and_the_trust_lines(small_run):
    summary, run_dir = small_run
    data = json.loads((run_dir / "summary.json").read_text())
    trust = data["trust"]
    assert trust["images"] == 5 and trust["meaningful"] is True and trust["min_images"] == 5
    assert set(trust["baselines"]) == {"random", "centre", "edges"}
    for image in data["images"]:  # a baseline map per baseline and class, numbers only
        got = sorted((b["baseline"], b["class"]) for b in image["baselines"])
        assert got == sorted((b, c) for b in ("random", "centre", "edges") for c in ("cat", "dog"))
        assert all("drop_in_confidence" in b["scores"] for b in image["baselines"])
        assert all(("pointing_hit" in b["scores"]) == (image["id"] == "2_both")
                   for b in image["baselines"])
        assert all(type(v) is float for b in image["baselines"] for v in b["scores"].values())
    assert not any("baseline" in f or "random" in f for f in summary.written())
    rows = {r["name"] + "/" + r["kind"]: r for r in trust["rows"]}
    assert set(rows) == {"gradcam/method", "layercam/method", "random/baseline",
                         "centre/baseline", "edges/baseline"}
    drop = rows["gradcam/method"]["metrics"]["drop_in_confidence"]
    assert drop["images"] == 5 and drop["maps"] == 10 and drop["low"] <= drop["mean"] <= drop["high"]
    assert [line["method"] for line in trust["lines"]] == ["gradcam", "layercam"]
    assert trust["lines"][0]["sanity"] == "not run"
    # summary.csv: the same numbers on each of the method's rows, the baselines' beside them
    with (run_dir / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 * 2 * 2
    for row in table:
        mine = rows[row["method"] + "/method"]["metrics"]["drop_in_confidence"]
        assert float(row["drop_in_confidence.mean"]) == mine["mean"]
        assert float(row["drop_in_confidence.ci_low"]) == mine["low"]
        assert row["sanity"] == "not run"
        base = next(b for b in summary.images[0].baselines if b.baseline == "edges")
        if row["image"] == summary.images[0].id and row["class"] == base.class_name:
            assert float(row["baseline.edges.drop_in_confidence"]) == \
                base.scores["drop_in_confidence"]


def test_the_end_of_a_run_prints_which_map_to_trust_once_it_ranks(small_run):
    """The console's summary never said which map to trust: the page alone did."""
    from explain.writers.summary import console_lines
    summary, _ = small_run
    assert summary.trust.primary is not None and summary.trust.conclusion
    lines = console_lines(summary)
    assert f"  which map to trust: {summary.trust.conclusion} (the report's first section)" \
        in lines
    assert lines.index(next(x for x in lines if x.startswith("  which map"))) == len(lines) - 2
    primary, summary.trust.primary = summary.trust.primary, None  # below the minimum of
    try:  # images: no ranking, the notes say so, no line
        assert not any("which map to trust" in line for line in console_lines(summary))
    finally:
        summary.trust.primary = primary


def test_the_report_opens_with_which_map_to_trust_and_rebuilds_the_same(small_run, tmp_path):
    summary, run_dir = small_run
    page = (run_dir / "report.html").read_text()
    assert page.index('<section id="trust">') < page.index('<section id="run">')
    section = page[page.index('<section id="trust">'):page.index('<section id="run">')]
    assert summary.trust.conclusion.replace("'", "&#39;") in section
    cost = trustlines.cost_per_map(summary)  # the run's CAM time over its 20 maps
    assert cost == summary.durations_s["cams"] / 20 and cost > 0
    # once, under the lines: one cost for every method (the engine times batches)
    assert section.count(f"Cost: {_num(cost)} s per map, every method together") == 1
    assert section.count(" s per map") == 1
    for line in summary.trust.lines:  # each line with its mean and interval, as recorded
        drop = line.faithfulness["drop_in_confidence"]
        assert f"<b>{line.method}</b>: <span class=\"verdict \">sanity: not run</span>" in section
        assert f"drop in confidence {_num(drop.mean)} [{_num(drop.low)}, {_num(drop.high)}]" \
            in section
    table = page[page.index('class="method-table"'):page.index("</table>", page.index(
        'class="method-table"'))]
    assert table.count('<tr class="baseline">') == 3 and "baseline: a Gaussian" in table
    assert "not yet meaningful" not in page  # 5 images: ranked, but not the boxes' metrics
    assert "Not ranked (measured on fewer than 5 images): pointing game, energy in box, box " \
           "IoU." in page
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    rebuild(copy)
    assert (copy / "report.html").read_bytes() == (run_dir / "report.html").read_bytes()


def test_without_metrics_or_boxes_no_baseline_is_computed(tmp_path):
    torch.save(make_small_alexnet(), tmp_path / "small.pth")
    path = write_config(tmp_path, "plain", model={"file": str(tmp_path / "small.pth")},
                        images=[str(IMAGES / "cat.jpg")], target_layers=["features.10"],
                        preprocess={"size": 64}, output={"dir": str(tmp_path / "results")})
    summary = run(load_config(path), RunOptions(progress=False, log=lambda line: None))
    assert summary.images[0].baselines == []
    assert summary.trust.conclusion.startswith("no conclusion: no faithfulness or localisation")
    page = (tmp_path / "results" / "plain" / "report.html").read_text()
    assert 'class="baseline"' not in page and "no conclusion: no faithfulness" in page


def test_with_too_few_images_the_line_and_the_table_say_the_same(tmp_path):
    """Below the minimum for a test, a method whose mean is below a baseline's is neither
    "✗ baseline" in the table nor silently "too few images to tell" on its line: both say
    its mean is below that baseline, and that no test was made."""
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    few = GOOD[:3]
    summary = synthetic({"gradcam": [v + 0.2 for v in few], "layercam": few},
                        {"random": [v - 0.3 for v in few], "centre": [v + 0.05 for v in few]})
    summary.config = Config.model_validate({"model": {"file": "m.pth"}, "images": ["a.jpg"],
                                            "target_layers": ["x"], "metrics": [METRIC],
                                            "methods": ["gradcam", "layercam"]})
    table = method_table(summary, ["gradcam", "layercam"])
    summary.trust = trustlines.build(summary, table)
    grad, lay = summary.trust.lines
    assert (grad.beats_baselines, grad.below) == (None, [])
    assert (lay.beats_baselines, lay.below) == (None, ["centre"])
    assert lay.text.endswith("beats every baseline: too few images to tell (on the metrics "
                             "with too few images for a test, the centre baseline did as well "
                             "or better on average)")
    assert "beats every baseline: too few images to tell" in grad.text and \
        "did as well or better" not in grad.text
    (tmp_path / "run").mkdir()
    page = render_pages(RunFolder(tmp_path / "run"), ReportData(summary))["report.html"]
    section = page[page.index('<section id="trust">'):page.index('<section id="run">')]
    assert "(on the metrics with too few images for a test, the centre baseline did as well " \
           "or better on average)" in section
    assert section.count("did as well or better on average") == 1
    table_html = page[page.index('class="method-table"'):]
    assert "✗ baseline:" not in table_html and ">mean not better than centre</span>" in table_html


def test_a_yes_on_the_ranked_metrics_still_warns_of_a_baseline_on_the_unranked_ones():
    """Faithfulness on 8 images (ranked: the method beats every baseline), a second metric on
    3 (not ranked) where a baseline's mean is better: the line says yes and warns, as the
    table's cell does."""
    summary = synthetic({"gradcam": [v + 0.2 for v in GOOD]}, {"centre": [v - 0.3 for v in GOOD]})
    for i, image in enumerate(summary.images[:3]):  # a second metric, worse than centre
        for rec in image.cams:
            rec.faithfulness["drop_in_confidence"] = 0.5  # lower is better
        for base in image.baselines:
            base.scores["drop_in_confidence"] = 0.1
    table = method_table(summary, ["gradcam"])
    line = trustlines.build(summary, table).lines[0]
    assert line.beats_baselines is True and line.below == ["centre"]
    assert "beats every baseline: yes (on the metrics with too few images for a test, the " \
           "centre baseline did as well or better on average)" in line.text


def test_the_rank_column_says_it_is_no_verdict_when_the_conclusion_names_none(tmp_path):
    """Two methods that beat the baselines and do not differ: "no method is clearly better",
    and the table's places (1 and 1) are an order, not a winner; with a clear winner the
    page does not say so."""
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    noise = list(np.random.default_rng(2).normal(0, 0.02, 8))
    pages = {}
    for name, shift in (("tie", 0.0), ("lead", 0.3)):
        summary = synthetic({"gradcam": [v + 0.2 for v in GOOD],
                             "layercam": [v + 0.2 + shift + e for v, e in zip(GOOD, noise)]},
                            {"random": [v - 0.3 for v in GOOD]})
        summary.config = Config.model_validate({
            "model": {"file": "m.pth"}, "images": ["a.jpg"], "target_layers": ["x"],
            "metrics": [METRIC], "methods": ["gradcam", "layercam"]})
        summary.trust = trustlines.build(summary, method_table(summary, ["gradcam", "layercam"]))
        (tmp_path / name).mkdir()
        pages[name] = (summary.trust, render_pages(RunFolder(tmp_path / name),
                                                   ReportData(summary))["report.html"])
    tie, page = pages["tie"]
    assert tie.trusted is None and tie.conclusion.startswith("no method is clearly better: "
                                                             "gradcam, layercam beat every")
    assert "an order of the places, not a verdict: the conclusion at the top names no method " \
           "to trust." in page
    assert re.findall(r'<td class="rank">(\d)', page) == ["1", "1"]
    lead, page = pages["lead"]
    assert lead.trusted == "layercam" and "not a verdict" not in page
    assert "not a sign that the model is right" in page


def test_images_that_look_alike_are_named_in_the_notes_and_the_warnings(small_run):
    """The run's five images are three photos and mirror images of two of them: "which map
    to trust" counts them as five, and says so (the page and summary.json's notes), from the
    trust record's groups."""
    summary, run_dir = small_run
    assert all(len(image.look) == 32 for image in summary.images)
    assert summary.trust.look_alike == [["0_cat", "3_cat"], ["1_dog", "4_dog"]]
    assert summary.trust.look_alike_images == 4
    note = ("look-alike images: 4 image(s) look like flips, shifts or copies of another "
            "(0_cat, 3_cat; 1_dog, 4_dog); the trust intervals count them as independent "
            "images, which makes them too narrow: name them after their photo "
            "(cat01-flip.jpg) and set report.photo_separator: '-'")
    assert note in summary.notes
    page = (run_dir / "report.html").read_text()
    warnings = page[page.index("<h2>Warnings</h2>") if "<h2>Warnings</h2>" in page
                    else page.index("Warnings"):page.index('<section id="trust">')]
    assert note.replace("'", "&#39;") in warnings


def test_the_mean_place_is_shown_to_three_digits(tmp_path):
    """A method placed 1, 1, 1 and 2 on four ranked metrics has a mean place of 1.25: the
    page said 1.2 (two significant digits)."""
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    keys = {"road_combined": 1, "road_least_relevant_first": 1, "increase_in_confidence": 1,
            "drop_in_confidence": 1}  # drop: lower is better, so gradcam's higher is worse
    summary = synthetic({"gradcam": GOOD, "layercam": GOOD})
    for image in summary.images:
        for rec in image.cams:
            lift = 0.3 if rec.method == "gradcam" else 0.0
            rec.faithfulness = {k: rec.faithfulness[METRIC] + lift * s for k, s in keys.items()}
    summary.config = Config.model_validate({
        "model": {"file": "m.pth"}, "images": ["a.jpg"], "target_layers": ["x"],
        "metrics": list(keys), "methods": ["gradcam", "layercam"]})
    table = method_table(summary, ["gradcam", "layercam"])
    assert table.mean_place == {"gradcam": 1.25, "layercam": 1.75}
    summary.trust = trustlines.build(summary, table)
    (tmp_path / "run").mkdir()
    page = render_pages(RunFolder(tmp_path / "run"), ReportData(summary))["report.html"]
    assert "(mean place 1.25)" in page and "(mean place 1.75)" in page


def test_a_lead_that_a_baseline_matches_gets_no_star(tmp_path):
    """A student quoted the methods table's star for a method whose own line said it did not
    beat the baselines: the star (and the green cell) are for a lead that no baseline
    matches; the record's ``leads`` keep the comparison between methods."""
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    noise = list(np.random.default_rng(4).normal(0, 0.01, 8))
    pages = {}
    for name, shift in (("matched", 0.5), ("beaten", -0.3)):
        summary = synthetic({"gradcam": [v + 0.2 + e for v, e in zip(GOOD, noise)],
                             "layercam": GOOD}, {"random": [v + shift for v in GOOD]})
        summary.config = Config.model_validate({
            "model": {"file": "m.pth"}, "images": ["a.jpg"], "target_layers": ["x"],
            "metrics": [METRIC], "methods": ["gradcam", "layercam"]})
        table = method_table(summary, ["gradcam", "layercam"])
        col = next(c for c in table.columns if c.key == METRIC)
        assert col.leads == ["gradcam"]
        summary.trust = trustlines.build(summary, table)
        (tmp_path / name).mkdir()
        pages[name] = (col, render_pages(RunFolder(tmp_path / name),
                                         ReportData(summary))["report.html"])
    col, page = pages["matched"]
    assert col.cells["gradcam"].beats_baselines is False
    assert '<span class="star"' not in page and 'class="best"' not in page
    assert "✗ baseline: random" in page
    col, page = pages["beaten"]
    assert col.cells["gradcam"].beats_baselines is True
    assert page.count('<span class="star"') == 1 and page.count('<td class="best">') == 1


def test_explain_report_works_out_the_verdict_again_per_photo(small_run, tmp_path, capsys):
    """``explain report RUN --photo-separator _``: the page's verdict, counts and table per
    photo ('0_cat' is photo '0'), a warning that the run did not use it, summary.json as the
    run wrote it; a separator ids cannot hold is one line naming the option."""
    from helpers import cli
    copy = tmp_path / "study"
    shutil.copytree(small_run[1], copy)
    before = (copy / "summary.json").read_bytes()
    code, err, _ = cli(capsys, "report", str(copy), "--photo-separator", "_")
    assert code == 0, err
    page = (copy / "report.html").read_text()
    assert ("&#34;Which map to trust&#34; is worked out with report.photo_separator &#39;_&#39; "
            "(explain report --photo-separator), which the run did not use") in page
    assert "95% bootstrap over photos" in page and "bootstrap over images" not in page
    assert (copy / "summary.json").read_bytes() == before
    code, err, _ = cli(capsys, "report", str(copy))
    assert code == 0 and "95% bootstrap over images" in (copy / "report.html").read_text()
    code, err, _ = cli(capsys, "report", str(copy), "--photo-separator", "__")
    assert code == 2 and err.strip().splitlines() == [
        "explain: error: --photo-separator '__': image ids never hold '__' (a file name's '__' "
        "becomes '_'): use '-' and name the files cat01-flip.jpg"]

"""Flips and crops of one photo counted as one in "Which map to trust" (report.photo_separator):
the maps of a photo's variants are averaged into one number before the photos are resampled,
and every count, place, minimum and sentence speaks of photos. Synthetic records for the
statistics, the report page rendered from them, and the config's check."""

from __future__ import annotations

import numpy as np
import pytest

from explain import stats, trustlines
from explain.config import Config, load_config
from explain.errors import ExplainError
from explain.evidence import BaselineMap
from explain.measures import significant
from explain.methodtable import method_table
from explain.names import check_photo_separator, photo_of
from explain.results import ImageEntry, MapRecord, RunSummary

METRIC = "road_combined"  # higher is better
SEED = 3


def record(method: str, cls: str, value: float) -> MapRecord:
    return MapRecord(class_name=cls, method=method, peak_x=0, peak_y=0, peak_value=1,
                     mass_left=0.5, mass_right=0.5, mass_top=0.5, mass_bottom=0.5,
                     file=f"cams/{method}/x__{cls}.png", faithfulness={METRIC: value})


def summary_of(values: dict[str, dict[str, float]], separator: str | None,
               bases: dict[str, dict[str, float]] | None = None) -> RunSummary:
    """Image id -> (method -> its maps' score, both classes alike), baselines likewise."""
    methods = sorted({m for per in values.values() for m in per})
    config = Config.model_validate({
        "model": {"file": "m.pth"}, "images": ["a.jpg"], "target_layers": ["x"],
        "methods": methods, "metrics": [METRIC], "seed": SEED,
        "report": {"photo_separator": separator}})
    images = [ImageEntry(id=ident, path=f"{ident}.jpg", input_size=[8, 8],
                         probabilities={"cat": 0.5, "dog": 0.5}, predicted="cat",
                         cams=[record(m, c, v) for c in ("cat", "dog") for m, v in per.items()],
                         baselines=[BaselineMap(class_name=c, baseline=b, scores={METRIC: v})
                                    for c in ("cat", "dog")
                                    for b, v in (bases or {}).get(ident, {}).items()])
              for ident, per in values.items()]
    return RunSummary(name="t", config_file="t.yaml", output_dir=".", device="cpu",
                      config=config, versions={}, images=images, durations_s={"cams": 1.0})


RNG = np.random.default_rng(11)
PHOTO = {f"p{k}": float(v) for k, v in enumerate(RNG.uniform(0.1, 0.5, 5))}
SHIFT = {f"p{k}": float(v) for k, v in enumerate(RNG.normal(0, 0.01, 5))}


def variants(method_shift: float = 0.0, photos: int = 5) -> dict[str, dict[str, float]]:
    """Each photo p<k> and its flip p<k>-flip (a slightly different number), one method."""
    out = {}
    for k in range(photos):
        base = PHOTO[f"p{k}"] + method_shift
        out[f"p{k}"] = {"gradcam": base}
        out[f"p{k}-flip"] = {"gradcam": base + SHIFT[f"p{k}"]}
    return out


def test_an_image_s_photo_is_its_id_up_to_the_first_separator():
    assert photo_of("cat01-flip", "-") == photo_of("cat01-crop-2", "-") == "cat01"
    assert photo_of("cat01", "-") == "cat01" and photo_of("cat01-flip", None) == "cat01-flip"
    assert photo_of("cat01.v2", ".") == "cat01" and photo_of("a_b_c", "_b") == "a"
    assert photo_of("-x", "-") == "-x"  # nothing before it: the id itself


@pytest.mark.parametrize("text, words", [
    ("__", "image ids never hold '__'"), ("(a+)+", "1 to 8 of the characters"),
    ("", "1 to 8"), ("-" * 9, "1 to 8"), ("a/b", "1 to 8"), (" ", "1 to 8")])
def test_a_separator_an_id_cannot_hold_is_refused(text, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        check_photo_separator(text)


def test_the_config_names_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {file: m.pth}\nimages: [a.jpg]\ntarget_layers: [x]\n"
                    "report: {photo_separator: '__'}\n")
    with pytest.raises(ExplainError) as err:
        load_config(path)
    assert "report.photo_separator: '__': image ids never hold '__'" in str(err.value)
    assert "name the files cat01-flip.jpg" in str(err.value)


def test_a_photo_s_variants_are_averaged_then_the_photos_resampled():
    summary = summary_of(variants(), "-")
    table = method_table(summary, ["gradcam"])
    cell = next(c for c in table.columns if c.key == METRIC).cells["gradcam"]
    per_photo = [(PHOTO[p] + PHOTO[p] + SHIFT[p]) / 2 for p in sorted(PHOTO)]
    low, high = stats.interval(per_photo, seed=SEED)
    assert (cell.images, cell.maps) == (5, 20)
    assert cell.mean == significant(float(np.mean(per_photo)))
    assert (cell.low, cell.high) == (significant(low), significant(high))
    assert (table.unit, table.photos, table.images, table.meaningful) == ("photo", 5, 10, True)
    alone = method_table(summary_of(variants(), None), ["gradcam"])
    single = next(c for c in alone.columns if c.key == METRIC).cells["gradcam"]
    assert (single.images, alone.unit, alone.photos, alone.images) == (10, "image", None, 10)
    # ten images that are five photos twice made the interval too narrow
    assert (cell.high - cell.low) > 1.2 * (single.high - single.low)


def test_comparisons_and_lines_count_photos():
    values = variants()
    for ident, per in variants(method_shift=0.2).items():
        values[ident]["layercam"] = per["gradcam"]
    bases = {ident: {"random": per["gradcam"] - 0.3} for ident, per in variants().items()}
    summary = summary_of(values, "-", bases)
    table = method_table(summary, ["gradcam", "layercam"])
    evidence = trustlines.build(summary, table)
    pair = next(p for p in evidence.comparisons if p.b == "layercam")
    assert pair.verdict == "layercam better" and pair.images == 5
    assert pair.text.endswith("over 5 photos")
    assert (evidence.unit, evidence.photos, evidence.images) == ("photo", 5, 10)
    assert evidence.trusted == "layercam"


def test_too_few_photos_draw_no_conclusion_however_many_images():
    few = variants(photos=4)
    evidence = trustlines.build(summary_of(few, "-"), method_table(summary_of(few, "-"),
                                                                   ["gradcam"]))
    assert not evidence.meaningful and evidence.primary is None
    assert evidence.conclusion.startswith("no conclusion yet: 8 image(s) of 4 photo(s), no "
                                          "metric measured on at least 5")
    assert evidence.conclusion.endswith("explain at least 5 different photos, each with a "
                                        "faithfulness metric (metrics:) or a box "
                                        "(annotations:)")
    one = variants(photos=1)  # no interval for one photo: its count instead
    line = trustlines.build(summary_of(one, "-"), method_table(summary_of(one, "-"),
                                                               ["gradcam"])).lines[0]
    assert line.text.endswith("(n = 1 photo)")
    counted_alone = method_table(summary_of(few, None), ["gradcam"])
    assert counted_alone.meaningful and counted_alone.images == 8


def test_ids_without_the_separator_are_photos_of_their_own():
    values = {"a": {"gradcam": 0.1}, "b-1": {"gradcam": 0.2}, "b-2": {"gradcam": 0.4},
              "c": {"gradcam": 0.3}}
    table = method_table(summary_of(values, "-"), ["gradcam"])
    cell = next(c for c in table.columns if c.key == METRIC).cells["gradcam"]
    assert (table.photos, table.images, cell.images) == (3, 4, 3)
    assert cell.mean == significant((0.1 + 0.3 + 0.3) / 3)


def render(summary: RunSummary, folder) -> str:
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    methods = list(dict.fromkeys(r.method for image in summary.images for r in image.cams))
    summary.trust = trustlines.build(summary, method_table(summary, methods))
    folder.mkdir()
    return render_pages(RunFolder(folder), ReportData(summary))["report.html"]


def test_the_report_says_photos_where_it_counts_them(tmp_path):
    bases = {ident: {"random": per["gradcam"] - 0.3} for ident, per in variants().items()}
    page = render(summary_of(variants(), "-", bases), tmp_path / "photos")
    section = page[page.index('<section id="trust">'):page.index('<section id="run">')]
    assert "10 image(s) of 5 photo(s) (an image's photo: its id up to the first <code>-</code>)" \
        in section
    assert "95% bootstrap over photos" in section and "no ranking below 5 photos." in section
    assert "The variants of one photo (its flips, crops or shifts) are one unit" in section
    assert "They treat every image as independent" not in section
    table = page[page.index('class="method-table"'):]
    assert "5 photo(s), 20 map(s)" in table and "image(s), 20 map(s)" not in table
    assert "the mean over photos of the method's per-photo mean" in table
    plain = render(summary_of(variants(), None, bases), tmp_path / "images")
    assert "95% bootstrap over images" in plain and "10 image(s), 20 map(s)" in plain
    assert "set <code>report.photo_separator: \"-\"</code> to count them as one" in plain


def test_a_finished_run_is_regrouped_from_its_records():
    """The notebook's ``Run.trust(photo_separator=...)``: a run made without a separator,
    worked out again from its records, is what the separator would have made at run time."""
    grouped = summary_of(variants(), "-")
    grouped.trust = trustlines.build(grouped, method_table(grouped, ["gradcam"]))
    alone = summary_of(variants(), None)
    alone.trust = trustlines.build(alone, method_table(alone, ["gradcam"]))
    assert trustlines.regrouped(alone, ["gradcam"], None) is alone.trust
    again = trustlines.regrouped(alone, ["gradcam"], "-")
    assert again.model_dump() == grouped.trust.model_dump() and again.unit == "photo"
    assert alone.config.report.photo_separator is None  # the run's records are left as they were
    with pytest.raises(ValueError, match="image ids never hold '__'"):
        trustlines.regrouped(alone, ["gradcam"], "__")


# ---- images that look alike (explain.images.looks) ---------------------------------------

def _photo(name: str) -> np.ndarray:
    import cv2
    from conftest import IMAGES
    return cv2.cvtColor(cv2.imread(str(IMAGES / f"{name}.jpg")), cv2.COLOR_BGR2RGB)


def _bits_apart(a: str, b: str) -> int:
    first = int(a[:16], 16)
    return min(bin(first ^ int(b[:16], 16)).count("1"), bin(first ^ int(b[16:], 16)).count("1"))


def test_a_mirror_image_a_shift_and_a_copy_look_like_their_photo():
    import cv2
    from explain.images.looks import NEAR_BITS, look
    photos = {n: _photo(n) for n in ("cat", "dog", "both")}
    for name, rgb in photos.items():
        mine = look(rgb)
        assert len(mine) == 32 and look(rgb[:, ::-1]) == mine[16:] + mine[:16]
        assert _bits_apart(mine, look(rgb[:, ::-1].copy())) == 0
        assert _bits_apart(look(rgb[7:, 7:]), mine) <= 3
        assert _bits_apart(look(cv2.resize(rgb, None, fx=1.7, fy=1.7)), mine) <= 3
        small = cv2.resize(rgb, None, fx=0.5, fy=0.5)[..., ::-1]  # a half-size JPEG at 40
        jpeg = cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], 1)
        assert _bits_apart(look(jpeg[..., ::-1]), mine) <= 3
        assert _bits_apart(look(rgb.astype(np.float32) / 255), mine) == 0  # 0..1 floats too
    looks = [look(rgb) for rgb in photos.values()]
    apart = [_bits_apart(a, b) for i, a in enumerate(looks) for b in looks[i + 1:]]
    assert min(apart) > 2 * NEAR_BITS


def test_look_alike_groups_span_different_units_only():
    from explain.images.looks import alike, look
    cat, dog = _photo("cat"), _photo("dog")
    looks = {"cat": look(cat), "dog": look(dog), "cat-flip": look(cat[:, ::-1]),
             "cat-big": look(np.repeat(np.repeat(cat, 2, 0), 2, 1)), "x": None, "y": "zz"}
    assert alike(looks, lambda i: i) == [["cat", "cat-flip", "cat-big"]]
    assert alike(looks, lambda i: photo_of(i, "-")) == []  # one photo: nothing to say
    assert alike({"a": looks["cat"], "b": looks["dog"]}, lambda i: i) == []


def test_the_evidence_names_look_alike_images_only_when_ranked():
    summary = summary_of(variants(), None)
    cat = _photo("cat")
    from explain.images.looks import look
    for image in summary.images:  # p0 and its flip look alike, the others are blank
        image.look = look(cat[:, ::-1] if image.id == "p0-flip" else cat) \
            if image.id.startswith("p0") else None
    evidence = trustlines.build(summary, method_table(summary, ["gradcam"]))
    assert (evidence.look_alike, evidence.look_alike_images) == ([["p0", "p0-flip"]], 2)
    assert trustlines.look_alike_note(evidence).startswith(
        "look-alike images: 2 image(s) look like flips, shifts or copies of another (p0, "
        "p0-flip); the trust intervals count them as independent images")
    grouped = summary_of(variants(), "-")
    for image, before in zip(grouped.images, summary.images):
        image.look = before.look
    assert trustlines.build(grouped, method_table(grouped, ["gradcam"])).look_alike == []
    for image in summary.images:  # no ranked number: nothing is resampled, nothing said
        for rec in image.cams:
            rec.faithfulness = {}
    assert trustlines.build(summary, method_table(summary, ["gradcam"])).look_alike_images == 0


def test_a_separator_in_no_image_id_is_a_note():
    """'_' for ids named with '-' groups nothing: the run says so (as 9 images of 9 photos
    alone would not)."""
    assert trustlines.separator_note(summary_of(variants(), "-")) == ""
    assert trustlines.separator_note(summary_of(variants(), None)) == ""
    assert trustlines.separator_note(summary_of(variants(), "_")) == (
        "report.photo_separator '_' is in no image id (such as 'p0'): every image counts as a "
        "photo of its own")


def test_the_look_alike_note_offers_the_separator_the_names_share():
    """cat and cat_flip look alike: '_' makes them one photo, and the note says so (with the
    command that shows the verdict so); 'dog_0', an id explain made for a second dog.jpg, is
    not cut by '_' (its file's name has none), so that group is not counted."""
    groups = [["cat", "cat_flip"], ["dog", "dog_0"], ["x-1", "x-2", "y-1"]]
    paths = {"cat": "a/cat.jpg", "cat_flip": "a/cat_flip.jpg", "dog": "a/dog.jpg",
             "dog_0": "b/dog.jpg", "x-1": "x-1.jpg", "x-2": "x-2.jpg", "y-1": "y-1.jpg"}
    assert trustlines.shared_separator(groups, paths, None) == ("_", 1)
    assert trustlines.shared_separator(groups, paths, "_") == (None, 0)
    assert trustlines.shared_separator(groups[2:], paths, None) == (None, 0)
    summary = summary_of({i: {"gradcam": 0.1 * k} for k, i in enumerate(
        ["p0", "p0_flip", "p1", "p2", "p3", "p4"])}, None)
    cat = _photo("cat")
    from explain.images.looks import look
    for image in summary.images:
        image.look = look(cat[:, ::-1] if image.id == "p0_flip" else cat) \
            if image.id.startswith("p0") else None
    evidence = trustlines.build(summary, method_table(summary, ["gradcam"]))
    assert (evidence.look_alike_separator, evidence.look_alike_united) == ("_", 1)
    assert trustlines.look_alike_note(evidence).endswith(
        "which makes them too narrow: their names share the separator '_' (1 group(s) become "
        "one photo each): set report.photo_separator: '_', or see the verdict so without "
        "running again: explain report RUN_DIR --photo-separator '_'")
    from explain.evidence import evidence_problem
    evidence.look_alike_separator = "a b"
    assert evidence_problem(evidence, ["gradcam"], {METRIC}, set()).startswith(
        "look_alike_separator 'a b': 1 to 8")


def test_a_ranked_page_says_its_weak_maps_count(tmp_path):
    """With ranked numbers the trust section says that maps of classes the model gives little
    are counted too (and how many); without any number it is one line (test_reader_report)."""
    summary = summary_of(variants(), None)
    for rec in summary.images[0].cams:
        rec.weak = True
    page = render(summary, tmp_path / "weak")
    section = page[page.index('<section id="trust">'):page.index('<section id="run">')]
    assert "Every map counts here, including the 2 of 20 whose class the model gives less " \
           "than 5%" in section

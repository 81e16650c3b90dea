"""Review of day 18 (photo_separator, look-alike images, ROAD seeds, shown paths, detection's
'(none)'): each test reproduces a bug found in review."""

from __future__ import annotations

import time

from explain import trustlines
from explain.methodtable import method_table
from explain.names import photo_of
from test_photos import render, summary_of, variants


def test_an_unfinished_run_s_trust_keeps_its_config_s_photo_separator():
    """``Run.trust()`` of an unfinished run (no summary.json: no trust record) worked the
    verdict out with no separator, over images, while the report of the same run (and the
    notebook's methods table) counted photos."""
    summary = summary_of(variants(), "-")
    assert summary.trust is None
    got = trustlines.regrouped(summary, ["gradcam"], None)
    made = trustlines.build(summary, method_table(summary, ["gradcam"]))
    assert (got.unit, got.photos) == ("photo", 5)
    assert got.model_dump() == made.model_dump()


def test_the_report_s_trust_lines_count_photos_below_the_minimum(tmp_path):
    """A mean without an interval is '(n = 1 photo)' in the trust line's text; the report's
    line printed '(n = 1 image)' for the same number (it counts photos)."""
    summary = summary_of(variants(photos=1), "-")
    page = render(summary, tmp_path / "run")
    section = page[page.index('<section id="trust">'):page.index('<section id="run">')]
    line = summary.trust.lines[0].text
    assert "(n = 1 photo)" in line
    assert "(n = 1 photo)" in section and "(n = 1 image)" not in section
    plain = render(summary_of({"p0": {"gradcam": 0.2}}, None), tmp_path / "plain")
    assert "(n = 1 image)" in plain


def test_the_rule_speaks_of_photos_when_the_intervals_resample_photos(tmp_path):
    """The rule the report prints said 'the minimum of images' and 'per-image difference'
    beside 'no ranking below 5 photos'."""
    summary = summary_of(variants(), "-")
    page = render(summary, tmp_path / "run")
    assert "at least the minimum of photos" in summary.trust.rule
    assert "per-photo difference" in summary.trust.rule
    assert "minimum of images" not in page and "per-image difference" not in page
    alone = summary_of(variants(), None)
    alone.trust = trustlines.build(alone, method_table(alone, ["gradcam"]))
    assert "at least the minimum of images" in alone.trust.rule


def test_look_alike_grouping_of_many_alike_images_takes_no_quadratic_python_loop():
    """5,000 images of one look (blank scans; a shared summary's made-up looks) took one
    Python union per pair: 12.5 million, 5.5 to 7 s; the groups are the same."""
    from explain.images.looks import alike
    looks = {f"img{i}-x": "0" * 32 for i in range(5000)}
    t0 = time.perf_counter()
    groups = alike(looks, lambda i: photo_of(i, "-"))
    assert time.perf_counter() - t0 < 2.0
    assert groups == [list(looks)]
    small = {"a": "0" * 32, "a-f": "0" * 32, "b": "f" * 32, "c": "0" * 31 + "1", "d": None}
    assert alike(small, lambda i: photo_of(i, "-")) == [["a", "a-f", "c"]]
    assert alike(small, lambda i: i) == [["a", "a-f", "c"]]
    assert alike({"a": "0" * 32, "a-f": "0" * 32}, lambda i: photo_of(i, "-")) == []


def test_the_ids_explain_makes_for_repeated_names_are_not_variants():
    """train/cat/0.jpg, train/dog/0.jpg, val/cat/0.jpg and val/dog/0.jpg get the ids '0',
    'dog_0', 'cat_0' and '0-2': with photo_separator '-', val/dog/0.jpg counted as a variant
    of train/cat/0.jpg (with '_', every repeated name of a folder as one photo), though no
    file name holds the separator."""
    from pathlib import Path

    from explain.images.finding import _with_ids
    found = [(Path("/d") / split / cls / "0.jpg", True, cls)
             for split in ("train", "val") for cls in ("cat", "dog")]
    ids = [r.id for r in _with_ids(found)]
    assert ids == ["0", "dog_0", "cat_0", "0-2"]
    for ident, (path, _, _) in zip(ids, found):
        assert photo_of(ident, "-", str(path)) == photo_of(ident, "_", str(path)) == ident
    assert photo_of("cat01-flip", "-", "/d/cat01-flip.jpg") == "cat01"
    assert photo_of("dog_cat01-flip", "-", "/d/dog/cat01-flip.jpg") == "dog_cat01"
    values = {"0": {"gradcam": 0.1}, "0-2": {"gradcam": 0.2}, "p1": {"gradcam": 0.3},
              "p1-flip": {"gradcam": 0.4}}
    summary = summary_of(values, "-")
    summary.images[0].path, summary.images[1].path = (str(p) for p, _, _ in found[::3])
    table = method_table(summary, ["gradcam"])
    assert (table.images, table.photos) == (4, 3)

"""explain diff RUN_A RUN_B: two runs of the same images, one model's classifier re-initialised;
the correlations equal numpy's on the saved arrays, the record numbers' changes, the CSV, the
page's pictures, the threshold gate's exit codes, and one line for each bad input (nothing
written)."""

import csv
import json
import os
import shutil
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
import torch

from explain.cli import main
from explain.config import load_config
from explain.diff import CASES
from explain.runner import RunOptions, run
from browser import Browser, check_page, find_browser
from conftest import make_small_alexnet, write_config

QUIET = dict(progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: a small AlexNet; run B: the same config, the model's classifier re-initialised
    (saved whole with torch.save, as a new checkpoint would be). GradCAM and EigenCAM, 64 px,
    a faithfulness metric and boxes, maps saved."""
    tmp = tmp_path_factory.mktemp("diff")
    model = make_small_alexnet()
    torch.save(model, tmp / "a.pth")
    torch.manual_seed(1)
    model.classifier[0].reset_parameters()
    torch.save(model, tmp / "b.pth")
    for name in ("a", "b"):
        path = write_config(
            tmp, name, model={"file": str(tmp / f"{name}.pth")}, target_layers=["features.10"],
            preprocess={"size": 64}, methods=["gradcam", "eigencam"],
            metrics=["drop_in_confidence"],
            annotations={"boxes": {"both.jpg": {"cat": [0, 0, 224, 224],
                                                "dog": [224, 0, 448, 224]}}},
            output={"dir": str(tmp / "results"), "save_arrays": True})
        run(load_config(path), RunOptions(**QUIET))
    return tmp / "results" / "a", tmp / "results" / "b"


def diff(capsys, *args):
    """``explain diff ARGS``: (exit code, stdout lines, stderr lines)."""
    code = main(["diff", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def records(run_dir: Path) -> dict:
    """(image, class, method) -> (image entry, map record) of a run's summary.json."""
    return {(e["id"], r["class"], r["method"]): (e, r)
            for e in summary(run_dir)["images"] for r in e["cams"]}


class Pictures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src, self.href = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.src.append(unquote(attrs["src"]))
        if tag == "a" and attrs.get("href") and not attrs["href"].startswith("#"):
            self.href.append(unquote(attrs["href"]))


def test_reinitialised_head_correlations_numbers_csv_and_page(runs, capsys):
    a, b = runs
    code, out, err = diff(capsys, a, b)  # no --out: next to run B
    assert code == 0 and err == []
    folder = b.parent / "diff-a-b"
    rows = read_csv(folder / "diff.csv")
    ra, rb = records(a), records(b)
    assert [(r["image"], r["class"], r["method"]) for r in rows] == list(ra)  # A's order, all 12
    real = 0
    for row in rows:
        key = (row["image"], row["class"], row["method"])
        (ea, rec_a), (eb, rec_b) = ra[key], rb[key]
        x = np.load(a / rec_a["files"]["array"]).astype(np.float64)
        y = np.load(b / rec_b["files"]["array"]).astype(np.float64)
        r = float(row["correlation"])
        if np.array_equal(x, y):
            assert r == 1.0
        elif x.std() > 0 and y.std() > 0:
            assert r == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1], abs=1e-12)
            real += 1
        else:  # a blank map against another: no correlation, counted 0
            assert r == 0.0
        assert float(row["mean_abs_diff"]) == pytest.approx(np.abs(y - x).mean(), abs=1e-12)
        assert float(row["max_abs_diff"]) == pytest.approx(np.abs(y - x).max(), abs=1e-12)
        for name in ("probability", "logit", "peak_value", "mass_left", "agreement"):
            assert float(row[f"{name}_a"]) == rec_a[name] and float(row[f"{name}_b"]) == rec_b[name]
            change = float(row[f"{name}_change"])
            assert change == pytest.approx(rec_b[name] - rec_a[name], abs=1e-9)
        drop = "drop_in_confidence"
        assert float(row[f"{drop}_change"]) == pytest.approx(
            rec_b["faithfulness"][drop] - rec_a["faithfulness"][drop], abs=1e-9)
        if row["image"] == "both":  # boxes only there
            assert float(row["energy_in_box_a"]) == rec_a["localisation"]["energy_in_box"]
        else:
            assert row["energy_in_box_a"] == "" and row["energy_in_box_change"] == ""
        assert (row["predicted_a"], row["predicted_b"]) == (ea["predicted"], eb["predicted"])
    assert real >= 2  # the numpy check saw maps that are neither equal nor blank
    by_method = {m: [float(r["correlation"]) for r in rows if r["method"] == m]
                 for m in ("gradcam", "eigencam")}
    assert by_method["eigencam"] == [1.0] * 6  # the head is not in EigenCAM's maps
    assert min(by_method["gradcam"]) < 0.5  # GradCAM's weights are the head's
    text = "\n".join(out)
    assert f"explain diff: A {a} vs B {b}: 12 shared maps (3 images x 2 classes x 2 methods)" in text
    assert f"model.file: {a.parent.parent / 'a.pth'} -> {b.parent.parent / 'b.pth'}" in text
    assert "eigencam / cat: map r 1.000 on all 3 map(s)" in text  # no worst image named
    assert f"-> {folder / 'diff.html'}" in text


def test_page_shows_the_most_changed_maps_as_pictures_that_decode(runs, capsys):
    a, b = runs
    out_root = a.parent.parent / "page"
    assert diff(capsys, a, b, "--out", out_root)[0] == 0
    folder = out_root / "diff-a-b"
    rows = read_csv(folder / "diff.csv")
    changed = sorted((r for r in rows if float(r["correlation"]) < 1),
                     key=lambda r: (float(r["correlation"]), -float(r["mean_abs_diff"])))
    page = Pictures()
    html = (folder / "diff.html").read_text(encoding="utf-8")
    page.feed(html)
    shown = min(len(changed), CASES)
    assert len(page.src) == 3 * shown and shown >= 3
    for n, row in enumerate(changed[:shown], 1):
        assert f"{n}. {row['image']} · {row['class']} · {row['method']}" in html
        pics = {}
        for which in ("a", "b", "change"):
            rel = f"pictures/{n:02d}-{which}.png"
            assert rel in page.src and rel in page.href
            pics[which] = cv2.imread(str(folder / rel))
            assert pics[which] is not None  # the file decodes
        h, w = records(a)[(row["image"], row["class"], row["method"])][0]["input_size"]
        assert all(p.shape == (h, w, 3) for p in pics.values())  # under 256 px: not scaled
        assert not np.array_equal(pics["a"], pics["b"])
        x = np.load(a / f"cams/{row['method']}/{row['image']}__{row['class']}.npy")
        y = np.load(b / f"cams/{row['method']}/{row['image']}__{row['class']}.npy")
        same = np.isclose(x, y, atol=1e-3)  # white where the map did not change
        assert (pics["change"][same] >= 254).all() and (pics["change"][~same] < 254).any()
    assert "diff.csv" in page.href
    for rel in page.src + page.href:  # every link inside the diff folder, and there
        assert not rel.startswith(("/", "http", "..")) and (folder / rel).is_file()


def test_threshold_gate_exit_codes(runs, capsys, tmp_path):
    a, b = runs
    assert diff(capsys, a, b, "--out", tmp_path)[0] == 0
    rows = read_csv(tmp_path / "diff-a-b" / "diff.csv")
    low = min(float(r["correlation"]) for r in rows)
    code, out, _ = diff(capsys, a, b, "--threshold", repr(low), "--out", tmp_path)
    assert code == 0 and f"  threshold {low}: 0 of 12 map(s) below" in out
    above = float(np.nextafter(low, 2.0))
    below = sum(1 for r in rows if float(r["correlation"]) < above)
    code, out, _ = diff(capsys, a, b, "--threshold", repr(above), "--out", tmp_path)
    assert code == 1
    assert any(line.startswith(f"  threshold {above}: {below} of 12 map(s) below, exit 1: ")
               for line in out)
    # the same run twice: every map exactly equal, so even --threshold 1 passes
    code, out, _ = diff(capsys, a, a, "--threshold", "1", "--out", tmp_path)
    assert code == 0 and "  threshold 1.0: 0 of 12 map(s) below" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["diff-a-a", "diff-a-b", "diff-a-b-2", "diff-a-b-3"]  # never an earlier diff's folder


@pytest.mark.parametrize("value", ["1.5", "-1.01", "nan", "inf", "abc"])
def test_threshold_out_of_range_is_one_line_and_writes_nothing(runs, capsys, tmp_path, value):
    a, b = runs
    code, out, err = diff(capsys, a, b, "--threshold", value, "--out", tmp_path / "out")
    assert code == 2 and out == []
    assert err == [f"explain: error: --threshold {value}: expected a correlation from -1 to 1, "
                   f"e.g. --threshold 0.9"]
    assert not (tmp_path / "out").exists()


def derive(src: Path, dst: Path, keep=lambda image, rec: True, change=None) -> Path:
    """A copy of a run whose summary.json keeps only some maps (as a run of fewer images,
    classes or methods would have written), and ``change`` applied to the summary."""
    shutil.copytree(src, dst)
    data = summary(dst)
    for entry in data["images"]:
        entry["cams"] = [r for r in entry["cams"] if keep(entry["id"], r)]
    data["images"] = [e for e in data["images"] if e["cams"]]
    if change:
        change(data)
    (dst / "summary.json").write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize("kind", ["image", "class", "method"])
def test_runs_that_share_nothing_get_one_line(runs, capsys, tmp_path, kind):
    a, _ = runs
    field = {"image": lambda e, r: e, "class": lambda e, r: r["class"],
             "method": lambda e, r: r["method"]}[kind]
    first, second = {"image": ("cat", "dog"), "class": ("cat", "dog"),
                     "method": ("gradcam", "eigencam")}[kind]
    one = derive(a, tmp_path / "one", lambda e, r: field(e, r) == first)
    two = derive(a, tmp_path / "two", lambda e, r: field(e, r) == second)
    code, out, err = diff(capsys, one, two, "--out", tmp_path / "out")
    assert code == 2 and out == []
    assert err == [f"explain: error: the runs share no {kind}: {one} has {first}; {two} has "
                   f"{second}; compare runs of the same images, classes and methods"]
    assert not (tmp_path / "out").exists()


def test_partial_overlap_compares_the_shared_maps_and_says_what_was_left_out(runs, capsys,
                                                                          tmp_path):
    a, b = runs
    fewer = derive(b, tmp_path / "fewer", lambda e, r: e != "both" and r["method"] == "gradcam")
    code, out, _ = diff(capsys, a, fewer, "--out", tmp_path)
    assert code == 0
    rows = read_csv(tmp_path / "diff-a-fewer" / "diff.csv")
    assert [(r["image"], r["class"], r["method"]) for r in rows] == [
        ("cat", "cat", "gradcam"), ("cat", "dog", "gradcam"),
        ("dog", "cat", "gradcam"), ("dog", "dog", "gradcam")]
    assert "  left out: images only in A: both" in out
    assert "  left out: methods only in A: eigencam" in out
    # the eigencam maps are said once, as a method only in A: not also as maps "in one run
    # only" with the reason of a class one run explains and the other does not
    assert not [line for line in out if "in one run only" in line]
    # a class explained in one run only, on shared images (targets: predicted does that)
    some = derive(b, tmp_path / "some", lambda e, r: not (e == "cat" and r["class"] == "dog"))
    code, out, _ = diff(capsys, a, some, "--out", tmp_path)
    assert code == 0 and len(read_csv(tmp_path / "diff-a-some" / "diff.csv")) == 10
    assert "  left out: 2 map(s) of shared images are in one run only (a class one run " \
           "explains and the other does not)" in out


def test_user_text_on_the_page_is_escaped(runs, capsys, tmp_path):
    a, b = runs

    def evil(data):
        data["config_file"] = "<script>alert(1)</script>.yaml"
    odd = derive(b, tmp_path / "odd", change=evil)
    assert diff(capsys, a, odd, "--out", tmp_path)[0] == 0
    html = (tmp_path / "diff-a-odd" / "diff.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.yaml" in html

    def shared(data):  # a run someone else made: the page names its config, not their home
        data["config_file"] = "/home/alice/private/configs/study.yaml"
    theirs = derive(b, tmp_path / "theirs", change=shared)
    assert diff(capsys, a, theirs, "--out", tmp_path)[0] == 0
    html = (tmp_path / "diff-a-theirs" / "diff.html").read_text(encoding="utf-8")
    assert "config study.yaml" in html and "alice" not in html


def test_unfinished_run_is_compared_from_its_item_files(runs, capsys, tmp_path):
    a, b = runs
    unfinished = tmp_path / "unfinished"
    shutil.copytree(b, unfinished)
    (unfinished / "summary.json").unlink()
    code, out, _ = diff(capsys, a, unfinished, "--out", tmp_path)
    assert code == 0 and "  run B is unfinished: 3 image(s) so far" in out
    assert diff(capsys, a, b, "--out", tmp_path)[0] == 0
    kept = ("image", "class", "method", "correlation", "probability_b", "drop_in_confidence_b")
    columns = [[{k: r[k] for k in kept} for r in read_csv(tmp_path / name / "diff.csv")]
               for name in ("diff-a-unfinished", "diff-a-b")]
    assert columns[0] == columns[1]


def _format_1(data):
    del data["format"]


def _no_arrays(data):
    data["config"]["output"]["save_arrays"] = False


BAD = {  # what is done to a copy of run B -> the start of its one line (after the folder)
    "format 1": (lambda d: derive(d, d.parent / "x", change=_format_1),
                 "summary.json: written by another version of explain (no 'format': before 2; "
                 "this version reads format 2); run the config again, without --resume"),
    "no arrays": (lambda d: derive(d, d.parent / "x", change=_no_arrays),
                  ": run B did not save its maps (output.save_arrays is off; its overlays are "
                  "pictures, not the maps); run its config again with --set "
                  "output.save_arrays=true"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_other_version_or_no_arrays_one_line_nothing_written(runs, capsys, tmp_path, case):
    _, b = runs
    make, message = BAD[case]
    bad = make(shutil.copytree(b, tmp_path / "copy"))
    code, out, err = diff(capsys, runs[0], bad, "--out", tmp_path / "out")
    assert code == 2 and out == [] and len(err) == 1
    assert err[0].startswith(f"explain: error: {bad}") and err[0].endswith(message)
    assert not (tmp_path / "out").exists()


def test_damaged_or_linked_map_one_line_nothing_written(runs, capsys, tmp_path):
    a, b = runs
    broken = shutil.copytree(b, tmp_path / "broken")
    (broken / "cams/gradcam/dog__cat.npy").write_bytes(b"not a numpy file")
    code, _, err = diff(capsys, a, broken, "--out", tmp_path / "out")
    assert code == 2 and err == [
        f"explain: error: {broken / 'cams/gradcam/dog__cat.npy'}: not the map explain saved "
        f"for dog / cat / gradcam (expected a float array of 64 x 96 finite values); the run "
        f"folder is damaged"]
    linked = shutil.copytree(b, tmp_path / "linked")
    target = linked / "cams/gradcam/dog__cat.npy"
    target.unlink()
    target.symlink_to(a / "cams/gradcam/dog__cat.npy")  # a link is never followed
    code, _, err = diff(capsys, a, linked, "--out", tmp_path / "out")
    assert code == 2 and err == [
        f"explain: error: {target}: the map dog / cat / gradcam is missing or not a plain file; "
        f"the run folder is damaged"]
    not_run = tmp_path / "plain"
    not_run.mkdir()
    code, _, err = diff(capsys, not_run, b, "--out", tmp_path / "out")
    assert code == 2 and len(err) == 1 and "not a results folder written by explain" in err[0]
    assert not (tmp_path / "out").exists()


def test_records_naming_one_array_file_are_refused_before_any_read(runs, capsys, tmp_path):
    """Attack 7: every record of a crafted summary named one large array (one read of it per
    record: 20 records, 43 s and 2.8 GB). explain saves each map in a file of its own."""
    a, b = runs

    def one_array(data):
        first = data["images"][0]["cams"][0]["files"]["array"]
        for entry in data["images"]:
            for rec in entry["cams"]:
                rec["files"]["array"] = first
    shared = derive(b, tmp_path / "shared", change=one_array)
    code, out, err = diff(capsys, a, shared, "--out", tmp_path / "out")
    assert code == 2 and out == [] and len(err) == 1
    assert err[0].startswith(f"explain: error: {shared}: the maps ") and \
        "name the same array file (cams/" in err[0] and err[0].endswith("damaged")
    assert not (tmp_path / "out").exists()
    # attack 10: two names, one file (hard links: a tar keeps them), refused the same way
    linked = derive(b, tmp_path / "linked", change=lambda data: None)
    arrays = sorted((linked / "cams").rglob("*.npy"))
    arrays[1].unlink()
    os.link(arrays[0], arrays[1])
    code, out, err = diff(capsys, a, linked, "--out", tmp_path / "out")
    assert code == 2 and out == [] and len(err) == 1, err
    assert f"name the same array file ({arrays[0].relative_to(linked)}, " \
           f"{arrays[1].relative_to(linked)}); the run folder is damaged" in err[0]
    assert not (tmp_path / "out").exists()


def test_runs_that_share_no_map_get_one_line(runs, capsys, tmp_path):
    a, _ = runs
    one = derive(a, tmp_path / "one", lambda e, r: (e, r["class"], r["method"]) in
                 {("cat", "cat", "gradcam"), ("dog", "dog", "eigencam")})
    two = derive(a, tmp_path / "two", lambda e, r: (e, r["class"], r["method"]) ==
                 ("cat", "dog", "eigencam"))
    code, out, err = diff(capsys, one, two, "--out", tmp_path / "out")
    assert code == 2 and out == [] and err == [
        f"explain: error: the runs share no map (image x class x method): {one} and {two}; "
        f"they explain other classes or methods of each shared image"]
    assert not (tmp_path / "out").exists()


def test_without_the_photo_the_maps_are_drawn_alone(runs, capsys, tmp_path):
    a, b = runs
    bare = shutil.copytree(a, tmp_path / "bare")
    shutil.rmtree(bare / "report" / "photos")
    assert diff(capsys, bare, b, "--out", tmp_path)[0] == 0
    folder = tmp_path / "diff-bare-b"
    html = (folder / "diff.html").read_text(encoding="utf-8")
    assert "the maps alone (run A's folder has no photo of this image)" in html
    row = min(read_csv(folder / "diff.csv"), key=lambda r: float(r["correlation"]))
    x = np.load(a / f"cams/{row['method']}/{row['image']}__{row['class']}.npy")
    jet = cv2.applyColorMap(np.uint8(np.round(np.clip(x, 0, 1) * 255)), cv2.COLORMAP_JET)
    assert np.array_equal(cv2.imread(str(folder / "pictures/01-a.png")), jet)  # BGR both


@pytest.mark.skipif(find_browser() is None, reason="no Chromium here: install the Debian "
                    "package 'chromium' to load diff.html in a real browser")
def test_page_loads_in_chromium_with_every_picture(runs, capsys, tmp_path):
    a, b = runs
    assert diff(capsys, a, b, "--out", tmp_path)[0] == 0
    page = tmp_path / "diff-a-b" / "diff.html"
    with Browser(find_browser()) as browser:
        browser.open_page()
        result = check_page(browser, page)
    assert result["broken"] == [] and result["errors"] == []
    parsed = Pictures()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert result["count"] == len(parsed.src) >= 9


def test_record_numbers_change_per_class_not_averaged_over_classes(runs, capsys):
    """Over a two-class run's both classes the probabilities' mean is 0.5 in either run: a
    shift from cat to dog showed as 'probability +0'. The numbers' changes are per method and
    class, each the mean of that class's records."""
    a, b = runs
    code, out, _ = diff(capsys, a, b, "--out", a.parent.parent / "per-class")
    assert code == 0
    rows = read_csv(a.parent.parent / "per-class" / "diff-a-b" / "diff.csv")
    text = "\n".join(out)
    for cls in ("cat", "dog"):
        mine = [r for r in rows if (r["method"], r["class"]) == ("gradcam", cls)]
        change = np.mean([float(r["probability_change"]) for r in mine])
        assert abs(change) > 1e-3  # the reinitialised head moved each class's probability
        # 3 images: no interval, and the line says so (it named a 95% interval it lacked)
        assert (f"gradcam / {cls}: mean change B - A (over images; too few for an interval): "
                f"probability {change:+.3g}") in text, text
    html = (a.parent.parent / "per-class" / "diff-a-b" / "diff.html").read_text()
    assert "<th>class</th><th>number</th>" in html


def test_a_map_count_that_is_no_product_says_so_and_unchanged_numbers_are_one_line(runs,
                                                                                  capsys):
    """A run explaining each image's own classes showed '40 maps (12 images x 3 classes x 2
    methods)'; the page listed every number that did not move (probability, logit ... when
    only the layer changed) as rows of zeros."""
    from explain.diff.numbers import DiffResult, MapDiff, console_lines
    from explain.diff.page import render_page

    def one(image, cls, change):
        return MapDiff(image=image, class_name=cls, method="gradcam", correlation=0.5,
                       mean_abs_diff=0.1, max_abs_diff=0.2, peak_shift=1.0, resized=False,
                       predicted=("cat", "cat"),
                       numbers=({"probability": 0.4, "peak_value": 1.0},
                                {"probability": 0.4, "peak_value": 1.0 + change}))
    maps = [one("i1", "cat", 0.5), one("i2", "dog", 0.0), one("i3", "cat", 0.0)]
    a, b = runs
    from explain.diff.runs import open_side
    side = open_side(a, "A")
    result = DiffResult(a=side, b=side, maps=maps, left_out=[], config_changes=[],
                        threshold=None)
    assert "3 shared maps (of 3 images, 2 classes, 1 method: not every class of every image)" \
        in console_lines(result)[0]
    page = render_page(result, [])
    assert "The same in every map of both runs: probability." in page
    numbers = page.split('id="numbers"')[1].split("</section>")[0]
    assert numbers.count("<tr><th>gradcam</th>") == 1  # cat's peak moved; dog's did not


def test_a_correlation_just_under_one_is_not_shown_as_one():
    """0.9996 read as '1.00' on the diff page, as if the maps had not changed."""
    from explain.writers.pageformat import correlation
    assert correlation(0.9996) == "0.9996" and correlation(0.99999) == "0.99999"
    assert correlation(1.0) == "1.00" and correlation(0.5) == "0.500"
    assert correlation(-0.12345) == "-0.123" and correlation(None) == "–"
    assert correlation(1 - 1e-9) == "0.9999999" and correlation(float("nan")) == "–"
    assert correlation(-0.9996) == "-0.9996" and correlation(-1 + 1e-9) == "-0.9999999"
    assert correlation(-1.0) == "-1.00"


def test_a_yes_or_no_change_gets_the_sign_test_as_the_methods_table_does():
    """Five images whose pointing game all flipped from a miss to a hit: the bootstrap says
    [+1, +1], but no paired test finds that at 95% (p = 0.0625): the interval reaches 0, as
    the methods table's does; a number that is no yes-or-no keeps its bootstrap interval."""
    from explain.diff.numbers import Change, _intervals
    made = [Change(method="gradcam", class_name="cat", name=name, maps=5, mean_a=0.0,
                   mean_b=1.0, mean_change=1.0, largest=1.0, where="im0")
            for name in ("pointing_hit", "energy_in_box")]
    flips = np.ones(5)
    _intervals(made, [flips, flips], seed=0)
    assert [(c.low, c.high) for c in made] == [(0.0, 1.0), (1.0, 1.0)]
    six = [Change(**{**made[0].__dict__, "maps": 6})]
    _intervals(six, [np.ones(6)], seed=0)  # 6 of 6: p = 0.03125, found
    assert (six[0].low, six[0].high) == (1.0, 1.0)


def test_a_changed_prediction_is_one_line_on_the_page_and_the_console(runs, capsys, tmp_path):
    """The Read-first box said each image's changed prediction on a line of its own (36 for
    a newcomer's dataset); the page and the console now share one line."""
    a, b = runs

    def flipped(data):
        for entry in data["images"]:
            entry["predicted"] = "dog" if entry["predicted"] == "cat" else "cat"
    other = derive(b, tmp_path / "other", change=flipped)
    code, out, _ = diff(capsys, a, other, "--out", tmp_path)
    (line,) = [x.strip() for x in out if "prediction changed on" in x]
    assert line.startswith("prediction changed on 3 image(s): ") and " -> " in line
    html = (tmp_path / "diff-a-other" / "diff.html").read_text(encoding="utf-8")
    box = html[html.index("<h2>Read first</h2>"):html.index('<section id="runs">')]
    assert box.count("prediction changed on") == 1 and html_escape(line) in box

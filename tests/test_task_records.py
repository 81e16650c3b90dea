"""Detection and segmentation runs as their records tell them: ``explain diff`` of two
detection runs pairs each map with the map of the same box (a map's class is its box's rank,
'dog-1', which another run may give another box), an image without a detection has its row
in summary.csv, and the report rebuilt from an interrupted task run has the notes of a
finished run's report.

The model: a random-weight Faster R-CNN MobileNetV3-FPN as in test_segdet.py (its boxes score
0.338 alike); LayerCAM at an FPN level's convolution gives each box a map of its own (EigenCAM,
class-agnostic, and Grad-CAM here give every box of an image the same map)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import torchvision

from conftest import IMAGES, save_config
from helpers import cli, interrupted
from explain.diff.boxes import boxes_overlap

DET_ARGS = dict(num_classes=3, min_size=128, max_size=192, rpn_pre_nms_top_n_test=50,
                rpn_post_nms_top_n_test=10, box_detections_per_img=5)
ARCH = "torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A folder with the detector's state_dict (seed 0) under models/."""
    root = tmp_path_factory.mktemp("taskrecords")
    (root / "models").mkdir()
    torch.manual_seed(0)
    det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, **DET_ARGS).eval()
    torch.save(det.state_dict(), root / "models" / "detector.pt")
    return root


def det_config(root: Path, name: str, size: int = 128, **detection: Any) -> Path:
    """``root``/``name``.yaml: the detector of ``root``/models on cat.jpg and both.jpg,
    LayerCAM at backbone.fpn.layer_blocks.0, the 3 best boxes scoring 0.3 or more
    (``detection`` replaces these), maps saved, results under ``root``/results."""
    data = {"name": name, "task": "detection",
            "model": {"file": str(root / "models" / "detector.pt"), "arch": ARCH,
                      "arch_args": DET_ARGS},
            "classes": {"cat": 1, "dog": 2},
            "images": [str(IMAGES / "cat.jpg"), str(IMAGES / "both.jpg")],
            "preprocess": {"size": size, "mean": [0, 0, 0], "std": [1, 1, 1]},
            "target_layers": ["backbone.fpn.layer_blocks.0"], "methods": ["layercam"],
            "metrics": [], "detection": {"score_threshold": 0.3, "max_boxes": 3, **detection},
            "output": {"dir": str(root / "results"), "save_arrays": True}}
    return save_config(root, name, data)


@pytest.fixture(scope="module")
def run_a(tree) -> Path:
    """The detector's run at 128 px: 3 boxes on each image, each with a map of its own."""
    from explain.cli import main
    assert main([str(det_config(tree, "a")), "--quiet"]) == 0
    return tree / "results" / "a"


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


def reranked(run: Path, out: Path, renames: dict[str, dict[str, Optional[str]]]) -> Path:
    """A copy of ``run`` as if its detector had ranked its boxes otherwise: per image, a
    detection's name -> its name in the copy (None: the box was not found), its records and
    map files renamed alike (dropped with the box)."""
    shutil.copytree(run, out)
    summary = summary_of(out)
    for entry in summary["images"]:
        new = renames.get(entry["id"], {})
        found = [{**f, "name": new.get(f["name"], f["name"])}
                 for f in entry["detections"]["explained"]]
        entry["detections"]["explained"] = sorted((f for f in found if f["name"]),
                                                  key=lambda f: f["name"])
        files = {}  # every map file read first: a new name may be another map's old one
        for rec in entry["cams"]:
            for rel in (rec["file"], rec["files"]["array"]):
                files[rel] = (out / rel).read_bytes()
                (out / rel).unlink()
        cams = []
        for rec in entry["cams"]:
            name = new.get(rec["class"], rec["class"])
            if name is None:
                continue
            for holder, key in ((rec, "file"), (rec["files"], "array")):
                old = holder[key]
                holder[key] = old.replace(f"__{rec['class']}.", f"__{name}.")
                (out / holder[key]).write_bytes(files[old])
            rec["class"] = name
            cams.append(rec)
        entry["cams"] = sorted(cams, key=lambda r: r["class"])
    summary["counts"]["maps"] = sum(len(e["cams"]) for e in summary["images"])
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out


# ---- explain diff of two detection runs: maps paired by box ---------------------------------

def test_diff_pairs_detection_maps_by_box_not_by_rank(run_a, tmp_path, capsys):
    """Run B: run A's boxes ranked otherwise on both.jpg (A's dog-1 is B's dog-3, ...) and
    one box not found on cat.jpg (A's dog-2; A's dog-3 is B's dog-2 then). Each map is
    compared with the map of its box (equal: r = 1 exactly), B's name beside A's; A's lost
    box is listed, not compared. Matched by name, both.jpg's dog-1 was compared with the map
    of another box (r 0.08), cat.jpg's dog-2 too, and dog-3 was called a class of A only."""
    b = reranked(run_a, tmp_path / "b", {
        "both": {"dog-1": "dog-3", "dog-2": "dog-1", "dog-3": "dog-2"},
        "cat": {"dog-2": None, "dog-3": "dog-2"}})
    code, err, out = cli(capsys, "diff", run_a, b, "--out", tmp_path / "out")
    assert code == 0, err
    rows = read_csv(tmp_path / "out" / "diff-a-b" / "diff.csv")
    assert [(r["image"], r["class"], float(r["correlation"]), float(r["max_abs_diff"]))
            for r in rows] == [("cat", "dog-1", 1.0, 0.0), ("cat", "dog-3", 1.0, 0.0),
                               ("both", "dog-1", 1.0, 0.0), ("both", "dog-2", 1.0, 0.0),
                               ("both", "dog-3", 1.0, 0.0)]
    assert [r.get("class_b") for r in rows] == ["dog-1", "dog-2", "dog-3", "dog-1", "dog-2"]
    text = re.sub(r"\s+", " ", out + err)
    assert "left out: 1 detection(s) only in A (no box of its label in B overlaps it with IoU " \
        "0.5 or more; not compared): cat/dog-2" in text
    assert "only in B" not in text and "in one run only" not in text and "classes only" not in text
    html = (tmp_path / "out" / "diff-a-b" / "diff.html").read_text(encoding="utf-8")
    assert "cat/dog-2" in html
    # the groups: a class's boxes over the images (dog-1 is another box on each image; it
    # was 'eigencam / dog-1 ... over 2 maps'), the worst named by its image and box
    from explain.diff import compute, open_side
    from explain.diff.numbers import groups
    (group,) = groups(compute(open_side(run_a, "A"), open_side(b, "B"), None)[0])
    assert (group.class_name, group.maps) == ("dog", 5)
    assert re.fullmatch(r"(cat|both) \(dog-[123]\)", group.worst)
    assert " / dog: map r 1.000 on all 5 map(s)" in text


def _boxes(run: Path, scale_to: Optional[dict] = None) -> dict[tuple[str, str], tuple]:
    """(image, name) -> (label, box) of a run's explained detections; with ``scale_to``
    (another run's summary), each box scaled to that run's input size of its image."""
    sizes = {e["id"]: e["input_size"] for e in (scale_to or summary_of(run))["images"]}
    out = {}
    for entry in summary_of(run)["images"]:
        (h, w), (th, tw) = entry["input_size"], sizes[entry["id"]]
        for found in entry["detections"]["explained"]:
            x0, y0, x1, y1 = found["box"]
            out[(entry["id"], found["name"])] = (
                found["label"], [x0 * tw / w, y0 * th / h, x1 * tw / w, y1 * th / h])
    return out


def test_diff_of_detection_runs_at_two_sizes_pairs_the_boxes_that_overlap(tree, run_a,
                                                                           tmp_path, capsys):
    """Run B at 112 px: the detector finds some of A's boxes (scaled) under other ranks, and
    others not among its 3 best. Every compared map's two boxes have one label and IoU 0.5 or
    more (B's scaled to A's input); every box left is listed, none of A's overlapping one of
    B's of its label that much; some pairs have other names (by name, other boxes)."""
    from explain.cli import main
    assert main([str(det_config(tree, "small", size=112)), "--quiet"]) == 0
    b = tree / "results" / "small"
    code, err, out = cli(capsys, "diff", run_a, b, "--out", tmp_path)
    assert code == 0, err
    rows = read_csv(tmp_path / "diff-a-small" / "diff.csv")
    boxes_a, boxes_b = _boxes(run_a), _boxes(b, summary_of(run_a))
    for r in rows:
        r.setdefault("class_b", r["class"])  # B's name: matched by name, A's
        (label_a, box_a), (label_b, box_b) = (boxes_a[(r["image"], r["class"])],
                                              boxes_b[(r["image"], r["class_b"])])
        assert label_a == label_b and boxes_overlap(box_a, box_b) >= 0.5, r
        assert r["resized"] == "True"
    assert any(r["class"] != r["class_b"] for r in rows), rows
    lone_a = [k for k in boxes_a if k not in {(r["image"], r["class"]) for r in rows}]
    lone_b = [k for k in boxes_b if k not in {(r["image"], r["class_b"]) for r in rows}]
    assert all(boxes_overlap(boxes_a[ka][1], boxes_b[kb][1]) < 0.5 for ka in lone_a for kb in lone_b
               if ka[0] == kb[0] and boxes_a[ka][0] == boxes_b[kb][0])
    text = re.sub(r"\s+", " ", out + err)
    for label, lone in (("A", lone_a), ("B", lone_b)):
        assert lone and f"{len(lone)} detection(s) only in {label} " in text
        listed = text.split(f"only in {label} ", 1)[1].split("not compared): ", 1)[1]
        assert all(f"{image}/{name}" in listed for image, name in lone)


# ---- summary.csv: an image without a detection has its row ---------------------------------

def test_an_image_without_a_detection_has_a_row_in_summary_csv(tree, run_a):
    """No box scores 0.99: each image gets one row (summary.csv was empty, as if no image had
    been read): its prediction '(none)' and best box scores, class '(none)', no method.
    Beside images with maps the row has the columns of theirs, none added, the map's empty."""
    from explain.cli import main
    from explain.reportload import load_run
    from explain.writers.summary import csv_rows
    assert main([str(det_config(tree, "nobox", score_threshold=0.99)), "--quiet"]) == 0
    run = tree / "results" / "nobox"
    rows = read_csv(run / "summary.csv")
    probabilities = {e["id"]: e["probabilities"] for e in summary_of(run)["images"]}
    assert [list(r.items()) for r in rows] == [
        [("image", i), ("predicted", "(none)"), ("p_cat", "0.0"),
         ("p_dog", str(probabilities[i]["dog"])), ("class", "(none)"), ("method", "")]
        for i in ("cat", "both")]
    assert 0 < float(rows[0]["p_dog"]) < 0.99
    mixed = load_run(run_a).summary  # cat.jpg with its maps, both.jpg without a detection
    mixed.images[1] = load_run(run).summary.images[1]
    header = next(csv.reader(io.StringIO((run_a / "summary.csv").read_text())))
    table = csv_rows(mixed)
    assert [list(row) for row in table] == [header] * 4
    assert [(r["image"], r["class"], r["method"]) for r in table] == [
        ("cat", "dog-1", "layercam"), ("cat", "dog-2", "layercam"), ("cat", "dog-3", "layercam"),
        ("both", "(none)", None)]
    assert all(v is None for k, v in table[3].items()
               if k not in ("image", "predicted", "class") and not k.startswith("p_"))


# ---- the report rebuilt from an interrupted run: the task notes -----------------------------

@pytest.mark.parametrize("settings, note", [
    ({"score_threshold": 0.99}, "detection: no detection of a named class scores at least "
                                "score_threshold 0.99 on 1 image(s): cat; nothing to explain "
                                "there"),
    ({"max_boxes": 2}, "detection: 1 image(s) have more than max_boxes (2) detections above "
                       "the threshold; the best 2 of each were explained")])
def test_a_report_rebuilt_from_an_interrupted_detection_run_has_its_task_notes(
        tree, tmp_path, capsys, settings, note):
    """Stopped as the second image's item file is written: ``explain report`` of the folder
    says of cat.jpg what a finished run's report says (notes from the item files' records;
    the finished run's own note for two images is test_segdet's)."""
    shutil.copytree(tree / "models", tmp_path / "models")
    run = interrupted(det_config(tmp_path, "exp", **settings), tmp_path / "out", "item", 2)
    assert not (run / "summary.json").exists() and (run / "items" / "cat.json").exists()
    code, err, _ = cli(capsys, "report", run)
    assert code == 0, err
    html = (run / "report.html").read_text(encoding="utf-8")
    notes = re.findall(r"<li>([^<]*)</li>", html)
    assert any(n == note or n.startswith(note + "; the best box scores ") for n in notes), notes


def test_diff_of_detection_runs_without_a_shared_box_says_which_boxes(run_a, tmp_path, capsys):
    """Every box of B elsewhere (a corner of the image): no map is shared, and the one line
    says it is the boxes, listing A's, not that the runs explain other classes or methods."""
    b = shutil.copytree(run_a, tmp_path / "b")
    summary = summary_of(b)
    for entry in summary["images"]:
        for found in entry["detections"]["explained"]:
            found["box"] = [0.0, 0.0, 2.0, 2.0]
        for rec in entry["cams"]:
            rec["detection"]["box"] = [0.0, 0.0, 2.0, 2.0]
    (b / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    code, err, _ = cli(capsys, "diff", run_a, b, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 0, err
    assert "the runs share no map (image x class x method)" in err
    assert f"{b}; 6 detection(s) only in A (no box of its label in B overlaps it" in err
    assert "cat/dog-1" in err and "other classes or methods" not in err


def test_a_detection_runs_inside_outside_is_the_median_of_its_maps_ratios(run_a):
    """The Methods table averaged the maps' inside / outside ratios: one map with almost
    nothing outside its box (a ratio in the hundreds) made a method's number 62 where its
    maps said 0.3 to 2.8. It is their median, and the header and notebook say so."""
    import numpy as np

    from explain.api import load
    summary = summary_of(run_a)
    ratios = [rec["detection"]["inside_outside"] for image in summary["images"]
              for rec in image["cams"] if rec["detection"]["inside_outside"] is not None]
    assert len(ratios) >= 3
    task = summary["task"]
    assert task["medians"] == ["inside_outside"]
    assert task["means"]["layercam"]["inside_outside"] == pytest.approx(np.median(ratios),
                                                                        abs=1e-6)
    assert task["means"]["layercam"]["energy_in_box"] == pytest.approx(np.mean(
        [rec["detection"]["energy_in_box"] for image in summary["images"]
         for rec in image["cams"]]), abs=1e-6)
    page = (run_a / "report.html").read_text(encoding="utf-8")
    assert "<th>inside / outside <small>(median)</small></th>" in page
    assert "its column is the median of the maps' ratios" in page
    assert "inside / outside (median)" in load(run_a)._repr_html_()

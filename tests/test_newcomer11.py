"""Newcomer 11: a teaching assistant grading students' hand-written Grad-CAM / LayerCAM folders
with compare.reference_dir on the course config, one run per student, and explain diff."""

import shutil

import numpy as np
import pytest

import explain
from explain.compare import why_references_differ
from explain.diff import diff_runs
from explain.results import CompareRow
from tests.conftest import make_course_tree

SIZE = {"size": [112, 112]}
KEYS = [(i, c, m) for i in ("cat", "dog", "both") for c in ("cat", "dog")
        for m in ("gradcam", "layercam")]


def _run(tree, name, refs=None, **overrides):
    lines = []
    compare = {"enabled": True, "reference_dir": str(refs)} if refs else {"enabled": False}
    study = explain.run(tree / "configs" / "alexnet_catdog.yaml", name=name, progress=False,
                        log=lines.append, metrics=[], preprocess=SIZE, compare=compare,
                        channels={"enabled": False}, **overrides)
    return study, lines


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The course tree with the small AlexNet, and the library's own maps at features.10 (a
    correct student's) and at features.8 (a student who hooked another layer)."""
    tree = make_course_tree(tmp_path_factory.mktemp("ta"), small=True)
    right, _ = _run(tree, "maps10")
    other, _ = _run(tree, "maps8", layer="features.8")
    return tree, right, other


def _student(tree, name, study, rename=lambda i, c, m: f"{i}__{c}__{m}.npy", keys=KEYS):
    folder = tree / "students" / name
    folder.mkdir(parents=True)
    for i, c, m in keys:
        np.save(folder / rename(i, c, m), study.map(i, c, m))
    return folder


def test_agree_over_part_of_the_maps_says_how_many_had_no_file(course):
    """A student without the dog maps got "gradcam: agree (... over 3 maps ...)": read as a
    full mark, and the report's warnings and methods table never said 6 maps had no file."""
    tree, right, _ = course
    refs = _student(tree, "gina", right, keys=[k for k in KEYS if k[1] == "cat"])
    study, lines = _run(tree, "gina", refs)
    gradcam = study.summary.compare["per_method"]["gradcam"]
    assert gradcam["verdict"] == "agree" and gradcam["missing"] == 3
    assert "over 3 of 6 maps (3 without a reference file)" in study.summary.compare["verdicts"][0]
    page = (study.folder / "report.html").read_text(encoding="utf-8")
    assert "compare: 6 map(s) had no reference file (first: cat__dog__gradcam)" in page


def test_swapped_classes_are_named_for_layercam_too(course):
    """Swapped class indices were named for Grad-CAM only: LayerCAM's two class maps of an
    image are alike (r 0.84 on the course AlexNet), so a swapped map at r 1.00 with the other
    class's map was blamed on the inplace-ReLU trap."""
    tree, right, _ = course
    swap = {"cat": "dog", "dog": "cat"}
    refs = _student(tree, "carol", right, rename=lambda i, c, m: f"{i}__{swap[c]}__{m}.npy")
    study, _ = _run(tree, "carol", refs)
    for method in ("gradcam", "layercam"):
        note = study.summary.compare["per_method"][method]["note"]
        assert "are the class indices in your script swapped?" in note, (method, note)


def test_maps_of_another_layer_are_not_only_blamed_on_the_trap(course):
    """A student's maps of features.8 were told only about the inplace-ReLU trap."""
    tree, _, other = course
    refs = _student(tree, "erin", other)
    study, _ = _run(tree, "erin", refs)
    note = study.summary.compare["per_method"]["layercam"]["note"]
    assert "a map of another layer than the run's target_layers" in note


def test_same_shape_differ_names_the_input():
    """Maps made from the photo divided by 255 before the resize (the order docs/compare.md
    gave) differ by 0.07 at r 1.00; the note named only the resize and scaling of the map."""
    rows = [CompareRow(image="cat", class_name=c, method="gradcam", max_abs=0.07,
                       mean_abs=0.01, pearson=0.999, iou_top20=0.9) for c in ("cat", "dog")]
    note = why_references_differ(rows)
    assert "a slightly different input (the photo resized as 8-bit RGB, then / 255" in note


def test_unmatched_name_in_another_order_gets_its_meant_name(course):
    """gradcam_both_cat.npy (the student's own order) matched nothing, with no hint."""
    tree, right, _ = course
    refs = _student(tree, "frank", right, rename=lambda i, c, m: f"{m}_{i}_{c}.npy")
    _, lines = _run(tree, "frank", refs)
    text = "\n".join(lines)
    assert "(first: gradcam_both_cat.npy, which looks meant for both__cat__gradcam.npy " \
           "(its parts in another order))" in text


def test_diff_of_two_students_names_their_verdicts(course, tmp_path):
    """explain diff of two students' runs said only "r 1.000" (one model, the same maps):
    nothing of their compare verdicts, which are what differs."""
    tree, right, _ = course
    good = _student(tree, "alice", right)
    swap = {"cat": "dog", "dog": "cat"}
    bad = tree / "students" / "carol2"
    shutil.copytree(good, bad)
    for i, c, m in KEYS:
        shutil.copy(good / f"{i}__{c}__{m}.npy", bad / f"{i}__{swap[c]}__{m}.npy")
    a, _ = _run(tree, "alice", good)
    b, _ = _run(tree, "carol2", bad)
    result = diff_runs(a.folder, b.folder, out_root=tmp_path)
    assert any(line.startswith("  compare gradcam: agree -> differ (max |diff| ")
               for line in result.lines), result.lines
    page = (result.out / "diff.html").read_text(encoding="utf-8")
    assert "compare verdicts (A -> B)" in page and "layercam: agree -&gt; differ" in page


def test_diff_names_the_verdicts_of_the_configs_methods_only(course, tmp_path):
    """A shared summary.json may list 10,000 per_method entries (the read-back bound): the
    diff's verdict lines are those of the runs' configs' methods, each verdict short."""
    import json
    tree, right, _ = course
    a, _ = _run(tree, "amy", _student(tree, "amy", right))
    shared = tmp_path / "shared"
    shutil.copytree(a.folder, shared)
    data = json.loads((shared / "summary.json").read_text())
    per_method = data["compare"]["per_method"]
    per_method["gradcam"]["verdict"] = "agree" + "!" * 5000
    per_method.update({f"m{i}": {"verdict": "differ", "max_abs": 1.0, "maps": 1}
                       for i in range(5000)})
    (shared / "summary.json").write_text(json.dumps(data))
    result = diff_runs(a.folder, shared, out_root=tmp_path / "out")
    lines = [line for line in result.lines if line.startswith("  compare ")]
    assert [line.split(":")[0] for line in lines] == ["  compare gradcam", "  compare layercam"]
    assert lines[0].startswith("  compare gradcam: agree -> agree!!!") and len(lines[0]) < 150

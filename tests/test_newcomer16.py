"""Newcomer 16: a student doing the course lab (AlexNet cat/dog, hand-written Grad-CAM and
LayerCAM compared with compare.reference_dir) and what the messages told them."""

from __future__ import annotations

import cv2
import numpy as np

from explain.compare import Comparison
from explain.outputs import RunFolder


def _compared(tmp_path, library: np.ndarray, write) -> dict:
    """The verdict of a comparison, as a run makes it, of ``library`` with the file ``write``
    puts at refs/cat__cat__gradcam.<suffix>."""
    refs = tmp_path / "refs"
    refs.mkdir(parents=True)
    write(refs / "cat__cat__gradcam")
    run = RunFolder(tmp_path / "run")
    run.root.mkdir(parents=True)
    comparison = Comparison(run, 1e-4, refs)
    reference = comparison.reference_for("cat", "cat", "gradcam", library.shape, None)
    row = comparison.add("cat", "cat", "gradcam", library, reference)
    return comparison.finish([row])


def test_a_png_saved_with_astype_uint8_agrees(tmp_path):
    """The usual way to save a 0..1 map as an 8-bit PNG, (m * 255).astype(np.uint8) (what the
    colour-picture message says: 'cv2.imwrite of it as uint8'), truncates: up to a whole 1/255
    below. A hand-written map 2e-5 off the library's (well within the 1e-4 tolerance) then
    differed by 1/255 + 2e-5 and was called "differ ... the same map resized or scaled another
    way"; the rounding and the tolerance add up."""
    k = np.arange(8, 248, dtype=np.float64)
    student = ((k + 0.998) / 255).reshape(12, 20)  # m * 255 just under the next integer
    library = (student + 2e-5).astype(np.float32)
    result = _compared(tmp_path, library, lambda p: cv2.imwrite(
        str(p.with_suffix(".png")), (student * 255).astype(np.uint8)))
    info = result["per_method"]["gradcam"]
    assert 1 / 255 < info["max_abs"] < 1 / 255 + 1e-4
    assert info["verdict"] == "agree" and "note" not in info
    assert result["verdicts"] == [f"gradcam: agree (max |diff| {info['max_abs']:.2e} over 1 "
                                  f"maps, tolerance 0.0001; 1/255 for the 8-bit PNG maps, "
                                  f"their rounding)"]
    # a map more than the rounding and the tolerance away still differs
    result = _compared(tmp_path / "b", library, lambda p: cv2.imwrite(
        str(p.with_suffix(".png")), (np.clip(student - 2 / 255, 0, 1) * 255).astype(np.uint8)))
    assert result["per_method"]["gradcam"]["verdict"] == "differ"


def _blob(y: float, x: float) -> np.ndarray:
    yy, xx = np.mgrid[0:24, 0:24]
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 30.0).astype(np.float32)


def test_a_differ_in_shape_names_a_model_left_in_training_mode(tmp_path):
    """A hand-written script without model.eval(): AlexNet's Dropout changes every pass, and
    the maps differed from the library's at r 0.43 (Grad-CAM) and 0.85 (LayerCAM). The note
    named only another layer or the inplace-ReLU trap, and the student's hook had the clone."""
    library = _blob(8, 8)
    student = 0.6 * _blob(8, 8) + _blob(16, 18)
    result = _compared(tmp_path, library, lambda p: np.save(p.with_suffix(".npy"), student))
    note = result["per_method"]["gradcam"]["note"]
    assert "the maps differ in shape" in note
    assert "model.eval()" in note and "Dropout" in note


def test_a_reference_named_by_class_index_points_to_that_class():
    """A student names the files by the output index, 'both__0__gradcam.npy' (class 0 = cat).
    The hint said "which looks meant for both__dog__gradcam.npy" (the closest name by
    letters): renaming by it swaps the classes. It now names the class of that index."""
    from types import SimpleNamespace
    from explain.writers.summary import compare_file_lines
    missing = [f"{i}__{c}__gradcam" for i in ("cat", "dog", "both") for c in ("cat", "dog")]
    summary = SimpleNamespace(
        compare={"missing": missing, "unmatched": ["both__0__gradcam.npy"]},
        config=SimpleNamespace(methods=[SimpleNamespace(name="gradcam")],
                               classes={"cat": 0, "dog": 1}))
    line = compare_file_lines(summary)[1]
    assert "both__dog__gradcam" not in line
    assert ("(first: both__0__gradcam.npy, whose class is written as its output index 0: "
            "files name the class, both__cat__gradcam.npy (classes: cat = 0, dog = 1))") in line


def test_the_docs_say_what_the_notebook_prints_with_the_stand_in_alexnet():
    """With the README's stand-in AlexNet in models/, course_lab.ipynb step 4 printed
    'largest difference over all 12 maps: 2.5e-06' where docs/api.md and docs/compare.md
    promised 0 (that is the demo network's number)."""
    from conftest import REPO
    for page in ("docs/api.md", "docs/compare.md"):
        text = " ".join((REPO / page).read_text(encoding="utf-8").split())
        assert "2.5e-06 with the" in text and "stand-in AlexNet" in text, page

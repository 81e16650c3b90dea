"""Reference map files (explain.referencefiles): a suffix in capitals (cv2.imwrite keeps the
'.PNG' it is given) is found, read and checked like a lower-case one; a mixed-case one is never
looked for and is listed as unmatched, not silently missing."""

from __future__ import annotations

import cv2
import numpy as np

from explain.compare import Comparison
from explain.outputs import RunFolder
from explain.referencefiles import (check_references, find_reference, png_step, read_reference,
                                    unmatched_files)


def _map() -> np.ndarray:
    yy, xx = np.mgrid[0:12, 0:16]
    return (np.exp(-((yy - 4) ** 2 + (xx - 10) ** 2) / 8.0)).astype(np.float32)


def test_capital_suffixes_are_found_read_and_stepped(tmp_path):
    m = _map()
    cv2.imwrite(str(tmp_path / "cat__a__gradcam.PNG"), np.uint8(np.round(m * 255)))
    np.save(tmp_path / "dog__a__gradcam.npy", m)
    (tmp_path / "dog__a__gradcam.npy").rename(tmp_path / "dog__a__gradcam.NPY")
    png = find_reference(tmp_path, "cat", "a", "gradcam")
    npy = find_reference(tmp_path, "dog", "a", "gradcam")
    assert png is not None and png.name == "cat__a__gradcam.PNG"
    assert npy is not None and npy.name == "dog__a__gradcam.NPY"
    assert np.abs(read_reference(png) - m).max() <= 0.5 / 255 + 1e-7
    assert np.array_equal(read_reference(npy), m)
    assert png_step(png) == 1 / 255 and png_step(npy) == 0.0
    assert unmatched_files(tmp_path, {"cat__a__gradcam", "dog__a__gradcam"}) == []


def test_a_broken_capital_file_is_refused_before_the_run(tmp_path):
    (tmp_path / "cat__a__gradcam.NPY").write_bytes(b"not an array")
    try:
        check_references(tmp_path, ["cat"], ["a"], ["gradcam"])
    except Exception as exc:  # ExplainError naming the file
        assert "cat__a__gradcam.NPY" in str(exc) and "not a readable .npy" in str(exc)
    else:
        raise AssertionError("a broken .NPY reference passed the check")


def test_a_mixed_case_suffix_is_listed_unmatched_and_the_map_missing(tmp_path):
    cv2.imwrite(str(tmp_path / "cat__a__gradcam.Png"), np.uint8(_map() * 255))
    assert find_reference(tmp_path, "cat", "a", "gradcam") is None
    assert unmatched_files(tmp_path, {"cat__a__gradcam"}) == ["cat__a__gradcam.Png"]


def test_a_run_compares_with_a_capital_png(tmp_path):
    """Comparison, as a run makes it, takes the '.PNG' file: a row, agreeing within 1/255."""
    refs = tmp_path / "refs"
    refs.mkdir()
    m = _map()
    cv2.imwrite(str(refs / "cat__a__gradcam.PNG"), np.uint8(np.round(m * 255)))
    run = RunFolder(tmp_path / "run")
    comparison = Comparison(run, 1e-4, refs)
    reference = comparison.reference_for("cat", "a", "gradcam", m.shape, None)
    assert reference is not None and np.abs(reference - m).max() <= 0.5 / 255 + 1e-7

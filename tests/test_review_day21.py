"""Review day 21: the compare changes for grading, explain diff's verdict lines and the SVD
bounds of explain.pace (a helper's findings)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pytorch_grad_cam import EigenCAM
from torch import nn

import explain
from explain.enginedata import LayerInfo
from explain.methods import register, unregister
from explain.models.layouts import Layout
from explain.pace import check_sizes
from explain.writers.report import rebuild
from helpers import tiny_config, tiny_net


class _MyEigenCAM(EigenCAM):
    """A registered method that is the library's EigenCAM under another name."""


def test_a_registered_subclass_of_eigencam_has_its_full_svd_sized():
    """explain.eigen swaps only the library's own classes for the thin SVD: a registered
    subclass keeps the library's full SVD (an n x n U), but explain.pace gave it no SVD at all,
    so an 8-channel layer of 256 x 256 positions (64 GiB of U) ran unbounded."""
    register("myeigencam", _MyEigenCAM)
    try:
        layer = LayerInfo("target_layers[0] 'x'", nn.Identity(), (8, 256, 256), Layout("nchw"))
        with pytest.raises(explain.ExplainError) as info:
            check_sizes([SimpleNamespace(name="myeigencam", options={})], [layer], (256, 256),
                        8 * 2**30)
    finally:
        unregister("myeigencam")
    assert "methods.myeigencam: target_layers[0] 'x' has 65,536 positions of 8 channels, and " \
           "the method's 65,536 x 65,536 and 8 x 8 matrices need 64.0 GiB" in str(info.value)


def test_an_eigencam_named_as_base_method_is_thin_or_sized():
    """FinerCAM and SESS make their maps with ``base_method``: an EigenCAM named there ran the
    library's full SVD, unsized (pace saw FinerCAM, no SVD). It is made by explain's thin SVD
    now (constructor_options), and a registered subclass named there is sized as its own."""
    from explain.eigen import ThinEigenCAM
    from explain.methods import constructor_options
    layer = LayerInfo("target_layers[0] 'x'", nn.Identity(), (8, 256, 256), Layout("nchw"))
    finer = SimpleNamespace(name="finercam", options={"base_method": "EigenCAM"})
    assert constructor_options(finer)["base_method"] is ThinEigenCAM
    check_sizes([finer], [layer], (256, 256), 8 * 2**30)  # thin: no n x n matrix
    register("myeigencam", _MyEigenCAM)
    try:
        mine = SimpleNamespace(name="finercam", options={"base_method": "myeigencam"})
        assert constructor_options(mine)["base_method"] is _MyEigenCAM
        with pytest.raises(explain.ExplainError) as info:
            check_sizes([mine], [layer], (256, 256), 8 * 2**30)
    finally:
        unregister("myeigencam")
    assert str(info.value).startswith("methods.finercam: target_layers[0] 'x' has 65,536 "
                                      "positions of 8 channels")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A tiny run of the cat photo (classes a and b, Grad-CAM) against a reference folder that
    holds the a map, and the b map under a name in another order."""
    tmp = tmp_path_factory.mktemp("graded")
    torch.save(tiny_net(), tmp / "net.pth")
    refs = tmp / "refs"
    refs.mkdir()
    np.save(refs / "cat__a__gradcam.npy", np.eye(8, dtype=np.float32))
    np.save(refs / "gradcam__b__cat.npy", np.eye(8, dtype=np.float32))
    config = tiny_config(tmp, {"file": str(tmp / "net.pth")}, classes={"a": 0, "b": 1},
                         metrics=[], channels={"enabled": False}, output={"save_arrays": True},
                         compare={"enabled": True, "reference_dir": str(refs)})
    lines: list[str] = []
    study = explain.run(config, out=tmp / "results", progress=False, log=lines.append)
    return study.folder, lines


def _edited(folder, **compare) -> str:
    """The report rebuilt from the run's summary.json with ``compare``'s keys replaced (a
    shared run folder); the page's text."""
    path = folder / "summary.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["compare"].update(compare)
    path.write_text(json.dumps(data), encoding="utf-8")
    rebuild(folder)
    return (folder / "report.html").read_text(encoding="utf-8")


def test_a_shared_summarys_odd_compare_lists_are_one_line_not_a_traceback(graded, tmp_path):
    """The report's warnings read compare.missing and compare.unmatched, which summary.json's
    check left unread: {"missing": {"a": 1}} ended ``explain report`` in a KeyError, a number
    in a TypeError, [5] in an AttributeError; a name of 2 MB was quoted whole on the page."""
    import shutil
    folder = tmp_path / "shared"
    shutil.copytree(graded[0], folder)
    for odd, why in (({"missing": {"a": 1}}, "compare.missing: Input should be a valid list"),
                     ({"missing": 7}, "compare.missing: Input should be a valid list"),
                     ({"unmatched": [5]}, "compare.unmatched.0: Input should be a valid string")):
        saved = (folder / "summary.json").read_text(encoding="utf-8")
        with pytest.raises(explain.ExplainError) as info:
            _edited(folder, **odd)
        assert "summary.json: not a summary of this explain version (" + why in \
            str(info.value), odd
        (folder / "summary.json").write_text(saved, encoding="utf-8")
    page = _edited(folder, missing=["m" * 2_000_000])
    assert "compare: 1 map(s) had no reference file (first: mmm" in page
    assert len(page) < 200_000


def test_a_name_in_another_order_is_named_with_double_underscores_and_image_ids_of_words(
        graded):
    """'gradcam__b__cat.npy' was told it is 'a map of method 'cat', which this run does not
    make' (the method check came first), and 'gradcam_img_01_cat.npy' got no hint at all (the
    file's name was split at every '_', the missing map's at '__' only)."""
    from explain.reportload import load_run
    from explain.writers.summary import compare_file_lines
    folder, lines = graded
    assert "(first: gradcam__b__cat.npy, which looks meant for cat__b__gradcam.npy (its parts " \
           "in another order))" in "\n".join(lines)
    summary = load_run(folder).summary
    for unmatched, meant in (("gradcam_img_01_cat.npy", "img_01__cat__gradcam.npy"),
                             ("layercam-dog-my-photo.png", "my-photo__dog__layercam.png")):
        summary.compare = {**summary.compare, "unmatched": [unmatched],
                           "missing": ["img_01__cat__gradcam", "my-photo__dog__layercam"]}
        text = compare_file_lines(summary)[-1]
        assert f"(first: {unmatched}, which looks meant for {meant} (its parts in another " \
               f"order))" in text, text


def test_diff_says_a_verdict_over_part_of_the_maps(graded, tmp_path):
    """explain diff of a student with every file and one without half of them said "agree ->
    agree": the verdict's count of maps without a file (per_method missing) was dropped. An
    older summary.json without the count reads as before; a count that is no count is the
    summary's one-line refusal."""
    import shutil
    from explain.diff import diff_runs
    folder, _ = graded
    older = tmp_path / "older"
    shutil.copytree(folder, older)
    data = json.loads((older / "summary.json").read_text(encoding="utf-8"))
    verdict = data["compare"]["per_method"]["gradcam"].pop("missing") and \
        data["compare"]["per_method"]["gradcam"]["verdict"]
    (older / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    result = diff_runs(folder, older, out_root=tmp_path / "out")
    assert any(line.startswith(f"  compare gradcam: {verdict} over 1 of 2 maps (1 without a "
                               f"reference file) -> {verdict} (max |diff| ")
               for line in result.lines), result.lines
    data["compare"]["per_method"]["gradcam"]["missing"] = "many"
    (older / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(explain.ExplainError) as info:
        diff_runs(folder, older, out_root=tmp_path / "out2")
    assert "compare.per_method.gradcam.missing" in str(info.value)

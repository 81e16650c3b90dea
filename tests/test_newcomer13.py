"""Newcomer 13: a computer-vision student on the course's AlexNet (a random stand-in saved
whole), writing Grad-CAM and LayerCAM by hand, comparing them with --compare's reference folder,
then swapping the methods for Grad-CAM++ and ScoreCAM."""

from __future__ import annotations

import re

import numpy as np
import torch

from conftest import IMAGES, REPO, SMALL_SIZE, make_small_alexnet

from explain import compare, reference
from explain.results import CompareRow


def _student_gradcam(model, x: torch.Tensor, keep_the_copy: bool) -> np.ndarray:
    """Grad-CAM of class 0 at features.10 as a student writes it, at the input size;
    ``keep_the_copy``: the hook does ``output = output.clone()``, keeps that copy and returns
    it (the ReLU after it, inplace, then overwrites what was kept), else it keeps ``output``
    and returns a copy."""
    kept = {}

    def hook(module, inputs, output):
        handed = output.clone()
        kept["a"] = handed if keep_the_copy else output
        kept["a"].register_hook(lambda g: kept.__setitem__("g", g))
        return handed
    handle = model.features[10].register_forward_hook(hook)
    try:
        model.zero_grad()
        model(x)[0, 0].backward()
    finally:
        handle.remove()
    acts, grads = kept["a"][0].detach().numpy(), kept["g"][0].numpy()
    return reference.finish((grads.mean(axis=(1, 2))[:, None, None] * acts).sum(0),
                            tuple(x.shape[2:]))


def test_a_hook_that_keeps_the_copy_it_returns_is_named_in_the_differ_note():
    """The student's hook returned output.clone() but kept that same copy: Grad-CAM r 0.60
    to 0.86 against the library on the course AlexNet, LayerCAM agreeing. The note said 'a
    hook that keeps a layer's output without handing a copy on', which this hook did hand
    on: it now names a copy kept as well as returned, and says what to keep."""
    import explain
    model = make_small_alexnet()
    result = explain.cam(model, IMAGES / "cat.jpg", "features.10", "gradcam", targets=[0],
                         preprocess={"size": [SMALL_SIZE, SMALL_SIZE]})
    library, x = result.maps["gradcam"]["0"], result.input[None]
    right = _student_gradcam(model, x, keep_the_copy=False)
    wrong = _student_gradcam(model, x, keep_the_copy=True)
    assert np.abs(right - library).max() < 1e-4
    r = compare.pearson(library, wrong)
    assert r < 0.95  # the maps differ in shape: the note's branch below
    rows = [CompareRow(image="cat", class_name="cat", method="gradcam", max_abs=0.5,
                       mean_abs=0.1, pearson=v, iou_top20=0.6) for v in (r, 0.74, 0.86)]
    note = compare.why_references_differ(rows)
    assert "the maps differ in shape" in note
    assert "(no copy returned, or the copy kept as well as returned)" in note
    assert "keep output, return output.clone()" in note
    assert "without handing a copy on" not in note
    blank = rows[0].model_copy(update={"pearson": 0.0})
    flat = compare.why_references_differ([blank, rows[1]])
    assert "should return output.clone() and keep output itself" in flat


def test_the_trap_section_names_the_kept_copy():
    text = " ".join((REPO / "docs" / "compare.md").read_text().split())
    assert "keep `output` itself and return `output.clone()`" in text
    assert "forgot the clone, or kept the copy the hook returns" in text


def test_the_progress_bar_says_which_step_a_long_batch_is_in(tmp_path, capsys):
    """The course's three photos are one batch: the bar sat at 0/12 for 75 s (ScoreCAM, then
    ROAD on each image) and jumped to 12/12. It now names the step under way, the faithfulness
    of each image in turn, and ends without a stale step."""
    from helpers import CAT, cli, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    photos = [str(CAT), str(IMAGES / "dog.jpg")]
    config = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pt")}, images=photos,
                         classes={"cat": 0, "dog": 1}, targets="all",
                         metrics=[{"name": "road_combined", "percentiles": [50]}])
    code, err, _ = cli(capsys, config)
    assert code == 0, err
    # each redraw's first line, without the spaces tqdm pads it with over a longer one before
    shown = [part.strip().split("\n")[0].rstrip() for part in err.split("\r")]
    bars = [s for s in shown if s.startswith("CAMs:")]
    first = re.compile(r"0/4 \[\d\d:\d\d<\?, \?map/s, maps of 2 image\(s\)\]$")  # any time
    assert any(first.search(s) for s in bars), bars
    for step in ("faithfulness of cat (1 of 2)]", "faithfulness of dog (2 of 2)]"):
        assert any(s.endswith(step) for s in bars), (step, bars)
    last = [s for s in bars if "4/4" in s][-1]
    # the rate, as tqdm writes it: 'map/s', or 's/map' when a map takes over a second (busy)
    assert re.search(r"(map/s|s/map)\]$", last) and "faithfulness" not in last, last

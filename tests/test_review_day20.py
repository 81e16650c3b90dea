"""Review of the twentieth day's changes: model.in_channels on every path that runs the
user's network, and the positions x positions SVD of the eigen methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import explain
from explain.models.guard import MAX_MODULE_CALLS, mark_unvetted


def _grey_chain(links: int) -> nn.Module:
    """A grey network (Conv2d(1, ...)) whose forward makes ``links`` module calls."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Sequential(*[nn.Identity() for _ in range(links)]),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_explain_cam_bounds_an_unvetted_grey_network_as_it_runs_it():
    """explain.cam bounded a network explain.load_model read without trust by calling it on the
    RGB input itself: a grey network (model.in_channels: 1) failed there on its Conv2d(1, ...),
    the shapes-only pass gave no answer, and the network ran unbounded. It is bounded as the
    run gives it its input (the mean of the channels)."""
    photo = np.full((32, 32, 3), 120, np.uint8)
    small = mark_unvetted(_grey_chain(10))  # within the bound: runs, on one grey channel
    result = explain.cam(small, photo, "0", "gradcam", in_channels=1, classes=["a", "b"],
                         preprocess={"size": 32})
    assert result.maps["gradcam"]["a"].shape == (32, 32)
    chain = mark_unvetted(_grey_chain(MAX_MODULE_CALLS))
    with pytest.raises(explain.ExplainError) as info:
        explain.cam(chain, photo, "0", "gradcam", in_channels=1, classes=["a", "b"],
                    preprocess={"size": 32})
    assert f"over {MAX_MODULE_CALLS} module calls in one forward pass" in str(info.value)
    assert "too large to run here" in str(info.value)


def test_segeigencam_takes_a_thin_svd_and_gives_the_librarys_maps():
    """SegEigenCAM made the library's full SVD (a positions x positions U, 16 GiB on a
    full-resolution layer at 256 px) and explain.pace did not size it, as EigenCAM's was
    before explain.eigen. It is projected by the thin SVD: the library's maps, sign
    correction included, and no 6,144 x 6,144 U (151 MB) at a 64 x 96 layer."""
    from pytorch_grad_cam import SegEigenCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.svd_on_activations import \
        get_2d_projection_with_sign_correction as theirs
    import tracemalloc

    from explain.eigen import principal_projection, thin
    from helpers import engine_maps, library_map
    rng = np.random.default_rng(3)
    for channels, side in ((64, 9), (5, 12)):
        acts = rng.standard_normal((3, channels, side, side + 2)).astype(np.float32)
        acts[1] = -np.abs(acts[1])
        ours, lib = principal_projection(acts, signed=True), theirs(acts)
        assert np.abs(ours - lib).max() <= 1e-5 * np.abs(lib).max() and np.abs(lib).max() > 0.1
        assert (np.abs(ours.max(axis=(1, 2))) >= np.abs(ours.min(axis=(1, 2)))).all()
    assert thin(SegEigenCAM).__name__ == "ThinSegEigenCAM"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()
    x = torch.randn(2, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    ours = engine_maps(net, net[2], ["segeigencam"], x, [0, 1])["segeigencam"]
    for c in (0, 1):
        lib = library_map(SegEigenCAM, net, net[2], x, [ClassifierOutputTarget(c)] * 2)
        assert np.abs(ours[:, c] - lib).max() <= 1e-5 and ours[:, c].max() > 0.5
    tracemalloc.start()
    large = engine_maps(net, net[2], ["segeigencam"], torch.randn(1, 3, 64, 96), [0])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, peak
    assert large["segeigencam"].shape == (1, 1, 64, 96)


def test_in_channels_with_a_task_says_why_it_is_refused():
    """model.in_channels: 1 with task: segmentation was refused because 'it reads a
    classifier's class scores', which a grey network's channel count has nothing to do
    with; the line says the task's network is given RGB."""
    from pydantic import ValidationError

    from explain.config import Config
    with pytest.raises(ValidationError) as info:
        Config.model_validate({"task": "segmentation", "images": ["x.png"],
                               "model": {"builder": "explain.demo:catdog_efficientnet_lite0",
                                         "in_channels": 1}, "target_layers": ["auto"]})
    text = str(info.value)
    assert "model.in_channels: not available with task: segmentation" in text
    assert "given the 3 RGB channels" in text and "class scores" not in text


def test_a_grey_network_on_imagenets_mean_and_std_is_a_note(tmp_path):
    """The failure line told a grey network's user to set model.in_channels: 1 and nothing
    else; with ImageNet's three means and stds left as they were, the network was given the
    grey of three differently normalised channels (the grey as if normalised by mean 0.459
    and std 0.226, not its [0.5] / [0.5]) without a word. The line names mean and std, and
    a run on three values says so in a note; one value each is quiet."""
    from test_newcomer10 import _grey_net, _study
    for part in "abc":
        (tmp_path / part).mkdir()
    with pytest.raises(explain.ExplainError) as info:
        _study(tmp_path / "a", _grey_net(), preprocess={"size": 32})
    assert "set model.in_channels: 1" in str(info.value)
    assert "preprocess.mean and std the one value it was trained with" in str(info.value)
    lines = _study(tmp_path / "b", _grey_net(), preprocess={"size": 32},
                   model={"file": str(tmp_path / "b" / "net.pth"), "in_channels": 1})
    note = [line for line in lines if "differently normalised" in line]
    assert len(note) == 1, lines
    assert "as if normalised by mean 0.459 and std 0.226" in note[0]  # luma-weighted
    quiet = _study(tmp_path / "c", _grey_net(), preprocess={"size": 32, "mean": [0.5],
                                                            "std": [0.5]},
                   model={"file": str(tmp_path / "c" / "net.pth"), "in_channels": 1})
    assert not [line for line in quiet if "differently normalised" in line], quiet

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

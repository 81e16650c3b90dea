"""explain.eigen: EigenCAM and EigenGradCAM by a thin SVD give the library's maps, in a
fraction of the time and memory on an early layer."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import torch
from pytorch_grad_cam import EigenCAM, EigenGradCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from explain.eigen import ThinEigenCAM, principal_projection, thin
from helpers import engine_maps, library_map


@pytest.mark.parametrize("channels, side", [(256, 6), (8, 40), (64, 16), (300, 17), (40, 5)])
def test_the_projection_is_the_librarys(channels, side):
    """Tall, square and wide (positions x channels) matrices, signs of both kinds, a NaN: the
    same float32 values as the library's full SVD."""
    rng = np.random.default_rng(channels)
    acts = rng.standard_normal((2, channels, side, side + 1)).astype(np.float32)
    acts[1] = np.maximum(acts[1], 0)  # post-ReLU
    acts[0, 0, 0, 0] = np.nan
    ours, theirs = principal_projection(acts), get_2d_projection(acts)
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == (2, side, side + 1)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()
    assert np.abs(theirs).max() > 0.1  # not a comparison of zeros


def test_a_large_layer_takes_no_positions_x_positions_matrix():
    """A 64 x 96 layer of 8 channels, where the library's U is 6,144 x 6,144 (151 MB of
    float32, 2 to 5 s): a few copies of the 1.5 MB activations, in milliseconds."""
    acts = np.random.default_rng(0).standard_normal((1, 8, 64, 96)).astype(np.float32)
    tracemalloc.start()
    start = time.process_time()
    ours = principal_projection(acts)
    seconds, peak = time.process_time() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak
    assert seconds < 1.0, seconds
    assert ours.shape == (1, 64, 96) and np.abs(ours).max() > 0.1


def test_only_the_librarys_own_classes_are_swapped():
    class Mine(EigenCAM):
        pass
    assert thin(EigenCAM) is ThinEigenCAM and issubclass(ThinEigenCAM, EigenCAM)
    assert thin(EigenGradCAM).__name__ == "ThinEigenGradCAM" and thin(Mine) is Mine


def test_the_engine_maps_at_an_early_layer_are_the_librarys():
    """A small CNN's second conv at full resolution, both methods, two classes: the library's
    maps (at 24 x 32 positions); at 64 x 96, without the library's 6,144 x 6,144 U (151 MB an
    image) in numpy's memory."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()
    methods = ["eigencam", "eigengradcam"]
    x = torch.randn(2, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    ours = engine_maps(net, net[2], methods, x, [0, 1])
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    for name, cls in (("eigencam", EigenCAM), ("eigengradcam", EigenGradCAM)):
        for c in (0, 1):
            theirs = library_map(cls, net, net[2], x, [ClassifierOutputTarget(c)] * 2)
            assert np.abs(ours[name][:, c] - theirs).max() <= 1e-5, (name, c)
            assert ours[name][:, c].max() > 0.5, (name, c)
    tracemalloc.start()
    large = engine_maps(net, net[2], methods, torch.randn(1, 3, 64, 96), [0, 1])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, peak
    assert large["eigencam"].shape == (1, 2, 64, 96)

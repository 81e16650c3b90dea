"""Review day 21: the compare changes for grading, explain diff's verdict lines and the SVD
bounds of explain.pace (a helper's findings)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pytorch_grad_cam import EigenCAM
from torch import nn

import explain
from explain.enginedata import LayerInfo
from explain.methods import register, unregister
from explain.models.layouts import Layout
from explain.pace import check_sizes


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

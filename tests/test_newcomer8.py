"""A researcher's first study of a timm ViT and a ResNet over a small labelled folder: a model
with a fixed input size says what to check when an image of another shape reaches it, and
``Run.show`` marks an all-zero map as the report's card does."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import explain
from helpers import explain_error, tiny_net


class FixedSize(nn.Module):
    """A tiny classifier that, like a timm ViT, takes one input size only."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (32, 32), f"Input width ({x.shape[-1]}) doesn't match model (32)."
        return self.net(x)


def test_an_image_of_another_size_says_to_check_preprocess_size():
    square = np.full((32, 32, 3), 120, dtype=np.uint8)
    wide = np.full((32, 80, 3), 120, dtype=np.uint8)  # fed wider than 32: the model refuses
    text = explain_error(explain.cam, FixedSize(), [square, wide], "net.0", "gradcam",
                         classes=["cat", "dog"], preprocess={"size": 32})
    assert "forward pass failed on image1 (a 32x64 input)" in text
    assert "doesn't match model (32)" in text
    assert text.endswith("check preprocess.size ([H, W] feeds every image at that size) "
                         "and the model's input size")

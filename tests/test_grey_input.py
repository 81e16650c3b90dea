"""A grey network (model.in_channels: 1) is given the grey its training set was made with:
0.299 R + 0.587 G + 0.114 B, as Pillow's convert("L"), OpenCV's RGB2GRAY and torchvision's
Grayscale make it (the mean of R, G and B was given before: another grey for any colour
photo). A grey scan still gives its own grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from explain.config import GREY_WEIGHTS
from explain.models.heads import Classifier

CAT = Path(__file__).resolve().parent.parent / "images" / "cat.jpg"


def _seen(rgb: np.ndarray) -> np.ndarray:
    """What a Conv2d(1, ...) network receives from Classifier for an RGB photo in 0..1."""
    net, kept = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), {}
    net[0].register_forward_hook(lambda m, i, o: kept.setdefault("x", i[0].detach()))
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].float()
    Classifier(net, None, in_channels=1)(x)
    return kept["x"][0, 0].numpy()


def test_a_colour_photo_is_given_pillows_grey():
    photo = Image.open(CAT).convert("RGB").resize((48, 32))
    rgb = np.asarray(photo, dtype=np.float32) / 255
    pillow = np.asarray(photo.convert("L"), dtype=np.float32) / 255  # rounded to 8 bits
    seen = _seen(rgb)
    assert np.abs(seen - pillow).max() <= 0.5 / 255 + 1e-6
    mean = rgb.mean(axis=2)
    assert np.abs(seen - mean).max() > 10 / 255  # the old grey: another picture


def test_a_grey_scan_gives_its_own_grey_and_the_weights_sum_to_one():
    grey = np.random.default_rng(0).random((16, 20)).astype(np.float32)
    assert np.abs(_seen(np.repeat(grey[..., None], 3, axis=2)) - grey).max() <= 1e-6
    assert abs(sum(GREY_WEIGHTS) - 1.0) <= 1e-12

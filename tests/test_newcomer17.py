"""Newcomer 17: a researcher with torchvision segmenters and detectors (LR-ASPP, Faster R-CNN)
running segmentation and detection studies, and what the pictures, reports and messages told
them."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from explain.errors import ExplainError
from explain.models.heads import select_output
from explain.tasks.drawing import draw_boxes


def test_labels_of_boxes_sharing_the_top_edge_all_stay_readable():
    """Three detections of a 128 x 256 input, two of them touching the picture's top (as
    detections/both.png had them): there is no room above or below either, so both labels
    hung from the top and the second one covered the first ('cat-2 0.33 . 0.33', cat-1's
    label gone). Every label must keep its own pixels."""
    boxes = [([91.7, 0.0, 256.0, 127.9], "cat-1 0.33"), ([67.8, 0.0, 188.3, 121.3], "cat-2 0.33"),
             ([155.9, 54.4, 185.4, 116.0], "cat-3 0.33")]
    alone = np.zeros((128, 256, 3), np.uint8)
    draw_boxes(alone, boxes[:1])
    every = np.zeros((128, 256, 3), np.uint8)
    draw_boxes(every, boxes)
    inked = (alone.sum(axis=2) > 0) & (alone.sum(axis=2) < 3 * 255)  # cat-1's text pixels
    assert inked.sum() > 20
    assert np.array_equal(every[inked], alone[inked]), "cat-1's label was drawn over"


class _Segmenter(torch.nn.Module):
    def forward(self, x):
        return OrderedDict(out=torch.zeros(x.shape[0], 3, *x.shape[2:]))


def test_a_segmenter_without_output_is_told_its_key_and_task():
    """A torchvision segmenter in a config without task: and model.output: the message said
    'e.g. model.output: logits', a key the model does not have; it names 'out' and the task."""
    with pytest.raises(ExplainError) as caught:
        select_output(_Segmenter()(torch.zeros(1, 3, 8, 8)), None)
    said = str(caught.value)
    assert "model.output: out" in said and "task: segmentation" in said
    assert "model.output: logits" not in said


def test_a_dict_with_logits_still_points_at_them():
    out = {"features": torch.zeros(1, 4, 2, 2), "logits": torch.zeros(1, 2)}
    with pytest.raises(ExplainError, match="model.output: logits"):
        select_output(out, None)

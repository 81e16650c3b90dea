"""Newcomer 17: a researcher with torchvision segmenters and detectors (LR-ASPP, Faster R-CNN)
running segmentation and detection studies, and what the pictures, reports and messages told
them."""

from __future__ import annotations

import numpy as np
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

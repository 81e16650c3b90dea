"""Leftovers of the segmentation and detection tasks: what summary.csv's columns and the
report's cards and Methods table say, the bars' names, masks named in another letter case, and
the guess of a task head from a state_dict without model.arch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import IMAGES, save_config
from helpers import refused


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the task head guessed from a state_dict ----------------------------------------------------

def _weights_only(tmp_path, weights: dict):
    torch.save(weights, tmp_path / "weights.pt")
    return save_config(tmp_path, "w", {
        "model": {"file": "weights.pt"}, "images": [str(IMAGES / "cat.jpg")],
        "target_layers": "auto", "methods": ["gradcam"], "preprocess": {"size": 32}})


class ConvHeadClassifier(nn.Module):
    """A classifier whose head ends in 1x1 convolutions (NiN / SqueezeNet style): its weights
    have a 4-d 'classifier.4.weight', as a DeepLabV3's or an FCN's do."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Dropout(),
                                        nn.Conv2d(8, 10, 1), nn.AdaptiveAvgPool2d(1),
                                        nn.Flatten())


def test_a_classifier_with_a_conv_head_is_not_told_it_is_a_segmenter(tmp_path, capsys):
    """One 4-d 'classifier.4.weight' was taken for a DeepLabV3 or FCN head: 'they look like a
    DeepLabV3 or FCN's ... add task: segmentation'. A plain classifier is told model.arch."""
    err = refused(capsys, _weights_only(tmp_path, ConvHeadClassifier().state_dict()))
    assert "task: segmentation" not in err and "DeepLabV3" not in err and "FCN" not in err
    assert "add 'model.arch'" in err and "'classifier.4.weight' has 10 outputs" in err


def test_the_heads_are_still_told_from_all_their_keys(tmp_path, capsys):
    """An FCN's head (3x3 conv, batch norm, 1x1 class conv beside a backbone) and a Faster
    R-CNN's (class and box layers, the RPN) are named with their class count; without the
    backbone, or with a 3x3 class layer, it is not a torchvision segmenter."""
    t = torch.zeros
    fcn = {"backbone.conv1.weight": t(4, 3, 3, 3), "classifier.0.weight": t(8, 4, 3, 3),
           "classifier.1.running_mean": t(8), "classifier.4.weight": t(5, 8, 1, 1)}
    err = refused(capsys, _weights_only(tmp_path, fcn))
    assert "an FCN's ('classifier.4.weight' has 5 classes): add task: segmentation" in err
    assert "fcn_*" in err and "num_classes: 5}" in err
    for edit in ({"backbone.conv1.weight": None}, {"classifier.4.weight": t(5, 8, 3, 3)}):
        changed = {k: v for k, v in {**fcn, **edit}.items() if v is not None}
        assert "task: segmentation" not in refused(capsys, _weights_only(tmp_path, changed))
    rcnn = {"backbone.body.0.weight": t(4, 3, 3, 3), "rpn.head.cls_logits.weight": t(3, 4, 1, 1),
            "roi_heads.box_predictor.cls_score.weight": t(7, 16),
            "roi_heads.box_predictor.bbox_pred.weight": t(28, 16)}
    err = refused(capsys, _weights_only(tmp_path, rcnn))
    assert "has 7 classes): add task: detection" in err and "num_classes: 7}" in err
    del rcnn["rpn.head.cls_logits.weight"]
    assert "task: detection" not in refused(capsys, _weights_only(tmp_path, rcnn))

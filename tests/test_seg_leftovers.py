"""Leftovers of the segmentation and detection tasks: what summary.csv's columns and the
report's cards and Methods table say, the bars' names, masks named in another letter case, and
the guess of a task head from a state_dict without model.arch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from browser import Browser, find_browser
from conftest import IMAGES, save_config
from helpers import refused
from explain.cli import main


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


# ---- label maps named in another letter case ------------------------------------------------------

def tiny_segmenter(seed: int = 1) -> nn.Module:
    """Torch layers only (a whole pickle loads without trust): 3 classes' score maps at the
    input's size."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 3, 3, padding=1)).eval()


def seg_config(root, region: str = "predicted", images=("both.jpg",), **extra):
    torch.save(tiny_segmenter(), root / "seg.pth")
    return save_config(root, "seg", {
        "task": "segmentation", "model": {"file": "seg.pth"},
        "classes": {"background": 0, "cat": 1, "dog": 2}, "images": list(images),
        "preprocess": {"size": [32, 48]}, "target_layers": ["auto"],
        "methods": ["gradcam", "layercam"], "segmentation": {"region": region, **extra}})


def test_a_label_map_named_in_another_letter_case_is_pointed_at(tmp_path, capsys):
    """cat.JPG's label map saved as Cat.png (and both.jpg's as BOTH.PNG): 'no label map for
    image 'cat'' and nothing more. The message and the note name the file and its name."""
    shutil.copy(IMAGES / "cat.jpg", tmp_path / "cat.JPG")
    shutil.copy(IMAGES / "both.jpg", tmp_path / "both.jpg")
    (tmp_path / "masks").mkdir()
    for name in ("Cat.png", "BOTH.PNG", "dog.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / name)
    cfg = seg_config(tmp_path, "label", ["cat.JPG", "both.jpg"], masks="masks")
    err = refused(capsys, cfg)
    assert "no label map for image 'cat'" in err
    assert "there is 'Cat.png', its name in another letter case" in err
    assert "rename it 'cat.png'" in err
    assert main([str(cfg), "--quiet", "--set", "segmentation.region=predicted"]) == 0
    notes = json.loads((tmp_path / "results" / "seg" / "summary.json").read_text())["notes"]
    said = next(n for n in notes if "no label map for 2 image(s)" in n)
    assert "2 of them are there in another case: 'Cat.png' for 'cat.png', 'BOTH.PNG' for " \
           "'both.png'" in said, said


# ---- the card's bars ----------------------------------------------------------------------------

NAME_EDGES = """JSON.stringify(Array.from(document.querySelectorAll('.prob')).map(row => {
  const name = row.querySelector('.prob-name'), range = document.createRange();
  range.selectNodeContents(name);
  const text = range.getBoundingClientRect(), box = name.getBoundingClientRect();
  const clipped = name.scrollWidth > name.clientWidth;
  const hidden = clipped && getComputedStyle(name).overflowX === 'hidden';
  return {name: name.textContent, clipped: clipped, ink_right: hidden ? box.right : text.right,
          bar_left: row.querySelector('.prob-bar').getBoundingClientRect().left};
}))"""


@pytest.mark.skipif(find_browser() is None, reason="no Chromium-family browser")
def test_the_bars_names_end_before_their_bars(tmp_path):
    """A segmentation card's bars: the predicted class's name, 'background' in bold, ran 20 px
    into its bar (the names had a 60 px column). Every name, in bold or not, is whole and ends
    left of its bar, and the bars start at one x."""
    shutil.copy(IMAGES / "both.jpg", tmp_path / "both.jpg")
    cfg = seg_config(tmp_path)
    assert main([str(cfg), "--quiet", "--set", "classes={background: 0, cat: 1, "
                 "dog_and_its_lead: 2}"]) == 0
    with Browser(find_browser()) as browser:
        browser.open_page()
        browser.goto((tmp_path / "results" / "seg" / "report.html").as_uri())
        rows = json.loads(browser.evaluate(NAME_EDGES))
    assert {r["name"] for r in rows} == {"background", "cat", "dog_and_its_lead"}
    for row in rows:
        if row["name"] != "dog_and_its_lead":  # a long name may end in '...', never overlap
            assert not row["clipped"], row
        assert row["ink_right"] < row["bar_left"], row
    assert len({round(r["bar_left"]) for r in rows}) == 1, rows

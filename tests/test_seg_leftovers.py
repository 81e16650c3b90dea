"""Leftovers of the segmentation and detection tasks: what summary.csv's columns and the
report's cards and Methods table say, the bars' names, masks named in another letter case, and
the guess of a task head from a state_dict without model.arch."""

from __future__ import annotations

import csv
import json
import re
import shutil
from types import SimpleNamespace

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


# ---- what the columns, the cards and the Methods table say ----------------------------------------

@pytest.fixture(scope="module")
def label_run(tmp_path_factory):
    """The tiny segmenter on both.jpg at 32 x 48, explained over a label map: a left block cat,
    a right block dog, the rest background (shares the prediction does not have)."""
    root = tmp_path_factory.mktemp("seglabel")
    shutil.copy(IMAGES / "both.jpg", root / "both.jpg")
    (root / "masks").mkdir()
    w, h = Image.open(IMAGES / "both.jpg").size
    truth = np.zeros((h, w), np.uint8)
    truth[:, : w // 3] = 1
    truth[h // 2:, 2 * w // 3:] = 2
    Image.fromarray(truth).save(root / "masks" / "both.png")
    assert main([str(seg_config(root, "label", masks="masks")), "--quiet"]) == 0
    return root / "results" / "seg"


def _rows(run) -> list[dict]:
    with open(run / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_summary_csv_says_whose_pixels_each_column_counts(label_run):
    """'pixels' (the region's: here the ground truth's) stood beside 'pixel_share' (the
    prediction's). The columns are region_pixels, region_share (of the image) and
    predicted_share, in that order; the shares read back from the label map and the model."""
    rows = _rows(label_run)
    header = list(rows[0])
    assert "pixels" not in header and "pixel_share" not in header
    at = header.index("region_pixels")
    assert header[at - 1: at + 3] == ["region", "region_pixels", "region_share",
                                      "predicted_share"]
    entry = json.loads((label_run / "summary.json").read_text())["images"][0]
    h, w = entry["input_size"]
    assert (h, w) == (32, 48)
    truth = {"background": 1 - (16 / 48) - (16 * 16) / (32 * 48), "cat": 16 / 48,
             "dog": 16 * 16 / (32 * 48)}
    for row in rows:
        assert row["region"] == "label"
        assert int(row["region_pixels"]) == round(truth[row["class"]] * h * w), row
        assert float(row["region_share"]) == pytest.approx(truth[row["class"]], abs=1e-6)
        assert row["predicted_share"] == row[f"p_{row['class']}"]
    assert any(abs(float(r["region_share"]) - float(r["predicted_share"])) > 0.05 for r in rows)


def test_a_region_label_card_says_which_share_is_of_what(label_run):
    """'47.4% of the pixels in its ground truth (predicted: 49.3%)' read as a share of the
    ground truth's pixels. The card gives each as a share of the image, and what the score is
    summed over."""
    page = (label_run / "report.html").read_text(encoding="utf-8")
    assert "of the pixels in its ground truth" not in page
    for row in _rows(label_run)[::2]:
        cell = re.search(rf'<span class="cls-name">{row["class"]}</span>\s*<span class="strength"'
                         rf'[^>]*>(.*?)</span>', page).group(1)
        assert cell.startswith(f"ground truth: {100 * float(row['region_share']):.1f}% of the "
                               f"image<br>predicted: {100 * float(row['predicted_share']):.1f}% "
                               f"of the image<br>score "), cell
        assert cell.endswith(" over the ground truth"), cell


def test_the_methods_table_holds_only_the_methods_numbers(label_run):
    """The predicted share's mean (33.3% for each method: the targets', not the maps') was a
    column of the Methods table; a detection run's had the boxes' score. They are the cards'
    and summary.csv's; the table says so."""
    page = (label_run / "report.html").read_text(encoding="utf-8")
    head = re.search(r'<table class="method-table task-table">\s*<thead>(.*?)</thead>',
                     page, re.S).group(1)
    assert re.findall(r"<th>([^<]*)</th>", head) == [
        "method", "energy in region", "energy in mask", "mask IoU", "pointing hit", "maps"]
    assert "their pixel shares are the model's, not a method's" in page
    task = json.loads((label_run / "summary.json").read_text())["task"]
    assert task["numbers"] == ["energy_in_region", "energy_in_mask", "mask_iou", "pointing_hit"]
    from explain.tasks.records import DetectionNumbers, task_summary
    rec = SimpleNamespace(method="gradcam", detection=DetectionNumbers(
        label="cat", score=0.9, box=[0, 0, 4, 4], energy_in_box=0.5, inside_outside=2.0))
    assert task_summary("detection", [SimpleNamespace(cams=[rec])], ["gradcam"]).numbers == [
        "energy_in_box", "inside_outside"]


def test_an_earlier_versions_segmentation_records_still_read():
    """Records written with 'pixels' and 'pixel_share', and a task summary averaging them
    (or a detection's score), read as this version writes them."""
    from explain.tasks.records import RegionNumbers, TaskSummary
    old = RegionNumbers.model_validate({"region": "label", "pixels": 40, "pixel_share": 0.25,
                                        "score": 1.0, "energy_in_region": 0.5})
    assert (old.region_pixels, old.predicted_share, old.region_share) == (40, 0.25, None)
    summary = TaskSummary.model_validate({
        "task": "segmentation", "numbers": ["pixel_share", "energy_in_region"],
        "means": {"gradcam": {"pixel_share": 0.3, "energy_in_region": 0.5}},
        "maps": {"gradcam": 2}, "counted": {"gradcam": {"pixel_share": 1}}})
    assert summary.numbers == ["energy_in_region"]
    assert summary.means == {"gradcam": {"energy_in_region": 0.5}}
    assert summary.counted == {"gradcam": {}}


def test_the_methods_tables_name_the_numbers_as_the_cards_do(label_run):
    """The Methods table said 'mask iou' (a detection run's 'inside outside') where the cards
    say 'mask IoU' ('inside / outside'); the notebook's table too."""
    from explain.api import load
    from explain.tasks.records import number_name
    assert [number_name(k) for k in ("mask_iou", "inside_outside", "energy_in_box")] == [
        "mask IoU", "inside / outside", "energy in box"]
    page = (label_run / "report.html").read_text(encoding="utf-8")
    assert "<th>mask IoU</th>" in page and "<th>mask iou</th>" not in page
    assert "<th>mask IoU</th>" in load(label_run)._repr_html_()

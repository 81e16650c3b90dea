"""Newcomer 17: a researcher with torchvision segmenters and detectors (LR-ASPP, Faster R-CNN)
running segmentation and detection studies, and what the pictures, reports and messages told
them."""

from __future__ import annotations

import json
import re
import shutil
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import IMAGES, save_config
from explain.cli import main

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


@pytest.fixture(scope="module")
def seg_label_run(tmp_path_factory):
    """An LR-ASPP (3 classes, its classifiers' weights x 30 so that all classes are predicted)
    on both.jpg at 64 px, explained over ground-truth pixels: a left block cat (1), a narrow
    right block dog (2), the rest background, so each class's ground-truth share differs from
    its predicted share."""
    root = tmp_path_factory.mktemp("n17seg")
    torch.manual_seed(0)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3).eval()
    with torch.no_grad():
        for conv in (net.classifier.low_classifier, net.classifier.high_classifier):
            conv.weight.mul_(30)
            conv.bias.zero_()
    torch.save(net.state_dict(), root / "segmenter.pt")
    shutil.copy(IMAGES / "both.jpg", root / "both.jpg")
    (root / "masks").mkdir()
    w, h = Image.open(IMAGES / "both.jpg").size
    truth = np.zeros((h, w), np.uint8)
    truth[20:220, 10:210] = 1
    truth[60:, 250:330] = 2
    Image.fromarray(truth, mode="L").save(root / "masks" / "both.png")
    cfg = save_config(root, "seglabel", {
        "task": "segmentation", "model": {
            "file": "segmenter.pt", "output": "out", "arch_args": {"num_classes": 3},
            "arch": "torchvision.models.segmentation.lraspp_mobilenet_v3_large"},
        "classes": {"background": 0, "cat": 1, "dog": 2}, "images": ["both.jpg"],
        "preprocess": {"size": 64}, "methods": ["gradcam"], "target_layers": "auto",
        "segmentation": {"region": "label", "masks": "masks"}})
    assert main([str(cfg), "--quiet"]) == 0
    return root / "results" / "seglabel"


def _page(run) -> str:
    return (run / "report.html").read_text(encoding="utf-8")


def test_a_region_label_card_gives_the_share_it_explains(seg_label_run):
    """With region: label the card under each class said the predicted share ('51.3% of the
    pixels') beside the score summed over the ground truth's pixels (39.7% of them): the
    card now gives the ground truth's share, the one the score is over."""
    page, cams = _page(seg_label_run), _json(seg_label_run)["images"][0]
    size = cams["input_size"][0] * cams["input_size"][1]
    for rec in cams["cams"]:
        seg = rec["segment"]
        assert seg["region"] == "label"
        said = f"ground truth: {100 * seg['region_pixels'] / size:.1f}% of the image"
        assert said in page, (rec["class_name"], said)
    assert re.search(r"<br>predicted: [0-9.]+% of the image<br>", page)


def test_a_segmentation_report_names_its_masks_not_annotations(seg_label_run):
    """The Run section of a segmentation run with masks said 'ground truth: none
    (annotations: in the config)' and 'faithfulness: off: metrics: [road_combined] turns it
    on', two settings this task refuses."""
    page = _page(seg_label_run)
    row = re.search(r"<th>ground truth</th><td>(.*?)</td>", page).group(1)
    assert "label maps from" in row and "masks" in row and "annotations" not in row
    row = re.search(r"<th>faithfulness</th><td>(.*?)</td>", page).group(1)
    assert "not available with task: segmentation" in row and "road" not in row


def _json(run) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


def _refusal(capsys, cfg, *args) -> str:
    assert main([str(cfg), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def _det_config(root, **model) -> object:
    return save_config(root, "det", {
        "task": "detection", "model": model, "classes": {"cat": 1, "dog": 2},
        "images": [str(IMAGES / "cat.jpg")], "target_layers": "auto", "methods": ["eigencam"],
        "preprocess": {"size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]}})


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("n17det")
    torch.manual_seed(0)
    net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96)
    torch.save(net.state_dict(), root / "detector.pt")
    return root / "detector.pt"


def test_a_detector_state_dict_without_arch_is_told_its_class_count(detector_file, capsys):
    """A Faster R-CNN saved as a state_dict, no model.arch: the message said 'e.g.
    torchvision.models.alexnet' and 'its last layer ... bbox_pred.weight has 12 outputs:
    model.arch_args: {num_classes: 12}' (4 box numbers x 3 classes); it names the detector
    family and num_classes 3."""
    err = _refusal(capsys, _det_config(detector_file.parent, file=str(detector_file)))
    assert "num_classes: 3}" in err and "fasterrcnn_" in err and "task: detection" in err
    assert "num_classes: 12" not in err and "alexnet" not in err


def test_a_detector_run_as_a_classifier_is_told_task_detection(detector_file, capsys):
    """The same detector with its arch but no task: 'set which part holds the class scores,
    e.g. model.output: 0', which cannot work; the hint is task: detection."""
    cfg = _det_config(detector_file.parent, file=str(detector_file), arch_args={
        "num_classes": 3, "min_size": 64, "max_size": 96},
        arch="torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn")
    err = _refusal(capsys, cfg, "--set", "task=classification")
    assert "use task: detection" in err and "model.output: 0" not in err


def test_a_deeplab_saved_with_its_aux_head_is_told_aux_loss(tmp_path, capsys):
    """torchvision's reference training saves DeepLabV3 with aux_loss=True: the run said only
    "unexpected key 'aux_classifier.0.weight'"; it says to add aux_loss: true."""
    torch.manual_seed(0)
    net = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=True)
    torch.save(net.state_dict(), tmp_path / "deeplab.pt")
    cfg = save_config(tmp_path, "dl", {
        "task": "segmentation", "model": {
            "file": "deeplab.pt", "output": "out", "arch_args": {"num_classes": 3},
            "arch": "torchvision.models.segmentation.deeplabv3_mobilenet_v3_large"},
        "classes": {"background": 0, "cat": 1}, "images": [str(IMAGES / "cat.jpg")],
        "target_layers": "auto", "preprocess": {"size": 64}})
    err = _refusal(capsys, cfg)
    assert "aux_classifier" in err and "aux_loss: true" in err
    del_arch = _refusal(capsys, cfg, "--set", "model.arch=null")
    assert "num_classes: 3, aux_loss: true}" in del_arch and "task: segmentation" in del_arch


def test_a_detection_scorecam_estimate_times_the_batched_passes(monkeypatch):
    """ScoreCAM feeds the detector its masked copies 16 at a time, cheaper per image than one
    pass alone; the estimate priced them at one image's pass and said 'about 43 s' for maps that
    took 21.1 s (50 s for 26.7 s). The per-channel passes are timed at their batch."""
    from types import SimpleNamespace
    from explain import pace
    from explain.config import MethodSpec
    monkeypatch.setattr(pace, "seconds_per_pass", lambda model, x, rows: 0.1 if rows == 1
                        else 0.04)
    cfg = SimpleNamespace(detection=SimpleNamespace(max_boxes=3), aug_smooth=False,
                          methods=[MethodSpec(name="scorecam")])
    plan = SimpleNamespace(cfg=cfg, target_layers=[SimpleNamespace(channels=256)], slots=1,
                           images=[0, 1], first=SimpleNamespace(tensor=torch.zeros(3, 8, 8)),
                           device=torch.device("cpu"), model=None, timed={})
    line, seconds = pace.detection_cost(plan, 2)
    assert seconds == pytest.approx(2 * 0.1 + 2 * 256 * 3 * 0.04)
    assert "scorecam 256 passes per box" in line

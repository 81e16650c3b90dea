"""Newcomer 22: a researcher's detection (Faster R-CNN) and segmentation (DeepLabV3) studies
with random weights; what they read on the console, the pages and the pictures."""

from pathlib import Path
from types import SimpleNamespace as NS

from explain.diff.runs import Side, match


def _side(label: str, classes: list[str]) -> Side:
    """A run of one image, 'both', with a gradcam map per class (no arrays read)."""
    cams = [NS(class_name=c, method="gradcam", detection=None, files=NS(array=None))
            for c in classes]
    summary = NS(config=NS(task="segmentation"), images=[NS(id="both", cams=cams)])
    return Side(label, Path(label), None, summary, True)


def test_diff_lists_classes_only_in_one_run_spelled_right():
    _, left_out = match(_side("A", ["dog"]), _side("B", ["dog", "background", "cat"]))
    assert "classes only in B: background, cat" in left_out
    assert not [line for line in left_out if "classs" in line]


def _record(**task):
    """A map's record as numbers() reads it, with a segmentation or detection part."""
    from explain.tasks.records import DetectionNumbers, RegionNumbers
    base = dict(probability=0.5, logit=None, raw_max=1.0, peak_value=1.0, peak_x=3, peak_y=4,
                mass_left=0.5, mass_right=0.5, mass_top=0.5, mass_bottom=0.5, agreement=None,
                faithfulness=None, localisation=None, channels=None, segment=None,
                detection=None)
    if "segment" in task:
        base["segment"] = RegionNumbers(**task["segment"])
    if "detection" in task:
        base["detection"] = DetectionNumbers(**task["detection"])
    return NS(**base)


def test_diff_compares_the_segmentation_and_detection_numbers():
    """docs/compare.md: 'every number of the two records side by side'; a segmentation run's
    mask IoU and energy in region, a detection run's energy in box, were not in diff.csv."""
    from explain.diff.numbers import numbers
    seg = numbers(_record(segment=dict(
        region="label", region_pixels=100, region_share=0.25, predicted_share=1.0,
        score=-418.0, energy_in_region=0.776, energy_in_mask=0.776, mask_iou=0.0295,
        pointing_hit=True)))
    assert {k: seg[k] for k in ("energy_in_region", "energy_in_mask", "mask_iou",
                                "pointing_hit", "region_share", "score")} == {
        "energy_in_region": 0.776, "energy_in_mask": 0.776, "mask_iou": 0.0295,
        "pointing_hit": 1.0, "region_share": 0.25, "score": -418.0}
    assert "region" not in seg
    det = numbers(_record(detection=dict(label="dog", score=0.338, box=[1, 2, 3, 4],
                                         energy_in_box=0.0146, inside_outside=0.523)))
    assert (det["energy_in_box"], det["inside_outside"], det["score"]) == (0.0146, 0.523, 0.338)
    assert "box" not in det and "label" not in det


def test_cam_on_a_segmentation_model_says_how_to_explain_it():
    """explain.cam said 'this looks like a segmentation model: use task: segmentation', but
    it takes no task (unknown option 'task'): the line points to explain.run with a config."""
    import numpy as np
    import pytest
    import torch
    import explain
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 3, 1))
    photo = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(explain.ExplainError) as err:
        explain.cam(net, photo, "auto", classes=["a", "b", "c"], preprocess={"size": 32})
    message = str(err.value)
    assert "explain.cam and explain.channel_maps explain classifiers" in message, message
    assert "explain.run" in message and "task: segmentation" in message
    assert "use task: segmentation" not in message


def _titled(task: str, cls: str, probabilities: dict, detection=None) -> str:
    """Run.show's title of one overlay, for a run of ``task`` (no folder read)."""
    from explain.api.runs import Run
    record = NS(peak_value=1.0, detection=detection)
    run = NS(summary=NS(config=NS(task=task)), record=lambda *_: record)
    return Run._title(run, NS(id="both", probabilities=probabilities), cls, "gradcam")


def test_show_titles_say_a_share_of_pixels_or_a_box_score_not_a_probability():
    """Run.show titled a segmentation map 'gradcam · cat (p 0.000)', where 0 is the share of
    pixels the model predicts as cat (the card: 'predicted: 0.0% of the image'), and a
    detection map had no score."""
    assert _titled("segmentation", "cat", {"cat": 0.0, "dog": 1.0}) == \
        "gradcam · cat (predicted 0.0% of the image)"
    box = NS(score=0.338325, label="dog")
    assert _titled("detection", "dog-1", {"cat": 0.0, "dog": 0.338}, box) == \
        "gradcam · dog-1 (score 0.34)"
    assert _titled("classification", "cat", {"cat": 0.25}) == "gradcam · cat (p 0.250)"


def test_no_detection_above_the_threshold_says_the_best_score_there_was():
    """'no detection of a named class scores at least score_threshold 0.5 on 3 image(s)': a
    random-weight detector's boxes scored 0.338, which the note did not say; it does now."""
    from explain.tasks.records import task_notes
    cfg = NS(task="detection", targets="all", detection=NS(score_threshold=0.5, max_boxes=3))
    images = [NS(id=name, detections=NS(explained=[], above_threshold=0),
                 probabilities={"cat": 0.0, "dog": p}) for name, p in (("cat", 0.2),
                                                                        ("both", 0.338325))]
    [note] = task_notes(cfg, images)
    assert note.startswith("detection: no detection of a named class scores at least "
                           "score_threshold 0.5 on 2 image(s): cat, both; nothing to explain")
    assert note.endswith("the best box scores 0.338 (class dog on image both): a "
                         "score_threshold at or below it explains it"), note
    images[1].probabilities["dog"] = 0.33851  # rounded down: a threshold of 0.338 explains it
    assert "the best box scores 0.338 (class dog on image both)" in task_notes(cfg, images)[0]


def test_a_gradient_method_at_the_pyramid_names_a_layer_it_can_use(tmp_path, capsys):
    """'--methods gradcam' on a Faster R-CNN with target_layers: auto said 'name a tensor layer
    ..., such as one FPN level's convolution (explain layers CONFIG lists them)': 279 layers
    to read; the line names one, backbone.fpn.layer_blocks.0 (docs/models.md's)."""
    import torch
    import torchvision
    import yaml
    from explain.cli import main
    torch.manual_seed(0)
    net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96)
    torch.save(net.state_dict(), tmp_path / "detector.pt")
    images = Path(__file__).resolve().parent.parent / "images"
    config = dict(name="det", task="detection", classes={"cat": 1, "dog": 2},
                  model=dict(file="detector.pt", arch="torchvision.models.detection."
                             "fasterrcnn_mobilenet_v3_large_fpn",
                             arch_args=dict(num_classes=3, min_size=64, max_size=96)),
                  images=[str(images / "cat.jpg")], methods=["gradcam"], target_layers="auto",
                  preprocess=dict(size=64, mean=[0, 0, 0], std=[1, 1, 1]),
                  detection=dict(score_threshold=0.0), output=dict(dir=str(tmp_path / "out")))
    (tmp_path / "det.yaml").write_text(yaml.safe_dump(config))
    assert main([str(tmp_path / "det.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "name a tensor layer for gradcam, such as 'backbone.fpn.layer_blocks.0'" in err, err
    assert "--layer backbone.fpn.layer_blocks.0" in err


def test_the_mask_picture_caption_says_which_colour_is_which_class():
    """The card's predicted mask tinted dog orange and cat pink, the caption said only
    'white: class outlines; magenta: ground truth': which colour is which class was nowhere.
    Each predicted class (not class 0, left clear) gets its colour, as the picture has it."""
    import numpy as np
    from explain.tasks.drawing import mask_picture
    from explain.writers.cards import mask_colours
    entry = NS(segmentation=NS(truth=False),
               probabilities={"background": 0.134, "cat": 0.0, "dog": 0.866})
    config = NS(task="segmentation", classes={"background": 0, "cat": 1, "dog": 2})
    key = mask_colours(entry, config)
    assert [name for name, _ in key] == ["dog"]
    labels = np.full((4, 4), 2)
    labels[0, 0] = 1
    pixel = mask_picture(np.zeros((4, 4, 3), np.float32), labels, 3)[2, 2]  # half the colour
    swatch = [int(key[0][1][i:i + 2], 16) for i in (1, 3, 5)]
    assert np.abs(np.array(swatch) - 2 * pixel.astype(int)).max() <= 1, (swatch, pixel)
    assert mask_colours(entry, NS(task="detection", classes={})) == []


def test_the_console_says_what_a_segmentation_runs_numbers_are(tmp_path, capsys):
    """'cat: predicted dog (background 0.000, cat 0.000, dog 1.000)' read as probabilities;
    they are shares of the pixels (a detection run's: each class's best box score)."""
    import torch
    import yaml
    from explain.cli import main
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 3, 1))
    torch.save(net, tmp_path / "seg.pt")
    images = Path(__file__).resolve().parent.parent / "images"
    config = dict(name="seg", task="segmentation", model=dict(file="seg.pt"),
                  classes={"background": 0, "cat": 1, "dog": 2}, target_layers=["1"],
                  images=[str(images / "cat.jpg")], methods=["gradcam"], metrics=[],
                  preprocess=dict(size=32), output=dict(dir=str(tmp_path / "out")))
    (tmp_path / "seg.yaml").write_text(yaml.safe_dump(config))
    assert main([str(tmp_path / "seg.yaml"), "--quiet"]) == 0
    out = capsys.readouterr()
    [line] = [x for x in (out.out + out.err).splitlines() if x.startswith("  cat: ")]
    assert line.startswith("  cat: predicted ") and " (share of the pixels: background " in line


def test_auto_layer_of_a_segmenter_follows_its_largest_class_not_its_largest_sum():
    """An untrained segmenter's logits are negative: the class summed over the most pixels
    has the lowest sum, so the layer survey followed a class predicted at one pixel and
    marked every layer 'zero grad' ('auto: no layer a CAM can use'). It follows the class
    the model predicts over the most pixels, as 'predicted' ranks them."""
    import torch
    from explain.layers import survey
    from explain.tasks.segmentation import RegionHead, SegmentationNet
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU(),
                              torch.nn.Conv2d(2, 3, 1))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0] = 1.0   # channel 0: the image's red
        net[0].weight[1, 1] = 1.0   # channel 1: 1 + green, positive everywhere
        net[0].bias.copy_(torch.tensor([0.0, 1.0]))
        net[2].weight.zero_()
        net[2].weight[1, 0] = 10.0  # class 1: -2 + 10 red: predicted at the one red pixel
        net[2].weight[2, 1] = 0.01  # class 2: -1.01 + 0.01 (1 + green): everywhere else
        net[2].bias.copy_(torch.tensor([-10.0, -2.0, -1.01]))
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0, 3, 3] = 1.0
    rows = {row.name: row for row in survey(net, SegmentationNet(net), x, RegionHead())}
    assert not rows["1"].degenerate and not rows["2"].degenerate


def test_diff_of_a_segmentation_and_a_detection_run_says_the_tasks_differ():
    """'the runs share no class: runs/seg has background, cat, dog; runs/det has dog-1, ...':
    the classes were not the problem; the runs are of two tasks."""
    import pytest
    from explain.errors import ExplainError
    seg, det = _side("A", ["dog"]), _side("B", ["dog-1"])
    det.summary.config.task = "detection"
    with pytest.raises(ExplainError) as err:
        match(seg, det)
    assert str(err.value) == ("A is a task: segmentation run and B a task: detection run; "
                              "explain diff compares two runs of one task")

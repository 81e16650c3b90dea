"""Review day 23 (a helper's findings): a segmentation batch run as two halves after out of
memory, the report of an interrupted task run (its means, its item files of many boxes), the
notebook's Methods of a task run, explain diff's mean change over photos, and a grey network's
luma under preprocess.mode: caffe."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import explain
from explain.cli import main
from helpers import interrupted, save_config


class TinyDetector(nn.Module):
    """``boxes`` fixed boxes per image (labels 1 and 2 in turn), scored from a feature map
    (model.builder: test_review_day23:TinyDetector, with trust)."""

    def __init__(self, boxes: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(4, 3, 1)
        self.boxes = boxes

    def forward(self, x):
        s = torch.sigmoid(self.head(self.features(x)))
        out = []
        for b in range(x.shape[0]):
            spots = [(2 + (4 * k) % 16, 3 + (2 * k) % 12, 1 + k % 2) for k in range(self.boxes)]
            out.append({"boxes": torch.tensor([[x0, y0, x0 + 12, y0 + 12] for x0, y0, _ in spots],
                                              dtype=torch.float32),
                        "labels": torch.tensor([c for _, _, c in spots]),
                        "scores": torch.stack([s[b, c, y0:y0 + 12, x0:x0 + 12].mean()
                                               for x0, y0, c in spots])})
        return out


def _photos(folder, names, side=24):
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
            folder / f"{name}.png")
    return [str(folder / f"{name}.png") for name in names]


def _segmenter(path):
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 3, 1)).eval(), path)


def test_a_segmentation_batch_halved_after_out_of_memory_scores_each_image_its_own_region(
        tmp_path, monkeypatch):
    """Out of memory, the engine runs a batch again as two halves; the records' scores were
    read from the last half's regions only: image 0 got image 1's, image 1 an IndexError."""
    from explain.tasks.segmentation import SegmentationNet
    _segmenter(tmp_path / "seg.pt")
    cfg = dict(name="seg", task="segmentation", model={"file": str(tmp_path / "seg.pt")},
               classes={"bg": 0, "x": 1, "y": 2}, images=_photos(tmp_path, ["a", "b"]),
               preprocess={"size": [24, 24]}, target_layers=["1"], methods=["gradcam"],
               targets="all", batch_size=2, metrics=[])
    quiet = dict(overwrite=True, progress=False, log=lambda _: None)
    whole = explain.run(cfg, out=tmp_path / "whole", **quiet)
    forward, failed = SegmentationNet.forward, []

    def once_out_of_memory(self, x):
        if x.shape[0] > 1 and torch.is_grad_enabled() and not failed:
            failed.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, x)
    monkeypatch.setattr(SegmentationNet, "forward", once_out_of_memory)
    halved = explain.run(cfg, out=tmp_path / "halved", **quiet)
    assert failed
    scores = [[(r.class_name, r.segment.score) for r in e.cams] for e in halved.images]
    expected = [[(r.class_name, r.segment.score) for r in e.cams] for e in whole.images]
    assert [[c for c, _ in one] for one in scores] == [[c for c, _ in one] for one in expected]
    assert np.allclose([s for one in scores for _, s in one],
                       [s for one in expected for _, s in one], rtol=1e-5, atol=1e-4)


def _interrupted_detection(tmp_path, boxes: int, max_boxes: int):
    cfg = dict(name="exp", task="detection",
               model={"builder": "test_review_day23:TinyDetector", "trust": True,
                      "builder_args": {"boxes": boxes}},
               classes={"cat": 1}, images=_photos(tmp_path, ["a", "b"], 32),
               preprocess={"size": [32, 32], "mean": [0, 0, 0], "std": [1, 1, 1]},
               target_layers=["features.1"], methods=["eigencam"], batch_size=1,
               detection={"score_threshold": 0.1, "max_boxes": max_boxes})
    return interrupted(save_config(tmp_path, "exp", cfg), tmp_path / "out", "item", 2)


def _text(html: str, section: str) -> str:
    start = html.index(f'id="{section}"')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[start:start + 4000]))


def test_the_report_of_an_interrupted_detection_run_has_its_task_means(tmp_path, capsys):
    """explain report of an interrupted task run had no Methods table of means, and told the
    reader to add metrics: and annotations:, which a task run refuses."""
    folder = _interrupted_detection(tmp_path, boxes=2, max_boxes=2)
    assert main(["report", str(folder)]) == 0
    html = (folder / "report.html").read_text(encoding="utf-8")
    methods, trust = _text(html, "methods"), _text(html, "trust")
    assert "energy in box" in methods and "road_combined" not in methods
    assert "a detection run is not ranked" in trust
    assert "no faithfulness or localisation numbers" not in trust
    assert explain.load(folder).summary.task.maps == {"eigencam": 1}


def test_an_interrupted_detection_runs_item_files_of_many_boxes_are_read(tmp_path, capsys):
    """An item file's budget counted a map per class and method: 100 boxes of one class made
    an item file 'larger than their image's records can make', left out of the report."""
    folder = _interrupted_detection(tmp_path, boxes=200, max_boxes=100)
    assert main(["report", str(folder)]) == 0
    data = explain.load(folder)
    assert [e.id for e in data.images] == ["a"] and len(data.images[0].cams) == 100
    assert not [n for n in data.summary.notes if "larger than" in n]


def test_diff_means_over_photos_sit_in_their_interval():
    """With report.photo_separator the diff's interval is over photos (a photo's variants
    averaged first) but its mean change was over maps: 'probability -0.326 [-0.364, +0.107]'
    for eight variants of one photo and five others, whose photos' mean change is -0.108."""
    from types import SimpleNamespace

    from explain.diff.numbers import DiffResult, MapDiff, changes
    change = {**{f"p1-{c}": -0.5 for c in "abcdefgh"}, **{f"p{j}": 0.01 * j for j in range(2, 7)}}
    images = [SimpleNamespace(id=i, path=f"/x/{i}.png") for i in change]
    config = SimpleNamespace(seed=0, report=SimpleNamespace(photo_separator="-"))
    side = SimpleNamespace(summary=SimpleNamespace(config=config, images=images))
    maps = [MapDiff(image=i, class_name="a", method="gradcam", correlation=1.0,
                    mean_abs_diff=0.0, max_abs_diff=0.0, peak_shift=0.0, resized=False,
                    predicted=("a", "a"), numbers=({"probability": 0.7},
                                                   {"probability": 0.7 + d}))
            for i, d in change.items()]
    found = changes(DiffResult(a=side, b=side, maps=maps, left_out=[], config_changes=[],
                               threshold=None))
    (one,) = found
    photos = np.mean([-0.5] + [0.01 * j for j in range(2, 7)])
    assert one.unit == "photo" and one.units == 6 and one.maps == 13
    assert one.mean_change == pytest.approx(photos)
    assert one.mean_b - one.mean_a == pytest.approx(photos)
    assert one.low <= one.mean_change <= one.high


@pytest.mark.parametrize("mode", ["torch", "caffe"])
def test_a_grey_network_gets_the_luma_of_red_green_blue_in_either_channel_order(mode):
    """preprocess.mode: caffe prepares B, G, R: the luma weights were laid on them in R, G, B
    order (0.299 B + 0.114 R), so a pure red photo was given a darker grey than a pure blue
    one, unlike 0.299 R + 0.587 G + 0.114 B, which the report and the docs say."""
    from explain.config import Config
    from explain.images.reading import preprocess
    from explain.models.heads import Classifier
    cfg = Config.model_validate({"images": ["x.png"], "model": {"file": "m.pt", "in_channels": 1},
                                 "preprocess": {"size": [8, 8], "mode": mode, **(
                                     {"mean": [0.5], "std": [0.5]} if mode == "torch" else {})},
                                 "target_layers": ["0"], "methods": ["gradcam"]})
    net, kept = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), {}
    net[0].register_forward_hook(lambda m, i, o: kept.setdefault(len(kept), i[0]))
    greys = []
    for channel in range(3):  # pure red, green, blue
        rgb = np.zeros((8, 8, 3), np.uint8)
        rgb[..., channel] = 255
        Classifier.of(net, cfg)(preprocess(rgb, cfg.preprocess)[0][None])
        greys.append(float(kept[len(kept) - 1][0, 0, 0, 0]))
    black = np.zeros((8, 8, 3), np.uint8)
    Classifier.of(net, cfg)(preprocess(black, cfg.preprocess)[0][None])
    lift = np.array(greys) - float(kept[len(kept) - 1][0, 0, 0, 0])  # each channel's weight
    assert lift / lift.sum() == pytest.approx([0.299, 0.587, 0.114], abs=1e-5)


def test_the_notebooks_methods_table_of_a_task_run_has_the_reports_means(tmp_path):
    """A Run's display of a detection run showed maps, '-' and '-': neither the report's
    'not ranked' conclusion nor its table of each method's mean numbers."""
    folder = _interrupted_detection(tmp_path, boxes=2, max_boxes=2)
    run = explain.load(folder)
    html = run._repr_html_()
    methods = html[html.index("<h4>Methods"):html.index("<h4>Detections")]
    assert "a detection run is not ranked" in methods
    means = run.summary.task.means["eigencam"]
    assert f"{100 * means['energy_in_box']:.1f}%" in methods
    assert "energy in box" in methods and "inside / outside" in methods

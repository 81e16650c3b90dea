"""task: segmentation and task: detection (issue 24): the example configs as shipped on
random-weight torchvision models the tests write, the engine's maps against the library's own
targets and transforms (SemanticSegmentationTarget; FasterRCNNBoxScoreTarget with
fasterrcnn_reshape_transform), outlines and boxes read back from the overlays' pixels, layer
discovery, resume, and one line for each bad input.

The models: an LR-ASPP (3 classes, seed 4, its low-level classifier's weights x 30, so that its
random predictions hold all three classes on both photos) and a Faster R-CNN MobileNetV3-FPN
(3 classes, 128-192 px, 10 proposals). A random detector gives boxes of about equal score
(0.338 here), enough for a threshold of 0.3; score_threshold 0.99 leaves none."""

from __future__ import annotations

import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import (FasterRCNNBoxScoreTarget,
                                                  SemanticSegmentationTarget)
from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform
from torch import nn

from browser import Browser, check_page, find_browser
from conftest import IMAGES, REPO, save_config
from helpers import cli, library_map, one_line, refused, tiny_net
from explain.cli import main
from explain.config import MethodSpec, Preprocess, load_config
from explain.engine import EngineOptions
from explain.errors import ExplainError
from explain.images import ImageRef, prepare
from explain.tasks.detection import DetectionEngine, DetectionTask
from explain.tasks.drawing import TRUTH, draw_boxes, outline, pixel_box
from explain.tasks.segmentation import SegmentationEngine, SegmentationTask

CPU = torch.device("cpu")
WHITE = (255, 255, 255)
DET_ARGS = dict(num_classes=3, min_size=128, max_size=192, rpn_pre_nms_top_n_test=50,
                rpn_post_nms_top_n_test=10, box_detections_per_img=5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch on one thread here: these small passes gain nothing from two, and two threads
    on a loaded 2-core machine spin (a 64x96 MobileNetV3 pass: 30 ms on one, seconds on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seg_net() -> nn.Module:
    torch.manual_seed(4)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3).eval()
    with torch.no_grad():
        net.classifier.low_classifier.weight.mul_(30)
    return net


def det_net() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, **DET_ARGS).eval()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The repository layout: both example configs, two photos, the two models' state_dicts,
    and a ground-truth label map for both.jpg (left half cat = 1, right half dog = 2)."""
    root = tmp_path_factory.mktemp("segdet")
    for sub in ("configs", "images", "models", "images/masks"):
        (root / sub).mkdir()
    for name in ("segmentation_example.yaml", "detection_example.yaml"):
        shutil.copy(REPO / "configs" / name, root / "configs")
    for name in ("cat.jpg", "both.jpg"):
        shutil.copy(IMAGES / name, root / "images")
    seg, det = seg_net(), det_net()
    torch.save(seg.state_dict(), root / "models" / "segmenter.pt")
    torch.save(det.state_dict(), root / "models" / "detector.pt")
    w, h = Image.open(IMAGES / "both.jpg").size
    truth = np.ones((h, w), np.uint8)
    truth[:, w // 2:] = 2
    Image.fromarray(truth, mode="L").save(root / "images" / "masks" / "both.png")
    return root, seg, det


@pytest.fixture(scope="module")
def seg_run(tree):
    """The segmentation example as shipped, with the ground-truth folder and saved arrays."""
    root = tree[0]
    assert main([str(root / "configs" / "segmentation_example.yaml"), "--quiet", "--set",
                 "segmentation.masks=../images/masks", "--set", "output.save_arrays=true"]) == 0
    return root / "results" / "segmentation_example"


@pytest.fixture(scope="module")
def det_run(tree):
    """The detection example as shipped, with saved arrays."""
    root = tree[0]
    assert main([str(root / "configs" / "detection_example.yaml"), "--quiet", "--set",
                 "output.save_arrays=true"]) == 0
    return root / "results" / "detection_example"


class Out(nn.Module):
    """The library tutorial's wrapper: a torchvision segmentation model's 'out'."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def batch(*names: str, size=(96, 128), detector: bool = False) -> torch.Tensor:
    spec = Preprocess(size=list(size), **({"mean": [0, 0, 0], "std": [1, 1, 1]}
                                          if detector else {}))
    return torch.stack([prepare(ImageRef(n, IMAGES / f"{n}.jpg", False), spec).tensor
                        for n in names])


def overlay(run, rel: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(run / rel)), cv2.COLOR_BGR2RGB)


# ---- the engine against the library -------------------------------------------------------

def test_segmentation_maps_equal_the_library(tree):
    """Gradient methods through the shared pass, EigenCAM through the library's own call:
    each class over its predicted region, then over ground-truth regions, against the
    library with SemanticSegmentationTarget on the tutorial's wrapper (1e-5); 'predicted'
    ranks by pixel share."""
    _, seg, _ = tree
    cfg = load_config(tree[0] / "configs" / "segmentation_example.yaml")
    model, head = SegmentationTask(cfg).wrap(seg)
    x, layer = batch("cat", "both", size=(64, 96)), seg.classifier.cbr
    specs = [MethodSpec(name=m) for m in ("gradcam", "layercam", "eigencam")]
    truth = np.zeros((2, 64, 96), np.int64)
    truth[:, :, 30:70], truth[1, 40:] = 1, 2
    names = {0: "b", 1: "c", 2: "d"}
    with SegmentationEngine(model, [layer], specs, CPU, EngineOptions(head=head)) as engine:
        engine.probe(x[:1])
        predicted = engine.run(x, [0, 1, 2], names)
        top = engine.run(x, None, names, 1)
        head.truth = torch.as_tensor(truth)
        labelled = engine.run(x, [1, 2], names)
        top_labelled = engine.run(x, None, names, 1)  # region: label, targets: predicted
        head.truth = None
    with torch.no_grad():
        regions = Out(seg)(x).argmax(1).numpy()
    shares = [[(regions[b] == c).mean() for c in range(3)] for b in range(2)]
    assert top.classes[:, 0].tolist() == [int(np.argmax(s)) for s in shares]
    # 'predicted' is the model's class also when the regions are the ground truth's (it
    # ranked the truth's pixel shares: the largest class of the label map, not the model's)
    truth_top = [int(np.argmax(np.bincount(t.ravel(), minlength=3))) for t in truth]
    assert top_labelled.classes[:, 0].tolist() == top.classes[:, 0].tolist() != truth_top
    assert all(min(s) > 0 for s in shares)  # all three classes on both photos
    checks = [(predicted, regions, slot, c, m) for slot, c, m in
              ((0, 0, "gradcam"), (1, 1, "gradcam"), (2, 2, "gradcam"), (1, 1, "layercam"),
               (0, 0, "eigencam"))]
    checks += [(labelled, truth, slot, c, "gradcam") for slot, c in ((0, 1), (1, 2))]
    library = {"gradcam": GradCAM, "layercam": LayerCAM, "eigencam": EigenCAM}
    for result, masks, slot, c, name in checks:
        targets = [SemanticSegmentationTarget(c, (masks[b] == c).astype(np.float32))
                   for b in range(2)]
        lib = library_map(library[name], Out(seg), layer, x, targets)
        assert np.abs(result.maps[name][:, slot] - lib).max() <= 1e-5, (name, c)
        assert result.maps[name][:, slot].max() > 0


def test_detection_maps_equal_the_library(tree):
    """Grad-CAM and EigenCAM at an FPN level's convolution, one FasterRCNNBoxScoreTarget per
    detection, against the library's own call (1e-5; EigenCAM at the pyramid with the
    tutorial's reshape: the example's test); a gradient method at the pyramid is one line."""
    _, _, det = tree
    cfg = load_config(tree[0] / "configs" / "detection_example.yaml")
    model, _ = DetectionTask(cfg).wrap(det)
    x = batch("cat", "both", size=(128, 192), detector=True)
    level = det.backbone.fpn.layer_blocks[0]
    specs = [MethodSpec(name="gradcam"), MethodSpec(name="eigencam")]
    with DetectionEngine(model, [level], specs, CPU) as engine:
        engine.probe(x[:1])
        raw = engine.detect(x)
        found = [[(one["boxes"][j], int(one["labels"][j])) for j in range(2)] for one in raw]
        maps = engine.explain(x, found)
    assert np.array_equal(maps["eigencam"][:, 0], maps["eigencam"][:, 1])  # class-agnostic
    for slot in range(2):
        targets = [FasterRCNNBoxScoreTarget([found[b][slot][1]], [found[b][slot][0]])
                   for b in range(2)]
        lib = library_map(GradCAM, det, level, x, targets)
        assert np.abs(maps["gradcam"][:, slot] - lib).max() <= 1e-5
        assert maps["gradcam"][:, slot].max() > 0
    lib = library_map(EigenCAM, det, level, x, targets)
    assert np.abs(maps["eigencam"][:, 1] - lib).max() <= 1e-5
    with pytest.raises(ExplainError) as info:
        with DetectionEngine(model, [det.backbone], [MethodSpec(name="gradcam")], CPU) as engine:
            engine.probe(x[:1])
    one_line(info, "gradcam: needs the gradient at target_layers[0]", "use eigencam there")


# ---- the example configs, as shipped --------------------------------------------------------

def test_segmentation_example_outlines_numbers_and_report(tree, seg_run):
    """The config as shipped, with the ground-truth folder and saved arrays: the predicted
    mask's outline in white and the ground truth's in magenta on every overlay where they
    belong, pixel shares, energy in the region and in the mask and the mask IoU from the
    saved maps, the map equal to the library's, the report's cards."""
    root, seg, _ = tree
    config, run = root / "configs" / "segmentation_example.yaml", seg_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["target_layers"] == ["classifier.cbr"]
    assert any("no label map for 1 image(s) (cat)" in n for n in summary["notes"])
    from explain.results import RunSummary
    from explain.tasks.records import task_notes
    told = RunSummary.model_validate(summary)  # the notes a report rebuilt from records shows
    assert [n for n in summary["notes"] if n.startswith("segmentation")] == \
        task_notes(told.config, told.images) != []
    cfg = load_config(config)
    for entry in summary["images"]:
        x = prepare(ImageRef(entry["id"], root / "images" / f"{entry['id']}.jpg", False),
                    cfg.preprocess).tensor[None]
        with torch.no_grad():
            labels = Out(seg)(x)[0].argmax(0).numpy()
        names = ["background", "cat", "dog"]
        assert entry["probabilities"] == {n: round(float((labels == c).mean()), 6)
                                          for c, n in enumerate(names)}
        truth = None
        if entry["id"] == "both":
            truth = np.zeros(labels.shape, np.int64) + 1
            truth[:, labels.shape[1] // 2:] = 2
        assert entry["segmentation"]["truth"] == (truth is not None)
        present = [n for c, n in enumerate(names) if (labels == c).any()]
        assert sorted({r["class"] for r in entry["cams"]}) == sorted(present) and present
        for rec in entry["cams"]:
            c = names.index(rec["class"])
            cam = np.load(run / rec["files"]["array"])
            picture = overlay(run, rec["file"])
            white = outline(labels == c)
            if truth is not None:
                magenta = outline(truth == c)
                assert (picture[magenta] == TRUTH).all()
                white &= ~magenta
                if not (truth == c).any():  # background: no ground-truth pixels, no numbers
                    assert rec["class"] == "background"
                    assert not {"energy_in_mask", "mask_iou", "pointing_hit"} & set(rec["segment"])
                else:
                    inside = (cam[truth == c].sum() / cam.sum())
                    assert rec["segment"]["energy_in_mask"] == pytest.approx(inside, abs=1e-5)
                    hot = cam >= 0.5 * cam.max()
                    iou = (hot & (truth == c)).sum() / (hot | (truth == c)).sum()
                    assert rec["segment"]["mask_iou"] == pytest.approx(iou, abs=1e-5)
            assert white.any() and (picture[white] == WHITE).all()
            assert rec["segment"]["energy_in_region"] == pytest.approx(
                cam[labels == c].sum() / cam.sum(), abs=1e-5)
        rec = next(r for r in entry["cams"] if r["method"] == "gradcam")
        c = names.index(rec["class"])
        lib = library_map(GradCAM, Out(seg), seg.classifier.cbr, x,
                          [SemanticSegmentationTarget(c, (labels == c).astype(np.float32))])
        assert np.abs(np.load(run / rec["files"]["array"]) - lib[0]).max() <= 1e-5
    html = (run / "report.html").read_text()
    assert "energy in mask" in html and "segmentation/both.png" in html
    assert [html.count(f'<section id="{s}">') for s in ("trust", "run", "methods")] == [1, 1, 1]
    trust = html[html.index('<section id="trust">'):html.index('<section id="run">')]
    assert trust.count("not ranked") == 1 and "no conclusion: a segmentation run is not " \
        "ranked" in trust  # once, and not "0 image(s) with ... numbers"
    assert "image(s) with faithfulness or localisation numbers" not in trust
    assert "white line: the outline of the class's predicted mask" in html.replace("&#39;", "'")
    assert "weak class" not in html and "ground-truth box" not in html  # a classifier's legend
    assert (run / "panels" / "cat.png").is_file()


def _label_patch(box: list, text: str, shape: tuple) -> tuple:
    """(where, pixels) of the label ``text`` drawn alone for ``box`` on a picture of
    ``shape``: white behind its text, so the same on any photo or map."""
    from explain.tasks.drawing import draw_label
    canvas = np.zeros((*shape, 3), np.uint8)
    draw_label(canvas, box, text)
    ys, xs = np.nonzero(canvas.any(axis=2))
    where = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return where, canvas[where]


def test_detection_example_boxes_numbers_report_and_resume(tree, det_run):
    """The config as shipped, with saved arrays: every explained detection's overlay has its
    box in white where the summary says, its energy in the box from the saved map, the map
    equal to the library's EigenCAM, its label the detection's name ('cat-1', as on the boxes
    picture; it said 'cat'); the report has a card row per detection; a run
    interrupted after the first image, resumed, writes the same summary.csv."""
    root, _, det = tree
    config, run = root / "configs" / "detection_example.yaml", det_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["target_layers"] == ["backbone"]
    html = (run / "report.html").read_text()
    assert "white box: the detection the map explains" in html and "weak class" not in html
    assert html.count("not ranked") == 1 and "no conclusion: a detection run is not ranked " \
        "(its maps&#39; numbers are in the Methods table" in html  # once (a newcomer: twice)
    for entry in summary["images"]:
        explained = entry["detections"]["explained"]
        assert len(explained) == 2 and explained[0]["score"] >= 0.3
        assert [r["class"] for r in entry["cams"]] == [d["name"] for d in explained]
        boxes = overlay(run, entry["files"]["task"])
        for rec, found in zip(entry["cams"], explained):
            cam = np.load(run / rec["files"]["array"])
            x0, y0, x1, y1 = pixel_box(found["box"], cam.shape)
            for picture in (overlay(run, rec["file"]), boxes):
                edges = [picture[y0:y1 + 1, x0], picture[y0:y1 + 1, x1], picture[y1, x0:x1 + 1]]
                assert all((edge == WHITE).all() for edge in edges)
            inside = np.zeros(cam.shape, bool)
            inside[y0:y1 + 1, x0:x1 + 1] = True
            assert rec["detection"]["energy_in_box"] == pytest.approx(
                cam[inside].sum() / cam.sum(), abs=1e-5)
            label = _label_patch(found["box"], f"{rec['class']} {found['score']:.2f}", cam.shape)
            assert (overlay(run, rec["file"])[label[0]] == label[1]).all(), rec["class"]
            assert f">{rec['class']}<" in html
        x = prepare(ImageRef(entry["id"], root / "images" / f"{entry['id']}.jpg", False),
                    load_config(config).preprocess).tensor[None]
        target = [FasterRCNNBoxScoreTarget([2], [np.asarray(explained[0]["box"], np.float32)])]
        lib = library_map(EigenCAM, det, det.backbone, x, target, fasterrcnn_reshape_transform)
        assert np.abs(np.load(run / entry["cams"][0]["files"]["array"]) - lib[0]).max() <= 1e-5
    resumed = root / "results" / "resumed"
    shutil.copytree(run, resumed)
    for rel in ("summary.json", "summary.csv", "report.html", "items/both.json"):
        (resumed / rel).unlink()
    assert main([str(config), "--quiet", "--set", "output.save_arrays=true", "--set",
                 "name=resumed", "--resume"]) == 0
    assert (resumed / "summary.csv").read_bytes() == (run / "summary.csv").read_bytes()
    notes = json.loads((resumed / "summary.json").read_text())["notes"]
    assert any("resumed: 1 image(s) kept" in n for n in notes)


def test_task_runs_are_read_back_by_report_load_and_diff(seg_run, det_run, tmp_path, capsys):
    """A segmentation and a detection run pass the checks every reader makes on a run's
    records (explain.recordfiles.entry_problem: detection maps named <class>-<n>, a
    detection's '(none)' prediction, segmentation shares as probabilities)."""
    import explain
    for run in (seg_run, det_run):
        assert cli(capsys, "report", run)[0] == 0
        rows = explain.load(run).table()
        assert rows and all(r["method"] for r in rows)
        code, err, out = cli(capsys, "diff", run, run, "--out", tmp_path / run.name)
        assert code == 0 and "r 1.000 on all" in out + err, err  # both runs save their arrays
    # reading a detection run back needs no detection engine (its record names came with it)
    import subprocess
    import sys
    code = (f"import sys\nfrom explain.cli import main\nassert main(['report', "
            f"{str(det_run)!r}]) == 0\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip().splitlines()[-1] == "False", done.stderr[-2000:]


def test_the_notebook_shows_a_task_runs_pictures(seg_run, det_run):
    """A detection or segmentation run has no class panels: its notebook display said 'no class
    panels in the folder' and showed no picture. It shows each image's boxes (or predicted
    mask), the files the records name, embedded as they are."""
    import base64

    import explain
    for run, title in ((det_run, "Detections"), (seg_run, "Predicted masks")):
        loaded = explain.load(run)
        html = loaded._repr_html_()
        part = html[html.index(f"<h4>{title}</h4>"):]
        named = [e for e in loaded.summary.images if e.files.task]
        assert named and part.count("<img ") == len(named)
        first = part[part.index('src="data:image/png;base64,') + 27:]
        shown = base64.b64decode(first[:first.index('"')])
        assert shown == (run / named[0].files.task).read_bytes()
        assert f"<figcaption>{named[0].id}</figcaption>" in part


def test_labels_stay_off_their_box_and_inside_the_picture():
    """A label goes above its box, below it when the box touches the picture's top, and moves
    left at the right edge: no edge of a narrow box crosses its text, and the text is whole."""
    picture = np.zeros((64, 96, 3), np.uint8)
    draw_boxes(picture, [((0, 2, 6, 30), "dog-2 0.34"), ((90, 40, 96, 50), "cat-1 0.50")])
    dark = (picture < 128).all(axis=2)
    rows = np.flatnonzero((~dark[:, :40]).any(axis=1))
    assert rows.min() == 2 and rows.max() > 35  # the box from row 2, its label below row 29
    assert dark[3:29, 1:5].all() and dark[3:29, 6:40].all()  # nothing else beside the box
    label = ~dark[:40, 60:89]  # the second label, moved left of its box (x from 90)
    assert label.any() and (picture[49, 90:96] == WHITE).all()  # its bottom edge
    picture[:] = 0  # a label whose place above its box is taken goes below it
    draw_boxes(picture, [((40, 20, 80, 30), "cat-1 0.90"), ((44, 25, 60, 45), "cat-2 0.80")])
    dark = (picture < 128).all(axis=2)
    assert not dark[8:20, 41:80].all()  # cat-1's label above its box
    assert dark[21:25, 61:79].all()  # cat-2's not above its box, over cat-1's label
    assert not dark[46:56, 45:80].all()  # but below its box


def test_detections_below_the_threshold_are_a_note(tree, capsys):
    root = tree[0]
    code, err, _ = cli(capsys, root / "configs" / "detection_example.yaml", "--set",
                       "detection.score_threshold=0.99", "--set", "name=nobox", "--set",
                       "target_layers=[backbone]")
    assert code == 0, err
    summary = json.loads((root / "results" / "nobox" / "summary.json").read_text())
    assert [len(e["cams"]) for e in summary["images"]] == [0, 0]
    # the bar counts images (maps per image vary): it ended at 0 of 4 "maps" before
    assert re.search(r"CAMs: 100%\|[^\r]*\| 2/2 \[[^\r]*image/s\]", err), err
    # its best boxes score below the threshold: they predict nothing (they said 'cat')
    assert [e["predicted"] for e in summary["images"]] == ["(none)", "(none)"]
    assert all(0 < max(e["probabilities"].values()) < 0.99 for e in summary["images"])
    assert any("no detection of a named class scores at least score_threshold 0.99 on 2 "
               "image(s): cat, both" in n for n in summary["notes"])
    assert "nothing to explain" in (root / "results" / "nobox" / "report.html").read_text()


@pytest.mark.skipif(find_browser() is None, reason="no Chromium here (Debian package 'chromium')")
def test_task_reports_load_in_chromium_with_every_picture(seg_run, det_run):
    with Browser(find_browser()) as browser:
        browser.open_page()
        for run in (seg_run, det_run):
            result = check_page(browser, run / "report.html")
            assert result["broken"] == [] and result["errors"] == []
            html = (run / "report.html").read_text()
            assert result["count"] == html.count("<img ") > 6


def test_any_model_returning_score_maps(tmp_path):
    """A whole pickled model of torch.nn layers whose score maps are half the input's size:
    its targets use regions at the maps' size (the library's SemanticSegmentationTarget on
    them, 1e-5), the outline is drawn from the prediction resized to the input."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(6, 3, 3, stride=2, padding=1)).eval()
    torch.save(net, tmp_path / "half.pth")
    config = save_config(tmp_path, "half", {
        "task": "segmentation", "model": {"file": str(tmp_path / "half.pth")},
        "classes": {"a": 0, "b": 1, "c": 2}, "images": [str(IMAGES / "both.jpg")],
        "preprocess": {"size": [32, 48]}, "target_layers": ["auto"],
        "output": {"dir": str(tmp_path / "results"), "save_arrays": True}})
    assert main([str(config), "--quiet"]) == 0
    run = tmp_path / "results" / "half"
    entry = json.loads((run / "summary.json").read_text())["images"][0]
    x = prepare(ImageRef("both", IMAGES / "both.jpg", False), Preprocess(size=[32, 48])).tensor
    with torch.no_grad():
        small = net(x[None])[0].argmax(0).numpy()
    assert small.shape == (16, 24) and entry["cams"]
    labels = cv2.resize(small.astype(np.int32), (48, 32), interpolation=cv2.INTER_NEAREST)
    for rec in entry["cams"]:
        c = "abc".index(rec["class"])
        lib = library_map(GradCAM, net, net[1], x[None], [SemanticSegmentationTarget(
            c, (small == c).astype(np.float32))])[0]
        assert np.abs(np.load(run / rec["files"]["array"]) - lib).max() <= 1e-5
        white = outline(labels == c)
        assert white.any() and (overlay(run, rec["file"])[white] == WHITE).all()


# ---- layer discovery --------------------------------------------------------------------------

def test_layers_on_a_faster_rcnn_and_a_deeplabv3(tmp_path, capsys):
    """`explain layers` lists a detector's and a DeepLabV3's layers and marks auto's pick: the
    backbone's feature pyramid, the decoder's last feature layer before the class maps."""
    picks = {}
    for task, arch, args in (
            ("detection", "detection.fasterrcnn_mobilenet_v3_large_fpn", DET_ARGS),
            ("segmentation", "segmentation.deeplabv3_mobilenet_v3_large", {"num_classes": 3})):
        extra = {"output": "out"} if task == "segmentation" else {}
        config = save_config(tmp_path, task, {
            "task": task, "model": {"builder": f"torchvision.models.{arch}",
                                    "builder_args": args, **extra},
            "classes": {"a": 1, "b": 2}, "images": [str(IMAGES / "cat.jpg")],
            "preprocess": {"size": 96}, "target_layers": ["auto"]})
        code, err, out = cli(capsys, "layers", config)
        assert code == 0, err
        picks[task] = [line.split()[0] for line in out.splitlines() if "(auto)" in line]
        assert len(out.splitlines()) > 100
    assert picks == {"detection": ["backbone"], "segmentation": ["classifier.3"]}


def test_auto_explains_a_predicted_class_whose_scores_are_negative(tmp_path, capsys):
    """The layer survey differentiates a class the model predicts somewhere, even when its
    summed scores are below zero (the classes without pixels score 0 but are not explained:
    a survey of them saw zero gradient everywhere and 'auto' found no layer)."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 1)).eval()
    with torch.no_grad():
        net[2].weight.mul_(0.01)
        net[2].bias.copy_(torch.tensor([-1.0, -2.0, -2.0]))  # class 0 everywhere, sum < 0
    torch.save(net, tmp_path / "negative.pth")
    config = save_config(tmp_path, "negative", {
        "task": "segmentation", "model": {"file": str(tmp_path / "negative.pth")},
        "classes": {"a": 0, "b": 1}, "images": [str(IMAGES / "cat.jpg")],
        "preprocess": {"size": [16, 16]}, "target_layers": ["auto"]})
    code, err, out = cli(capsys, "layers", config)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines() if "(auto)" in line] == ["1"]


# ---- one line for each bad input --------------------------------------------------------------

def test_task_and_model_mismatches_are_one_line(tmp_path, capsys):
    torch.save(tiny_net(outputs=3), tmp_path / "tiny.pth")
    base = {"model": {"file": str(tmp_path / "tiny.pth")}, "classes": {"a": 1, "b": 2},
            "images": [str(IMAGES / "cat.jpg")], "preprocess": {"size": [32, 32]},
            "target_layers": ["0"], "output": {"dir": str(tmp_path / "results")}}
    for task, expects in (("detection", "a list with one {boxes, labels, scores} dict"),
                          ("segmentation", "(N, classes, H, W) score maps")):
        config = save_config(tmp_path, task, {**base, "task": task})
        refused(capsys, config, needles=(f"model: task: {task} expects forward to return "
                                         f"{expects}", "use task: classification"))
    config = save_config(tmp_path, "det_as_seg", {
        **base, "task": "segmentation", "target_layers": ["backbone.body.16"],
        "preprocess": {"size": 96},
        "model": {"builder": "torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn",
                  "builder_args": DET_ARGS}})
    refused(capsys, config, needles=("this looks like a detector: use task: detection",))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("setting,needles", [
    ("detection.score_threshold=1.5", ("detection.score_threshold: must be a number from 0 "
                                       "to 1",)),
    ("detection.score_threshold=-0.1", ("must be a number from 0 to 1",)),
    ("channels.enabled=true", ("channels.enabled: not available with task: detection",)),
    ("methods=[gradcam]", ("gradcam: needs the gradient at target_layers[0] 'backbone'",)),
    ("model.arch_args.weights_backbone=DEFAULT", ("weights_backbone", "would be downloaded")),
    ("targets=predicted", ("targets: 'predicted' does not apply to task: detection",)),
])
def test_bad_detection_settings_are_one_line(tree, capsys, setting, needles):
    root = tree[0]  # the layer named: no survey of the layers before the check
    refused(capsys, root / "configs" / "detection_example.yaml", "--set", setting,
            "--set", "target_layers=[backbone]", "--set", "name=bad", needles=needles)
    assert not (root / "results" / "bad").exists()


def test_bad_masks_are_one_line(tree, capsys, tmp_path):
    """A label map of the wrong size stops the run before its folder is made; a colour PNG
    and a masks path that is no folder are one line too."""
    from explain.images import find_images
    from explain.tasks.masks import check_masks
    root = tree[0]
    config = root / "configs" / "segmentation_example.yaml"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "cat.png")
    err = refused(capsys, config, "--set", f"segmentation.masks={tmp_path}", "--set",
                  "target_layers=[classifier.cbr]", "--set", "name=badmask")
    w, h = Image.open(IMAGES / "cat.jpg").size
    assert f"{tmp_path / 'cat.png'}: 12x10 pixels, but image 'cat' is {w}x{h}" in err
    assert not (root / "results" / "badmask").exists()
    (tmp_path / "cat.png").unlink()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "both.png")
    for masks, region, needle in ((tmp_path, "predicted", "both.png: a RGB picture; a label "
                                                          "map is a single-channel PNG"),
                                  (tmp_path, "label", "no label map for image 'cat'"),
                                  (tmp_path / "none", "predicted", "none: not a folder")):
        cfg = load_config(config, {"segmentation.masks": str(masks),
                                   "segmentation.region": region})
        with pytest.raises(ExplainError) as info:
            check_masks(cfg, find_images(cfg)[0])
        one_line(info, "segmentation.masks: ", needle)


def test_task_config_checks(tree):
    """A task's default method; a section of another task, and classifier-only settings, are
    one line; a classification config's settings (config.json) hold no task keys."""
    from explain.config import Config
    from explain.runner import settings
    base = {"model": {"file": "m.pt"}, "images": ["a.jpg"], "target_layers": ["auto"]}
    assert [m.name for m in Config.model_validate({**base, "task": "detection"}).methods] == \
        ["eigencam"]
    with pytest.raises(Exception) as info:
        Config.model_validate({**base, "methods": ["gradcam"], "detection": {"max_boxes": 2}})
    assert "detection: applies to task: detection" in str(info.value)
    cfg = Config.model_validate({**base, "methods": ["gradcam"]})
    assert not {"task", "segmentation", "detection"} & set(settings(cfg))
    assert not {"task", "segmentation", "detection"} & set(cfg.model_dump(mode="json"))
    assert Config.model_validate(cfg.model_dump()) == cfg  # summary.json reads back
    cfg = Config.model_validate({**base, "task": "detection"})
    assert cfg.model_dump()["detection"]["max_boxes"] == 5
    with pytest.raises(Exception) as info:
        Config.model_validate({**base, "task": "segmentation", "metrics": ["road_combined"]})
    assert "metrics: not available with task: segmentation" in str(info.value)


def test_a_score_at_the_threshold_once_recorded_is_a_detection_and_the_prediction():
    """best_scores (the prediction) rounds to 6 decimals, choose compared the raw score: a
    box at 0.4999996 predicted 'cat' at threshold 0.5 with no detection above it."""
    from types import SimpleNamespace

    from explain.tasks.boxes import best_scores, choose
    cfg = SimpleNamespace(detection=SimpleNamespace(score_threshold=0.5, max_boxes=3))
    found = {"labels": np.array([1, 2]), "scores": np.array([0.4999996, 0.2], np.float64),
             "boxes": np.array([[1, 2, 30, 40], [5, 5, 9, 9]], np.float32)}
    above, chosen = choose(cfg, found, {1: "cat", 2: "dog"}, (64, 64))
    assert above == 1 and [d.name for d, _, _ in chosen] == ["cat-1"]
    assert best_scores(found, {1: "cat", 2: "dog"}) == {"cat": 0.5, "dog": 0.2}


def test_a_detection_run_estimates_its_maps_and_says_the_time_beside(det_run):
    """A detection run printed no estimate (one library call per box slot and method, each
    a forward and a backward pass of the detector): the line, its seconds beside the time."""
    summary = json.loads((det_run / "summary.json").read_text())
    line = next(n for n in summary["notes"] if n.startswith("estimate: detection"))
    assert line.startswith("estimate: detection: up to 2 box(es) in each of 2 image(s); "
                           "eigencam a pass per image: ")
    assert summary["estimates_s"]["cams"] > 0 and summary["durations_s"]["cams"] > 0


def test_the_detection_estimate_counts_a_pass_per_box_and_method():
    from types import SimpleNamespace
    from explain.pace import BACKWARD, detection_cost
    cfg = SimpleNamespace(detection=SimpleNamespace(max_boxes=3), aug_smooth=False,
                          methods=[MethodSpec(name="gradcam"), MethodSpec(name="eigencam")])
    line, seconds = detection_cost(SimpleNamespace(cfg=cfg), 10, per_pass=0.5)
    passes = 10 + 10 * 3 * BACKWARD + 10  # finding the boxes, gradcam per box, eigencam
    assert seconds == pytest.approx(passes * 0.5)
    assert "gradcam a forward and a backward pass per box, eigencam a pass per image" in line


def test_ground_truth_pixels_of_no_class_index_are_a_note(tree, capsys, tmp_path):
    """newcomer 22: a label map's 255 border (VOC's 'ignore') was in no class's mask without a
    word; the run's notes now say which values, on which images and how many pixels."""
    from explain.tasks.segmentation import unnamed_pixels
    truth = np.ones((10, 10), np.int32)
    truth[0, :], truth[1, :2] = 255, 21
    record = unnamed_pixels(truth, 21)  # 21 classes: 0..20
    assert (record.truth, record.unnamed, record.unnamed_values) == (True, 0.12, [21, 255])
    assert unnamed_pixels(np.ones((4, 4), np.int32), 21).unnamed == 0
    root = tree[0]
    w, h = Image.open(IMAGES / "both.jpg").size
    labels = np.ones((h, w), np.uint8)
    labels[:, w // 2:] = 2
    labels[: h // 10, :] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(labels, mode="L").save(tmp_path / "masks" / "both.png")
    assert main([str(root / "configs" / "segmentation_example.yaml"), "--quiet", "--set",
                 f"segmentation.masks={tmp_path / 'masks'}", "--set", "name=border",
                 "--set", f"output.dir={tmp_path / 'out'}"]) == 0
    summary = json.loads((tmp_path / "out" / "border" / "summary.json").read_text())
    (note,) = [n for n in summary["notes"] if "no class index" in n]
    found = re.fullmatch(r"segmentation\.masks: 1 label map\(s\) hold values that are no class "
                         r"index of the model \(255; VOC's 255 border is one\): those pixels "
                         r"are in no class's ground truth \(both (\d+\.\d)% of the pixels\)",
                         note)
    assert found and abs(float(found.group(1)) - 10) < 1.5, note  # at the model's input size

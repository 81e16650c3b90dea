"""Numbers on every map: faithfulness (the library's own metrics), localisation against boxes,
and map strength (raw maximum, logit, probability, weak flag)."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.road import (ROADCombined, ROADLeastRelevantFirstAverage,
                                           ROADMostRelevantFirstAverage)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain import annotations, compare, metrics, reference
from explain.cli import main
from explain.config import load_config
from explain.engine import seeded
from explain.images.orientation import EXIF_ORIENTATION
from explain.errors import ExplainError
from explain.images import ImageRef, prepare, read_rgb
from explain.results import Localisation
from conftest import IMAGES, REPO, make_small_alexnet, write_config

QUIET = dict(progress=False, log=lambda _: None)
PERCENTILES = [30, 70]


def small_run(tmp_path, name="exp", **fields):
    """A run of a small AlexNet (saved whole, as the course does) on 64-pixel inputs."""
    model_file = tmp_path / "small.pth"
    if not model_file.exists():
        torch.save(make_small_alexnet(), model_file)
    data = dict(model={"file": str(model_file)}, target_layers=["features.10"],
                preprocess={"size": 64}, methods=["gradcam", "layercam"],
                output={"dir": str(tmp_path / "results"), "save_arrays": True})
    data.update(fields)
    from explain.runner import RunOptions, run
    summary = run(load_config(write_config(tmp_path, name, **data)), RunOptions(**QUIET))
    return summary, tmp_path / "results" / name


def csv_table(run_dir):
    with (run_dir / "summary.csv").open() as f:
        return list(csv.DictReader(f))


# ---- faithfulness ------------------------------------------------------------------------

def test_faithfulness_equals_a_direct_library_call(tmp_path):
    specs = [{"name": "road_combined", "percentiles": PERCENTILES},
             {"name": "road_morf", "percentiles": [50]},
             {"name": "road_least_relevant_first", "percentiles": [50]},
             "drop_in_confidence", "increase_in_confidence"]
    summary, run_dir = small_run(tmp_path, images=[str(IMAGES / "cat.jpg")], metrics=specs,
                                 seed=7)
    model = make_small_alexnet()
    cfg = load_config(tmp_path / "exp.yaml")
    library = {"road_combined": lambda: ROADCombined(PERCENTILES),
               "road_most_relevant_first": lambda: ROADMostRelevantFirstAverage([50]),
               "road_least_relevant_first": lambda: ROADLeastRelevantFirstAverage([50]),
               "drop_in_confidence": DropInConfidence, "increase_in_confidence": IncreaseInConfidence}
    rows = csv_table(run_dir)
    assert len(rows) == 2 * 2  # class x method
    # the library, called directly on the image's maps (one batch: the image once per map)
    x = prepare(ImageRef("cat", IMAGES / "cat.jpg", False), cfg.preprocess).tensor[None]
    cams = np.stack([np.load(run_dir / row["file"].replace(".png", ".npy")) for row in rows])
    targets = [ClassifierOutputTarget(cfg.classes[row["class"]]) for row in rows]
    for name, make in library.items():
        if name.startswith("road"):  # each map alone, under its own seed: the run's seed and
            expected = []  # its names (so no other map moves its score)
            for k, row in enumerate(rows):
                with seeded(metrics.map_seed(7, "cat", row["class"], row["method"])):
                    expected += list(make()(x, cams[k:k + 1], targets[k:k + 1], model))
        else:
            with seeded(7):
                expected = make()(x.repeat(len(rows), 1, 1, 1), cams, targets, model)
        for row, value in zip(rows, expected):
            assert abs(float(row[name]) - float(value)) <= 1e-6, (row["file"], name)
    # ROAD differs between the maps: the numbers say something about each map
    assert len({row["road_combined"] for row in rows}) == len(rows)
    # the record keeps them too (summary.json), unrounded
    first = summary.images[0].cams[0]
    assert set(first.faithfulness) == set(library)


def test_metric_names_are_checked(tmp_path):
    path = write_config(tmp_path, model={"builder": "explain.demo:catdog_efficientnet_lite0"},
                        target_layers=["x"], metrics=["road_combind"])
    assert main([str(path)]) == 2
    path = write_config(tmp_path, model={"builder": "explain.demo:catdog_efficientnet_lite0"},
                        target_layers=["x"], metrics=[{"name": "drop_in_confidence",
                                                       "percentiles": [50]}])
    with pytest.raises(ExplainError, match=r"metrics\[0\]: metric 'drop_in_confidence' takes no"):
        load_config(path)


# ---- map strength ------------------------------------------------------------------------

def test_strength_raw_maximum_logit_probability_and_weak_flag(tmp_path):
    summary, run_dir = small_run(tmp_path, images=[str(IMAGES / "dog.jpg")],
                                 methods=["gradcam", "eigencam"], report={"weak_below": 0.5})
    entry = summary.images[0]
    cfg = load_config(tmp_path / "exp.yaml")
    model = make_small_alexnet()
    x = prepare(ImageRef("dog", IMAGES / "dog.jpg", False), cfg.preprocess).tensor[None]
    logits = model(x).detach().numpy()[0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()  # softmax
    for cls, index in cfg.classes.items():
        rec = entry.record(cls, "gradcam")
        assert rec.logit == pytest.approx(float(logits[index]), abs=1e-5)
        assert rec.probability == pytest.approx(float(probs[index]), abs=1e-6)
        assert rec.weak == (probs[index] < 0.5)
        # raw maximum: Grad-CAM's ReLU'd channel sum at feature resolution, before scaling
        acts, grads = reference.capture(model, model.features[10], x, [index])
        raw = np.maximum((grads.mean(axis=(2, 3))[:, :, None, None] * acts).sum(axis=1), 0)
        assert rec.raw_max == pytest.approx(float(raw.max()), rel=1e-4, abs=1e-6)
        # EigenCAM is a library call: no raw maximum, and the summary says so
        assert entry.record(cls, "eigencam").raw_max is None
    assert sorted(r.weak for r in entry.cams) == [False, False, True, True]
    page = (run_dir / "report.html").read_text()  # the warnings say how many are weak
    assert "2 map(s) are of classes the model gives less than 50%" in page
    # agreement: Pearson r of the two methods' maps of a class, on both records
    maps = {(r.class_name, r.method): np.load(run_dir / r.file.replace(".png", ".npy"))
            for r in entry.cams}
    for cls in cfg.classes:
        r = compare.pearson(maps[(cls, "gradcam")], maps[(cls, "eigencam")])
        assert entry.record(cls, "gradcam").agreement == pytest.approx(r, abs=1e-6)
        assert entry.record(cls, "eigencam").agreement == pytest.approx(r, abs=1e-6)
    notes = " ".join(summary.notes)
    assert "no raw maximum for eigencam" in notes
    assert "eigencam: identical maps for every class on 1 of 1 image(s)" in notes
    row = next(r for r in csv_table(run_dir) if r["method"] == "gradcam")
    assert {"raw_max", "logit", "probability", "weak", "agreement"} <= set(row)


# ---- localisation ------------------------------------------------------------------------

def test_localisation_numbers_on_a_known_map():
    cam = np.zeros((10, 20), np.float32)
    cam[2:4, 3:7] = 1.0  # 8 hot pixels
    cam[8, 18] = 0.25
    mask = annotations.box_mask([[2, 1, 8, 5]], cam.shape)  # columns 2..7, rows 1..4
    assert mask.sum() == 6 * 4
    loc = annotations.localisation(cam, mask, 0.5)
    assert loc.pointing_hit is True
    assert loc.energy_in_box == pytest.approx(8 / 8.25, abs=1e-6)
    assert loc.box_iou == pytest.approx(8 / 24)
    far = annotations.box_mask([[10, 5, 20, 10]], cam.shape)
    miss = annotations.localisation(cam, far, 0.5)
    assert (miss.pointing_hit, miss.box_iou) == (False, 0.0)
    assert miss.energy_in_box == pytest.approx(0.25 / 8.25, abs=1e-6)
    flat = annotations.localisation(np.zeros_like(cam), mask, 0.5)
    assert flat == Localisation(pointing_hit=False, energy_in_box=0.0, box_iou=0.0)


def test_boxes_are_scaled_from_original_to_input_pixels(tmp_path):
    box = annotations.Box("p", "cat", 30, 20, 150, 100, "test")
    # a 300 x 200 photo fed at a fixed 50 x 100 (H x W): x scales by 1/3, y by 1/4
    assert annotations.to_input(box, (200, 300), (50, 100)) == [10.0, 5.0, 50.0, 25.0]
    mask = annotations.box_mask([[10.0, 5.0, 50.0, 25.0]], (50, 100))
    assert mask.sum() == 40 * 20 and mask[5, 10] and not mask[25, 50]
    with pytest.raises(ExplainError, match="lies outside the 300x200 image"):
        annotations.to_input(annotations.Box("p", "cat", 310, 0, 320, 10, "boxes.csv: line 2"),
                             (200, 300), (50, 100))
    # a phone photo stored sideways (EXIF orientation 6): boxes are in the upright pixels,
    # the size explain decodes
    img = Image.fromarray(np.zeros((200, 300, 3), np.uint8))
    exif = img.getexif()
    exif[EXIF_ORIENTATION] = 6
    img.save(tmp_path / "turned.jpg", exif=exif)
    assert annotations.original_size(tmp_path / "turned.jpg") == (300, 200)
    assert read_rgb(tmp_path / "turned.jpg", 10**8).shape[:2] == (300, 200)


def test_box_files_csv_json_voc_and_inline_agree(tmp_path):
    classes = ["cat", "dog"]
    (tmp_path / "b.csv").write_text("image,class,x0,y0,x1,y1,note\nboth.jpg,cat,0,0,224,224,left\n\n"
                                    "both,dog,224,0,448,224,right\n")
    (tmp_path / "b.json").write_text(json.dumps([
        {"image": "both.jpg", "class": "cat", "x0": 0, "y0": 0, "x1": 224, "y1": 224},
        {"image": "both", "class": "dog", "x0": 224, "y0": 0, "x1": 448, "y1": 224}]))
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "both.xml").write_text(
        "<annotation><filename>both.jpg</filename>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>224</xmax><ymax>224</ymax></bndbox></object>"
        "<object><name>dog</name><bndbox><xmin>225</xmin><ymin>1</ymin><xmax>448</xmax><ymax>224</ymax></bndbox></object>"
        "</annotation>")
    def corners(boxes):
        return sorted((b.class_name, b.x0, b.y0, b.x1, b.y1) for b in boxes)
    expected = [("cat", 0, 0, 224, 224), ("dog", 224, 0, 448, 224)]
    for path in (tmp_path / "b.csv", tmp_path / "b.json", voc, voc / "both.xml"):
        assert corners(annotations.read_box_file(path, classes)) == expected, path
    found = annotations.BoxSet(annotations.read_box_file(tmp_path / "b.csv", classes))
    assert sorted(found.for_image("both", IMAGES / "both.jpg")) == ["cat", "dog"]
    assert found.unused() == []

    (tmp_path / "bad.csv").write_text("image,class,x0,y0,x1,y1\nboth.jpg,cta,0,0,5,5\n")
    with pytest.raises(ExplainError, match=r"bad.csv: line 2: class 'cta' .* did you mean 'cat'"):
        annotations.read_box_file(tmp_path / "bad.csv", classes)
    (tmp_path / "bad2.csv").write_text("image,class,x0,y0,x1,y1\nboth.jpg,cat,0,0,5,5\nboth.jpg,dog,9,0,5,5\n")
    with pytest.raises(ExplainError, match=r"bad2.csv: line 3: box .* x0 < x1"):
        annotations.read_box_file(tmp_path / "bad2.csv", classes)
    (tmp_path / "bad.json").write_text('[{"image": "both.jpg", "class": "cat", "x0": "a", "y0": 0, "x1": 1, "y1": 1}]')
    with pytest.raises(ExplainError, match=r"bad.json: item 0: x0, y0, x1, y1 must be numbers"):
        annotations.read_box_file(tmp_path / "bad.json", classes)
    with pytest.raises(ExplainError, match=r"annotations.file: file not found"):
        annotations.read_box_file(tmp_path / "nope.csv", classes)


def test_a_box_outside_its_image_stops_the_run_and_leaves_no_folder(tmp_path):
    (tmp_path / "b.csv").write_text("image,class,x0,y0,x1,y1\ncat.jpg,cat,500,0,600,10\n")
    with pytest.raises(ExplainError, match=r"b.csv: line 2: box .* outside the 451x300 image"):
        small_run(tmp_path, images=[str(IMAGES / "cat.jpg")],
                  annotations={"file": str(tmp_path / "b.csv")})
    assert not (tmp_path / "results" / "exp").exists()


# ---- the demo: real network, real boxes ----------------------------------------------------

SWAPPED = {"both_swapped.jpg": {"cat": [224, 0, 448, 224], "dog": [0, 0, 224, 224]}}


@pytest.fixture(scope="module")
def demo_boxes(tmp_path_factory):
    """The demo config with its box file, plus a copy of both.jpg whose boxes sit on the wrong
    halves (inline). Faithfulness is left to the small-model test above (ROAD is slow)."""
    out = tmp_path_factory.mktemp("demo_boxes")
    shutil.copy(IMAGES / "both.jpg", out / "both_swapped.jpg")
    cfg = load_config(REPO / "configs" / "demo_catdog.yaml", {
        "images": [str(IMAGES / "both.jpg"), str(out / "both_swapped.jpg")],
        "annotations.boxes": SWAPPED, "metrics": [], "channels.enabled": False})
    assert cfg.annotations.file  # the demo ships images/both_boxes.csv
    from explain.runner import RunOptions, run
    summary = run(cfg, RunOptions(out_root=out, **QUIET))
    return summary, out / "demo_catdog"


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_demo_maps_hit_their_box_and_miss_the_wrong_half(demo_boxes, method):
    summary, run_dir = demo_boxes
    both, swapped = summary.images
    assert both.boxes == {"cat": [[0.0, 0.0, 224.0, 224.0]], "dog": [[224.0, 0.0, 448.0, 224.0]]}
    for cls in ("cat", "dog"):
        right = both.record(cls, method).localisation
        assert right.pointing_hit, (cls, method)
        assert right.energy_in_box >= 0.7 and right.box_iou > 0.15
        wrong = swapped.record(cls, method).localisation
        assert not wrong.pointing_hit, (cls, method)
        assert wrong.energy_in_box == pytest.approx(1 - right.energy_in_box, abs=1e-4)
        cam = np.load(run_dir / both.record(cls, method).file.replace(".png", ".npy"))
        half = cam[:, :224] if cls == "cat" else cam[:, 224:]
        assert right.energy_in_box == pytest.approx(half.sum() / cam.sum(), abs=1e-5)
    rows = [r for r in csv_table(run_dir) if r["method"] == method]
    assert [r["pointing_hit"] for r in rows] == ["True", "True", "False", "False"]


def test_demo_report_shows_the_hits(demo_boxes):
    _, run_dir = demo_boxes
    html = (run_dir / "report.html").read_text()
    card = html[html.index('id="img-both"'):html.index('id="img-both_swapped"')]
    assert card.count("✓ hit") == 4 and "✗ miss" not in card
    assert card.count('class="gt-box"') == 4
    assert html[html.index('id="img-both_swapped"'):].count("✗ miss") == 4


# ---- method notes --------------------------------------------------------------------------

def test_per_channel_methods_get_an_estimate_and_no_bars_of_their_own(tmp_path, capfd):
    lines = []
    torch.save(make_small_alexnet(), tmp_path / "small.pth")
    path = write_config(tmp_path, model={"file": str(tmp_path / "small.pth")},
                        images=[str(IMAGES / "cat.jpg")], target_layers=["features.10"],
                        preprocess={"size": 64}, methods=[{"name": "scorecam", "batch_size": 64}],
                        report={"enabled": False})
    from explain.runner import RunOptions, run
    summary = run(load_config(path), RunOptions(progress=False, log=lines.append))
    estimate = next(line for line in lines if line.startswith("estimate: scorecam"))
    assert "one forward pass per channel (256 in features.10)" in estimate
    assert "shared by its 2 classes: 256 passes" in estimate  # 1 image x 256 channels
    # the estimate and the measured time side by side in the summary
    assert set(summary.estimates_s) == {"scorecam"} and summary.estimates_s["scorecam"] >= 0
    assert summary.durations_s["method_scorecam"] > 0
    assert estimate in summary.notes and lines.index(estimate) < lines.index(
        next(line for line in lines if line.startswith("explain: ")))
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err  # ScoreCAM's own tqdm bars stayed silent
    assert summary.images[0].record("cat", "scorecam").raw_max is None


def test_the_faithfulness_estimate_counts_maps_imputations_and_is_kept_beside_the_time(
        tmp_path):
    """ROAD combined (2 x 9 imputations a map) and a plain metric on one image, 2 classes x 2
    methods: the line counts the run's and the baselines' maps, the summary keeps its seconds
    beside the measured ones (key 'metrics')."""
    from helpers import tiny_config, tiny_net
    from explain.baselines import BASELINES
    from explain.runner import RunOptions, run
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, classes={"a": 0, "b": 1},
                       methods=["gradcam", "layercam"],
                       metrics=["road_combined", "drop_in_confidence"],
                       report={"enabled": False}, output={"dir": str(tmp_path / "out")})
    lines = []
    summary = run(load_config(path), RunOptions(progress=False, log=lines.append))
    line = next(x for x in lines if x.startswith("estimate: faithfulness"))
    assert line.startswith("estimate: faithfulness (road_combined, drop_in_confidence): "
                           "2 forward passes per map; 18 ROAD imputations per map")
    assert f"; 4 maps and {2 * len(BASELINES)} baseline maps, " in line
    assert summary.estimates_s["metrics"] > 0 and summary.durations_s["metrics"] > 0
    assert line in summary.notes  # kept; the end of the run prints the time beside it instead
    from explain.pace import about
    from explain.writers.summary import console_lines
    end = console_lines(summary)
    assert not [x for x in end if "estimate:" in x]
    assert f"  time: faithfulness took {summary.durations_s['metrics']:.1f} s " \
           f"({about(summary.estimates_s['metrics'])} estimated)" in end
    d = summary.durations_s  # the per-batch outputs split: metrics apart from the pictures
    last = end[-1]
    assert f"metrics {d['metrics']:.1f}s, pictures and files " \
           f"{d['figures'] - d['metrics']:.1f}s" in last and "of which" not in last, last
    assert d["figures"] >= d["metrics"] > 0
    from explain.writers.summary import duration_parts
    parts = dict(duration_parts(d))
    assert "figures" not in parts and parts["metrics"] == d["metrics"]
    assert parts["pictures and files"] == pytest.approx(d["figures"] - d["metrics"])


def test_agreement_is_each_maps_mean_r_with_the_others_of_its_class():
    """Three methods of one class and one lone map: each of the three gets the mean of its two
    Pearson r's (each pair worked out once), the lone one none."""
    from types import SimpleNamespace
    from explain.enginedata import MapSlot
    from explain.writers.metrics import _agreement
    rng = np.random.default_rng(4)
    base = rng.random((16, 16)).astype(np.float32)
    cams = [base, base + 0.5 * rng.random((16, 16)).astype(np.float32),
            rng.random((16, 16)).astype(np.float32)]
    slots = [MapSlot(0, 0, 1, "dog", m, cam, SimpleNamespace(agreement=None))
             for m, cam in zip(["a", "b", "c"], cams)]
    slots.append(MapSlot(0, 1, 0, "cat", "a", cams[2], SimpleNamespace(agreement=None)))
    _agreement(slots)
    r = {(i, j): compare.pearson(cams[i], cams[j]) for i in range(3) for j in range(3)}
    for i in range(3):
        want = np.mean([r[i, j] for j in range(3) if j != i])
        assert slots[i].record.agreement == pytest.approx(want, abs=1e-6)
    assert slots[0].record.agreement > slots[2].record.agreement + 0.2  # a, b alike; c not
    assert slots[3].record.agreement is None

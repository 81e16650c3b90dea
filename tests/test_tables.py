"""One table per method and per metric: adding either is one entry, and every part of explain
(config check, engine, estimate, summary.csv, report table and glossary, channel views, the
hand-written references) reads that entry.

The made-up metric and method are registered by fixtures that remove them again, so no other
test sees them.
"""

from __future__ import annotations

import csv
import html
import re

import numpy as np
import pytest
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain.config import Config
from explain import channels, methods, metrics, reference
from explain.config import MethodSpec, MetricSpec, load_config
from explain.errors import ExplainError
from explain.images import ImageRef, prepare
from explain.methodtable import method_table
from explain.models.guard import non_inplace
from explain.results import ImageEntry, MapRecord, RunSummary
from conftest import IMAGES, make_small_alexnet, write_config

SIDE = 64  # model input side: features.10 of the small AlexNet is then 3 x 3


# ---- a made-up metric: the share of each map's mass in the centre of the image ---------------

def centre_share(cams: np.ndarray) -> np.ndarray:
    """Per map (K, H, W): the share of its sum in the central half (rows and columns from
    H // 4 to H - H // 4); 0 for an all-zero map."""
    _, h, w = cams.shape
    inner = cams[:, h // 4:h - h // 4, w // 4:w - w // 4].sum(axis=(1, 2), dtype=np.float64)
    total = cams.sum(axis=(1, 2), dtype=np.float64)
    return np.divide(inner, total, out=np.zeros_like(total), where=total > 0)


class CentreMass:
    """Called as the library's metrics are: (inputs, cams, targets, model) -> K scores."""

    def __call__(self, inputs: torch.Tensor, cams: np.ndarray, targets: list,
                 model: torch.nn.Module) -> np.ndarray:
        assert len(inputs) == len(cams) == len(targets)
        return centre_share(np.asarray(cams))


CENTRE_GLOSSARY = "share of the map's sum in the central half of the image (made up for a test)"


@pytest.fixture
def centre_mass():
    entry = metrics.MetricTraits("centre_mass", "centre mass", 1, CENTRE_GLOSSARY, percent=True,
                                 factory=lambda spec: CentreMass(), passes=3,
                                 aliases=("centre",))
    metrics.register(entry)
    yield entry
    metrics.unregister("centre_mass")


# ---- a made-up method: Grad-CAM with the mean of the squared gradients as channel weights ----

class SquaredGradCAM(BaseCAM):
    """w_k = mean over positions of (dy/dA_k)^2; the map is ReLU(sum_k w_k A_k)."""

    def __init__(self, model, target_layers, reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_weights(self, input_tensor, target_layer, target_category, activations, grads):
        return np.mean(grads ** 2, axis=(2, 3))


SQUARED_NOTE = "weights: mean of the squared gradients (made up for a test)"


@pytest.fixture
def squared():
    entry = methods.MethodTraits(shared_pass=True, note=SQUARED_NOTE,
                                 channel_term=methods.ChannelTerm(
                                     "w_k * A_k, w_k = mean of (dy/dA_k)^2", "arbitrary units"))
    methods.register("sqgradcam", SquaredGradCAM, entry)
    yield entry
    methods.unregister("sqgradcam")


def small_run(tmp_path, **fields):
    """One photo (cat.jpg), both classes, through explain.runner.run; the run folder."""
    from explain.runner import RunOptions, run
    torch.save(make_small_alexnet(), tmp_path / "small.pth")
    data = dict(model={"file": str(tmp_path / "small.pth")}, images=[str(IMAGES / "cat.jpg")],
                target_layers=["features.10"], preprocess={"size": SIDE}, targets="all",
                output={"dir": str(tmp_path / "results"), "save_arrays": True})
    data.update(fields)
    lines: list[str] = []
    summary = run(load_config(write_config(tmp_path, **data)),
                  RunOptions(progress=False, log=lines.append))
    return tmp_path / "results" / "exp", summary, lines


def rows_of(run_dir) -> list[dict]:
    with (run_dir / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def methods_table(page: str) -> str:
    return page[page.index('<section id="methods">'):page.index("</section>",
                                                              page.index('<section id="methods">'))]


# ---- tests ------------------------------------------------------------------------------------

def test_a_registered_metric_runs_and_lands_in_the_csv_table_and_glossary(centre_mass, tmp_path):
    run_dir, summary, lines = small_run(tmp_path, methods=["gradcam", "layercam"],
                                        metrics=["centre", "drop_in_confidence"])
    rows = rows_of(run_dir)
    assert len(rows) == 4  # 2 classes x 2 methods
    # the columns: after the built-in metric, in config order
    header = list(rows[0])
    assert header.index("centre_mass") == header.index("drop_in_confidence") - 1
    cams = np.stack([np.load(run_dir / row["file"].replace(".png", ".npy")) for row in rows])
    expected = centre_share(cams)
    assert len(set(np.round(expected, 6))) == 4  # the maps differ: the numbers say something
    for row, value in zip(rows, expected):
        assert abs(float(row["centre_mass"]) - value) <= 1e-9, row["file"]
    # the estimate reads the table's passes: 3 + 2 forward passes per map
    estimate = next(line for line in lines if line.startswith("estimate: faithfulness"))
    assert "(centre_mass, drop_in_confidence): 5 forward passes per map" in estimate
    # the report: a column with the label and direction, the means as percentages, the glossary
    page = html.unescape((run_dir / "report.html").read_text(encoding="utf-8"))
    table = methods_table(page)
    assert re.search(r'<th title="higher is better">centre mass <span class="dir">↑</span></th>',
                     table)
    for method in ("gradcam", "layercam"):
        mean = np.mean([v for row, v in zip(rows, expected) if row["method"] == method])
        row_html = table[table.index(f"<th>{method}"):]
        row_html = row_html[:row_html.index("</tr>")]
        assert f"{100 * mean:.1f}%" in row_html, method
    assert f"<dt>centre mass ↑</dt><dd>{CENTRE_GLOSSARY}</dd>" in table
    # and on the map's card, by its label
    assert "<dt>centre mass</dt>" in page
    assert summary.images[0].cams[0].faithfulness["centre_mass"] == pytest.approx(expected[0])


def test_a_registered_method_gives_the_library_classes_maps(squared, tmp_path):
    run_dir, summary, _ = small_run(tmp_path, methods=["gradcam", "sqgradcam"])
    rows = [row for row in rows_of(run_dir) if row["method"] == "sqgradcam"]
    assert [row["class"] for row in rows] == ["cat", "dog"]
    cfg = load_config(tmp_path / "exp.yaml")
    model = make_small_alexnet()
    x = prepare(ImageRef("cat", IMAGES / "cat.jpg", False), cfg.preprocess).tensor[None]
    with non_inplace(model), SquaredGradCAM(model, [model.features[10]]) as cam:
        for row in rows:
            ours = np.load(run_dir / row["file"].replace(".png", ".npy"))
            theirs = cam(x, [ClassifierOutputTarget(cfg.classes[row["class"]])])[0]
            assert ours.shape == theirs.shape == tuple(x.shape[-2:])
            assert np.abs(ours - theirs).max() <= 1e-5, row["class"]
            assert ours.max() - ours.min() > 0.5  # a map, not a blank
            gradcam = np.load(run_dir / row["file"].replace("sqgradcam", "gradcam")
                              .replace(".png", ".npy"))
            assert np.abs(ours - gradcam).max() > 0.05  # its own weights, not Grad-CAM's
    # shared_pass in the table: made by the engine's one pass, so it has a raw maximum
    assert all(row["raw_max"] for row in rows)
    # the report's methods table and the cards name it, with the table's note
    page = html.unescape((run_dir / "report.html").read_text(encoding="utf-8"))
    assert f'<th>sqgradcam<div class="mnote">{SQUARED_NOTE}</div></th>' in methods_table(page)
    assert "cams/sqgradcam/cat__dog.png" in page


def test_registration_reaches_the_config_check_and_is_undone(tmp_path):
    """While registered, configs accept the names (and the metric's alias); after
    unregister they are unknown again, so one test's registration does not leak."""
    methods.register("sqgradcam", SquaredGradCAM,
                     methods.MethodTraits(shared_pass=True))
    metrics.register(metrics.MetricTraits("centre_mass", "centre mass", 1, CENTRE_GLOSSARY,
                                          factory=lambda spec: CentreMass(),
                                          aliases=("centre",)))
    try:
        assert MethodSpec(name="SqGradCAM").name == "sqgradcam"
        assert "sqgradcam" in methods.registry() and "sqgradcam" in methods.method_names()
        assert MetricSpec(name="centre").name == "centre_mass"
        with pytest.raises(ValueError, match="exists already"):
            methods.register("sqgradcam", SquaredGradCAM)
        with pytest.raises(ValueError, match="exists already"):
            metrics.register(metrics.traits("road_combined"))
    finally:
        methods.unregister("sqgradcam")
        metrics.unregister("centre_mass")
    assert "sqgradcam" not in methods.registry() and "sqgradcam" not in methods.method_names()
    assert methods.traits("sqgradcam") == methods.MethodTraits()
    path = write_config(tmp_path, model={"builder": "explain.demo:catdog_efficientnet_lite0"},
                        target_layers=["x"], methods=["sqgradcam"], metrics=["centre"])
    with pytest.raises(ExplainError) as err:
        load_config(path)
    assert "unknown method 'sqgradcam'" in str(err.value)
    with pytest.raises(ExplainError, match="unknown metric 'centre'"):
        load_config(write_config(tmp_path, model={"file": "m.pth"}, target_layers=["x"],
                                 metrics=["centre"]))


def test_unknown_library_methods_get_the_default_traits():
    """A method a new library release adds is called the library's normal way."""
    default = methods.traits("somenewcam")
    assert not default.shared_pass and default.channel_term is None and default.target_layers
    assert default.reader_note() is None and not default.comparison_targets
    assert set(methods.TABLE) <= set(methods.method_names())  # no entry for a missing class


def test_traits_that_contradict_each_other_are_refused():
    with pytest.raises(ValueError, match="shared_pass"):
        methods.MethodTraits(channel_term=methods.ChannelTerm("t", "u"))
    with pytest.raises(ValueError, match="per channel"):
        methods.MethodTraits(shared_pass=True, per_channel=methods.PerChannelCost())
    with pytest.raises(ValueError, match="only faithfulness"):
        metrics.register(metrics.MetricTraits("x", "x", 1, "x", kind="localisation"))
    with pytest.raises(ValueError, match="lower-case"):
        methods.register("Sq-Grad", SquaredGradCAM)


def test_the_channel_views_read_the_registered_channel_term(squared):
    """A channel-sum entry's term sums to the method's own map (the library class's
    get_cam_image), and the views name the table's term."""
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(6, 5, 4)).astype(np.float32)
    grads = rng.normal(size=(6, 5, 4)).astype(np.float32)
    contrib = channels.channel_contributions("sqgradcam", acts, grads)
    weights = np.mean(grads ** 2, axis=(1, 2))
    np.testing.assert_allclose(contrib, weights[:, None, None] * acts, rtol=1e-5, atol=1e-6)
    assert methods.having("channel_term", ["gradcam", "scorecam", "sqgradcam"]) == (
        "gradcam", "sqgradcam")
    assert channels.numbers.term_and_units("sqgradcam") == ("w_k * A_k, w_k = mean of (dy/dA_k)^2",
                                           "arbitrary units")


def test_every_reference_entry_has_its_hand_written_math():
    """``reference`` in the table says explain.reference writes the method out; that math
    equals the library's own term for the method (close to it where the table notes the
    library departs from the paper: Grad-CAM++'s 1e-6, tests/test_compare.py), and the
    others have none."""
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(1, 6, 5, 4)).astype(np.float32)
    grads = rng.normal(size=(1, 6, 5, 4)).astype(np.float32)
    assert set(methods.having("reference")) == {"gradcam", "layercam", "gradcamplusplus"}
    for name in methods.having("reference"):
        ours = reference.contributions(name, acts, grads)[0]
        library = channels.channel_contributions(name, acts[0], grads[0])
        rtol = 1e-2 if methods.traits(name).paper_note else 1e-4
        np.testing.assert_allclose(ours, library, rtol=rtol, atol=1e-6, err_msg=name)
    for name in set(methods.TABLE) - set(methods.having("reference")):
        with pytest.raises(KeyError):
            reference.contributions(name, acts, grads)


def test_the_metric_table_fills_config_estimate_and_labels():
    assert metrics.metric_names() == ["road_combined", "road_most_relevant_first",
                                      "road_least_relevant_first", "drop_in_confidence",
                                      "increase_in_confidence"]
    spec = MetricSpec(name="road_morf", percentiles=[20, 40, 60])
    assert spec.name == "road_most_relevant_first"
    assert metrics.forward_passes(spec) == 6 and metrics.imputations(spec) == 3
    combined = MetricSpec(name="road_combined")
    assert combined.percentiles == list(metrics.ROAD_PERCENTILES)
    assert metrics.forward_passes(combined) == 36 and metrics.imputations(combined) == 18
    assert metrics.forward_passes(MetricSpec(name="drop_in_confidence")) == 2
    with pytest.raises(ValueError, match="takes no percentiles \\(only road_combined, "):
        MetricSpec(name="increase_in_confidence", percentiles=[50])
    assert metrics.LABELS["box_iou"] == "box IoU" and metrics.LABELS.get("nope", "n") == "n"
    assert [t.name for t in metrics.TABLE.values() if t.percent] == [
        "increase_in_confidence", "pointing_hit", "energy_in_box"]


def test_a_metric_the_table_does_not_know_still_gets_a_column():
    """A run folder written while a metric was registered (or by a later version) keeps its
    numbers in the report's table: a column by name, shown and not ranked."""
    def rec(method, score):
        return MapRecord(class_name="cat", method=method, peak_x=0, peak_y=0, peak_value=1,
                         mass_left=0.5, mass_right=0.5, mass_top=0.5, mass_bottom=0.5,
                         file=f"cams/{method}/a__cat.png",
                         faithfulness={"mystery": score, "drop_in_confidence": score})
    entry = ImageEntry(id="a", path="a.jpg", input_size=[8, 8], probabilities={"cat": 1.0},
                       predicted="cat", cams=[rec("m1", 0.25), rec("m2", 0.75)])
    config = Config.model_validate({"model": {"file": "m.pth"}, "images": ["a.jpg"],
                                    "target_layers": ["x"], "methods": ["gradcam"]})
    summary = RunSummary(name="t", config_file="t.yaml", output_dir=".", device="cpu",
                         config=config, versions={}, images=[entry])
    table = method_table(summary, ["m1", "m2"])
    assert [c.key for c in table.columns] == ["drop_in_confidence", "mystery"]
    mystery = table.columns[1]
    assert (mystery.label, mystery.direction, mystery.ranks) == ("mystery", 0, {})
    assert mystery.means == {"m1": 0.25, "m2": 0.75}
    assert "does not know" in mystery.metric.glossary

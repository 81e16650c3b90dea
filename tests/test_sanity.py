"""Sanity checks (explain.sanity, explain.writers.sanity): model-parameter randomisation and
random logit. The similarity numbers against textbook versions (scipy's spearmanr,
scikit-image's SSIM) and against Quantus' MPRT and RandomLogit on the same maps; the mechanics
on a tiny model (the user's model untouched, a curve point per layer, the random class, the
verdicts); a whole run's records, files and report; bad input; the demo network on one image."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from importlib import metadata
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from explain import sanity, stats
from explain.config import Config
from explain.models.heads import Head
from explain.sanity_records import SanitySummary
from conftest import IMAGES
from helpers import (SIDE, class_targets, cli, engine_maps, library_map, one_line,
                     tiny_config, tiny_net)

SEED = 3


def fake_plan(net: nn.Module, layer: str, methods=("gradcam",), outputs: int = 2, **fields):
    """What explain.sanity reads of a RunPlan, for ``net`` at ``layer``."""
    cfg = Config.model_validate({"model": {"file": "x.pth"}, "images": ["x.jpg"],
                                 "target_layers": [layer], "methods": list(methods),
                                 "classes": {f"c{i}": i for i in range(outputs)},
                                 "seed": SEED, **fields})
    return SimpleNamespace(cfg=cfg, net=net, head=Head(), device=torch.device("cpu"),
                           classes={i: f"c{i}" for i in range(outputs)}, reshape="auto")


def inputs(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def subjects_for(x: torch.Tensor, classes, outputs: int) -> list[sanity.Subject]:
    """One image x class per image, with its random other class."""
    others = sanity.other_classes(classes, outputs, SEED)
    return [sanity.Subject(f"i{n}", x[n], [int(c)], [int(o)])
            for n, (c, o) in enumerate(zip(classes, others))]


# ---- the numbers ---------------------------------------------------------------------------

def test_similarity_is_the_textbook_one():
    skimage = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    for shape in ((32, 32), (24, 40), (7, 9)):
        a = rng.normal(size=shape)
        b = a + rng.normal(size=shape)
        a[:3] = 0.25  # ties
        got = sanity.similarity(a, b)
        na, nb = a / np.abs(a).max(), b / np.abs(b).max()
        assert got[0] == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
        assert got[1] == pytest.approx(spearmanr(np.abs(a).ravel(), np.abs(b).ravel())[0],
                                       abs=1e-12)
        for at, (p, q) in ((2, (na, nb)), (3, (np.abs(na), np.abs(nb)))):
            span = max(p.max(), q.max()) - min(p.min(), q.min())
            assert got[at] == pytest.approx(skimage.structural_similarity(p, q, data_range=span),
                                            abs=1e-12)
    positive = np.abs(rng.normal(size=(16, 16)))
    same = sanity.similarity(positive, positive * 3)  # maps >= 0: |map| is the map
    assert np.allclose(same, 1) and same[0] == same[1] and same[2] == same[3]


def test_constant_maps_and_verdicts():
    flat, varied = np.zeros((8, 8)), np.arange(64.0).reshape(8, 8)
    assert sanity.spearman(flat, varied) == 0.0  # no ranking: unlike any other map
    assert sanity.spearman(flat, flat) == 1.0
    assert sanity.ssim(flat, flat) == 1.0
    assert sanity.spearman(varied, -varied) == pytest.approx(-1.0)
    assert sanity.verdict(0.499, 0.5) == "pass" and sanity.verdict(0.5, 0.5) == "fail"
    assert sanity.verdict(-0.2, -0.1) == "pass"


def test_random_class_is_another_class():
    state = np.random.get_state()[1].copy()
    explained = np.array([0, 1, 2, 3, 4] * 20)
    drawn = sanity.other_classes(explained, 5, SEED)
    assert np.array_equal(np.random.get_state()[1], state)  # numpy's global state untouched
    assert not np.any(drawn == explained) and set(drawn.tolist()) == set(range(5))
    assert np.array_equal(drawn, sanity.other_classes(explained, 5, SEED))
    assert sanity.other_classes([0, 1, 1], 2, SEED).tolist() == [1, 0, 0]  # two: the other one


# ---- the mechanics on a tiny model ---------------------------------------------------------

def test_checks_leave_the_model_untouched_and_give_a_point_per_layer():
    net = tiny_net(outputs=4, convs=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = [(p, p.requires_grad) for p in net.parameters()]
    rng = torch.get_rng_state()
    x = inputs(2)
    plan = fake_plan(net, "2", methods=("gradcam", "layercam"), outputs=4)
    out = sanity.run_checks(plan, subjects_for(x, [1, 3], 4), layers=2, independent=True,
                            guided=True)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert [(p, p.requires_grad) for p in net.parameters()] == params
    assert torch.equal(torch.get_rng_state(), rng) and not net.training
    assert out.layers == ["6", "2"]  # the Linear, then the second conv: output first
    assert out.methods == ["gradcam", "layercam", "guided_backprop", "guided_gradcam",
                           "guided_layercam"]
    for m in out.methods:
        assert out.cascading[m].shape == (2, 2, 4) and out.independent[m].shape == (2, 2, 4)
        assert out.logit[m].shape == (2, 4)
        assert [k for k, _ in out.strip[m]] == [0, 1, 2]
        # the first step is the same re-initialisation in both variants
        assert np.array_equal(out.cascading[m][0], out.independent[m][0])
    assert out.cascading["gradcam"][-1, :, 0].max() < 0.9  # the maps did change
    # the trained model's maps are the engine's, as the run makes them
    trained = engine_maps(net, net[2], ["gradcam"], x[:1], [1])["gradcam"][0, 0]
    assert np.abs(out.strip["gradcam"][0][1] - trained).max() < 1e-6


def test_layers_are_reinitialised_by_their_own_default_seeded():
    net = tiny_net(convs=2)
    randomiser = sanity.Randomiser(net, SEED)
    assert randomiser.net is not net and randomiser.names == ["6", "2", "0"]
    steps = list(randomiser.cascade())
    assert steps == ["6", "2", "0"]
    assert torch.equal(randomiser.net[6].weight, net[6].weight)  # restored afterwards
    expected = copy.deepcopy(net[6])
    torch.manual_seed(SEED)  # layer 0 of the cascade: seed + 0
    expected.reset_parameters()
    moved = iter(randomiser.cascade())
    next(moved)
    assert torch.equal(randomiser.net[6].weight, expected.weight)
    assert torch.equal(randomiser.net[2].weight, net[2].weight)  # not yet
    moved.close()
    assert sanity.randomisable(nn.Sequential(nn.ReLU(), nn.Flatten())) == []


def textbook_ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """SSIM by Wang et al.'s formula, window by window: the mean over every win x win window
    inside the maps, sample variances and covariance, C1 = (0.01 L)^2, C2 = (0.03 L)^2, L =
    max - min of both maps."""
    span = max(a.max(), b.max()) - min(a.min(), b.min())
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    values = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            p, q = a[i:i + win, j:j + win].ravel(), b[i:i + win, j:j + win].ravel()
            cov = np.sum((p - p.mean()) * (q - q.mean())) / (p.size - 1)
            values.append((2 * p.mean() * q.mean() + c1) * (2 * cov + c2)
                          / ((p.mean() ** 2 + q.mean() ** 2 + c1)
                             * (p.var(ddof=1) + q.var(ddof=1) + c2)))
    return float(np.mean(values))


def textbook_pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman (scipy; a constant map: 0) and the textbook SSIM of two maps, each divided by
    its largest |value|."""
    a, b = a / np.abs(a).max(), b / (np.abs(b).max() or 1.0)
    rho = 0.0 if np.ptp(b) == 0 else spearmanr(a.ravel(), b.ravel())[0]
    return rho, textbook_ssim(a, b)


def test_agrees_with_a_hand_written_textbook_version():
    """No Quantus: the cascade done by hand on a copy (the Linear, then each conv, output
    first, re-initialised by its reset_parameters() after torch.manual_seed(seed + k)), the
    maps from pytorch-grad-cam's own GradCAM, the random class drawn by hand; Spearman from
    scipy, SSIM by the formula."""
    net = tiny_net(outputs=3, convs=2)
    x, y = inputs(3, seed=2), [0, 2, 1]
    ours = sanity.run_checks(fake_plan(net, "2", outputs=3), subjects_for(x, y, 3))

    def maps(model: nn.Module, classes) -> list[np.ndarray]:
        return [library_map("gradcam", model, model[2], x[n:n + 1], class_targets(c, 1))[0]
                for n, c in enumerate(classes)]

    trained = maps(net, y)
    picks = np.random.RandomState(SEED).randint(0, 2, len(y))  # an index into the others
    others = [[c for c in range(3) if c != t][p] for t, p in zip(y, picks)]
    for n, other in enumerate(maps(net, others)):
        assert ours.logit["gradcam"][n, [0, 2]] == pytest.approx(
            textbook_pair(trained[n], other), abs=1e-3)
    model = copy.deepcopy(net)
    layers = [m for m in reversed(list(model.modules())) if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(ours.cascading["gradcam"]) == len(layers) == 3
    with torch.random.fork_rng():
        for k, layer in enumerate(layers):
            torch.manual_seed(SEED + k)
            layer.reset_parameters()
            for n, now in enumerate(maps(model, y)):
                assert ours.cascading["gradcam"][k, n, [0, 2]] == pytest.approx(
                    textbook_pair(trained[n], now), abs=1e-3), (k, n)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # Quantus: 0 / 0 on a zero map
def test_agrees_with_quantus_on_the_same_maps(monkeypatch):
    """Quantus' MPRT (cascading, top down) and RandomLogit with explain's maps as their
    explain_func, Spearman from Quantus, SSIM from scikit-image on the (H, W) maps, each map
    normalised by its own max |value| (Quantus' default normalises a whole batch by one
    maximum: normalise_axes [1, 2, 3] makes it per map). Quantus seeds every layer with
    seed + 1; explain layer k with seed + k: its torch.manual_seed is shifted to match."""
    quantus = pytest.importorskip("quantus", reason="quantus is installed by the Makefile "
                                  "(pip install --no-deps quantus==0.6.0): run make test")
    from quantus.helpers.model import pytorch_model
    from skimage.metrics import structural_similarity
    net = tiny_net(outputs=5, convs=2)
    x, y = inputs(4, seed=1), np.array([0, 1, 2, 4])
    plan = fake_plan(net, "2", outputs=5)
    ours = sanity.run_checks(plan, subjects_for(x, y, 5), guided=True)

    def explain_func(model, inputs, targets, row="gradcam", **_):
        maker = sanity.MapMaker(fake_plan(model, "2", outputs=5), model, row != "gradcam")
        with maker.engine:
            maps = maker.maps([sanity.Subject(str(n), torch.as_tensor(inputs[n]), [int(t)])
                               for n, t in enumerate(targets)])
        return np.stack(maps[row])[:, None]

    def ssim_maps(a, b, batched=True, **_):
        return np.array([structural_similarity(p.reshape(SIDE, SIDE), q.reshape(SIDE, SIDE),
                                               data_range=float(np.ptp(np.r_[p, q])))
                         for p, q in zip(a, b)])

    class Shifted:  # the torch module as Quantus' layer generator sees it
        def __init__(self):
            self.calls = 0

        def __getattr__(self, name):
            return getattr(torch, name)

        def manual_seed(self, seed):
            torch.manual_seed(seed - 1 + self.calls)
            self.calls += 1

    common = dict(normalise=True, normalise_func_kwargs={"normalise_axes": [1, 2, 3]},
                  disable_warnings=True, display_progressbar=False)
    call = dict(model=net, x_batch=x.numpy(), y_batch=y, a_batch=None,
                explain_func=explain_func, device="cpu", batch_size=8)
    compared = 0
    rho = quantus.similarity_func.correlation_spearman
    # GradCAM's maps are >= 0: their absolute numbers are the plain ones (tested above); the
    # plain SSIM is the absolute one's code path without abs (kept short: the suite's time)
    for row, at, func, absolute in (("gradcam", 0, rho, False), ("gradcam", 2, ssim_maps, False),
                                    ("guided_backprop", 1, rho, True),
                                    ("guided_backprop", 3, ssim_maps, True)):
        monkeypatch.setattr(pytorch_model, "torch", Shifted())
        mprt = quantus.MPRT(similarity_func=func, layer_order="top_down", seed=SEED,
                            abs=absolute, **common)
        scores = mprt(**call, explain_func_kwargs={"row": row})
        monkeypatch.setattr(pytorch_model, "torch", torch)
        theirs = np.array([scores[name] for name in ours.layers])
        mine = ours.cascading[row][:, :, at]
        finite = np.isfinite(theirs)  # Quantus: NaN where a map is all zero
        assert finite.mean() >= 0.5
        assert np.abs(theirs[finite] - mine[finite]).max() < 1e-3, (row, at)
        if at == 0:
            assert np.all(mine[~finite] == 0.0)  # explain: a constant map ranks as 0
        logit = quantus.RandomLogit(similarity_func=func, num_classes=5, seed=SEED,
                                    abs=absolute, **common)
        theirs = np.array(logit(**call, explain_func_kwargs={"row": row}))
        assert np.abs(theirs - ours.logit[row][:, at]).max() < 1e-3, (row, at)
        compared += int(finite.sum()) + len(theirs)
    assert compared > 50


def test_quantus_set_up_keeps_opencv_headless_alone():
    """Quantus asks for opencv-python, which must never sit beside opencv-python-headless:
    it is installed with --no-deps (Makefile)."""
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution("opencv-python")


# ---- a whole run ---------------------------------------------------------------------------

def test_run_records_files_and_report(tmp_path, capsys, monkeypatch):
    from explain import pace
    timed, measure = [], pace.seconds_per_pass
    monkeypatch.setattr(pace, "seconds_per_pass",
                        lambda model, x, rows: timed.append(rows) or measure(model, x, rows))
    torch.save(tiny_net(convs=2), tmp_path / "tiny.pth")
    path = tiny_config(tmp_path, {"file": "tiny.pth"}, classes={"a": 0, "b": 1},
                       images=[str(IMAGES / "cat.jpg"), str(IMAGES / "dog.jpg")],
                       methods=["gradcam", "eigencam"], target_layers=["2"],
                       guided={"enabled": True},
                       sanity={"enabled": True, "images": 1, "threshold": -0.99,
                               "independent": True})
    code, err, _ = cli(capsys, path)
    assert code == 0, err
    assert "estimate: sanity: 3 layer(s)" in err and "(and for the trained model and a " \
        "random logit)" in err  # the estimate's steps: 2 + 3 x 2
    assert re.search(r"sanity: one layer's step takes [0-9.]+ s: (about [0-9]+ s|under a "
                     r"second) more for the other 4 layer step\(s\)", err), err  # 3 + 3 steps
    took = re.search(r"maps in [0-9.]+s \(.*, sanity checks ([0-9.]+)s[,)]", err, re.M)
    assert took, err  # the summary line names the checks' time beside the maps'
    run = tmp_path / "results" / "exp"
    data = json.loads((run / "summary.json").read_text())
    assert data["estimates_s"]["sanity"] > 0 and data["durations_s"]["sanity"] > 0
    # one image, as the checks pass them (sanity.images copies: 3 GB), timed 2 to 8 times
    assert set(timed) == {1} and 2 <= len(timed) <= pace.MAX_TIMINGS
    assert f"time: sanity checks took {data['durations_s']['sanity']:.1f} s (" in err, err
    checks = SanitySummary.model_validate(data["sanity"])
    assert checks.layers == ["6", "2", "0"] and checks.threshold == -0.99
    assert [m.image for m in checks.maps] == ["cat", "cat"]
    assert {m.random_class for m in checks.maps} == {"a", "b"}
    gradcam = checks.method("gradcam")
    assert gradcam.verdict == "fail" and len(gradcam.cascading) == 3  # nothing is below -0.99
    assert gradcam.final == pytest.approx(np.mean([m.spearman for m in gradcam.final_per_map]),
                                          abs=1e-5)
    assert checks.method("eigencam").logit_verdict == "fail"  # class-agnostic: the same map
    assert checks.method("eigencam").random_logit.spearman == pytest.approx(1.0)
    assert checks.method("guided_backprop") is not None
    for rel in checks.files.paths():
        assert (run / rel).is_file(), rel
    assert set(checks.files.paths()) == {"sanity/cascading.png", "sanity/independent.png",
                                         "sanity/strip.png", "sanity/sanity.csv"}
    rows = list(csv.DictReader(io.StringIO((run / "summary.csv").read_text())))
    header = list(rows[0])
    assert "sanity_verdict" not in header and header.count("sanity") == 1  # one home
    by_method = {r["method"]: r for r in rows}
    assert by_method["gradcam"]["sanity"] == "fails" and by_method["eigencam"]["sanity"] == "fails"
    assert float(by_method["gradcam"]["sanity_spearman"]) == pytest.approx(gradcam.final, abs=1e-5)
    assert by_method["eigencam"]["sanity_logit_verdict"] == "fail"
    table = (run / "sanity" / "sanity.csv").read_text().splitlines()
    assert len(table) == 1 + 5 * (3 + 3 + 1)  # 2 methods, guided backprop, 2 Guided CAMs
    #                                          x (3 cascading, 3 independent, random logit)
    trust = {line["method"]: line for line in data["trust"]["lines"]}  # Which map to trust
    assert trust["gradcam"]["sanity"] == "fails" and trust["eigencam"]["sanity"] == "fails"
    # one image (sanity.images: 1): no interval over images (its 2 maps are not two draws)
    assert (gradcam.final_low, gradcam.final_high) == (None, None)
    assert trust["gradcam"]["sanity_detail"].startswith(
        f"rank correlation {gradcam.final:.2f} with the trained model's maps after 3 layer(s)")
    assert "sanity_spearman_low" not in by_method["gradcam"]
    assert "random logit fails" in trust["eigencam"]["sanity_detail"]
    html = (run / "report.html").read_text()
    assert "sanity: fails</span> <small>(rank correlation" in html
    assert 'id="sanity"' in html and "barely depend on the model's weights" in html
    assert "barely depend on the class explained" in html and "sanity/strip.png" in html
    assert "95% interval of the mean" not in html and "reaches across" not in html
    from explain.writers.report import rebuild
    (run / "report.html").unlink()
    assert 'id="sanity"' in rebuild(run).read_text()


def test_a_partial_cascade_is_inconclusive_not_a_failure(tmp_path, capsys):
    """A newcomer's ResNet with ``layers: 5`` of its 60 failed every method, and the conclusion
    was blocked: a map still like the trained one after a partial cascade is inconclusive
    (the threshold is for the whole cascade); the same maps after the whole one fail."""
    torch.save(tiny_net(convs=2), tmp_path / "tiny.pth")
    for layers, word in ((1, "inconclusive (partial cascade)"), (3, "fails")):
        path = tiny_config(tmp_path, {"file": "tiny.pth"}, classes={"a": 0, "b": 1},
                           methods=["gradcam"], target_layers=["2"], name=f"l{layers}",
                           sanity={"enabled": True, "images": 1, "threshold": -0.99,
                                   "layers": layers})
        code, err, _ = cli(capsys, path)
        assert code == 0, err
        run = tmp_path / "results" / f"l{layers}"
        data = json.loads((run / "summary.json").read_text())
        checks = SanitySummary.model_validate(data["sanity"])
        assert checks.randomisable == 3 and len(checks.layers) == layers
        assert checks.partial is (layers < 3) and checks.method("gradcam").verdict == "fail"
        line = data["trust"]["lines"][0]
        assert line["sanity"] == word
        html = (run / "report.html").read_text()
        assert f"sanity: {word}</span>" in html
        if layers == 1:
            assert "after 1 of 3 layer(s) re-initialised" in line["sanity_detail"]
            assert "raise sanity.layers to decide" in line["sanity_detail"]
            assert "a partial cascade cannot fail a method" in html


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("section, needle", [
    ({"enabled": True, "threshold": 1.5}, "sanity.threshold"),
    ({"enabled": True, "logit_threshold": -1}, "sanity.logit_threshold"),
    ({"enabled": True, "layers": 0}, "sanity.layers"),
    ({"enabled": True, "measure": "pearson"}, "sanity.measure")])
def test_bad_settings_are_one_line(tmp_path, capsys, section, needle):
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    path = tiny_config(tmp_path, {"file": "tiny.pth"}, classes={"a": 0, "b": 1},
                       methods=["gradcam"], sanity=section)
    code, err, _ = cli(capsys, path)
    assert code == 2
    one_line(err, needle)
    assert not (tmp_path / "results").exists()


def test_model_without_parameters_is_one_line(tmp_path, capsys):
    net = nn.Sequential(nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.save(net, tmp_path / "flat.pth")
    path = tiny_config(tmp_path, {"file": "flat.pth"}, classes={"a": 0, "b": 1},
                       target_layers=["0"], methods=["gradcam"], sanity={"enabled": True})
    code, err, _ = cli(capsys, path)
    assert code == 2
    one_line(err, "no parameters")
    assert not (tmp_path / "results").exists()
    with pytest.raises(Exception) as info:
        sanity.check_randomisable(net)
    one_line(info, "sanity: the model has no parameters")


def test_parameters_no_layer_can_reset_is_one_line():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.weight[:, None, None]

    with pytest.raises(Exception) as info:
        sanity.check_randomisable(nn.Sequential(Scale(), nn.Flatten()))
    one_line(info, "sanity: none of the model's 1 parameter tensors", "reset_parameters()")
    assert sanity.not_randomised(nn.Sequential(Scale(), nn.Linear(2, 2))) == 1


# ---- the demo network ----------------------------------------------------------------------

def test_demo_gradcam_and_layercam_pass(demo_model):
    """The real pretrained network on one photo, its top three layers re-initialised."""
    from explain.config import Preprocess
    from explain.images import ImageRef, prepare
    item = prepare(ImageRef("cat", IMAGES / "cat.jpg", False), Preprocess())
    plan = fake_plan(demo_model, "backbone._blocks.15", methods=("gradcam", "layercam"))
    out = sanity.run_checks(plan, [sanity.Subject("cat", item.tensor, [0, 1], [1, 0])],
                            layers=3)
    assert out.layers == ["backbone._fc", "backbone._bn1", "backbone._conv_head"]
    for m in ("gradcam", "layercam"):
        final = out.cascading[m][-1].mean(axis=0)[0]
        assert sanity.verdict(final, 0.5) == "pass", (m, final)


def test_the_estimate_prices_scorecams_passes_as_the_engine_runs_them(tmp_path, capsys):
    """ScoreCAM's passes are shared by the classes and run in batches: the estimate counted
    them per class at one image's pass (98 s estimated for 21 s on a newcomer's run). Two
    classes, 6 channels at layer '2', 1 image, 2 layers: 4 steps x (1 forward + 2 backward for
    gradcam's shared pass + 6 channel passes) = 36 passes, not 4 x (3 + 2 x (2 + 6)) = 76."""
    torch.save(tiny_net(convs=2), tmp_path / "tiny.pth")
    path = tiny_config(tmp_path, {"file": "tiny.pth"}, classes={"a": 0, "b": 1},
                       methods=["gradcam", "scorecam"], target_layers=["2"], metrics=[],
                       report={"enabled": False}, channels={"enabled": False},
                       sanity={"enabled": True, "images": 1, "layers": 2})
    code, err, _ = cli(capsys, path)
    assert code == 0, err
    assert "estimate: sanity: 2 layer(s) re-initialised" in err and "about 36 passes" in err, err


def test_a_partial_cascade_beside_a_random_logit_failure_says_both():
    """The badge said only "inconclusive (partial cascade)" when the random-logit check had
    failed too (a newcomer's reading: the failure was in the small print alone)."""
    from explain.sanity_records import CLASS_BLIND, PARTIAL, PARTIAL_LOGIT
    sim = {"spearman": 0.9, "spearman_abs": 0.9, "ssim": 0.9, "ssim_abs": 0.9}
    def record(partial: bool, logit: str) -> SanitySummary:
        return SanitySummary.model_validate({
            "measure": "spearman", "threshold": 0.5, "logit_threshold": 0.5, "seed": 0,
            "layers": ["fc"] if partial else ["fc", "conv"], "randomisable": 2,
            "not_randomised": 0, "maps": [], "methods": [{
                "method": "gradcam", "verdict": "fail", "final": 0.9, "cascading": [],
                "random_logit": sim, "logit_verdict": logit}]})
    word, text = record(True, "fail").verdicts()["gradcam"]
    assert word == PARTIAL_LOGIT == "inconclusive (partial cascade), fails random logit"
    assert word in CLASS_BLIND and "random logit fails" in text
    assert record(True, "pass").verdicts()["gradcam"][0] == PARTIAL
    assert record(False, "fail").verdicts()["gradcam"][0] == "fails"


def test_the_checks_make_their_maps_at_the_run_s_precision():
    """The sanity maps are made as the run makes its maps: a bf16 run's checks ran in fp32
    (MapMaker dropped the config's precision)."""
    net = tiny_net(outputs=2, convs=2)
    maker = sanity.MapMaker(fake_plan(net, "2", precision="bf16"), net)
    assert maker.engine.options.precision == "bf16"
    assert sanity.MapMaker(fake_plan(net, "2"), net).engine.options.precision == "fp32"


def test_the_measures_are_named_in_one_table():
    """sanity_records.MEASURES is the one list of the four measures: explain.sanity's order,
    the records' fields and the config's choices follow it."""
    import typing
    from explain.config.sections import Sanity
    from explain.sanity_records import MEASURES, Similarity
    assert sanity.MEASURES == tuple(MEASURES) == tuple(Similarity.model_fields)
    assert typing.get_args(Sanity.model_fields["measure"].annotation) == tuple(MEASURES)


def test_a_verdict_whose_interval_reaches_across_the_threshold_says_so():
    """Pass or fail is the literature's rule on the mean over a few maps (2 images x 2 classes
    by default): the line and the table give the mean's interval, and say when it reaches
    across the threshold; a settled verdict says nothing more."""
    def record(low: float, high: float) -> SanitySummary:
        return SanitySummary.model_validate({
            "measure": "spearman", "threshold": 0.5, "logit_threshold": 0.5, "seed": 0,
            "layers": ["fc", "conv"], "not_randomised": 0, "methods": [{
                "method": "gradcam", "verdict": "pass", "final": 0.3, "final_low": low,
                "final_high": high, "cascading": [], "final_per_map": [
                    {"spearman": v, "spearman_abs": v, "ssim": v, "ssim_abs": v}
                    for v in (0.1, 0.2, 0.4, 0.5)]}],
            "maps": [{"image": i, "class": c} for i in ("a", "b") for c in ("cat", "dog")]})
    word, text = record(0.05, 0.55).verdicts()["gradcam"]
    assert word == "passes" and text.startswith("rank correlation 0.30 [0.05, 0.55] over 2 "
                                                "images with the trained model's maps")
    assert "its interval reaches across the threshold: more images (sanity.images)" in text
    assert "reaches across" not in record(0.05, 0.45).verdicts()["gradcam"][1]
    older = record(0.05, 0.55).model_dump()
    older["methods"][0].pop("final_low"), older["methods"][0].pop("final_high")
    text = SanitySummary.model_validate(older).verdicts()["gradcam"][1]
    assert text.startswith("rank correlation 0.30 with the trained") and "across" not in text


def test_the_sanity_interval_resamples_images_and_the_table_shows_it():
    """An image's maps of its classes are alike: the interval of the verdict's mean resamples
    images (each image's maps averaged first), as the trust intervals do, and stays within
    [-1, 1]; one image gets none. The table shows it and says when it reaches across."""
    from types import SimpleNamespace

    from explain.writers.report import environment
    from explain.writers.sanity import _interval
    values = np.array([0.9, 0.8, 0.1, 0.2, 0.5, 0.7])
    images = ["a", "a", "b", "b", "c", "c"]
    low, high = _interval(values, images, seed=3)
    expect = stats.interval([0.85, 0.15, 0.6], seed=3)
    assert (low, high) == (pytest.approx(max(expect[0], -1), abs=1e-6),
                           pytest.approx(min(expect[1], 1), abs=1e-6))
    assert _interval(values[:2], images[:2], seed=3) == (None, None)
    wide = _interval(np.array([-0.9, 0.9]), ["a", "b"], seed=0)
    assert wide[0] >= -1 and wide[1] <= 1  # the expanded interval of 2 values: clipped
    sim = {"spearman": 0.5, "spearman_abs": 0.5, "ssim": 0.5, "ssim_abs": 0.5}
    record = SanitySummary.model_validate({
        "measure": "spearman", "threshold": 0.5, "logit_threshold": 0.5, "seed": 0,
        "layers": ["fc"], "not_randomised": 0, "methods": [{
            "method": "gradcam", "verdict": "pass", "final": 0.3, "final_low": low,
            "final_high": high, "cascading": [], "final_per_map": [sim] * 6}],
        "maps": [{"image": i, "class": c} for i in "abc" for c in ("cat", "dog")]})
    html = environment().get_template("sanity.html.j2").render(
        summary=SimpleNamespace(sanity=record), prefix="")
    assert f'<small title="95% interval of the mean over the 3 images">[{stats.cell(low)}, ' \
           f'{stats.cell(high)}]</small>' in html
    assert (f"Its interval over the 3 images, [{stats.cell(low)}, {stats.cell(high)}], reaches "
            f"across 0.5: more images") in html


def test_the_sanity_interval_holds_its_mean_over_maps_when_images_have_unequal_maps():
    """targets [label, predicted] give an image one map where label and prediction agree and
    two where they differ: the interval of the per-image means was of another mean than the
    verdict's (over maps), which a large run could leave outside it. Each resample's maps'
    mean is drawn instead; equal counts keep the per-image means' interval."""
    from explain.writers.sanity import _interval
    rng = np.random.default_rng(0)
    images, values = [], []
    for i in range(40):  # one-map images high, two-map images low
        n = 1 if i % 2 else 2
        images += [f"im{i}"] * n
        values += list(rng.uniform(0.6, 0.7, n) if n == 1 else rng.uniform(0.0, 0.1, n))
    mean_over_maps = float(np.mean(values))
    per_image = [float(np.mean([v for im, v in zip(images, values) if im == f"im{i}"]))
                 for i in range(40)]
    low, high = _interval(np.array(values), images, seed=1)
    assert low < mean_over_maps < high
    old_low, old_high = stats.interval(per_image, seed=1)
    assert not old_low < mean_over_maps < old_high  # the per-image interval missed it
    equal = _interval(np.array(values[:4]), ["a", "a", "b", "b"], seed=1)
    expect = stats.interval([float(np.mean(values[:2])), float(np.mean(values[2:4]))], seed=1)
    assert equal == (round(max(expect[0], -1), 6), round(min(expect[1], 1), 6))

"""explain.road against the library's ROAD (pytorch_grad_cam.metrics.road): the same masks,
imputed images (noise off) and noise draws, and the same metric values with the same seed;
and the default of ``metrics`` (on for small runs)."""

import re
import warnings

import cv2
import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import (RemoveLeastRelevantFirst,
                                                              RemoveMostRelevantFirst)
from pytorch_grad_cam.metrics.road import (NoisyLinearImputer, ROADCombined,
                                           ROADLeastRelevantFirstAverage,
                                           ROADMostRelevantFirstAverage)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain import imputation, metrics, road
from explain.config import MetricSpec, load_config
from explain.engine import seeded
from explain.plan import default_metrics
from conftest import IMAGES, OMIT, make_small_alexnet, write_config


def library_impute(img: torch.Tensor, keep: np.ndarray, noise: float) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its singular solve when every pixel is removed
        return NoisyLinearImputer(noise=noise)(img, torch.from_numpy(np.float32(keep)))


def blob(shape, seed, sigma=4.0, zeros=0.0):
    """A smooth map in 0..1 (a ReLU'd CAM when ``zeros``: that share of it exactly 0)."""
    rng = np.random.default_rng(seed)
    cam = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    if zeros:
        cam[cam < np.quantile(cam, zeros)] = 0
    return cam.astype(np.float32)


def masks(shape) -> dict[str, np.ndarray]:
    """Kept pixels (True) of masks with borders, corners, full rows and columns removed,
    lone removed pixels (at odd and even places), one pixel kept, and none kept."""
    h, w = shape
    keep = np.ones(shape, bool)
    out = {"blob": blob(shape, 1) < 0.6}
    frame = keep.copy()
    frame[:2], frame[:, -3:] = False, False
    out["border rows and columns"] = frame
    corners = keep.copy()
    corners[:5, :5] = corners[-4:, -6:] = corners[:3, -3:] = corners[-1, 0] = False
    out["corners"] = corners
    rows = keep.copy()
    rows[h // 3:h // 3 + 3] = False
    rows[:, w // 2] = False
    out["full rows and a column"] = rows
    lone = blob(shape, 2) < 0.5
    lone[1::4, 1::4] = False
    lone[2::7, ::5] = False
    out["blob and lone pixels"] = lone
    one = np.zeros(shape, bool)
    one[h // 2, w // 3] = True
    out["one pixel kept"] = one
    out["none kept"] = np.zeros(shape, bool)
    return out


@pytest.mark.parametrize("shape", [(32, 48), (64, 64)])
@pytest.mark.parametrize("multigrid", [False, True])
def test_the_imputation_equals_the_library(shape, multigrid, monkeypatch):
    """Noise off, the imputed image equals the library's, by SuperLU and by the multigrid
    (forced here on small systems: every size above 50 unknowns)."""
    if multigrid:
        monkeypatch.setattr(imputation, "DIRECT_MAX", 50)
        monkeypatch.setattr(imputation, "COARSEST", 60)
    img = torch.from_numpy(np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32))
    for name, keep in masks(shape).items():
        ours = road.impute(img, keep, noise=0.0)
        theirs = library_impute(img, keep, 0.0)
        assert torch.equal(ours[:, keep], img[:, keep]), name  # known pixels untouched
        assert (ours - theirs).abs().max() <= 1e-5, name
    # a lone removed pixel is the weighted mean of its 8 neighbours
    keep = np.ones(shape, bool)
    keep[5, 7] = False
    value = road.impute(img, keep, noise=0.0)[:, 5, 7]
    around = img[:, 4:7, 6:9]
    weights = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    assert torch.allclose(value, (around * weights).sum(dim=(1, 2)), atol=1e-6)


def test_a_large_system_by_multigrid_equals_the_library():
    """224 x 224 with most pixels removed (tens of thousands of unknowns: the multigrid's
    case at the default sizes), for most and least relevant first."""
    img = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 224, 224)).astype(np.float32))
    cam = blob((224, 224), 4, sigma=20)
    for most in (True, False):
        keep = road.keep_mask(cam, 30, most)
        assert (~keep).sum() > imputation.DIRECT_MAX
        assert (road.impute(img, keep, 0.0) - library_impute(img, keep, 0.0)).abs().max() <= 1e-5


def test_masks_and_noise_draws_equal_the_library():
    """The kept pixels are the library's (ties at 0 and 1 included), and with the same seed
    the noisy imputation is the library's: same numbers drawn in the same layout, for 3
    channels and for 1."""
    cam = blob((32, 48), 5, zeros=0.4)
    cam[cam > 0.9] = 1.0
    img = torch.randn(3, 32, 48)
    for p in (10, 40, 50, 90):
        for most, remove in ((True, RemoveMostRelevantFirst), (False, RemoveLeastRelevantFirst)):
            seen = {}
            remove(p, lambda _, mask: seen.setdefault("mask", mask))(img, torch.from_numpy(cam))
            keep = road.keep_mask(cam, p, most)
            assert np.array_equal(seen["mask"].numpy() > 0.5, keep), (p, most)
            for channels in (img, img[:1]):
                torch.manual_seed(11)
                theirs = library_impute(channels, keep, 0.01)
                torch.manual_seed(11)
                ours = road.impute(channels, keep)
                assert (ours - theirs).abs().max() <= 1e-5, (p, most)
                assert torch.randn(1).item() == pytest.approx(
                    (torch.manual_seed(11), library_impute(channels, keep, 0.01),
                     torch.randn(1))[2].item())  # the generator ends where the library's does


@pytest.mark.parametrize("shape", [(32, 48), (64, 64)])
def test_the_metrics_equal_the_library_with_the_same_seed(shape):
    """Three maps of one image (a smooth map, a ReLU'd one with 40% zeros, a constant one)
    and their classes; each ROAD variant equals the library's with the same seed (the
    combined one solves on 2 threads: the suite runs torch on one, the default's count)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(128, 2)).eval()
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(1, 3, *shape)).astype(np.float32))
    inputs = x.expand(3, *x.shape[1:]).contiguous()
    cams = np.stack([blob(shape, 7), blob(shape, 8, zeros=0.4), np.full(shape, 0.5, np.float32)])
    targets = [ClassifierOutputTarget(c) for c in (0, 1, 1)]
    cases = [(ROADCombined([20, 50, 90]), road.ROAD("combined", [20, 50, 90], workers=2)),
             (ROADMostRelevantFirstAverage([10, 60]), road.ROAD("most", [10, 60], batch=4)),
             (ROADLeastRelevantFirstAverage([30]), road.ROAD("least", [30], workers=1))]
    for library, ours in cases:
        with seeded(4), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = library(inputs, cams, targets, model)
        with seeded(4):
            got = ours(inputs, cams, targets, model)
        assert got.dtype == np.float32 and got.shape == (3,)
        assert np.abs(got - expected).max() <= 1e-5, type(library).__name__
    assert len(set(np.round(got, 6))) > 1  # the maps' scores differ


def test_a_map_with_its_own_seed_scores_the_same_beside_any_other_maps():
    """With a seed per map, each map's noise comes from its own generator: its score is the
    library's call on it alone after that seed, and stays so when other maps join the call
    (a run's ROAD moved when a method was added: the noise was drawn map after map)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(128, 2)).eval()
    shape = (24, 32)
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(1, 3, *shape)).astype(np.float32))
    cams = np.stack([blob(shape, 7), blob(shape, 8, zeros=0.4), blob(shape, 9)])
    targets = [ClassifierOutputTarget(c) for c in (0, 1, 1)]
    seeds = [11, 12, 13]
    metric = road.ROAD("combined", [20, 50, 90], workers=2)
    both = metric(x.expand(3, *x.shape[1:]).contiguous(), cams, targets, model, seeds=seeds)
    for k in range(3):
        with seeded(seeds[k]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alone = ROADCombined([20, 50, 90])(x, cams[k:k + 1], targets[k:k + 1], model)
        assert abs(both[k] - alone[0]) <= 1e-5, k
    pair = metric(x.expand(2, *x.shape[1:]).contiguous(), cams[1:], targets[1:], model,
                  seeds=seeds[1:])
    assert np.array_equal(pair, both[1:])  # the first map gone: the others keep their scores
    with seeded(seeds[1]):
        shared = metric(x.expand(2, *x.shape[1:]).contiguous(), cams[1:], targets[1:], model)
    assert not np.array_equal(shared, both[1:])  # one generator for both: other draws


class _ViewNet(torch.nn.Module):
    """A model that flattens a conv activation with ``view``: it fails on channels-last
    batches, as many hand-written course models would."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.Linear(4 * 8 * 8, 2)
        self.calls: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.is_contiguous())
        a = torch.relu(self.conv(x))
        return self.fc(a.view(a.size(0), -1))


def test_a_model_that_cannot_take_channels_last_gets_contiguous_batches():
    """ROAD passes channels-last batches; a model that breaks on them (``view``) gets the
    same batch contiguous, from then on, and the scores equal the library's."""
    torch.manual_seed(1)
    model = _ViewNet().eval()
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(1, 3, 32, 32)).astype(np.float32))
    inputs = x.expand(2, *x.shape[1:]).contiguous()
    cams = np.stack([blob((32, 32), 4), blob((32, 32), 5)])
    targets = [ClassifierOutputTarget(0), ClassifierOutputTarget(1)]
    with seeded(2), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ROADCombined([30, 70])(inputs, cams, targets, model)
    model.calls.clear()
    with seeded(2):
        got = road.ROAD("combined", [30, 70])(inputs, cams, targets, model)
    assert np.abs(got - expected).max() <= 1e-5
    assert model.calls[0] is False and all(model.calls[1:])  # one try, then contiguous
    assert len(model.calls) == 1 + 1 + 8 // road.BATCH  # before, its retry, 8 imputations


def test_the_metric_table_runs_explains_road():
    """The config's ROAD names make explain.road's metric, at the config's percentiles."""
    spec = MetricSpec(name="road_morf", percentiles=[20, 40])
    made = metrics.library_metric(spec)
    assert isinstance(made, road.ROAD) and (made.order, made.percentiles) == ("most", [20, 40])
    assert metrics.library_metric(MetricSpec(name="road_combined")).percentiles == \
        list(metrics.ROAD_PERCENTILES)
    with pytest.raises(ValueError, match="combined, most or least"):
        road.ROAD("both")


def test_metrics_default_to_road_for_small_runs_only(tmp_path):
    """Unset: ROAD combined at its 9 percentiles up to AUTO_MAPS maps, none above (a note
    says why and how); the config keeps unset as None and [] as off."""
    on, note = default_metrics(metrics.AUTO_MAPS)
    assert [(s.name, s.percentiles) for s in on] == [("road_combined", list(range(10, 100, 10)))]
    assert "by default" in note and "'metrics: []' turns it off" in note
    off, note = default_metrics(metrics.AUTO_MAPS + 1)
    assert off == [] and f"off by default for runs over {metrics.AUTO_MAPS} maps" in note
    assert "'metrics: [road_combined]'" in note
    cfg = load_config(write_config(tmp_path, model={"file": "m.pth"}, target_layers=["x"],
                                   metrics=OMIT))
    assert cfg.metrics is None
    assert load_config(write_config(tmp_path, model={"file": "m.pth"}, target_layers=["x"],
                                    metrics=[])).metrics == []


def test_a_small_run_computes_road_by_default(tmp_path):
    """A run whose config leaves metrics unset: every map gets road_combined, the summary's
    config says what ran (the plan chose it), the note is in the summary and the estimate
    is printed."""
    from explain.runner import RunOptions, run
    model_file = tmp_path / "small.pth"
    torch.save(make_small_alexnet(), model_file)
    path = write_config(tmp_path, model={"file": str(model_file)}, target_layers=["features.10"],
                        preprocess={"size": 64}, methods=["gradcam"],
                        images=[str(IMAGES / "cat.jpg")], classes={"cat": 0}, metrics=OMIT,
                        output={"dir": str(tmp_path / "results")})
    lines = []
    summary = run(load_config(path), RunOptions(progress=False, log=lines.append))
    assert [r.faithfulness.keys() for r in summary.images[0].cams] == [{"road_combined"}]
    assert [s.name for s in summary.config.metrics] == ["road_combined"]
    assert any(note.startswith("metrics: road_combined at percentiles 10..90 by default")
               for note in summary.notes)
    estimate = next(line for line in lines if line.startswith("estimate: faithfulness"))
    assert "18 ROAD imputations per map" in estimate
    assert re.search(r"a sparse solve \(about [1-9]\d* ms per map at 64 x 96 ", estimate)  # not
    assert "1 map and 3 baseline maps" in estimate  # 'about 0.0 s' (or 0.1 s) at 64 x 96
    assert [sorted(b.scores) for b in summary.images[0].baselines] == [["road_combined"]] * 3


def test_the_estimate_of_a_resumed_run_counts_the_images_it_computes(tmp_path):
    """--resume keeping one of two images estimates the other's maps only."""
    from explain.runner import RunOptions, run
    model_file = tmp_path / "small.pth"
    torch.save(make_small_alexnet(), model_file)
    path = write_config(tmp_path, model={"file": str(model_file)}, target_layers=["features.10"],
                        preprocess={"size": 64}, methods=["gradcam"],
                        images=[str(IMAGES / "cat.jpg"), str(IMAGES / "dog.jpg")],
                        classes={"cat": 0}, metrics=[{"name": "road_combined",
                                                      "percentiles": [50]}],
                        output={"dir": str(tmp_path / "results")})
    first = []
    run(load_config(path), RunOptions(progress=False, log=first.append))
    folder = tmp_path / "results" / "exp"
    (folder / "summary.json").unlink()
    (folder / "items" / "dog.json").unlink()
    again = []
    run(load_config(path), RunOptions(progress=False, log=again.append, resume=True))
    estimates = [next(line for line in lines if line.startswith("estimate: faithfulness"))
                 for lines in (first, again)]
    assert "2 maps and 6 baseline maps" in estimates[0]
    assert "1 map and 3 baseline maps" in estimates[1]
    (folder / "summary.json").unlink()  # every image kept: nothing is estimated
    last = []
    run(load_config(path), RunOptions(progress=False, log=last.append, resume=True))
    assert not [line for line in last if line.startswith("estimate")]

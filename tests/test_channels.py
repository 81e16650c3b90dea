"""Channel mosaics, per-channel contributions and channel statistics."""

import csv

import numpy as np
import pytest

from explain import reference
from explain.channels import channel_grid, channel_stats, grid_shape, normalise
from explain.config import load_config
from explain.runner import RunOptions, run
from conftest import REPO


def tile(mosaic, k, cols, h, w, sep=1):
    r, c = divmod(k, cols)
    return mosaic[r * (h + sep): r * (h + sep) + h, c * (w + sep): c * (w + sep) + w]


@pytest.mark.parametrize("channels,shape", [(256, (16, 16)), (384, (20, 20)), (10, (3, 4)), (1, (1, 1))])
def test_tile_k_is_channel_k_after_its_own_normalisation(channels, shape):
    rng = np.random.default_rng(channels)
    stack = rng.normal(size=(channels, 6, 9)).astype(np.float32) * rng.uniform(0.1, 50, (channels, 1, 1))
    mosaic = channel_grid(stack)
    rows, cols = grid_shape(channels)
    assert (rows, cols) == shape
    assert mosaic.shape == (rows * 7 - 1, cols * 10 - 1) and mosaic.dtype == np.uint8
    for k in range(channels):
        lo, hi = stack[k].min(), stack[k].max()
        expected = np.uint8(np.round((stack[k] - lo) / (hi - lo) * 255))
        assert np.array_equal(tile(mosaic, k, cols, 6, 9), expected), k
    for k in range(channels, rows * cols):  # padding tiles are blank (white)
        assert (tile(mosaic, k, cols, 6, 9) == 255).all()


def test_constant_channels_are_flat_tiles_without_nan():
    stack = np.zeros((10, 5, 5), np.float32)
    stack[3] = 7.0
    stack[4] = np.arange(25).reshape(5, 5)
    assert not np.isnan(normalise(stack)).any()
    mosaic = channel_grid(stack)
    assert (tile(mosaic, 0, 4, 5, 5) == 0).all() and (tile(mosaic, 3, 4, 5, 5) == 0).all()
    assert tile(mosaic, 4, 4, 5, 5).max() == 255


def test_shared_scale_keeps_strong_and_weak_channels_apart():
    stack = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 10.0)]).astype(np.float32)
    stack[:, 0, 0] = 0
    mosaic = channel_grid(stack, shared_scale=True)
    assert tile(mosaic, 0, 2, 4, 4)[1, 1] == 26 and tile(mosaic, 1, 2, 4, 4)[1, 1] == 255


def test_colormap_overlay_and_tile_size_give_rgb_tiles():
    import cv2
    stack = np.random.default_rng(0).random((4, 3, 5)).astype(np.float32)
    photo = np.full((60, 100, 3), 0.2, np.float32)
    out = channel_grid(stack, tile_size=30, colormap=cv2.COLORMAP_JET, photo=photo, image_weight=0.25)
    assert out.shape == (2 * 31 - 1, 2 * 51 - 1, 3)
    for k in range(4):  # each tile: its channel, normalised, resized, coloured, blended
        gray = np.uint8(np.round(cv2.resize(normalise(stack[k:k + 1])[0], (50, 30)) * 255))
        heat = cv2.applyColorMap(gray, cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
        expected = np.uint8(np.round(0.75 * heat + 0.25 * 0.2 * 255))
        got = tile(out, k, 2, 30, 50).astype(int)
        assert np.abs(got - expected).max() <= 1, k
    labelled = channel_grid(stack, tile_size=30, labels=True)
    assert not np.array_equal(labelled, channel_grid(stack, tile_size=30))  # labels drawn


def test_channel_stats_on_a_hand_made_case():
    acts = np.ones((4, 2, 2), np.float32)
    grads = np.zeros((4, 2, 2), np.float32)
    grads[0] = 3.0   # contribution 3 per pixel
    grads[1] = 1.0   # 1 per pixel
    grads[2] = -1.0  # works against the class
    # channel 3 has no gradient at all
    rows, stats = channel_stats("gradcam", acts, grads)
    assert stats == {"channels": 4, "nonzero_gradient": 3, "channels_50": 1, "channels_90": 2}
    assert [r["channel"] for r in rows] == [0, 1, 3, 2]
    assert [r["share"] for r in rows] == [0.75, 0.25, 0.0, -0.25]
    assert [r["zero_gradient"] for r in rows] == [False, False, True, False]
    assert rows[0]["weight"] == 3.0
    layer_rows, _ = channel_stats("layercam", acts, grads)
    assert layer_rows[0]["weight"] is None and [r["share"] for r in layer_rows][:2] == [0.75, 0.25]


@pytest.fixture(scope="module")
def demo_channels(tmp_path_factory):
    out = tmp_path_factory.mktemp("channels")
    cfg = load_config(REPO / "configs" / "demo_catdog.yaml",
                      {"methods": ["gradcam", "layercam", "eigencam"], "images": ["../images/both.jpg"]})
    summary = run(cfg, RunOptions(out_root=out, progress=False, log=lambda _: None))
    return summary, out / "demo_catdog"


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
@pytest.mark.parametrize("cls", ["cat", "dog"])
def test_contributions_add_up_to_the_library_map(demo_channels, method, cls):
    _, run_dir = demo_channels
    contrib = np.load(run_dir / "channels" / method / f"both__{cls}__contributions.npy")
    library = np.load(run_dir / "cams" / method / f"both__{cls}.npy")
    assert contrib.shape == (320, 7, 14)
    rebuilt = reference.finish(contrib.sum(axis=0), library.shape)
    assert np.abs(rebuilt - library).max() <= 1e-5


def test_channel_outputs_agree_with_each_other(demo_channels):
    summary, run_dir = demo_channels
    acts = np.load(run_dir / "channels" / "both__activations.npy")
    with open(run_dir / "channels" / "gradcam" / "both__dog__channels.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 320
    shares = [float(r["share"]) for r in rows]
    assert shares == sorted(shares, reverse=True)
    assert sum(s for s in shares if s > 0) == pytest.approx(1.0, abs=1e-3)
    top = int(rows[0]["channel"])
    assert float(rows[0]["mean_activation"]) == pytest.approx(acts[top].mean(), abs=1e-5)
    item = next(c for c in summary["images"][0]["cams"] if c["method"] == "gradcam" and c["class"] == "dog")
    assert 1 <= item["channels"]["channels_50"] < item["channels"]["channels_90"] <= 320
    assert not (run_dir / "channels" / "eigencam").exists()
    assert any("no contribution grids for eigencam" in n for n in summary["notes"])

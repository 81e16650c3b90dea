"""Issue 23 (items 1, 2): the engine's and the channel figures' shortcuts give the same numbers
and the same pixels as the slower code they replace."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from pytorch_grad_cam import GradCAM, LayerCAM
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image

from explain import channels, render
from explain.channels.numbers import _lent
from explain.channels.tiles import ColourScale, fit_tiles, painted_tiles
from explain.enginehelp import aggregate_layers, check_finite, scale_maps
from explain.config.schema import Preprocess
from explain.errors import ExplainError
from explain.images import preprocess


@pytest.mark.parametrize("mode", ["torch", "caffe", "tf"])
def test_preprocess_channels_first_gives_the_same_floats(mode):
    """The normalisation done channels-first gives every value of the plain (H, W, 3)
    formula, bit for bit (each value meets the same float32 operations)."""
    rgb = np.random.default_rng(5).integers(0, 256, (31, 45, 3), dtype=np.uint8)
    extra = {"mean": [0.3, 0.5, 0.7], "std": [0.2, 0.3, 0.4]} if mode == "torch" else {}
    tensor, shown = preprocess(rgb, Preprocess(size=[31, 45], mode=mode, **extra))
    pixels = rgb.astype(np.float32)
    want = {"torch": (pixels / np.float32(255) - np.float32(extra.get("mean", 0)))
                     / np.float32(extra.get("std", 1)),
            "caffe": pixels[..., ::-1] - np.float32([103.939, 116.779, 123.68]),
            "tf": pixels / np.float32(127.5) - np.float32(1)}[mode]
    assert tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert torch.equal(tensor, torch.from_numpy(np.ascontiguousarray(want.transpose(2, 0, 1))))
    assert np.array_equal(shown, pixels / np.float32(255))
    assert not np.shares_memory(tensor.numpy(), shown)  # the overlay photo is its own array


@pytest.mark.parametrize("colormap", ["jet", "viridis", "inferno"])
@pytest.mark.parametrize("weight", [0.0, 0.35, 0.5, 1.0])
def test_overlay_is_the_librarys_picture(colormap, weight):
    """render.overlay (a table of the 256 colour terms) gives the library's bytes: smooth maps,
    the ends 0 and 1, a float64 map, dark and bright photos, odd sizes."""
    rng = np.random.default_rng(int(weight * 100) + len(colormap))
    for h, w in [(224, 448), (37, 53), (1, 1)]:
        photo = rng.random((h, w, 3), dtype=np.float32)
        photo[: h // 2] *= 0.05
        cam = cv2.resize(rng.random((7, 7), dtype=np.float32), (w, h))
        cam = (cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-6)
        cam.flat[0], cam.flat[-1] = 0.0, 1.0
        for m in (cam, cam.astype(np.float64)):
            mine = render.overlay(photo, m, colormap, weight)
            theirs = show_cam_on_image(photo, m.astype(np.float32), use_rgb=True,
                                       colormap=render.colormap_code(colormap),
                                       image_weight=weight)
            assert mine.dtype == np.uint8 and mine.shape == (h, w, 3)
            assert np.array_equal(mine, theirs)
    assert len(np.unique(mine.reshape(-1, 3), axis=0)) == 1  # 1 x 1: one colour, still equal


def _uint8_formula(x: np.ndarray) -> np.ndarray:
    return np.uint8(np.round(np.clip(x, 0, 1) * 255))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_as_uint8_gives_the_rounding_formulas_bytes(dtype):
    """render.as_uint8 (OpenCV's saturating convert) is the formula it replaced in report
    photos, panels and pages, byte for byte: values outside 0..1, every level k/255, the
    half-way points (k + 0.5)/255 (ties to even in both) and their float neighbours, a map
    without channels, one channel, a strided view, nothing at all."""
    rng = np.random.default_rng(7)
    levels = np.arange(256, dtype=dtype)
    edges = [levels / dtype(255), (levels + dtype(0.5)) / dtype(255)]
    edges += [np.nextafter(e, dtype(2)) for e in edges] + [np.nextafter(e, dtype(-1)) for e in edges]
    photos = [rng.uniform(-0.5, 1.5, (224, 448, 3)).astype(dtype), *edges,
              rng.uniform(-0.2, 1.2, (13, 17)).astype(dtype),
              rng.uniform(0, 1, (13, 17, 1)).astype(dtype),
              rng.uniform(0, 1, (20, 30, 3)).astype(dtype)[::2, ::-1],
              np.zeros((0, 3), dtype), np.array(0.4, dtype),
              rng.uniform(0, 1, (3, 4, 130)).astype(dtype),
              rng.uniform(0, 1, (2, 3, 4, 3)).astype(dtype),
              np.array([0.2, np.nan, 1.5, -np.inf], dtype)]
    for photo in photos:
        with np.errstate(invalid="ignore"):  # the formula's own warning on NaN
            mine, want = render.as_uint8(photo), _uint8_formula(photo)
        assert mine.dtype == np.uint8 and mine.shape == photo.shape
        assert np.array_equal(mine, want)
    assert np.array_equal(render.as_uint8(edges[0]), np.arange(256))  # k/255 back to k
    ready = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    assert render.as_uint8(ready) is ready


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 7, 7), (5, 13, 13), (4, 7, 14), (2, 1, 1)])
def test_scale_maps_is_the_librarys_scaling(dtype, shape):
    rng = np.random.default_rng(len(shape) + shape[0])
    cams = np.maximum(rng.standard_normal(shape) * 3, 0).astype(dtype)
    cams[0] = 0  # a flat map too
    for size in (None, (64, 64), (96, 48)):
        mine, theirs = scale_maps(cams, size), scale_cam_image(cams, size)
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        assert np.array_equal(mine, theirs)
        # written into a slot of a larger array (the engine's (B, S, H, W) maps), NaN-filled
        # first so that a map left unwritten fails
        slots = np.full((shape[0], 2) + theirs.shape[1:], np.nan, np.float32)
        assert scale_maps(cams, size, out=slots[:, 1]) is not None
        assert np.array_equal(slots[:, 1], theirs.astype(np.float32))
        assert np.isnan(slots[:, 0]).all()


@pytest.mark.parametrize("method", [GradCAM, LayerCAM])
def test_aggregate_layers_is_the_librarys(method):
    rng = np.random.default_rng(1)
    layers = [scale_cam_image(np.maximum(rng.standard_normal((3, 5, 6)), 0), (40, 24))[:, None]
              for _ in range(2)]
    math = _lent(method)
    for k in (1, 2):
        theirs = math.aggregate_multi_layers(layers[:k])
        assert np.array_equal(aggregate_layers(math, layers[:k]), theirs)
        slots = np.full((3, 2, 24, 40), np.nan, np.float32)
        aggregate_layers(math, [m.astype(np.float32) for m in layers[:k]], out=slots[:, 0])
        assert np.array_equal(slots[:, 0], math.aggregate_multi_layers(
            [m.astype(np.float32) for m in layers[:k]]))
        assert np.isnan(slots[:, 1]).all()
    # maps with negative values and negative zeros: the ReLU is the library's too
    signed = [(m - np.float32(0.4)).astype(np.float32) for m in layers[:1]]
    signed[0][0, 0, :3, 0] = [-0.0, 0.0, -1e-30]
    slots = np.full((3, 1, 24, 40), np.nan, np.float32)
    aggregate_layers(math, signed, out=slots[:, 0])
    assert np.array_equal(slots[:, 0], math.aggregate_multi_layers(signed), equal_nan=False)
    assert not np.signbit(slots[:, 0]).any()  # no -0.0 where the library has 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_still_names_the_bad_images(bad):
    values = torch.ones(4, 3, 5, 5)
    values[2, 1, 0, 0] = bad
    with pytest.raises(ExplainError, match="for 1 of 4 image"):
        check_finite(values, "x: NaN")
    check_finite(torch.ones(4, 3, 5, 5), "x: NaN")  # finite: nothing raised
    huge = torch.full((2, 8), 3e38)  # its sum overflows, every value is finite
    check_finite(huge, "x: NaN")


def test_kept_lines_draw_the_pixels_of_a_fresh_font():
    texts = [render.Text(t, x, y, size, colour)
             for t in ("cat", "+12.3% of map", "w -0.0123", "кот αβ 猫")
             for x, y, size, colour in ((0, 0, 11, (20, 20, 20)), (7, 9, 15, (200, 0, 0)))]
    base = np.full((60, 180, 3), 236, np.uint8)
    page = Image.fromarray(base)
    draw = ImageDraw.Draw(page)
    for t in texts:
        draw.text((t.x, t.y), t.text, fill=t.colour,
                  font=ImageFont.truetype(str(render.font_file()), t.size))
    for _ in range(2):  # drawn fresh, then from the kept lines
        assert np.array_equal(render.draw_text(base, texts), np.array(page))
    assert isinstance(render._font(11), render.KeptLines)


def test_painted_tiles_are_painted_enlarged_tiles():
    rng = np.random.default_rng(2)
    stack = rng.standard_normal((5, 7, 14)).astype(np.float32)
    scale = ColourScale(-2.0, 2.0, "RdBu_r")
    for size, smooth in ((96, False), (13, False), (4, False), (48, True)):
        assert np.array_equal(painted_tiles(stack, size, smooth, scale),
                              scale.paint(fit_tiles(stack, size, smooth)))


@pytest.mark.parametrize("h, w, tile_h", [(7, 14, 96), (13, 13, 48), (7, 7, 4), (5, 9, 5)])
def test_flat_tiles_repeat_each_cell_as_the_index_picks_it(h, w, tile_h):
    stack = np.arange(3 * h * w, dtype=np.float32).reshape(3, h, w)
    tile_w = max(1, round(w * tile_h / h))
    rows, cols = (np.arange(tile_h) * h) // tile_h, (np.arange(tile_w) * w) // tile_w
    assert np.array_equal(fit_tiles(stack, tile_h, False), stack[:, rows][:, :, cols])


def test_shared_panels_change_no_pixel_of_the_figures():
    rng = np.random.default_rng(3)
    acts = rng.random((20, 7, 14)).astype(np.float32)
    grads = [rng.standard_normal((20, 7, 14)).astype(np.float32) for _ in range(2)]
    photo = rng.random((64, 128, 3)).astype(np.float32)
    cams = tuple(rng.random((64, 128)).astype(np.float32) for _ in range(2))
    shared = channels.SharedPanels()
    shared.overlay(cams[0], render.overlay(photo, cams[0], "jet", 0.5))  # the map writer's
    for _ in range(2):
        for i in range(2):
            plain = channels.top_channels_view("gradcam", acts, grads[i], photo=photo,
                                               cam=cams[i], k=6)
            fast = channels.top_channels_view("gradcam", acts, grads[i], photo=photo,
                                              cam=cams[i], k=6, shared=shared)
            assert np.array_equal(plain.image, fast.image)
        plain = channels.class_contrast_view("layercam", acts, *grads, photo=photo, cams=cams)
        fast = channels.class_contrast_view("layercam", acts, *grads, photo=photo, cams=cams,
                                            shared=shared)
        assert np.array_equal(plain.image, fast.image)

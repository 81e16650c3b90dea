"""Channel views: contributions from the library's own per-method code, labelled mosaics on one
colour scale, the top-channels and class-contrast figures."""

import ast

import numpy as np
import pytest
import torch

from explain import channels
from explain.channels import (BAND, INK, ViewOptions, activation_view,
                              channel_contributions, channel_stats, channel_weights,
                              class_contrast_view, contribution_view, top_channels_view)
from explain.methods import having
from explain.methods import registry
from explain.render import Text, draw_text
from conftest import REPO


def library_cam(method, acts, grads):
    """The library's channel sum for one image, from its own object, on the whole (1, C, h, w)."""
    conv = torch.nn.Conv2d(1, 1, 1)
    cam = registry()[method](conv, [conv])
    cam.activations_and_grads.release()
    return cam.get_cam_image(None, None, None, acts[None], grads[None], False)[0]


def random_layer(seed, channels=24, h=5, w=7):
    rng = np.random.default_rng(seed)
    acts = rng.normal(size=(channels, h, w)) * rng.uniform(0.1, 5, (channels, 1, 1))
    grads = rng.normal(size=(channels, h, w)) * rng.uniform(0.01, 1, (channels, 1, 1))
    acts, grads = acts.astype(np.float32), grads.astype(np.float32)
    grads[3] = 0  # a channel with no gradient at all
    return acts, grads


def test_channels_module_does_not_use_the_hand_written_reference():
    imported = set()
    for path in (REPO / "explain" / "channels").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) for a in n.names}
    assert imported and not any("reference" in name for name in imported), imported


def test_channel_methods_cover_the_librarys_channel_sums():
    assert set(having("channel_term")) == {"gradcam", "gradcamplusplus", "xgradcam", "layercam",
                                    "hirescam", "gradcamelementwise"}
    with pytest.raises(ValueError, match="not a per-channel sum"):
        channel_contributions("eigengradcam", *random_layer(0))


@pytest.mark.parametrize("method", having("channel_term"))
@pytest.mark.parametrize("seed", [0, 1])
def test_contributions_sum_to_the_librarys_cam(method, seed):
    acts, grads = random_layer(seed)
    contrib = channel_contributions(method, acts, grads)
    assert contrib.shape == acts.shape and contrib.dtype == np.float32
    expected = np.maximum(library_cam(method, acts, grads), 0)
    assert np.abs(np.maximum(contrib.sum(axis=0), 0) - expected).max() <= 1e-5


@pytest.mark.parametrize("method", having("channel_term"))
def test_contributions_sum_to_the_librarys_cam_on_a_real_layer(method):
    from conftest import SMALL_SIZE, make_small_alexnet
    from explain.reference import capture
    model = make_small_alexnet()
    x = torch.randn(1, 3, SMALL_SIZE, SMALL_SIZE, generator=torch.Generator().manual_seed(0))
    acts, grads = capture(model, model.features[10], x, [1])
    contrib = channel_contributions(method, acts[0], grads[0])
    expected = np.maximum(library_cam(method, acts[0], grads[0]), 0)
    assert contrib.shape == (256, 6, 6)
    assert np.abs(np.maximum(contrib.sum(axis=0), 0) - expected).max() <= 1e-5


def test_weights_come_from_the_library_and_only_for_weight_methods():
    acts, grads = random_layer(2)
    assert np.allclose(channel_weights("gradcam", acts, grads), grads.mean(axis=(1, 2)))
    for method in ("gradcamplusplus", "xgradcam"):
        w = channel_weights(method, acts, grads)
        assert np.allclose(channel_contributions(method, acts, grads), w[:, None, None] * acts,
                           atol=1e-6)
    for method in ("layercam", "hirescam", "gradcamelementwise"):
        assert channel_weights(method, acts, grads) is None


# ---- a synthetic layer with known activations and weights -----------------------------------

H, W, TILE = 6, 6, 48  # 48 / 6: every feature cell is an 8 x 8 block of one colour


def known_layer():
    """Channel k: activation a_k * (1 + P) (P a fixed positive pattern), gradient w_k everywhere,
    so GradCAM's weight is w_k and the contribution is w_k a_k (1 + P)."""
    pattern = np.linspace(0, 1, H * W).reshape(H, W).astype(np.float32)
    a = np.array([1, 2, 1, 1, 1, 1, 2, 1, 3, 0.5, 1, 2], np.float32)
    w = np.array([1, 1, 2, -2, 0.5, 1.5, 0.5, 1, -1, 0, -0.25, 0.75], np.float32)
    acts = a[:, None, None] * (1 + pattern)
    grads = np.broadcast_to(w[:, None, None], acts.shape).astype(np.float32)
    return acts, grads, w[:, None, None] * acts


def decode(view, k):
    """The value each pixel of tile k stands for, read back through the colour table."""
    pixels = view.image[view.layout.tile_box(k)].astype(int)
    lut = view.scale.lut().astype(int)
    index = np.abs(pixels[:, :, None, :] - lut[None, None]).sum(axis=-1).argmin(axis=-1)
    span = view.scale.high - view.scale.low
    return view.scale.low + index * span / (len(lut) - 1)


def upsample(a):
    return np.kron(a, np.ones((TILE // H, TILE // W)))


def test_contribution_tiles_show_the_true_contributions_on_one_scale_centred_at_zero():
    acts, grads, truth = known_layer()
    contrib = channel_contributions("gradcam", acts, grads)
    assert np.allclose(contrib, truth, atol=1e-6)
    view = contribution_view(contrib, "synthetic", method="gradcam",
                             options=ViewOptions(tile_size=TILE))
    limit = np.abs(truth).max()
    assert (view.scale.low, view.scale.high) == pytest.approx((-limit, limit))
    step = 2 * limit / 254
    for k in range(len(truth)):  # every pixel within half a colour step of its true value
        assert np.abs(decode(view, k) - upsample(truth[k])).max() <= step / 2 + 1e-6, k
    # tile colours order the channels as their true contributions do
    shown = np.array([decode(view, k).mean() for k in range(len(truth))])
    true_totals = truth.sum(axis=(1, 2))
    assert np.array_equal(np.argsort(shown, kind="stable"), np.argsort(true_totals, kind="stable"))
    # zero is the neutral middle colour; positive is red, negative blue
    middle = view.scale.lut()[127].astype(int)
    assert (view.image[view.layout.tile_box(9)] == middle).all()  # w = 0
    assert middle.max() - middle.min() < 10 and middle.min() > 230
    red = view.image[view.layout.tile_box(2)][-1, -1]
    blue = view.image[view.layout.tile_box(3)][-1, -1]
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50


def test_contribution_grid_differs_from_activation_grid_where_weights_differ():
    acts, grads, truth = known_layer()
    opts = ViewOptions(tile_size=TILE)
    act = activation_view(acts, options=opts)
    con = contribution_view(channel_contributions("gradcam", acts, grads), options=opts)

    def tile(view, k):
        return view.image[view.layout.tile_box(k)]

    # same activations (channels 2, 3: weights 2 and -2; 4, 5: 0.5 and 1.5): equal activation
    # tiles, different contribution tiles
    for a, b in ((2, 3), (4, 5), (0, 2), (0, 3)):
        assert np.array_equal(tile(act, a), tile(act, b))
        assert not np.array_equal(tile(con, a), tile(con, b))
    # opposite weights: values mirrored about zero
    assert np.allclose(decode(con, 2), -decode(con, 3), atol=2 * con.scale.high / 254)
    # different activations, same contribution (2 x 0.5 = 1 x 1): only the activation tiles differ
    assert not np.array_equal(tile(act, 6), tile(act, 7))
    assert np.array_equal(tile(con, 6), tile(con, 7))
    # the activation view's shared scale keeps strong and weak channels apart
    step = (act.scale.high - act.scale.low) / 254
    assert np.abs(decode(act, 8) - upsample(acts[8])).max() <= step
    assert decode(act, 8).mean() > 2 * decode(act, 9).mean()


def test_flat_stacks_draw_without_nan():
    zero = np.zeros((5, 3, 3), np.float32)
    with np.errstate(all="raise"):
        con = contribution_view(zero, options=ViewOptions(tile_size=TILE))
        act = activation_view(zero + 2, options=ViewOptions(tile_size=TILE))
    middle = con.scale.lut()[127]
    assert all((con.image[con.layout.tile_box(k)] == middle).all() for k in range(5))
    assert act.image.dtype == np.uint8


def test_activation_view_options():
    acts, _, _ = known_layer()
    positive = activation_view(acts, options=ViewOptions(tile_size=TILE))
    assert positive.scale.colormap == "viridis" and positive.scale.low == pytest.approx(acts.min())
    signed = activation_view(acts - 1.5, options=ViewOptions(tile_size=TILE))
    assert signed.scale.centred and signed.scale.colormap == "PuOr_r"
    per_tile = activation_view(acts, options=ViewOptions(tile_size=TILE, shared_scale=False))
    assert per_tile.scale.per_tile
    for k in range(len(acts)):  # each tile spans its colormap from its own min to max
        values = decode(per_tile, k)
        assert values.min() == 0 and values.max() == 1


# ---- labels and layout ----------------------------------------------------------------------

def band_of(view, k):
    """The number band above tile k, cut out of the picture."""
    lay = view.layout
    y, x = lay.cell_origin(k)
    return view.image[y:y + lay.label_h, x:x + lay.tile_w]


def rendered_band(view, k, *lines):
    """The number band of tile k as it looks with ``lines`` drawn the documented way: the
    shared text path (Pillow, DejaVu Sans), line i at the layout's label origin i and size."""
    lay = view.layout
    band = np.full((lay.label_h, lay.tile_w, 3), BAND, np.uint8)
    top, left = lay.cell_origin(k)
    texts = []
    for i, text in enumerate(lines):
        x, y = lay.label_origin(k, i)
        texts.append(Text(text, x - left, y - top, lay.font_size, INK))
    return draw_text(band, texts)


@pytest.mark.parametrize("channels_n,shape", [(256, (16, 16)), (320, (18, 18)), (10, (3, 4))])
def test_every_tile_carries_its_channel_number(channels_n, shape):
    rng = np.random.default_rng(channels_n)
    acts = rng.normal(size=(channels_n, 13, 13)).astype(np.float32)
    view = activation_view(acts, "layer", options=ViewOptions(tile_size=48))
    lay = view.layout
    assert (lay.rows, lay.cols) == shape == channels.grid_shape(channels_n)
    assert lay.channels == tuple(range(channels_n))
    for k in range(channels_n):
        band = band_of(view, k)
        assert np.array_equal(band, rendered_band(view, k, str(k))), k
        assert not np.array_equal(band, rendered_band(view, k, str(k + 1))), k
        assert (band != BAND).any(axis=-1).sum() > 10  # ink is there
    # tile pixels: channel k, on the shared scale, each feature cell a block
    rows = (np.arange(48) * 13) // 48
    for k in (0, channels_n // 2, channels_n - 1):
        expected = view.scale.paint(acts[k][rows][:, rows])
        assert np.array_equal(view.image[lay.tile_box(k)], expected)


def test_alexnet_sized_stack_is_a_16_by_16_grid_with_colour_bar():
    acts = np.maximum(np.random.default_rng(0).normal(size=(256, 13, 13)), 0).astype(np.float32)
    view = activation_view(acts, options=ViewOptions(tile_size=48))
    lay = view.layout
    assert (lay.rows, lay.cols, lay.tile_h, lay.tile_w) == (16, 16, 48, 48)
    last = lay.tile_box(255)
    assert last[0].stop < view.image.shape[0] and last[1].stop <= view.image.shape[1]
    below = view.image[last[0].stop:]
    lut = view.scale.lut()
    ends = [np.argwhere((below == colour).all(axis=-1)) for colour in (lut[0], lut[-1])]
    assert len(ends[0]) and len(ends[1])  # the colour bar, low end left of high end
    assert ends[0][:, 1].max() < ends[1][:, 1].min()


# ---- top channels and class contrast --------------------------------------------------------

def test_top_channels_lists_the_k_largest_contributions_in_order():
    acts, grads = random_layer(5, channels=40)
    truth = grads.mean(axis=(1, 2)) * acts.sum(axis=(1, 2))  # GradCAM: w_k * sum A_k
    expected = sorted(range(40), key=lambda c: -abs(truth[c]))[:7]
    photo = np.random.default_rng(0).random((50, 70, 3)).astype(np.float32)
    top = top_channels_view("gradcam", acts, grads, photo=photo, k=7, title="t")
    assert list(top.channels) == expected
    assert top.image.dtype == np.uint8 and top.image.ndim == 3
    assert np.allclose(top.totals, truth, rtol=1e-4)
    rows, stats = channel_stats("gradcam", acts, grads)
    assert (top.channels_50, top.channels_90) == (stats["channels_50"], stats["channels_90"])
    assert all(top.shares[r["channel"]] == pytest.approx(r["share"], abs=1e-6) for r in rows)
    assert top.cumulative[-1] == pytest.approx(1.0)
    for rank, c in enumerate(top.channels):  # tile at position rank is channel c, labelled so
        assert top.layout.channels[rank] == c
        lines = (f"#{rank + 1}  ch {c}", f"w {top.weights[c]:+.3g}", f"{top.shares[c]:+.1%} of map")
        assert np.array_equal(band_of(top, c), rendered_band(top, c, *lines)), rank
        assert not np.array_equal(band_of(top, c), rendered_band(top, c, *lines[:2]))
    assert len(top_channels_view("layercam", acts, grads).channels) == 16  # default k
    assert len(top_channels_view("layercam", acts[:5], grads[:5]).channels) == 5


def test_class_contrast_picks_the_channels_that_differ_most():
    acts, grads_a = random_layer(6, channels=30)
    _, grads_b = random_layer(7, channels=30)
    view = class_contrast_view("layercam", acts, grads_a, grads_b, classes=("cat", "dog"), k=5)
    totals = [(np.maximum(g, 0) * acts).sum(axis=(1, 2)) for g in (grads_a, grads_b)]
    diff = totals[0] - totals[1]
    assert list(view.channels) == sorted(range(30), key=lambda c: -abs(diff[c]))[:5]
    assert np.allclose(view.difference, diff, rtol=1e-4, atol=1e-6)
    c, lay = view.channels[0], view.layout
    first = f"#1  ch {c}"  # four label lines, or two when "#1  ch c  diff +d" fits the tile
    if (lay.label_h - 2) // lay.line_h == 2:
        first += f"  diff {diff[c]:+.3g}"
    assert np.array_equal(band_of(view, c)[:lay.line_h],
                          rendered_band(view, c, first)[:lay.line_h])
    # each tile: class a's contribution on the left half, class b's on the right
    tile = view.image[view.layout.tile_box(c)]
    half = (tile.shape[1] - ViewOptions().separator) // 2
    contrib_a = channel_contributions("layercam", acts, grads_a)[c]
    rows = (np.arange(tile.shape[0]) * contrib_a.shape[0]) // tile.shape[0]
    cols = (np.arange(half) * contrib_a.shape[1]) // half
    assert np.array_equal(tile[:, :half], view.scale.paint(contrib_a[rows][:, cols]))


def test_the_top_channels_of_a_blank_map_say_the_map_is_blank():
    """A class the model rejects: Grad-CAM's weighted sum is <= 0 everywhere and its map all
    zero, but the figure said '50% of the map: 17 channels' as for any map (newcomer 20).
    It says the map is 0 everywhere, in one more heading line; a map with a peak does not."""
    acts, grads = random_layer(5, channels=12)
    acts = np.abs(acts)
    down = -np.abs(grads)  # every channel's weight negative: the sum <= 0 at every position
    blank = top_channels_view("gradcam", acts, down, k=4)
    shown = top_channels_view("gradcam", acts, np.abs(grads), k=4)
    assert blank.blank and not shown.blank
    assert blank.image.shape[0] > shown.image.shape[0]  # the heading's extra line
    assert top_channels_view("gradcam", acts, down, k=4,
                             cam=np.ones((8, 8), np.float32)).blank is False  # the map given

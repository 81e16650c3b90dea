"""Channel mosaics and statistics, and the channel views as a run writes them: activation and
contribution grids, top channels, class contrast, the per-channel CSV and summary columns."""

import csv
import dataclasses
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from explain import reference
from explain.channels import (BAND, INK, ViewOptions, activation_view,
                              channel_stats, channel_totals, class_contrast_view,
                              contribution_view, grid_shape, normalise, top_channels_view,
                              view_title)
from explain.config import load_config
from explain.errors import ExplainError
from explain.outputs import RunFolder
from explain.render import Text, draw_text
from explain.runner import RunOptions, run
from explain.writers import channels as channel_writer
from explain.writers.channels import MAX_VIEW_PIXELS, fit_budget, view_options, view_pixels
from conftest import REPO

LAYER = "backbone._blocks.15"  # the demo's target layer (the channel layer by default)


def per_tile(stack):
    """The activation view with each tile on its own min..max scale, at the native size."""
    return activation_view(stack, options=ViewOptions(shared_scale=False, labels=False,
                                                      tile_size=stack.shape[1]))


@pytest.mark.parametrize("channels,shape", [(256, (16, 16)), (384, (20, 20)), (10, (3, 4)), (1, (1, 1))])
def test_tile_k_is_channel_k_after_its_own_normalisation(channels, shape):
    rng = np.random.default_rng(channels)
    stack = rng.normal(size=(channels, 6, 9)).astype(np.float32) * rng.uniform(0.1, 50, (channels, 1, 1))
    view = per_tile(stack)
    assert grid_shape(channels) == shape == (view.layout.rows, view.layout.cols)
    for k in range(channels):
        lo, hi = stack[k].min(), stack[k].max()
        expected = view.scale.paint((stack[k] - lo) / (hi - lo))
        assert np.array_equal(view.image[view.layout.tile_box(k)], expected), k


def test_constant_channels_are_flat_tiles_without_nan():
    stack = np.zeros((10, 5, 5), np.float32)
    stack[3] = 7.0
    stack[4] = np.arange(25).reshape(5, 5)
    assert not np.isnan(normalise(stack)).any()
    view = per_tile(stack)
    lut = view.scale.lut()
    for k in (0, 3):
        assert (view.image[view.layout.tile_box(k)] == lut[0]).all()
    assert (view.image[view.layout.tile_box(4)][-1, -1] == lut[-1]).all()


def test_shared_scale_keeps_strong_and_weak_channels_apart():
    stack = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 10.0)]).astype(np.float32)
    stack[:, 0, 0] = 0
    view = activation_view(stack, options=ViewOptions(tile_size=4, labels=False))
    lut = view.scale.lut()
    assert (view.image[view.layout.tile_box(0)][1, 1] == lut[25]).all()  # 1 / 10 of 254
    assert (view.image[view.layout.tile_box(1)][1, 1] == lut[-1]).all()


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


# ---- a real run: the demo network on both.jpg (cat left, dog right) ------------------------------

def demo_run(out, sets):
    """Run the demo config on both.jpg with ``sets``; the channel writer's real inputs (run
    context and batches) are recorded on the way, so the views can be recomputed exactly."""
    cfg = load_config(REPO / "configs" / "demo_catdog.yaml",
                      {"images": ["../images/both.jpg"], "metrics": [], **sets})
    seen = []
    real_write = channel_writer.ChannelWriter.write

    def recording_write(self, ctx, batch):
        seen.append((ctx, batch))
        return real_write(self, ctx, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(channel_writer.ChannelWriter, "write", recording_write)
        summary = run(cfg, RunOptions(out_root=out, progress=False, log=lambda _: None))
    (ctx, batch), = seen
    view = batch.images[0]
    return SimpleNamespace(summary=summary, dir=out / "demo_catdog", cfg=cfg, ctx=ctx,
                           batch=batch, acts=batch.result.probe.activations[view.row],
                           photo=view.item.rgb, row=view.row)


@pytest.fixture(scope="module")
def demo_channels(tmp_path_factory):
    """One demo run for the module: GradCAM and LayerCAM (channel sums), EigenCAM (not one)."""
    return demo_run(tmp_path_factory.mktemp("channels"),
                    {"methods": ["gradcam", "layercam", "eigencam"]})


def replanned(ctx, folder, channels: dict, output: dict, images: int = 1):
    """``ctx`` in a fresh folder, its plan's config changed in ``channels`` and ``output``,
    and its one image listed ``images`` times."""
    cfg = ctx.cfg.model_copy(update={
        "channels": ctx.cfg.channels.model_copy(update=channels),
        "output": ctx.cfg.output.model_copy(update=output)})
    plan = dataclasses.replace(ctx.plan, cfg=cfg, images=ctx.plan.images * images)
    return dataclasses.replace(ctx, plan=plan, run=RunFolder(folder),
                               summary=ctx.summary.model_copy(deep=True))


def fresh_batch(batch):
    """``batch`` with copies of its entries, each map holding its copy's record."""
    images = []
    for view in batch.images:
        entry = view.entry.model_copy(deep=True)
        maps = [dataclasses.replace(one, record=entry.record(one.class_name, one.method))
                for one in view.maps]
        images.append(dataclasses.replace(view, entry=entry, maps=maps))
    return dataclasses.replace(batch, images=images)


def read_rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[..., ::-1]


def slot(demo, cls):
    """The engine slot of class ``cls`` for the demo image."""
    names = [demo.ctx.classes[int(c)] for c in demo.batch.result.classes[demo.row]]
    return names.index(cls)


def grads_of(demo, cls):
    return demo.batch.result.probe.gradients[slot(demo, cls)][demo.row]


def cam_of(demo, method, cls):
    return demo.batch.result.maps[method][demo.row, slot(demo, cls)]


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
@pytest.mark.parametrize("cls", ["cat", "dog"])
def test_contributions_add_up_to_the_library_map(demo_channels, method, cls):
    run_dir = demo_channels.dir
    contrib = np.load(run_dir / "channels" / method / f"both__{cls}__contributions.npy")
    library = np.load(run_dir / "cams" / method / f"both__{cls}.npy")
    assert contrib.shape == (320, 7, 14)
    rebuilt = reference.finish(contrib.sum(axis=0), library.shape)
    assert np.abs(rebuilt - library).max() <= 1e-5


def test_channel_outputs_agree_with_each_other(demo_channels):
    summary, run_dir = demo_channels.summary, demo_channels.dir
    acts = np.load(run_dir / "channels" / "both__activations.npy")
    assert np.array_equal(acts, demo_channels.acts)
    with open(run_dir / "channels" / "gradcam" / "both__dog__channels.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 320
    shares = [float(r["share"]) for r in rows]
    assert shares == sorted(shares, reverse=True)
    assert sum(s for s in shares if s > 0) == pytest.approx(1.0, abs=1e-3)
    top = int(rows[0]["channel"])
    assert float(rows[0]["mean_activation"]) == pytest.approx(acts[top].mean(), abs=1e-5)
    image = summary.images[0]
    record = image.record("dog", "gradcam")
    assert record.channels.channels == 320
    assert 1 <= record.channels.channels_50 < record.channels.channels_90 <= 320
    assert record.channels.nonzero_gradient == sum(r["zero_gradient"] == "False" for r in rows)
    assert all(r.channels is not None for r in image.cams if r.method != "eigencam")
    assert image.record("dog", "eigencam").channels is None
    assert not (run_dir / "channels" / "eigencam").exists()
    said = [n for n in summary.notes if n.startswith("channels: no contribution grids")]
    assert said == ["channels: no contribution grids for eigencam: its maps are not a weighted "
                    "sum of the layer's channels (the grids are drawn for gradcam, layercam)"]


def test_activation_png_is_the_activation_view(demo_channels):
    png = read_rgb(demo_channels.dir / "channels" / "both__activations.png")
    opts = view_options(demo_channels.cfg.channels)
    assert opts.shared_scale and opts.labels and opts.tile_size == 48  # the defaults
    view = activation_view(demo_channels.acts, view_title("both", LAYER), options=opts)
    assert np.array_equal(png, view.image)
    assert (view.layout.rows, view.layout.cols) == (18, 18)
    assert view.scale.centred and view.scale.high == pytest.approx(np.abs(demo_channels.acts).max())


def decode(tile, scale, h, w):
    """The values a tile shows: each feature cell's centre pixel looked up in the colour table
    (the tiles are painted from it, one flat block per cell)."""
    lut = scale.lut().astype(int)
    th, tw = tile.shape[:2]
    ys = ((np.arange(h) + 0.5) * th / h).astype(int)
    xs = ((np.arange(w) + 0.5) * tw / w).astype(int)
    centres = tile[ys][:, xs].astype(int)  # (h, w, 3)
    index = np.abs(centres[:, :, None, :] - lut[None, None]).sum(-1).argmin(-1)
    return scale.low + index * (scale.high - scale.low) / (len(lut) - 1)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
@pytest.mark.parametrize("cls", ["cat", "dog"])
def test_contribution_png_tiles_show_each_channels_contribution(demo_channels, method, cls):
    folder = demo_channels.dir / "channels" / method
    contrib = np.load(folder / f"both__{cls}__contributions.npy")
    png = read_rgb(folder / f"both__{cls}__contributions.png")
    view = contribution_view(contrib, view_title("both", LAYER, cls, method), method=method,
                             options=view_options(demo_channels.cfg.channels))
    assert np.array_equal(png, view.image)  # the saved picture is the view of the saved numbers
    lay, scale = view.layout, view.scale
    assert scale.centred and scale.colormap == "RdBu_r"
    assert scale.high == pytest.approx(np.abs(contrib).max())
    assert lay.channels == tuple(range(320)) and (lay.rows, lay.cols) == (18, 18)
    # every tile, read back from the PNG through the layout, shows its channel's contribution
    step = (scale.high - scale.low) / 254
    shown = np.stack([decode(png[lay.tile_box(k)], scale, 7, 14) for k in range(320)])
    assert np.abs(shown - contrib).max() <= step / 2 + 1e-9
    # the channel that adds most to the map is the reddest tile: red (R > B) and the largest
    # summed value the tiles show
    totals = channel_totals(contrib)
    best = int(np.argmax(totals))
    assert totals[best] > 0
    assert int(np.argmax(shown.sum(axis=(1, 2)))) == best
    tile = png[lay.tile_box(best)].astype(int)
    assert (tile[..., 0] - tile[..., 2]).max() > 100  # clearly red somewhere
    # and its number is written above it
    y0, x0 = lay.cell_origin(best)
    x, y = lay.label_origin(best)
    band = draw_text(np.full((lay.label_h, lay.tile_w, 3), BAND, np.uint8),
                     [Text(str(best), x - x0, y - y0, lay.font_size, INK)])
    assert np.array_equal(png[y0:y0 + lay.label_h, x0:x0 + lay.tile_w], band)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
@pytest.mark.parametrize("cls", ["cat", "dog"])
def test_top_channels_png_lists_the_largest_contribution_first(demo_channels, method, cls):
    folder = demo_channels.dir / "channels" / method
    png = read_rgb(folder / f"both__{cls}__top.png")
    contrib = np.load(folder / f"both__{cls}__contributions.npy")
    k = demo_channels.cfg.channels.top_k
    assert k == 16
    top = top_channels_view(method, demo_channels.acts, grads_of(demo_channels, cls),
                            photo=demo_channels.photo, cam=cam_of(demo_channels, method, cls),
                            k=k, title=view_title("both", LAYER, cls, method),
                            options=view_options(demo_channels.cfg.channels))
    assert np.array_equal(png, top.image)
    totals = channel_totals(contrib)
    assert top.channels[0] == int(np.argmax(np.abs(totals)))
    assert len(top.channels) == 16
    assert list(top.channels) == sorted(top.channels, key=lambda c: -abs(totals[c]))
    first = top.channels[0]  # its band starts with '#1  ch <channel>', drawn in the PNG
    lay = top.layout
    y0, x0 = lay.cell_origin(first)
    x, y = lay.label_origin(first)
    band = draw_text(np.full((lay.label_h, lay.tile_w, 3), BAND, np.uint8),
                     [Text(f"#1  ch {first}", x - x0, y - y0, lay.font_size, INK)])
    assert np.array_equal(png[y0:y0 + lay.label_h, x0:x0 + lay.tile_w][:lay.line_h],
                          band[:lay.line_h])
    record = demo_channels.summary.images[0].record(cls, method).channels
    assert (record.channels_50, record.channels_90) == (top.channels_50, top.channels_90)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_class_contrast_png_for_the_two_classes(demo_channels, method):
    folder = demo_channels.dir / "channels" / method
    png = read_rgb(folder / "both__contrast.png")
    view = class_contrast_view(
        method, demo_channels.acts, grads_of(demo_channels, "cat"), grads_of(demo_channels, "dog"),
        classes=("cat", "dog"), photo=demo_channels.photo,
        cams=(cam_of(demo_channels, method, "cat"), cam_of(demo_channels, method, "dog")), k=16,
        title=view_title("both", LAYER, "cat vs dog", method),
        options=view_options(demo_channels.cfg.channels))
    assert np.array_equal(png, view.image)
    cat, dog = (channel_totals(np.load(folder / f"both__{c}__contributions.npy"))
                for c in ("cat", "dog"))
    assert view.channels[0] == int(np.argmax(np.abs(cat - dog)))
    assert len(view.channels) == 16


def test_only_channel_sum_methods_get_views(demo_channels):
    """GradCAM and LayerCAM (sums over channels) get every channel file, EigenCAM none; each
    method's CSV lists that method's own channel totals, as shares, largest first."""
    channels_dir = demo_channels.dir / "channels"
    pngs = sorted(p.relative_to(channels_dir).as_posix() for p in channels_dir.rglob("*.png"))
    assert pngs == ["both__activations.png"] + [
        f"{m}/both__{name}.png" for m in ("gradcam", "layercam")
        for name in ("cat__contributions", "cat__top", "contrast", "dog__contributions",
                     "dog__top")]
    totals = {}
    for method in ("gradcam", "layercam"):
        for cls in ("cat", "dog"):
            folder = channels_dir / method
            totals[method, cls] = channel_totals(np.load(folder / f"both__{cls}__contributions.npy"))
            with open(folder / f"both__{cls}__channels.csv") as f:
                rows = list(csv.DictReader(f))
            shares = [float(r["share"]) for r in rows]
            assert sorted(int(r["channel"]) for r in rows) == list(range(320))
            assert shares == sorted(shares, reverse=True)
            expected = totals[method, cls] / totals[method, cls][totals[method, cls] > 0].sum()
            assert max(abs(float(r["share"]) - expected[int(r["channel"])]) for r in rows) <= 1e-6
    # the methods' numbers differ, so a folder holding another method's files fails above
    assert np.abs(totals["gradcam", "dog"] - totals["layercam", "dog"]).max() > 1e-3


def test_summary_csv_has_flat_channel_columns(demo_channels):
    with open(demo_channels.dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # 2 classes x 3 methods
    for column in ("channels", "channels_50", "channels_90", "nonzero_gradient"):
        assert column in rows[0]
    assert not any("{" in value or "}" in value for row in rows for value in row.values())
    records = {(r.class_name, r.method): r for r in demo_channels.summary.images[0].cams}
    for row in rows:
        record = records[row["class"], row["method"]]
        if record.channels is None:  # eigencam
            assert row["channels_50"] == ""
        else:
            assert int(row["channels_50"]) == record.channels.channels_50
            assert int(row["channels_90"]) == record.channels.channels_90
            assert int(row["nonzero_gradient"]) == record.channels.nonzero_gradient


def test_contrast_false_writes_no_contrast_figure(demo_channels, tmp_path):
    """channels.contrast: false leaves out the contrast figures and changes nothing else: every
    other channel file is the same bytes as the default run's."""
    ctx = replanned(demo_channels.ctx, tmp_path, {"contrast": False}, {})
    channel_writer.ChannelWriter().write(ctx, fresh_batch(demo_channels.batch))
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                     if p.is_file())
    default = sorted(p.relative_to(demo_channels.dir).as_posix()
                     for p in (demo_channels.dir / "channels").rglob("*") if p.is_file())
    assert written == [p for p in default if "contrast" not in p]
    assert len(written) == len(default) - 2  # one contrast figure per method
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (demo_channels.dir / rel).read_bytes(), rel


@pytest.mark.parametrize("fields, images, kept", [
    ({"grids": False}, 1, ("__top.png", ".csv", "__contrast.png")),
    ({}, 51, (".csv",)),
    ({"top": True, "contrast": True}, 51, ("__top.png", ".csv", "__contrast.png"))])
def test_large_runs_skip_the_figures_and_keep_the_csv(demo_channels, tmp_path, fields, images,
                                                      kept):
    """channels.grids / top / contrast: false, or null with more than 50 images: those figures
    are not drawn, the per-channel CSVs are; true draws them at any size. What is written is
    the same bytes as in the small default run."""
    # (output.image_format unset, 51 images would mean JPEG: checked below)
    ctx = replanned(demo_channels.ctx, tmp_path, fields, {"image_format": "png"}, images=images)
    batch = fresh_batch(demo_channels.batch)
    writer = channel_writer.ChannelWriter()
    writer.start(ctx)
    writer.write(ctx, batch)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                     if p.is_file() and p.suffix != ".npy")  # arrays (save_arrays) are kept
    assert not [p for p in written if "activations" in p or "contributions" in p]
    counts = {"__top.png": 2 * 2, ".csv": 2 * 2, "__contrast.png": 2}  # class x method, method
    assert sorted(written) == sorted(p for p in written if p.endswith(kept))
    assert len(written) == sum(counts[k] for k in kept)
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (demo_channels.dir / rel).read_bytes(), rel
    notes = [n for n in ctx.summary.notes if n.startswith("channels: 51 images")]
    assert bool(notes) == (images > 50)
    if notes:  # what the size rule left out, and how to have it
        left = ["channels.grids"] + [f"channels.{f}" for f in ("top", "contrast")
                                     if f not in fields]
        assert all(name in notes[0] for name in left) and "true draws them" in notes[0]
    # the same size rule picks the picture format when output.image_format is not set
    assert demo_channels.cfg.output.image_format is None
    unset = dataclasses.replace(ctx.plan, cfg=demo_channels.ctx.cfg)
    assert unset.ext == (".png" if images <= 50 else ".jpg")


@pytest.fixture(scope="module")
def predicted_only(tmp_path_factory):
    """A second, smaller demo run: only the predicted class, per-tile activation scale, 5 top
    channels, small tiles without numbers."""
    return demo_run(tmp_path_factory.mktemp("predicted"), {
        "methods": ["gradcam"], "targets": "predicted", "channels.shared_scale": False,
        "channels.top_k": 5, "channels.tile_size": 24, "channels.labels": False,
        "channels.colormap": "Magma"})


def test_options_reach_the_pictures_and_one_class_gets_no_contrast(predicted_only):
    demo, channels_dir = predicted_only, predicted_only.dir / "channels"
    assert sorted(p.relative_to(channels_dir).as_posix() for p in channels_dir.rglob("*.png")) \
        == ["both__activations.png", "gradcam/both__dog__contributions.png",
            "gradcam/both__dog__top.png"]  # predicted: dog; one class, so no contrast
    opts = view_options(demo.cfg.channels)
    assert (opts.tile_size, opts.labels, opts.shared_scale, opts.sequential) == \
        (24, False, False, "magma")
    acts = np.load(channels_dir / "both__activations.npy")
    view = activation_view(acts, view_title("both", LAYER), options=opts)
    png = read_rgb(channels_dir / "both__activations.png")
    assert np.array_equal(png, view.image)
    assert view.scale.per_tile and view.scale.colormap == "magma"
    assert (view.layout.tile_h, view.layout.tile_w, view.layout.label_h) == (24, 48, 0)
    for k in (0, 100, 319):  # per tile: each tile spans the whole colormap
        tile = png[view.layout.tile_box(k)]
        lut = view.scale.lut()
        assert (tile == lut[0]).all(-1).any() and (tile == lut[-1]).all(-1).any()
    top = top_channels_view("gradcam", demo.acts, grads_of(demo, "dog"), photo=demo.photo,
                            cam=cam_of(demo, "gradcam", "dog"), k=5,
                            title=view_title("both", LAYER, "dog", "gradcam"), options=opts)
    assert np.array_equal(read_rgb(channels_dir / "gradcam" / "both__dog__top.png"), top.image)
    assert len(top.channels) == 5


# ---- options and sizes -------------------------------------------------------------------------

def test_course_alexnet_layer_is_a_16_by_16_grid():
    cfg = load_config(REPO / "configs" / "alexnet_catdog.yaml")  # no model needed to read it
    opts = view_options(cfg.channels)
    assert fit_budget(opts, (256, 13, 13), cfg.channels.top_k) == opts  # nothing shrunk
    acts = np.random.default_rng(0).normal(size=(256, 13, 13)).astype(np.float32)
    lay = activation_view(acts, view_title("cat", "features.10"), options=opts).layout
    assert (lay.rows, lay.cols, lay.tile_h, lay.tile_w) == (16, 16, 48, 48)


def test_views_stay_inside_the_pixel_budget():
    opts = view_options(load_config(REPO / "configs" / "demo_catdog.yaml",
                                    {"channels.tile_size": 256}).channels)
    huge = (2048, 7, 7)  # a ResNet-50 layer4 at tile size 256: some 150 million pixels
    assert view_pixels(opts, huge, 256) > MAX_VIEW_PIXELS
    fitted = fit_budget(opts, huge, 256)
    assert view_pixels(fitted, huge, 256) <= MAX_VIEW_PIXELS and fitted.tile_size >= 32
    wide = (64, 1, 400)  # an extreme aspect
    assert view_pixels(fit_budget(opts, wide, 256), wide, 256) <= MAX_VIEW_PIXELS
    # the estimate bounds the real mosaic of each view
    rng = np.random.default_rng(1)
    acts, grads = rng.normal(size=(2, 40, 3, 5)).astype(np.float32)
    small = ViewOptions(tile_size=20, detail_tile_size=30)
    for drawn in (activation_view(acts, options=small),
                  top_channels_view("gradcam", acts, grads, k=9, options=small),
                  class_contrast_view("gradcam", acts, grads, -grads, k=9, options=small)):
        lay = drawn.layout
        mosaic = lay.rows * (lay.label_h + lay.tile_h + lay.separator) * lay.cols * (
            lay.tile_w + lay.separator)
        assert mosaic <= view_pixels(small, acts.shape, 9)


@pytest.mark.parametrize("sets,needle", [
    ({"channels.top_k": 0}, "channels.top_k: Input should be greater than or equal to 1"),
    ({"channels.top_k": 257}, "channels.top_k: Input should be less than or equal to 256"),
    ({"channels.top_k": 4.0}, "channels.top_k: Input should be a valid integer"),
    ({"channels.tile_size": 257}, "channels.tile_size: Input should be less than or equal to 256"),
    ({"channels.contrast": "yes"}, "channels.contrast: Input should be a valid boolean"),
    ({"channels.colormap": "parula"}, "unknown matplotlib colormap 'parula'"),
    ({"channels.overlay": True}, "channels: 'overlay' was removed"),
])
def test_channel_options_are_checked(sets, needle):
    with pytest.raises(ExplainError, match=needle):
        load_config(REPO / "configs" / "demo_catdog.yaml", sets)


def test_channel_option_defaults():
    spec = load_config(REPO / "configs" / "demo_catdog.yaml", {"channels.overlay": False}).channels
    assert (spec.shared_scale, spec.labels, spec.tile_size, spec.top_k, spec.grids, spec.top,
            spec.contrast, spec.colormap) == (True, True, 48, 16, None, None, None, None)
    assert "overlay" not in spec.model_dump()


def test_scale_dependent_records_keep_their_significant_digits():
    """A gradient-sized weight (3e-9) is not rounded to 0 and 1.1234e-05 keeps its digits:
    records round to significant digits, not decimals."""
    from explain.measures import significant
    assert significant(3.14159e-9) == 3.14159e-9 and significant(1.1234567891e-05) == 1.123457e-05
    assert significant(-2.5) == -2.5 and significant(0.0) == 0.0
    acts = np.full((2, 3, 3), 1e-9, np.float32)
    acts[1] = 2e-7
    grads = np.full((2, 3, 3), 3e-9, np.float32)
    rows, _ = channel_stats("gradcam", acts, grads)
    by_channel = {r["channel"]: r for r in rows}
    assert by_channel[0]["weight"] == pytest.approx(3e-9, rel=1e-6)
    assert by_channel[1]["mean_activation"] == pytest.approx(2e-7, rel=1e-6)

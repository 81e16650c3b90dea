"""channels/: every channel of the channel layer, and how each method's map is built from them.

Per image: ``<image>__activations.png`` (activation_view; .npy with save_arrays). The figures
(the two grids, the top-channels figure, the contrast) only when ``channels.grids`` / ``top`` /
``contrast`` say so: by default for runs of up to GRID_IMAGES images. Per image x
class x channel-sum method (a ``channel_term`` in explain.methods.TABLE), under ``<method>/``:
``<image>__<class>__contributions.png`` (contribution_view; .npy with save_arrays),
``<image>__<class>__channels.csv`` (one row per channel), ``<image>__<class>__top.png``
(top_channels_view, with the photo and the method's map), and the channel numbers on the map's
record (summary.csv columns). Per image x method, when exactly two different classes are
explained for the image (and ``channels.contrast``; a class that is both the label and the
prediction counts once): ``<image>__contrast.png`` (class_contrast_view).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from explain import channels
from explain.config import Channels
from explain.results import ChannelSummary
from explain.plan import SMALL_RUN
from explain.enginedata import MapSlot
from explain.methods import having
from explain.batches import BatchContext, ImageView
from explain.writers import RunContext, Writer

# Pixel budget of one channel picture (about 48 MB as RGB, a few times that while drawing).
# tile_size and top_k are bounded in the config, but the channel count and the feature map's
# aspect come from the model: a layer with thousands of channels gets smaller tiles instead.
MAX_VIEW_PIXELS = 16_000_000
GRID_IMAGES = SMALL_RUN  # channels.grids: null draws the per-image grids up to this many images
_LINE = 20  # generous height of one label line, pixels (the views use 13 to 17)


def figures_drawn(spec: Channels, images: int) -> tuple[bool, bool, bool]:
    """Whether a run of ``images`` images draws the per-image grids, the top-channels figures
    and the contrast figures: each as set, or (null) only up to GRID_IMAGES images."""
    return tuple(images <= GRID_IMAGES if value is None else value
                 for value in (spec.grids, spec.top, spec.contrast))


def view_options(spec: Channels) -> channels.ViewOptions:
    """The channel views' drawing options for a config's ``channels`` section."""
    base = channels.ViewOptions()
    cmaps = {} if spec.colormap is None else {"sequential": spec.colormap,
                                              "signed": spec.colormap}
    return replace(base, tile_size=spec.tile_size, labels=spec.labels,
                   shared_scale=spec.shared_scale,
                   detail_tile_size=max(base.detail_tile_size, spec.tile_size), **cmaps)


def view_pixels(opts: channels.ViewOptions, shape: tuple[int, int, int], k: int) -> int:
    """An upper estimate of the pixels of the largest tile mosaic (tiles, number bands,
    separators) among the views of a (C, h, w) layer; the title, photo/CAM panels and colour
    bar around it add a fixed few hundred thousand pixels."""
    c, h, w = shape
    sep = opts.separator

    def band(lines: int) -> int:  # number band above each tile
        return lines * _LINE + 2 if opts.labels else 0

    def grid(n: int, tile_h: int, tile_w: int, lines: int) -> int:
        rows, cols = channels.grid_shape(n)
        return rows * (tile_h + band(lines) + sep) * cols * (tile_w + sep)

    def width(tile_h: int) -> int:
        return max(1, round(w * tile_h / h))

    k = max(1, min(k, c))
    d = opts.detail_tile_size
    pair_h = min(d, max(opts.tile_size, round(d * h / w)))  # as class_contrast_view does
    return max(grid(c, opts.tile_size, width(opts.tile_size), 1),    # activations, contributions
               grid(k, d, width(d), 3),                               # top channels
               grid(k, pair_h, 2 * width(pair_h) + sep, 4))           # class contrast


def fit_budget(opts: channels.ViewOptions, shape: tuple[int, int, int], k: int,
               budget: int = MAX_VIEW_PIXELS) -> channels.ViewOptions:
    """``opts`` with tile sizes scaled down (never below 1 pixel) until every view of the layer
    fits ``budget`` pixels; ``opts`` itself when they already fit."""
    for _ in range(64):
        pixels = view_pixels(opts, shape, k)
        if pixels <= budget or (opts.tile_size == 1 and opts.detail_tile_size == 1):
            break
        factor = min(0.9, math.sqrt(budget / pixels))
        opts = replace(opts, tile_size=max(1, int(opts.tile_size * factor)),
                       detail_tile_size=max(1, int(opts.detail_tile_size * factor)))
    return opts


class ChannelWriter(Writer):
    def __init__(self) -> None:
        self._options: dict[tuple[int, int, int], channels.ViewOptions] = {}

    def start(self, ctx: RunContext) -> None:
        spec, images = ctx.cfg.channels, len(ctx.image_order)
        left = [what for what, value, drawn in zip(
            ("per-image activation and contribution grids (channels.grids)",
             "top-channels figures (channels.top)", "class-contrast figures (channels.contrast)"),
            (spec.grids, spec.top, spec.contrast), figures_drawn(spec, images))
            if value is None and not drawn]
        if left:
            ctx.summary.notes.append(
                f"channels: {images} images, so no {'; no '.join(left)}: true draws them; the "
                f"per-channel CSVs and the maps' channel numbers are written")
        summed = having("channel_term", ctx.methods)
        skipped = [m for m in ctx.methods if m not in summed]
        if skipped:
            ctx.summary.notes.append(
                f"channels: no contribution grids for {', '.join(skipped)}: "
                f"{'its' if len(skipped) == 1 else 'their'} maps are not a weighted sum of "
                f"the layer's channels" + (f" (the grids are drawn for {', '.join(summed)})"
                                           if summed else ""))

    def options(self, ctx: RunContext, shape: tuple[int, int, int]) -> channels.ViewOptions:
        """View options for a layer of this shape, within the pixel budget (noted once)."""
        if shape not in self._options:
            spec = ctx.cfg.channels
            wanted = view_options(spec)
            fitted = fit_budget(wanted, shape, spec.top_k)
            if fitted != wanted:
                ctx.summary.notes.append(
                    f"channels: {shape[0]} channels of {shape[1]} x {shape[2]}: tiles drawn "
                    f"{fitted.tile_size} px high (grids) and {fitted.detail_tile_size} px "
                    f"(top channels) instead of {wanted.tile_size} and "
                    f"{wanted.detail_tile_size}, to keep each picture under "
                    f"{MAX_VIEW_PIXELS // 1_000_000} million pixels")
            self._options[shape] = fitted
        return self._options[shape]

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        probe = batch.result.probe
        spec, save = ctx.cfg.channels, ctx.cfg.output.save_arrays
        layer = ctx.plan.channel_layer.name
        methods = having("channel_term", ctx.methods)
        grids, top, contrast = figures_drawn(spec, len(ctx.image_order))
        for view in batch.images:
            image, b = view.entry.id, view.row
            acts = probe.activations[b]
            opts = self.options(ctx, acts.shape)
            files = view.entry.files
            shared = shared_panels(batch, view)
            if grids:
                grid = channels.activation_view(acts, channels.view_title(image, layer),
                                                options=opts)
                files.activations = f"channels/{image}__activations{ctx.ext}"
                ctx.run.write_image(files.activations, grid.image)
            if save:
                files.activations_array = f"channels/{image}__activations.npy"
                ctx.run.write_npy(files.activations_array, acts)
            for method in methods:
                mine = [one for one in view.maps if one.method == method]  # each class once
                for one in mine:
                    self._class_views(ctx, view, one, acts, probe.gradients[one.slot][b],
                                      layer=layer, opts=opts, shared=shared, drawn=(grids, top))
                if contrast and len(mine) == 2:
                    first, second = mine
                    contrast = channels.class_contrast_view(
                        method, acts, probe.gradients[first.slot][b],
                        probe.gradients[second.slot][b],
                        classes=(first.class_name, second.class_name), photo=view.item.rgb,
                        cams=(first.cam, second.cam), k=spec.top_k,
                        title=channels.view_title(image, layer, f"{first.class_name} vs "
                                                  f"{second.class_name}", method),
                        options=opts, shared=shared)
                    files.contrast[method] = f"channels/{method}/{image}__contrast{ctx.ext}"
                    ctx.run.write_image(files.contrast[method], contrast.image)

    def _class_views(self, ctx: RunContext, view: ImageView, one: MapSlot, acts: np.ndarray,
                     grads: np.ndarray, *, layer: str, opts: channels.ViewOptions,
                     shared: channels.SharedPanels, drawn: tuple[bool, bool]) -> None:
        """Contribution grid, per-channel CSV, top-channels figure and the record's numbers for
        one map (``one``: image x class x method) from the channel layer's activations and
        that class's gradients, drawn with ``opts`` and the image's ``shared`` panels for the
        layer named ``layer``; ``drawn``: whether the grid and the top-channels figure are."""
        method, cls = one.method, one.class_name
        image = view.entry.id
        stem = f"channels/{method}/{image}__{cls}"
        title = channels.view_title(image, layer, cls, method)
        contrib = channels.channel_contributions(method, acts, grads)
        files = one.record.files
        if drawn[0]:
            grid = channels.contribution_view(contrib, title, method=method, options=opts)
            files.contributions = f"{stem}__contributions{ctx.ext}"
            ctx.run.write_image(files.contributions, grid.image)
        if ctx.cfg.output.save_arrays:
            files.contributions_array = f"{stem}__contributions.npy"
            ctx.run.write_npy(files.contributions_array, contrib)
        rows, stats = channels.channel_stats(method, acts, grads)
        files.channels_csv = f"{stem}__channels.csv"
        ctx.run.write_csv(files.channels_csv, rows)
        if drawn[1]:
            top = channels.top_channels_view(method, acts, grads, photo=view.item.rgb,
                                             cam=one.cam, k=ctx.cfg.channels.top_k,
                                             title=title, options=opts, shared=shared)
            files.top = f"{stem}__top{ctx.ext}"
            ctx.run.write_image(files.top, top.image)
        one.record.channels = ChannelSummary(**stats)


def shared_panels(batch: BatchContext, view: ImageView) -> channels.SharedPanels:
    """The panels the image's figures share, with the overlays the map writer drew for it
    when they are the figures' own (jet, half and half, over the float photo)."""
    shared = channels.SharedPanels()
    if view.item.rgb.dtype.kind == "f":
        for one in view.maps:
            colormap, weight, picture = batch.overlays.get((view.row, one.slot, one.method),
                                                           (None, None, None))
            if colormap == "jet" and weight == 0.5:
                shared.overlay(one.cam, picture())
    return shared

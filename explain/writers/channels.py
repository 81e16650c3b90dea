"""channels/: every channel of the channel layer, and how each method's map is built from them.

Per image, ``<image>__activations.png`` (and .npy with save_arrays); per image x class x
method that is a channel sum, ``<method>/<image>__<class>__contributions.png``, the
per-channel CSV, and the channel numbers on the map's record (summary.csv columns)."""

from __future__ import annotations

import numpy as np

from explain import channels, render
from explain.model import find_layer
from explain.results import ChannelSummary
from explain.writers import BatchContext, RunContext, Writer


class ChannelWriter(Writer):
    def start(self, ctx: RunContext) -> None:
        skipped = [m for m in ctx.methods if m not in channels.CHANNEL_METHODS]
        if skipped:
            ctx.summary.notes.append(
                f"channels: no contribution grids for {', '.join(skipped)} (only "
                f"{', '.join(m for m in ctx.methods if m in channels.CHANNEL_METHODS) or 'none'} "
                f"of the chosen methods are channel sums)")

    def _grid(self, ctx: RunContext, stack: np.ndarray, photo) -> np.ndarray:
        spec = ctx.cfg.channels
        return channels.channel_grid(
            stack, shared_scale=spec.shared_scale, tile_size=spec.tile_size,
            colormap=render.colormap_code(spec.colormap) if spec.colormap else None,
            photo=photo if spec.overlay else None, image_weight=ctx.cfg.output.image_weight,
            labels=spec.labels)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        probe = batch.result.probe
        save = ctx.cfg.output.save_arrays
        for view in batch.images:
            image, b = view.entry.id, view.row
            acts = probe.activations[b]
            ctx.run.write_png(f"channels/{image}__activations.png", self._grid(ctx, acts, view.item.rgb))
            if save:
                ctx.run.write_npy(f"channels/{image}__activations.npy", acts)
            for s, cls_index in enumerate(batch.result.classes[b]):
                cls, grads = ctx.classes[int(cls_index)], probe.gradients[s][b]
                for method in ctx.methods:
                    if method not in channels.CHANNEL_METHODS:
                        continue
                    stem = f"channels/{method}/{image}__{cls}"
                    contrib = channels.channel_contributions(method, acts, grads)
                    ctx.run.write_png(f"{stem}__contributions.png", self._grid(ctx, contrib, None))
                    rows, stats = channels.channel_stats(method, acts, grads)
                    ctx.run.write_csv(f"{stem}__channels.csv", rows)
                    if save:
                        ctx.run.write_npy(f"{stem}__contributions.npy", contrib)
                    view.entry.record(cls, method).channels = ChannelSummary(**stats)

"""cams/<method>/<image>__<class>.png|jpg|webp (overlay, the record's ``file``) and .npy (the
map itself, with save_arrays: the record's ``files.array``)."""

from __future__ import annotations

import functools

import numpy as np

from explain import render
from explain.batches import BatchContext
from explain.writers import RunContext, Writer


class MapWriter(Writer):
    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        out = ctx.cfg.output
        for view in batch.images:
            for one in view.maps:
                # drawn once, when first asked for: by the file pool's thread (behind the
                # model) or by a channel figure that shows it
                picture = functools.cache(functools.partial(
                    render.overlay, view.item.rgb, one.cam, out.colormap, out.image_weight))
                batch.overlays[(view.row, one.slot, one.method)] = (out.colormap,
                                                                    out.image_weight, picture)
                ctx.run.write_drawn(one.record.file, picture)
                if out.save_arrays:
                    array = one.record.file.rsplit(".", 1)[0] + ".npy"
                    ctx.run.write_npy(array, one.cam.astype(np.float32))
                    one.record.files.array = array

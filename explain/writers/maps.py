"""cams/<method>/<image>__<class>.png|jpg|webp (overlay) and .npy (the map itself, with save_arrays)."""

from __future__ import annotations

import numpy as np

from explain import render
from explain.writers import BatchContext, RunContext, Writer


class MapWriter(Writer):
    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        out = ctx.cfg.output
        for view in batch.images:
            slot_of = {ctx.classes[int(c)]: s for s, c in enumerate(batch.result.classes[view.row])}
            for record in view.entry.cams:
                cam = batch.result.maps[record.method][view.row, slot_of[record.class_name]]
                picture = render.overlay(view.item.rgb, cam, out.colormap, out.image_weight)
                ctx.run.write_image(record.file, picture)
                if out.save_arrays:
                    ctx.run.write_npy(record.file.rsplit(".", 1)[0] + ".npy", cam.astype(np.float32))

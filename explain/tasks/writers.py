"""The outputs of segmentation and detection runs.

``TaskWriter`` writes each map's overlay (``cams/<method>/<image>__<class>.<ext>``, and the
``.npy`` with ``output.save_arrays``) with the task drawn on it: segmentation, the outline
of the class's predicted mask in white (and of its ground-truth mask in magenta); detection,
the detection's box with its label and score. Per image it writes the predicted mask in
colour (``segmentation/<image>.<ext>``) or the explained boxes (``detections/<image>.<ext>``).
At the end it adds the notes (targets without a region, images without detections:
explain.tasks.records.task_notes) and each method's mean numbers (``summary.json``'s
``task``), from the records, so that a resumed run, a torchrun run and the report rebuilt
from an interrupted run (explain.reportload) get them too. Segmentation runs get the class
panels as classifiers do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explain import pace, render
from explain.tasks.drawing import TRUTH, draw_boxes, draw_outline, mask_picture
from explain.tasks.records import task_notes, task_summary
from explain.batches import BatchContext
from explain.writers import RunContext, Writer


class TaskWriter(Writer):
    def prepare(self, plan: Any) -> None:
        """Ground-truth label maps: read and checked before the run folder is claimed."""
        if plan.cfg.task == "segmentation":
            from explain.tasks.masks import check_masks
            check_masks(plan.cfg, list(plan.images))

    def start(self, ctx: RunContext) -> None:
        """The estimates (explain.pace): a detection run's maps, a segmentation run's
        per-channel methods (their passes shared by the classes)."""
        if ctx.todo == 0:  # --resume with every image kept
            return
        plan = ctx.plan
        if ctx.cfg.task == "detection":
            line, seconds = pace.detection_cost(plan, ctx.todo)
            found = [("cams", line, seconds)]
        else:
            found = [(c.method, pace.cost_line(c, list(ctx.cfg.target_layers), plan.slots),
                      c.seconds) for c in pace.per_channel_costs(plan, images=ctx.todo)]
        for key, line, seconds in found:
            ctx.summary.estimates_s[key] = round(seconds, 3)
            ctx.log(line)
            ctx.summary.notes.append(line)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        out, task = ctx.cfg.output, ctx.cfg.task
        for view in batch.images:
            b = view.row
            for one in view.maps:
                picture = render.overlay(view.item.rgb, one.cam, out.colormap, out.image_weight)
                if task == "segmentation":
                    self._outline(ctx, picture, one.class_index, (batch.labels[b],
                                                                  batch.truths[b]))
                else:
                    det = one.record.detection
                    draw_boxes(picture, [(det.box, f"{one.record.class_name} {det.score:.2f}")])
                ctx.run.write_image(one.record.file, picture)
                if out.save_arrays:
                    array = one.record.file.rsplit(".", 1)[0] + ".npy"
                    ctx.run.write_npy(array, one.cam.astype(np.float32))
                    one.record.files.array = array
            self._image_picture(ctx, view, batch)

    @staticmethod
    def _outline(ctx: RunContext, picture: np.ndarray, c: int, masks: tuple) -> None:
        labels, truth = masks
        if not ctx.cfg.segmentation.outline:
            return
        draw_outline(picture, labels == c)
        if truth is not None:
            draw_outline(picture, truth == c, TRUTH)

    @staticmethod
    def _image_picture(ctx: RunContext, view: Any, batch: BatchContext) -> None:
        """segmentation/<image>: the predicted mask in colour; detections/<image>: the
        explained boxes on the photo."""
        entry = view.entry
        if ctx.cfg.task == "segmentation":
            picture = mask_picture(view.item.rgb, batch.labels[view.row],
                                   max(ctx.classes) + 1, batch.truths[view.row])
            entry.files.task = f"segmentation/{entry.id}{ctx.ext}"
            ctx.run.write_image(entry.files.task, picture)
            return
        picture = render.as_uint8(view.item.rgb)
        draw_boxes(picture, [(det.box, f"{det.name} {det.score:.2f}")  # the best placed first
                             for det in batch.found[view.row]])
        entry.files.task = f"detections/{entry.id}{ctx.ext}"
        ctx.run.write_image(entry.files.task, picture)

    def finish(self, ctx: RunContext) -> None:
        summary = ctx.summary
        summary.notes.extend(task_notes(ctx.cfg, summary.images))
        summary.task = task_summary(ctx.cfg.task, summary.images, ctx.methods)

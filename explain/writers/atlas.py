"""The channel layer across the run: channels.atlas and channels.ablation (numbers in
explain.channels.atlas, .fingerprints and .ablation; records in explain.atlas_results).

- Per image: ``channels/atlas/images/<image>.npz``, what the image adds (peak activations,
  contributions and their peaks, ablation drops; ``ImageFiles.atlas``), written before its
  item file, so every kept image of an interrupted run has one;
- ``channels/atlas/state.zip``: the heaps and sums, saved every few batches (at most
  SAVE_BYTES per image, amortised) and at the end. ``--resume`` starts from it when it covers
  only kept images, and adds the kept images it does not cover from their .npz; else it
  rebuilds the state from every kept image's .npz. Under torchrun each rank keeps its own
  state and rank 0 merges them (the heaps and sums are order-free: the same bytes);
- atlas (``channels.atlas.enabled``): ``channels/atlas/<method>/<class>.csv`` (every channel),
  ``channels/atlas/regions.csv``, ``channels/atlas/channel_<k>.<ext>`` (the reference regions
  of each fingerprint channel) and ``report/atlas.html``; fingerprints and overlaps in
  summary.json's ``atlas``;
- ablation (``channels.ablation.enabled``): ``channels/ablation/<method>.<ext>`` (the curve),
  ``channels/ablation/ablation.csv``, summary.json's ``ablation``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from explain.channels import channel_contributions, channel_totals
from explain.channels.ablation import Ablator, Plan, Target, drops
from explain.channels.atlas import (BOOT_CLASSES, OUTCOMES, AtlasState, ImageAtlas, MapAtlas,
                                    image_key)
from explain.errors import ExplainError
from explain.methods import having
from explain.names import quote
from explain.pipeline import FilePool, QueuedWrites, default_workers
from explain.plan import RunPlan
from explain.recordfiles import MAX_ITEM_BYTES, item_files, parse_item
from explain.batches import BatchContext, ImageView
from explain.writers import RunContext, Writer

STATE = "channels/atlas/state.zip"
SAVE_BYTES = 256 * 1024  # state bytes written per explained image at most (amortised)
MAX_PART_BYTES = 64 * 1024 * 1024  # a per-image part read back
MAX_STATE_BYTES = 4 * 1024 ** 3


def layer_grid(plan: RunPlan) -> tuple[int, int, int]:
    """(C, h, w) of the channel layer for the preflight image."""
    layer = plan.channel_layer
    c = layer.channels
    if layer.layout.kind == "tokens":
        return (c, *layer.layout.grid)
    h, w = (layer.shape[1:3] if layer.layout.kind == "nchw" else layer.shape[0:2])
    return c, int(h), int(w)


class AtlasWriter(Writer):
    """After the channel writer; before the summary and the report."""

    def __init__(self) -> None:
        self.atlas: Optional[AtlasState] = None
        self.ablator: Optional[Ablator] = None
        self.unsaved = 0  # images added since the state was last saved
        self.absent = 0  # kept images whose part could not be read back

    def prepare(self, plan: RunPlan) -> None:
        spec, layer = plan.cfg.channels, plan.channel_layer
        c, h, w = layer_grid(plan)
        if spec.atlas.enabled and h * w <= 1:
            raise ExplainError(f"channels.atlas: the channel layer '{layer.name}' has no spatial "
                               f"map ({c} channels of {h} x {w}), so a channel has no region to "
                               f"show; set channels.layer to a layer with a map (explain layers "
                               f"CONFIG lists them)")
        ab = spec.ablation
        if ab.enabled and max(ab.k) > c:
            raise ExplainError(f"channels.ablation.k: {max(ab.k)} is more than the {c} channels "
                               f"of the channel layer '{layer.name}'")
        if ab.enabled and not having("channel_term", plan.methods):
            raise ExplainError(f"channels.ablation: ranks channels by their contribution to a "
                               f"map, which only the channel-sum methods have "
                               f"({', '.join(having('channel_term'))}); add one to methods")

    def state(self) -> dict:
        return {"atlas": self.atlas, "absent": self.absent}

    def merge(self, state: dict) -> None:
        self.atlas.merge(state["atlas"])
        self.absent += state["absent"]

    def forget_kept(self) -> None:
        self.atlas, self.absent = self.atlas.empty(), 0

    def start(self, ctx: RunContext) -> None:
        spec = ctx.cfg.channels
        self.atlas = AtlasState(layer_grid(ctx.plan)[0], spec.atlas.top_n, top_k=spec.top_k,
                                crop=spec.atlas.crop, seed=ctx.cfg.seed,
                                ks=spec.ablation.k if spec.ablation.enabled else (),
                                boot=len(ctx.classes) <= BOOT_CLASSES)
        if spec.ablation.enabled:
            plan = ctx.plan
            self.ablator = Ablator(plan.model, plan.channel_layer, plan.head, plan.device)
        kept = {rel[len("items/"):-len(".json")] for rel in item_files(ctx.run)
                if ctx.run.has_file(rel)}
        if kept:
            self._resume(ctx, kept)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        if self.unsaved and self.unsaved * SAVE_BYTES >= self._state_bytes():
            ctx.run.write_bytes(STATE, self.atlas.to_bytes())  # covers earlier batches only
            self.unsaved = 0
        parts = [self._image(ctx, batch, view) for view in batch.images]
        if self.ablator is not None:
            self._ablate(ctx, batch, parts)
        for view, part in zip(batch.images, parts):
            view.entry.files.atlas = f"channels/atlas/images/{view.entry.id}.npz"
            ctx.run.write_bytes(view.entry.files.atlas, part.to_bytes())
        self.atlas.add(parts)
        self.unsaved += len(parts)

    def _state_bytes(self) -> int:
        a = self.atlas
        heaps = 32 * a.channels * a.n * (1 + len(a.contribution))
        return heaps + sum(8 * (len(s.total) * (2 + (0 if s.boot is None else len(s.boot))))
                           for s in a.shares.values())

    def _image(self, ctx: RunContext, batch: BatchContext, view: ImageView) -> ImageAtlas:
        """What the image adds: the channel layer's peaks, each channel-sum map's totals."""
        probe, b = batch.result.probe, view.row
        acts = probe.activations[b]
        c, h, w = acts.shape
        flat = acts.reshape(c, -1)
        peaks = flat.argmax(axis=1).astype(np.int32)
        part = ImageAtlas(view.entry.id, tuple(view.item.rgb.shape[:2]), (h, w),
                          flat[np.arange(c), peaks].astype(np.float64), peaks)
        entry = view.entry
        summed = set(having("channel_term", ctx.methods))
        for one in view.maps:
            if one.method not in summed:
                continue
            contrib = channel_contributions(one.method, acts, probe.gradients[one.slot][b])
            outcome = None
            if entry.label is not None and one.class_name == entry.predicted:
                outcome = "correct" if entry.label == entry.predicted else "wrong"
            weak = one.class_name != entry.predicted and \
                entry.probabilities.get(one.class_name, 1.0) < ctx.cfg.report.weak_below
            part.maps.append(MapAtlas(one.class_name, one.method, outcome,
                                      channel_totals(contrib),
                                      contrib.reshape(c, -1).argmax(axis=1).astype(np.int32),
                                      weak=weak))
        return part

    def _ablate(self, ctx: RunContext, batch: BatchContext, parts: list[ImageAtlas]) -> None:
        """Every map's drops, from passes over the whole batch."""
        targets, owners = [], []
        for view, part in zip(batch.images, parts):
            index = {(m.class_name, m.method): m for m in part.maps}
            for one in view.maps:
                found = index.get((one.class_name, one.method))
                if found is not None:
                    targets.append(Target(view.row, one.class_index, found.totals))
                    owners.append(found)
        if not targets:
            return
        spec = ctx.cfg.channels.ablation
        keys = [0] * len(batch.x)
        for view in batch.images:
            keys[view.row] = image_key(view.entry.id)
        found = drops(self.ablator, batch.x, batch.result.probe.activations, targets,
                      plan=Plan(spec.k, spec.draws, ctx.cfg.seed, keys),
                      reference=batch.result.logits)
        for owner, values in zip(owners, found):
            owner.drops = values

    def finish(self, ctx: RunContext) -> None:
        workers = ctx.cfg.workers
        pool = FilePool(default_workers() if workers is None else workers)  # pictures encoded
        #                                                   and written beside the drawing
        folder, ctx.run = ctx.run, QueuedWrites(ctx.run, pool)
        try:
            self._finish(ctx)
            pool.drain()
        finally:
            ctx.run = folder
            pool.close()

    def _finish(self, ctx: RunContext) -> None:
        from explain.writers.atlaspages import finish_ablation, finish_atlas, write_page
        ctx.run.write_bytes(STATE, self.atlas.to_bytes())
        if self.absent:
            ctx.summary.notes.append(
                f"channels.atlas: {self.absent} image(s) kept from the interrupted run are not "
                f"in the atlas (their channels/atlas/images/ part could not be read)")
        if ctx.cfg.channels.ablation.enabled:
            finish_ablation(ctx, self.atlas, sorted(self.ablator.used) if self.ablator else [])
        if ctx.cfg.channels.atlas.enabled:
            finish_atlas(ctx, self.atlas, STATE)
        else:
            ctx.summary.ablation.files.state = STATE
        write_page(ctx)

    # ---- --resume ---------------------------------------------------------------------------
    def _resume(self, ctx: RunContext, kept: set[str]) -> None:
        """The saved state when it covers only kept images (and was made with these
        settings), plus the kept images it does not cover, from their parts."""
        try:
            data = ctx.run.read_bytes(STATE, MAX_STATE_BYTES)
            saved = AtlasState.from_bytes(data, str(ctx.run.root / STATE), self.atlas,
                                          classes=self._classes(ctx),
                                          methods=[m.name for m in ctx.cfg.methods]) \
                if data else None
        except ExplainError as exc:
            ctx.summary.notes.append(f"channels.atlas: {exc}; the atlas is rebuilt from the "
                                     f"kept images' parts")
            saved = None
        if saved is not None and saved.covered <= kept:  # made with these settings
            self.atlas = saved
        for ident in sorted(kept - self.atlas.covered):
            part = self._kept_part(ctx, ident)
            if part is None:
                self.absent += 1
            else:
                self.atlas.add([part])

    @staticmethod
    def _classes(ctx: RunContext) -> list[str]:
        """The classes a map of this run is made for (channel views are classification's)."""
        return list(ctx.classes.values())

    def _kept_part(self, ctx: RunContext, ident: str) -> Optional[ImageAtlas]:
        """A kept image's part, found through its item file's record."""
        rel = f"items/{ident}.json"
        data = ctx.run.read_bytes(rel, MAX_ITEM_BYTES)
        entry = parse_item(data, str(ctx.run.root / rel)).entry if data is not None else None
        where = entry.files.atlas if entry is not None else None
        data = ctx.run.read_bytes(where, MAX_PART_BYTES) if where else None
        if data is None:
            return None
        part = ImageAtlas.from_bytes(data, str(ctx.run.root / where))
        classes, methods = set(self._classes(ctx)), {m.name for m in ctx.cfg.methods}
        strange = next((m for m in part.maps if m.class_name not in classes
                        or m.method not in methods or m.outcome not in (None, *OUTCOMES[1:])),
                       None)
        if strange is not None:
            raise ExplainError(f"{ctx.run.root / where}: a map of {quote(strange.class_name)} "
                               f"by {quote(strange.method)}, not a class and method of this "
                               f"run; the run folder is damaged")
        if part.id != ident or len(part.activation) != self.atlas.channels:
            raise ExplainError(f"{ctx.run.root / where}: holds image '{part.id[:60]}' with "
                               f"{len(part.activation)} channels, not '{ident[:60]}' with "
                               f"{self.atlas.channels}; the run folder is damaged")
        return part

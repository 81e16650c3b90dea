"""dataset/: what a labelled run says about the whole dataset (see explain.datasets).

- ``dataset/confusion.csv`` (rows = label, columns = predicted), ``dataset/per_class.csv``
  (images, correct, predicted as, pointing game per class and method), ``dataset/
  disagreement.csv`` (every image x class with 2+ methods, most disagreeing first);
- ``dataset/mean/<method>/<class>__correct.png|.npy`` and ``__wrong``: per class x method, the
  mean of the maps *of the label class* over the images labelled with it that the model gets
  right / wrong, each map resized to MEAN_SIZE first; the picture is the output colormap on
  the maps' own 0..1 scale (not stretched), so pictures compare across classes and outcomes.
  An image whose label class is not among its explained classes (``targets: predicted`` on a
  wrong image) adds no map;
- ``dataset/mean/sums.zip``: the running sums, saved before each batch (covering the batches
  whose item files are complete) and at the end. ``--resume`` continues from it: the kept
  images it covers are in it, and the few it cannot cover (the batch the interruption cut
  short) are read back from ``cams/<method>/*.npy`` when ``output.save_arrays`` is on, or
  else counted in ``mean_missing`` and named in a note.
- the numbers in summary.json's ``dataset``.
"""

from __future__ import annotations


import cv2
import numpy as np

from explain import datasets, render
from explain.readback import stored_array
from explain.errors import ExplainError
from explain.recordfiles import MAX_ITEM_BYTES, item_files, parse_item
from explain.results import ImageEntry
from explain.batches import BatchContext
from explain.writers import RunContext, Writer

STATE = "dataset/mean/sums.zip"
MAX_MAP_BYTES = 64 * 1024 * 1024  # a saved map read back (cams/<method>/*.npy)


class DatasetWriter(Writer):
    """Runs when the config lists a labelled dataset; after the metrics writer (agreement and
    localisation are on the records), before the summary and the report."""

    def __init__(self) -> None:
        self.sums = datasets.MeanSums()

    def state(self) -> dict:
        return {"sums": self.sums}

    def merge(self, state: dict) -> None:
        self.sums.merge(state["sums"])

    def forget_kept(self) -> None:
        self.sums = datasets.MeanSums(self.sums.size)

    def start(self, ctx: RunContext) -> None:
        kept = _kept_ids(ctx)
        if kept:
            self._resume(ctx, kept)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        # Before this batch: every earlier batch's item files are written, so the state saved
        # now covers exactly the kept images a --resume will find (bar this batch's).
        pending = [view.entry.id for view in batch.images]
        ctx.run.write_bytes(STATE, self.sums.to_bytes(pending))
        for view in batch.images:
            entry = view.entry
            if entry.label is None:
                continue
            outcome = _outcome(entry)
            for one in view.maps:  # the label's maps (none when the label is not explained)
                if one.class_name == entry.label:
                    self.sums.add((entry.label, one.method, outcome), one.cam.astype(np.float32))
        self.sums.cover(pending)

    def finish(self, ctx: RunContext) -> None:
        run, cfg, methods = ctx.run, ctx.cfg, ctx.methods
        classes = list(cfg.classes)
        entries = ctx.summary.images
        numbers = datasets.summarise(entries, classes, methods, cfg.seed,
                                     cfg.report.photo_separator)
        numbers.mean_size = list(self.sums.size)
        numbers.mean_missing = self.sums.absent
        for key in self.sums.keys(classes, methods):
            mean = self.sums.mean(key)
            record = datasets.mean_record(key, self.sums.counts[key], mean)
            run.write_npy(record.array, mean)
            run.write_image(record.file, mean_picture(mean, cfg.output.colormap))
            numbers.mean_maps.append(record)
        files = ctx.summary.files
        files.mean_sums, files.confusion_csv = STATE, "dataset/confusion.csv"
        run.write_bytes(files.mean_sums, self.sums.to_bytes([]))
        run.write_csv(files.confusion_csv,
                      datasets.confusion_rows(numbers.classes, numbers.confusion))
        files.per_class_csv = "dataset/per_class.csv"
        run.write_csv(files.per_class_csv, datasets.class_rows(numbers.per_class, methods))
        ranked = datasets.disagreements(entries, classes)
        if len(methods) > 1:
            files.disagreement_csv = "dataset/disagreement.csv"
            run.write_csv(files.disagreement_csv, [r.dump() for r in ranked])
        unmapped = sum(1 for e in entries if e.label is not None and
                       not any(r.class_name == e.label for r in e.cams))
        if unmapped:
            ctx.summary.notes.append(
                f"dataset: {unmapped} labelled image(s) have no map of their label class, so "
                f"they are in no mean map (targets: [label, predicted] explains both)")
        if self.sums.absent:
            ctx.summary.notes.append(
                f"dataset: {self.sums.absent} image(s) kept from the interrupted run are not "
                f"in the mean maps (their maps were not saved, or not as their records say; "
                f"output.save_arrays keeps them)")
        ctx.summary.dataset = numbers

    # ---- --resume ---------------------------------------------------------------------------
    def _resume(self, ctx: RunContext, kept: set[str]) -> None:
        """Start from the interrupted run's sums when they cover exactly the kept images but
        its last batch; add the kept images they do not cover from their saved arrays."""
        missing = set(kept)
        keys = len(ctx.classes) * len(ctx.methods) * len(datasets.OUTCOMES)
        limit = keys * (self.sums.size[0] * self.sums.size[1] * 8 + 1024) + (1 << 20)
        try:
            data = ctx.run.read_bytes(STATE, limit)
            state, pending = datasets.MeanSums.from_bytes(data, str(ctx.run.root / STATE)) \
                if data is not None else (None, [])
        except ExplainError as exc:  # not ours: start over from the saved arrays
            ctx.summary.notes.append(f"dataset: {exc}; the means start from the saved maps")
            state, pending = None, []
        classes, methods = set(ctx.classes.values()), set(ctx.methods)
        strange = state is not None and any(c not in classes or m not in methods
                                            for c, m, _ in state.sums)
        if strange:  # another run's groups (a shared state): start from the saved maps
            ctx.summary.notes.append(f"dataset: {ctx.run.root / STATE}: means of a class or "
                                     f"method this run does not explain; the means start "
                                     f"from the saved maps")
            state, pending = None, []
        covered = kept - set(pending)
        if state is not None and state.size == self.sums.size and \
                state.covered == len(covered) and state.digest == datasets.id_digest(covered):
            self.sums, missing = state, kept & set(pending)
        for ident in sorted(missing):
            rel = f"items/{ident}.json"
            data = ctx.run.read_bytes(rel, MAX_ITEM_BYTES)
            entry = parse_item(data, str(ctx.run.root / rel)).entry if data is not None else None
            if entry is None or not self._add_saved(ctx, entry):
                self.sums.absent += 1
            self.sums.cover([ident])

    def _add_saved(self, ctx: RunContext, entry: ImageEntry) -> bool:
        """Add a kept image's label-class maps from cams/<method>/*.npy; False when an
        array is missing or not the map its record says, a finite float map at the image's
        input size (nothing is added then)."""
        if entry.label is None or not any(r.class_name == entry.label for r in entry.cams):
            return True  # nothing of it goes into the means
        arrays = {}
        for method in ctx.methods:
            rec = next((r for r in entry.cams if r.class_name == entry.label and
                        r.method == method), None)
            if rec is None or rec.files.array is None:
                return False
            data = ctx.run.read_bytes(rec.files.array, MAX_MAP_BYTES)
            try:
                cam = stored_array(data) if data is not None else None
            except (ValueError, OSError, EOFError):
                cam = None
            if not isinstance(cam, np.ndarray) or cam.ndim != 2 or cam.dtype.kind != "f" or \
                    list(cam.shape) != entry.input_size or not np.isfinite(cam).all():
                return False
            arrays[method] = cam
        for method, cam in arrays.items():
            self.sums.add((entry.label, method, _outcome(entry)), cam.astype(np.float32))
        return True


def _outcome(entry: ImageEntry) -> str:
    return "correct" if entry.predicted == entry.label else "wrong"


def _kept_ids(ctx: RunContext) -> set[str]:
    """Ids of the images an interrupted run finished (its item files; none in a new run)."""
    return {rel[len("items/"):-len(".json")] for rel in item_files(ctx.run)
            if ctx.run.has_file(rel)}


def mean_picture(mean: np.ndarray, colormap: str) -> np.ndarray:
    """A mean map as an RGB picture: the OpenCV colormap over 0..1 (not stretched to the
    map's own maximum)."""
    gray = render.as_uint8(mean)
    return cv2.cvtColor(cv2.applyColorMap(gray, render.colormap_code(colormap)), cv2.COLOR_BGR2RGB)

"""Per map: strength (raw maximum, logit, probability, weak flag), faithfulness scores and,
with ground-truth boxes, localisation numbers. Written onto the map records, so they land in
summary.json / summary.csv and the item files. Also the method notes of a run: the cost
estimate of the per-channel methods and the metrics (printed before the first batch) and
class-agnostic maps; what a method or metric costs or is comes from their tables
(explain.methods.TABLE, explain.metrics.TABLE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from explain import annotations, evidence, metrics, pace, trustlines
from explain.chance import near_chance
from explain.annotations import localisation
from explain.baselines import BASELINES, batch_maps
from explain.config import MetricSpec, Preprocess
from explain.errors import ExplainError
from explain.models.heads import ScoreModel
from explain.images import ImageRef, input_size
from explain.images.orientation import original_size
from explain.engine import seeded
from explain.enginedata import MapSlot
from explain.measures import significant
from explain.names import close_match, quote, short
from explain.methods import traits
from explain.methodtable import method_table
from explain.plan import RunPlan, slots_may_merge
from explain.results import ImageEntry, Localisation
from explain.batches import BatchContext, ImageView
from explain.writers import RunContext, Writer

SAME_MAP_TOLERANCE = 1e-6


class MetricsWriter(Writer):
    """Numbers per map; runs after the map writer and before the summary."""

    def __init__(self) -> None:
        self.boxes: Optional[annotations.BoxSet] = None
        self.no_raw: set[str] = set()
        self.same: dict[str, list[int]] = {}  # method -> [images with identical maps, images]
        self.specs: list = []  # the faithfulness metrics this run computes (see start)

    def state(self) -> dict:
        return {"no_raw": set(self.no_raw), "same": dict(self.same),
                "boxes_used": set(self.boxes.used) if self.boxes is not None else set()}

    def merge(self, state: dict) -> None:
        self.no_raw |= state["no_raw"]
        for method, (same, total) in state["same"].items():
            counts = self.same.setdefault(method, [0, 0])
            counts[0] += same
            counts[1] += total
        if self.boxes is not None:
            self.boxes.used |= state["boxes_used"]

    def prepare(self, plan: RunPlan) -> None:
        """The boxes, read and checked against the images they name (before the folder is
        claimed: a bad box file loses no earlier run)."""
        if plan.cfg.annotations.enabled:
            self.boxes = annotations.load_boxes(plan.cfg)
            check_boxes(self.boxes, list(plan.images), plan.cfg.preprocess)

    def start(self, ctx: RunContext) -> None:
        """The metrics (the config's: the plan chose them when it left them unset,
        explain.plan; the boxes were read by ``prepare``); the estimates."""
        self.specs = list(ctx.cfg.metrics or [])  # resolved by the plan
        if ctx.todo == 0:  # --resume of a run whose images are all kept: nothing to estimate
            return
        for key, line, seconds in estimates(ctx.plan, self.specs, images=ctx.todo):
            ctx.summary.estimates_s[key] = round(seconds, 3)
            ctx.log(line)
            ctx.summary.notes.append(line)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        cfg, plan, result = ctx.cfg, ctx.plan, batch.result
        t0 = time.perf_counter()
        class_logits = plan.head.class_logits(result.logits)
        for view in batch.images:
            entry = view.entry
            explained = {m.class_name for m in view.maps}
            found = self.boxes.for_image(entry.id, view.item.ref.path) if self.boxes else {}
            found = {c: v for c, v in found.items() if c in explained}
            entry.boxes = annotations.input_boxes(found, view.item.ref.path,
                                                  tuple(entry.input_size))
        measured = [v for v in batch.images if v.maps and (self.specs or v.entry.boxes)]
        yardsticks = baseline_slots(plan, result.activations, measured) if measured else {}
        for view in batch.images:
            b, entry = view.row, view.entry
            extra = yardsticks.get(b, [])
            if self.specs and view.maps:
                self._faithfulness(ctx, batch, view, extra)
            for one in view.maps:
                rec, cls = one.record, one.class_name
                raw = result.raw_max.get(one.method)
                if raw is None:
                    self.no_raw.add(one.method)
                rec.raw_max = None if raw is None else significant(float(raw[b, one.slot]))
                rec.logit = round(float(class_logits[b, one.class_index]), 6)
                rec.probability = entry.probabilities[cls]
                rec.weak = rec.probability < cfg.report.weak_below
                if entry.boxes and cls in entry.boxes:
                    rec.localisation = self._localise(ctx, entry, one)
            for one in extra:
                if entry.boxes and one.class_name in entry.boxes:
                    found = self._localise(ctx, entry, one).model_dump()
                    one.record.scores.update({k: float(v) for k, v in found.items()})
            entry.baselines = [one.record for one in extra]
            _agreement(view.maps)
            self._same_maps(result.maps, b, len({m.class_name for m in view.maps}))
        ctx.summary.durations_s["metrics"] = ctx.summary.durations_s.get("metrics", 0.0) + \
            time.perf_counter() - t0

    def _faithfulness(self, ctx: RunContext, batch: BatchContext, view: ImageView,
                      extra: list[BaselineSlot]) -> None:
        """The image's faithfulness scores: one call per metric on its real maps, and one on
        its baseline maps (apart: ROAD draws its noise map after map and percentile after
        percentile, so the real maps keep the scores of a library call on them alone)."""
        cfg, plan = ctx.cfg, ctx.plan
        ctx.stage(f"faithfulness of {view.entry.id} ({view.row + 1} of {len(batch.images)})")
        x = batch.x[view.row:view.row + 1].to(plan.device)
        model = ScoreModel(plan.model, plan.head)
        for group in (list(view.maps), list(extra)):
            if not group:
                continue
            seeds = [metrics.map_seed(cfg.seed, view.entry.id, m.class_name,
                                      m.method if isinstance(m, MapSlot)
                                      else f"baseline:{m.record.baseline}") for m in group]
            scores = faithfulness(self.specs, model, x, np.stack([m.cam for m in group]),
                                  [m.class_index for m in group], seeds=seeds)
            for one, score in zip(group, scores):
                if isinstance(one, BaselineSlot):
                    one.record.scores.update(score)
                else:
                    one.record.faithfulness = score

    @staticmethod
    def _localise(ctx: RunContext, entry: ImageEntry, one: MapSlot | BaselineSlot
                  ) -> Localisation:
        """Pointing game, energy and IoU of a map (or baseline map) against its class's boxes."""
        mask = annotations.box_mask(entry.boxes[one.class_name], one.cam.shape)
        return localisation(one.cam, mask, ctx.cfg.annotations.threshold)

    def _same_maps(self, maps: dict[str, np.ndarray], b: int, slots: int) -> None:
        if slots < 2:
            return
        for method, m in maps.items():
            counts = self.same.setdefault(method, [0, 0])
            counts[1] += 1
            counts[0] += bool(np.abs(m[b] - m[b, :1]).max() <= SAME_MAP_TOLERANCE)

    def finish(self, ctx: RunContext) -> None:
        ctx.summary.trust = trustlines.build(ctx.summary,
                                           method_table(ctx.summary, ctx.methods))
        notes = ctx.summary.notes
        separator = ctx.summary.config.report.photo_separator
        notes += [n for n in (trustlines.look_alike_note(ctx.summary.trust, separator),
                              trustlines.separator_note(ctx.summary)) if n]
        if self.no_raw:
            notes.append(f"map strength: no raw maximum for {', '.join(sorted(self.no_raw))} "
                         f"(the library's own call returns maps already scaled to 0..1)")
        notes += same_map_notes(self.same, near_chance(ctx.summary) is not None)
        if self.boxes is not None:  # images kept by --resume matched their boxes back then
            for entry in ctx.summary.images:
                self.boxes.for_image(entry.id, Path(entry.path))
        if self.boxes is not None and self.boxes.unused():
            notes.append(_unused_boxes(self.boxes.unused(), ctx.summary.images))


def same_map_notes(same: dict[str, list[int]], at_chance: bool) -> list[str]:
    """The notes on methods whose maps were the same for every class of an image (method ->
    [such images, images]), each with its likely reason: a class-agnostic method, or a model
    at chance (its class scores barely move, so score-weighted channels come out alike)."""
    notes = []
    for method, (count, total) in same.items():
        if not count:
            continue
        why = " (class-agnostic method)" if traits(method).class_agnostic else \
            (" (the model is at chance on every image, see the warnings: class scores that "
             "barely move weight the channels alike for every class)" if at_chance else "")
        notes.append(f"{method}: identical maps for every class on {count} of {total} "
                     f"image(s) computed in this run{why}")
    return notes


def _unused_boxes(unused: list[str], images: list[ImageEntry]) -> str:
    """The note on box keys that matched no image; a key close to an image of the run that
    got no box ('cat_1.jpg' for 'cat-1') is a likely typo: named beside it."""
    stems = {name: e.id for e in images if not e.boxes for name in (e.id, Path(e.path).stem)}
    shown = []
    for key in unused[:5]:  # by their stems: a shared '.jpg' made any two names close
        close = close_match(Path(key).stem, list(stems), cutoff=0.75) if len(key) <= 200 else []
        shown.append(short(key, 80) + (f" (the image {quote(stems[close[0]])}, which has no "
                                       f"box?)" if close else ""))
    more = f" (+{len(unused) - 5} more)" if len(unused) > 5 else ""
    return f"annotations: boxes for images not in this run: {', '.join(shown)}{more}"


@dataclass
class BaselineSlot:
    """One baseline map of an image x class (explain.baselines), with its record."""
    class_index: int
    class_name: str
    cam: np.ndarray
    record: evidence.BaselineMap


def baseline_slots(plan: RunPlan, acts: list[np.ndarray], views: list[ImageView]
                   ) -> dict[int, list[BaselineSlot]]:
    """Per batch row of ``views``: a BaselineSlot per baseline and class explained, baselines
    in table order, classes as the image's maps have them; ``acts``: the batch's target-layer
    activations (BatchResult.activations)."""
    made = batch_maps(plan, acts, [(v.row, v.entry.id, v.item.rgb, len(v.classes()))
                                   for v in views])
    out: dict[int, list[BaselineSlot]] = {}
    for view in views:
        out[view.row] = [BaselineSlot(one.class_index, one.class_name, made[view.row][name][k],
                                      evidence.BaselineMap(class_name=one.class_name,
                                                           baseline=name))
                         for name in BASELINES for k, one in enumerate(view.classes())]
    return out


def check_boxes(boxes: annotations.BoxSet, refs: list[ImageRef], spec: Preprocess) -> None:
    """Every box given for an image of the run lies inside that image (the check the run makes
    when it scales the box), from the image's header alone. An image whose header cannot be
    read is left to the run, which skips it (in a folder) or stops on it."""
    boxes.check_unique((ref.id, ref.path) for ref in refs)
    for ref in refs:
        found = [box for key in dict.fromkeys((ref.id, ref.path.name))
                 for box in boxes.boxes.get(key, [])]
        if not found:
            continue
        if len(found) > annotations.MAX_BOXES_PER_IMAGE:  # given by its id and its file name
            raise ExplainError(f"{found[annotations.MAX_BOXES_PER_IMAGE].where}: more than "
                               f"{annotations.MAX_BOXES_PER_IMAGE} boxes for the image "
                               f"{quote(ref.id)}, under its id and its file name together")
        try:
            original = original_size(ref.path)
            size = input_size(*original, spec)
        except Exception:  # unreadable, or an extreme shape: the run says so for this image
            continue
        for box in found:
            annotations.to_input(box, original, size)


def _agreement(maps: list[MapSlot]) -> None:
    """Each map's mean Pearson correlation with the other methods' maps of its class."""
    from explain.compare import pearson
    by_class: dict[str, list[MapSlot]] = {}
    for one in maps:
        by_class.setdefault(one.class_name, []).append(one)
    for members in by_class.values():
        if len(members) < 2:
            continue
        r = {(i, j): pearson(members[i].cam, members[j].cam)  # symmetric: each pair once
             for i in range(len(members)) for j in range(i + 1, len(members))}
        for i, one in enumerate(members):
            mine = [r[min(i, j), max(i, j)] for j in range(len(members)) if j != i]
            one.record.agreement = round(float(np.mean(mine)), 6)


def faithfulness(specs: list[MetricSpec], model: torch.nn.Module, x: torch.Tensor,
                 cams: np.ndarray, classes: list[int], *, seeds: list[int]
                 ) -> list[dict[str, float]]:
    """Every configured metric for the maps of one image, one call of its metric object per
    metric: ``x`` is the (1, C, H, W) normalised input on the model's device, ``cams`` the
    (K, H, W) maps in 0..1, ``classes`` their K class indices and ``seeds`` their own seeds
    (``metrics.map_seed``: ROAD draws each map's noise from its own; the library's metrics
    run under the first). Returns K dicts, metric name -> score."""
    from explain.road import ROAD
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    cams = np.ascontiguousarray(cams, dtype=np.float32)
    inputs = x.expand(len(cams), *x.shape[1:]).contiguous()
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    scores: list[dict[str, float]] = [{} for _ in range(len(cams))]
    for spec in specs:
        metric = metrics.library_metric(spec)
        own = {"seeds": seeds} if isinstance(metric, ROAD) else {}
        with seeded(seeds[0]), torch.no_grad():
            values = np.asarray(metric(inputs, cams, targets, model, **own),
                                dtype=np.float64).reshape(-1)
        for k, value in enumerate(values):
            scores[k][spec.name] = float(value)
    return scores


def estimates(plan: RunPlan, specs: list,
              images: Optional[int] = None) -> list[tuple[str, str, float]]:
    """(key, 'estimate: ...' line, seconds) for the costly parts of a run: each method that
    runs one forward pass per channel (key: its name), and the faithfulness metrics ``specs``
    (key 'metrics'; the config's, as the plan resolved them); from the plan:
    its images, slots per image, the target layers' channel counts (through their layouts),
    the first image's size and timed passes (explain.pace), for ``images`` images (the plan's
    when None: --resume computes fewer). The summary keeps the seconds beside the measured."""
    cfg = plan.cfg
    images = len(plan.images) if images is None else images
    out = [(c.method, pace.cost_line(c, list(cfg.target_layers), plan.slots), c.seconds)
           for c in pace.per_channel_costs(plan, images=images)]
    if specs:
        line, seconds = _faithfulness_estimate(plan, specs, images)
        out.append(("metrics", line, seconds))
    return out


def _faithfulness_estimate(plan: RunPlan, specs: list, images: int) -> tuple[str, float]:
    """One line and its seconds: forward passes and ROAD imputations (explain.road: one
    forward pass per imputed image, in batches of explain.road.BATCH; a sparse solve each)
    and the time they take, for the run's maps and the baseline maps scored beside them
    (explain.baselines: one per baseline and image x class, in a call of their own per
    image)."""
    maps = images * plan.slots * len(plan.cfg.methods)  # the run's: images x slots x methods
    extra = images * plan.slots * len(BASELINES)
    road = sum(metrics.imputations(s) for s in specs)  # per map
    plain = [s for s in specs if not metrics.imputations(s)]
    per_map = sum(metrics.forward_passes(s) for s in plain)
    h, w = plan.first.tensor.shape[-2:]
    solve = road * h * w * metrics.road_seconds_per_pixel(torch.get_num_threads())  # a map
    # a call's batch holds the image once per map, so every pass costs one image per map;
    # a ROAD metric scores the unchanged image once more (counting a batch as one image made
    # drop_in_confidence's estimate 5x short)
    road_passes = (maps + extra) * (road + sum(1 for s in specs if s not in plain))
    seconds = (maps + extra) * solve
    if road_passes:  # channels-last, as explain.road runs them (ResNet-18 at 64 px: 2.5x)
        seconds += _pass_seconds(plan, as_road=True) * road_passes
    if per_map:
        seconds += _pass_seconds(plan, as_road=False) * (maps + extra) * per_map
    parts = [f"{per_map} forward passes per map"] if plain else []
    if road:
        each = f"{solve:.1f} s" if solve >= 1 else f"{max(1000 * solve, 1):.0f} ms"  # not 0 s
        parts.append(f"{road} ROAD imputations per map, each a sparse solve (about {each} per "
                     f"map at {h} x {w} on a CPU core) and a forward pass")
    most = "up to " if slots_may_merge(plan.cfg) else ""
    return (f"estimate: faithfulness ({', '.join(s.name for s in specs)}): "
            f"{'; '.join(parts)}; {most}{_count(maps, 'map')} and "
            f"{_count(extra, 'baseline map')}, {pace.about(seconds)}"), seconds


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _pass_seconds(plan: RunPlan, as_road: bool) -> float:
    """Seconds per image of a forward pass without gradients as the metrics run them: a batch
    of explain.road.BATCH copies of the first image, timed after an untimed pass
    (pace.seconds_per_pass), the faster of two such; ``as_road``: channels-last where the
    model takes it, as explain.road passes its imputed images (the library's metrics pass
    them as they come). One image alone was timed before: on small inputs a pass's fixed
    cost made the estimate 3x too long at 128 x 128; and the contiguous pass alone said
    about 25 s for a ResNet-18's 81 s of ROAD at 64 x 64, where channels-last is 2.5x slower."""
    from explain import road
    model, x = ScoreModel(plan.model, plan.head), plan.first.tensor.to(plan.device)
    timed = road.Forward(model, x.device) if as_road else model
    return min(pace.seconds_per_pass(timed, x, road.BATCH) for _ in range(2))

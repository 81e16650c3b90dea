"""Numbers that say which explanation to trust: faithfulness (pytorch_grad_cam.metrics),
localisation against ground-truth boxes, and the per-method table of the report.

Faithfulness: per image, each metric is one call of its metric object on all of the image's
maps (its classes x methods, in config order: a batch of copies of the image), with numpy's and
torch's generators seeded with the run's ``seed`` before the call (ROAD's imputation adds
random noise). So a score does not depend on how images were batched or on ``--resume``, and
equals a direct library call on the same maps. The metric objects are the library's, except
ROAD's: explain.road computes the library's numbers (same masks, linear system, noise draws)
with a faster solve and batched forward passes.

Which metrics run (``chosen``): the config's list; unset, ``AUTO_METRICS`` (ROAD combined at its
9 percentiles) for runs of up to ``AUTO_MAPS`` maps and none above.

What the scores mean (the model's score is the class score the run explains: the head's
logit or probability, from ``explain.models.heads.ScoreModel``, picked per class by the
library's ``ClassifierOutputTarget``):

- ``road_most_relevant_first``: change of the score when the map's top pixels (above each
  percentile) are replaced by ROAD's noisy linear imputation, mean over the percentiles;
  lower (a larger drop) is better.
- ``road_least_relevant_first``: the same, removing the least relevant pixels; higher is better.
- ``road_combined``: (least - most) / 2 over the percentiles; higher is better.
- ``drop_in_confidence``: how much the score drops when the input is multiplied by the map;
  lower is better.
- ``increase_in_confidence``: 1 when that product raises the score, else 0; higher is better.

Localisation, per map and the class's boxes (in input pixels):

- ``pointing_hit``: the map's peak (the first maximum, as ``peak_x``/``peak_y``) lies in a box;
  an all-zero map has no peak and misses;
- ``energy_in_box``: the share of the map's sum inside the boxes (energy-based pointing game);
- ``box_iou``: IoU of the boxes with the pixels at or above ``threshold`` x the map's maximum.

Agreement (with two or more methods): each map's mean Pearson correlation with the other
methods' maps of the same image and class (``explain.compare.pearson``). Shown, not ranked:
agreeing with the others does not make a map right.

Each metric is ONE entry of ``TABLE`` (``MetricTraits``: name, label, direction, glossary
text, percent display, kind, factory, passes, ROAD imputations); the config, the estimate,
summary.csv and the report read it there. Adding a faithfulness metric is one call,
``register(MetricTraits(...))``. The table imports neither torch nor the library (the config
checks names with it before torch is loaded): the factories import the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Optional

import numpy as np

from explain import evidence
from explain.baselines import BASELINES
from explain.evidence import Comparison, PerImage, Stat
from explain.results import Localisation, MapRecord, RunSummary

if TYPE_CHECKING:  # torch and the library are imported where a metric runs, not for the table
    import torch

    from explain.config import MetricSpec

Kind = Literal["faithfulness", "localisation", "agreement"]
KINDS: tuple[Kind, ...] = ("faithfulness", "localisation", "agreement")  # column order
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the library's own default


@dataclass(frozen=True)
class MetricTraits:
    """Everything explain knows of one metric: its config and column name, its label in the
    report, its direction (+1: higher is better, -1: lower is better, 0: not a quality, shown
    but not ranked), its glossary text, whether the report shows its mean as a percentage, and
    where its numbers come from (``kind``).

    Faithfulness metrics (the config's ``metrics:``) also have a ``factory``: config entry ->
    an object called as the library's metrics are, ``(inputs, cams, targets, model)`` -> K
    scores; ``passes``: forward passes per image (per percentile when it takes percentiles),
    for the run's estimate; ``imputations``: ROAD imputations per map and percentile;
    ``percentiles``: the default percentiles of a metric that takes them (None: takes none);
    ``aliases``: other names a config may use. Localisation numbers are made by
    ``localisation`` (fields of results.Localisation), agreement by the metrics writer."""
    name: str
    label: str
    direction: int
    glossary: str
    kind: Kind = "faithfulness"
    percent: bool = False
    factory: Optional[Callable[["MetricSpec"], Callable]] = None
    passes: int = 0
    imputations: int = 0
    percentiles: Optional[tuple[int, ...]] = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.direction not in (-1, 0, 1) or self.kind not in KINDS:
            raise ValueError(f"metric '{self.name}': direction -1, 0 or 1; kind one of "
                             f"{', '.join(KINDS)}")


def _road(order: str) -> Callable[["MetricSpec"], Callable]:
    """explain.road's ROAD: the library's numbers (same masks, system, noise draws, scores),
    with a multigrid solve and batched forward passes."""
    def make(spec: "MetricSpec") -> Callable:
        from explain.road import ROAD
        return ROAD(order, percentiles=list(spec.percentiles))
    return make


def _cam_mult(cls_name: str) -> Callable[["MetricSpec"], Callable]:
    def make(spec: "MetricSpec") -> Callable:
        from pytorch_grad_cam.metrics import cam_mult_image
        return getattr(cam_mult_image, cls_name)()
    return make


_IMPUTED = "replaced by ROAD's noisy linear imputation"
TABLE: dict[str, MetricTraits] = {t.name: t for t in (
    MetricTraits("road_combined", "ROAD combined", 1,
                 "ROAD (Rong et al. 2022): (score change when the least relevant pixels are "
                 "imputed − change when the most relevant are) / 2, mean over the percentiles. "
                 "A faithful map keeps the score when its unimportant pixels go and loses it "
                 "when its important ones go.",
                 factory=_road("combined"), passes=4, imputations=2,
                 percentiles=ROAD_PERCENTILES),
    MetricTraits("road_most_relevant_first", "ROAD most relevant first", -1,
                 f"score change when the map's most relevant pixels are {_IMPUTED}; a "
                 f"faithful map makes it drop.",
                 factory=_road("most"), passes=2, imputations=1,
                 percentiles=ROAD_PERCENTILES, aliases=("road_morf",)),
    MetricTraits("road_least_relevant_first", "ROAD least relevant first", 1,
                 "score change when the least relevant pixels are imputed; a faithful map "
                 "keeps the score.",
                 factory=_road("least"), passes=2, imputations=1,
                 percentiles=ROAD_PERCENTILES, aliases=("road_lerf",)),
    MetricTraits("drop_in_confidence", "drop in confidence", -1,
                 "how much the class score drops when the input is multiplied by the map "
                 "(0 = no drop).", factory=_cam_mult("DropInConfidence"), passes=2),
    MetricTraits("increase_in_confidence", "increase in confidence", 1,
                 "share of maps whose input × map raises the class score.", percent=True,
                 factory=_cam_mult("IncreaseInConfidence"), passes=2),
    MetricTraits("pointing_hit", "pointing game", 1,
                 "pointing game: share of maps whose peak lies inside the class's box.",
                 kind="localisation", percent=True),
    MetricTraits("energy_in_box", "energy in box", 1,
                 "energy-based pointing game: mean share of the map's sum inside the box.",
                 kind="localisation", percent=True),
    MetricTraits("box_iou", "box IoU", 1,
                 "IoU of the box with the map above annotations.threshold × its maximum.",
                 kind="localisation"),
    MetricTraits("agreement", "agreement", 0,
                 "mean Pearson correlation of a map with the other methods' maps of the same "
                 "image and class: do the methods agree? Not ranked: agreeing with the others "
                 "does not make a map right.", kind="agreement"),
)}


def traits(name: str) -> MetricTraits:
    """The metric's table entry; for a name the table does not know (a run folder written
    with a metric registered then), a faithfulness column shown by name and not ranked."""
    return TABLE.get(name) or MetricTraits(name, name, 0, "a metric this version of explain "
                                           "does not know (shown, not ranked).")


def metric_names() -> list[str]:
    """The names a config's ``metrics:`` may use (faithfulness metrics), in table order."""
    return [name for name, t in TABLE.items() if t.kind == "faithfulness"]


def canonical(name: str) -> str:
    """A config's metric name, lower-cased, with an alias replaced by the metric's name."""
    low = name.lower()
    return next((t.name for t in TABLE.values() if low in t.aliases), low)


def register(entry: MetricTraits) -> None:
    """Add a faithfulness metric: from then on, in this process, configs accept its name (and
    aliases), runs compute it with its factory, and summary.csv, the report's methods table
    and its glossary show it. ``unregister`` undoes it."""
    taken = {n for t in TABLE.values() for n in (t.name, *t.aliases)}
    if entry.kind != "faithfulness" or entry.factory is None:
        raise ValueError("only faithfulness metrics (with a factory) can be added")
    if {entry.name, *entry.aliases} & taken:
        raise ValueError(f"metric '{entry.name}' (or an alias) exists already")
    TABLE[entry.name] = entry


def unregister(name: str) -> None:
    """Remove a metric ``register`` added."""
    TABLE.pop(name)


class Labels(Mapping):
    """Metric name -> its label, read from the table at each look-up (the report's templates
    hold one, so a metric registered later is labelled too)."""

    def __getitem__(self, name: str) -> str:
        return TABLE[name].label

    def __iter__(self) -> Iterator[str]:
        return iter(list(TABLE))

    def __len__(self) -> int:
        return len(TABLE)


LABELS = Labels()


def library_metric(spec: "MetricSpec") -> Callable:
    """The metric object for a config entry (explain.road's for ROAD, else the library's, for
    the built-in ones)."""
    return TABLE[spec.name].factory(spec)


def forward_passes(spec: "MetricSpec") -> int:
    """Forward passes the metric costs per image (each of a batch holding the image once per
    map), for the run's estimate."""
    entry = TABLE[spec.name]
    return entry.passes * (len(spec.percentiles) if entry.percentiles else 1)


def imputations(spec: "MetricSpec") -> int:
    """ROAD imputations (a sparse solve each) the metric makes per map."""
    entry = TABLE[spec.name]
    return entry.imputations * (len(spec.percentiles) if entry.percentiles else 1)


AUTO_MAPS = 64  # maps (images x classes x methods): up to this many, metrics default to ROAD
AUTO_METRICS = ("road_combined",)  # what "on by default" computes (at its default percentiles)
# seconds of solving per ROAD imputation and input pixel (explain.road on one CPU core,
# benchmarks/road.py's "imputation alone" on the idle 2-core machine: 4.4e-7 at 224 x 448,
# 5.5e-7 at 224 x 224; a run solves on 2 threads, so this errs long): for the run's estimate
ROAD_SECONDS_PER_PIXEL = 5e-7


def chosen(configured: Optional[list["MetricSpec"]], maps: int) -> tuple[list["MetricSpec"], str]:
    """The faithfulness metrics a run computes and a note saying why: the config's list when
    it sets one ([]: none); unset, AUTO_METRICS for runs of up to AUTO_MAPS maps and none
    above (the note says how to turn them on)."""
    from explain.config import MetricSpec
    if configured is not None:
        return list(configured), ""
    default = [MetricSpec(name=name) for name in AUTO_METRICS]
    shown = ", ".join(f"{s.name} at percentiles {_span(s.percentiles)}" for s in default)
    if maps <= AUTO_MAPS:
        return default, (f"metrics: {shown} by default (runs of up to {AUTO_MAPS} maps; this "
                         f"one {maps}); 'metrics: []' turns it off")
    return [], (f"metrics: off by default for runs over {AUTO_MAPS} maps (this one {maps}); "
                f"'metrics: [{', '.join(AUTO_METRICS)}]' turns on {shown}")


def _span(values: Optional[list[int]]) -> str:
    steps = {b - a for a, b in zip(values, values[1:])} if values and len(values) > 2 else set()
    if len(steps) == 1:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(str(v) for v in values or [])


def faithfulness(specs: list[MetricSpec], model: torch.nn.Module, x: torch.Tensor,
                 cams: np.ndarray, classes: list[int], *, seed: int) -> list[dict[str, float]]:
    """Every configured metric for the maps of one image, one call of its metric object per
    metric: ``x`` is the (1, C, H, W) normalised input on the model's device, ``cams`` the
    (K, H, W) maps in 0..1 and ``classes`` their K class indices. Returns K dicts, metric
    name -> score."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from explain.engine import seeded
    cams = np.ascontiguousarray(cams, dtype=np.float32)
    inputs = x.expand(len(cams), *x.shape[1:]).contiguous()
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    scores: list[dict[str, float]] = [{} for _ in range(len(cams))]
    for spec in specs:
        with seeded(seed), torch.no_grad():
            values = np.asarray(library_metric(spec)(inputs, cams, targets, model),
                                dtype=np.float64).reshape(-1)
        for k, value in enumerate(values):
            scores[k][spec.name] = float(value)
    return scores


def localisation(cam: np.ndarray, mask: np.ndarray, threshold: float) -> Localisation:
    """Pointing game, energy share and thresholded IoU of one map against a box mask."""
    peak = float(cam.max())
    total = float(cam.sum(dtype=np.float64))
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    hit = bool(peak > 0 and mask[y, x])
    energy = float(cam[mask].sum(dtype=np.float64)) / total if total > 0 else 0.0
    hot = cam >= threshold * peak if peak > 0 else np.zeros_like(mask)
    union = int((hot | mask).sum())
    iou = int((hot & mask).sum()) / union if union else 0.0
    return Localisation(pointing_hit=hit, energy_in_box=round(energy, 6), box_iou=round(iou, 6))


# ---- the report's methods table -------------------------------------------------------------
# Per metric: each method's and each baseline's mean over images with its 95% bootstrap
# interval (explain.stats: a method's maps of one image averaged first, images resampled),
# paired comparisons between methods and of each method with each baseline, a place only
# where a difference is significant, and a mark where a method does not beat every baseline.
# The cells and comparisons are explain.evidence records: summary.json's ``trust`` holds them.

@dataclass
class Column:
    """One column of the methods table: a metric (its table entry); per method its cell
    (``cells``: mean, interval, place, beats-baselines) and per baseline its cell; the paired
    comparisons (methods with each other, then each method with each baseline); ``leads``:
    the methods significantly better than every other method. ``means``/``counts`` (mean and
    maps per method) and ``best``/``ranks`` (the order of the means, ties sharing a place)
    describe the numbers; they are no finding: the report ranks by ``cells[m].place``."""
    metric: MetricTraits
    means: dict[str, Optional[float]]
    counts: dict[str, int]
    best: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)
    cells: dict[str, Stat] = field(default_factory=dict)
    baselines: dict[str, Stat] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    meaningful: bool = False  # every method has the minimum of images: places are made

    @property
    def key(self) -> str:
        return self.metric.name

    @property
    def label(self) -> str:
        return self.metric.label

    @property
    def direction(self) -> int:
        return self.metric.direction


@dataclass
class MethodTable:
    """The columns, the baselines that have numbers, and two overall orders: ``rank`` /
    ``mean_rank`` (methods by their mean place in the order of the means) and ``place`` /
    ``mean_place`` (by their mean significant place over the columns measured on at least
    ``stats.MIN_IMAGES`` images; only when ``meaningful``: one such column at least).
    ``images``: the images with a ranked number."""
    methods: list[str]
    columns: list[Column]
    rank: dict[str, int]
    mean_rank: dict[str, float]
    baselines: list[str] = field(default_factory=list)
    images: int = 0
    meaningful: bool = False
    place: dict[str, int] = field(default_factory=dict)
    mean_place: dict[str, float] = field(default_factory=dict)
    seed: int = 0


def _record_values(rec: MapRecord) -> Iterator[tuple[str, float]]:
    for key, value in (rec.faithfulness or {}).items():
        yield key, value
    if rec.localisation is not None:
        for key in Localisation.model_fields:
            yield key, float(getattr(rec.localisation, key))
    if rec.agreement is not None:
        yield "agreement", rec.agreement


def _collect(summary: RunSummary) -> dict[str, dict[tuple[str, str], PerImage]]:
    """metric -> (kind, method or baseline) -> image id -> its maps' numbers."""
    found: dict[str, dict[tuple[str, str], PerImage]] = {}
    for image in summary.images:
        for rec in image.cams:
            for key, value in _record_values(rec):
                found.setdefault(key, {}).setdefault(("method", rec.method), {}) \
                    .setdefault(image.id, []).append(float(value))
        for base in image.baselines:
            for key, value in base.scores.items():
                found.setdefault(key, {}).setdefault(("baseline", base.baseline), {}) \
                    .setdefault(image.id, []).append(float(value))
    return found


def _keys(summary: RunSummary) -> list[str]:
    """Every metric the table knows, by kind, then names only the records have."""
    known = sorted(TABLE, key=lambda k: KINDS.index(TABLE[k].kind))
    found = dict.fromkeys(k for image in summary.images for rec in image.cams
                          for k in (rec.faithfulness or {}) if k not in TABLE)
    return known + list(found)


def _order(col: Column) -> None:
    """``ranks`` and ``best``: competition ranking of the means (ties share the better place)."""
    means = {m: v for m, v in col.means.items() if v is not None}
    scored = sorted(col.direction * -v for v in means.values())
    for m, v in means.items():
        col.ranks[m] = 1 + sum(1 for s in scored if s < col.direction * -v - 1e-12)
    col.best = [m for m, r in col.ranks.items() if r == 1] if len(col.ranks) > 1 else []


def _overall(places: dict[str, list[int]], methods: list[str]) -> tuple[dict, dict]:
    """Methods ordered by their mean place: (competition rank, mean place)."""
    mean = {m: float(np.mean(places[m])) for m in methods if places.get(m)}
    rank = {m: 1 + sum(1 for o in mean if mean[o] < mean[m] - 1e-12) for m in mean}
    return rank, mean


def method_table(summary: RunSummary, methods: list[str], *,
                 seed: Optional[int] = None) -> MethodTable:
    """The methods table from the map and baseline records: a column for every metric any
    method's map has; intervals drawn with ``seed`` (default: the run's)."""
    seed = summary.config.seed if seed is None else seed
    found = _collect(summary)
    keys = [k for k in _keys(summary) if any(("method", m) in found.get(k, {}) for m in methods)]
    present = {b for k in keys for kind, b in found[k] if kind == "baseline"}
    baselines = [b for b in BASELINES if b in present] + sorted(present - set(BASELINES))
    columns = [Column(traits(k), {}, {}) for k in keys]
    evidence.judge(columns, found, methods, baselines=baselines, seed=seed)
    for col in columns:
        col.means = {m: col.cells[m].mean if m in col.cells else None for m in methods}
        col.counts = {m: col.cells[m].maps if m in col.cells else 0 for m in methods}
        if col.direction:
            _order(col)
    ranked = [c for c in columns if c.direction]
    images = len({i for c in ranked for m in methods for i in found[c.key].get(("method", m), {})})
    rank, mean_rank = _overall({m: [c.ranks[m] for c in ranked if m in c.ranks]
                                for m in methods}, methods)
    table = MethodTable(methods, columns, rank, mean_rank, baselines=baselines, images=images,
                        meaningful=any(c.meaningful for c in ranked), seed=seed)
    if table.meaningful:
        table.place, table.mean_place = _overall(
            {m: [c.cells[m].place for c in ranked if m in c.cells and c.cells[m].place]
             for m in methods}, methods)
    return table

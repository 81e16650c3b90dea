"""The report's methods table, read from a run's records (never re-derived from maps): per
metric, each method's and each baseline's mean over images with its 95% bootstrap interval
(explain.stats: a method's maps of one image averaged first, images resampled), paired
comparisons between methods and of each method with each baseline, a place only where a
difference is significant, and a mark where a method does not beat every baseline. The cells
and comparisons are explain.evidence records: summary.json's ``trust`` holds them; the
columns' traits are explain.metrics.TABLE's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from explain import evidence
from explain.baselines import BASELINES
from explain.evidence import Comparison, PerImage, Stat
from explain.metrics import KINDS, TABLE, MetricTraits, traits
from explain.names import photo_of
from explain.results import Localisation, MapRecord, RunSummary

@dataclass
class Column:
    """One column of the methods table: a metric (its table entry); per method its cell
    (``cells``: mean, interval, place, beats-baselines) and per baseline its cell; the paired
    comparisons (methods with each other, then each method with each baseline); ``leads``:
    the methods significantly better than every other method; ``unscored``: methods and
    baselines with maps on this metric but no finite number among them (name -> maps), shown
    as such, not dropped. ``means`` (per method) and ``best``/``ranks`` (the order of the
    means, ties sharing a place) describe the numbers; they are no finding: the report ranks
    by ``cells[m].place``."""
    metric: MetricTraits
    means: dict[str, Optional[float]]
    best: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)
    cells: dict[str, Stat] = field(default_factory=dict)
    baselines: dict[str, Stat] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    unscored: dict[str, int] = field(default_factory=dict)
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
    """The columns, the baselines that have numbers, and two overall orders: ``rank``
    (methods by their mean place in the order of the means) and ``place`` /
    ``mean_place`` (by their mean significant place over the columns measured on at least
    ``stats.MIN_IMAGES`` images; only when ``meaningful``: one such column at least).
    ``images``: the images with a ranked number; ``unit``: what the intervals resample, the
    image or, with ``report.photo_separator``, the photo (its variants' numbers averaged
    first: ``photos`` of them)."""
    methods: list[str]
    columns: list[Column]
    rank: dict[str, int]
    baselines: list[str] = field(default_factory=list)
    images: int = 0
    meaningful: bool = False
    place: dict[str, int] = field(default_factory=dict)
    mean_place: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    unit: str = "image"
    photos: Optional[int] = None


def _record_values(rec: MapRecord) -> Iterator[tuple[str, float]]:
    for key, value in (rec.faithfulness or {}).items():
        yield key, value
    if rec.localisation is not None:
        for key in Localisation.model_fields:
            yield key, float(getattr(rec.localisation, key))
    if rec.agreement is not None:
        yield "agreement", rec.agreement


def _collect(summary: RunSummary, separator: Optional[str]
             ) -> dict[str, dict[tuple[str, str], PerImage]]:
    """metric -> (kind, method or baseline) -> unit -> its maps' numbers; the unit is the
    image id, or its photo (``names.photo_of``) with a ``separator``."""
    found: dict[str, dict[tuple[str, str], PerImage]] = {}
    for image in summary.images:
        unit = photo_of(image.id, separator, image.path)
        for rec in image.cams:
            for key, value in _record_values(rec):
                found.setdefault(key, {}).setdefault(("method", rec.method), {}) \
                    .setdefault(unit, []).append(float(value))
        for base in image.baselines:
            for key, value in base.scores.items():
                found.setdefault(key, {}).setdefault(("baseline", base.baseline), {}) \
                    .setdefault(unit, []).append(float(value))
    return found


def _ranked_images(summary: RunSummary, keys: set[str], methods: list[str]) -> int:
    """The images where a method's map has a number on one of the ranked metrics ``keys``."""
    return sum(1 for image in summary.images
               if any(k in keys for rec in image.cams if rec.method in methods
                      for k, _ in _record_values(rec)))


MAX_UNKNOWN = 8  # columns for metric names this version does not know (a shared summary.json
# naming 2,000 made 2,000 columns and gigabytes of bootstrap draws)


def _keys(summary: RunSummary) -> list[str]:
    """Every metric the table knows, by kind, then the first MAX_UNKNOWN names only the
    records have (a run written by a version with other metrics)."""
    known = sorted(TABLE, key=lambda k: KINDS.index(TABLE[k].kind))
    found = dict.fromkeys(k for image in summary.images for rec in image.cams
                          for k in (rec.faithfulness or {}) if k not in TABLE)
    return known + list(found)[:MAX_UNKNOWN]


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
    separator = summary.config.report.photo_separator
    found = _collect(summary, separator)
    keys = [k for k in _keys(summary) if any(("method", m) in found.get(k, {}) for m in methods)]
    present = {b for k in keys for kind, b in found[k] if kind == "baseline"}
    baselines = [b for b in BASELINES if b in present] + sorted(present - set(BASELINES))
    columns = [Column(traits(k), {}) for k in keys]
    unit = "photo" if separator else "image"
    evidence.judge(columns, found, methods, baselines=baselines, seed=seed, unit=unit)
    for col in columns:
        col.means = {m: col.cells[m].mean if m in col.cells else None for m in methods}
        if col.direction:
            _order(col)
    ranked = [c for c in columns if c.direction]
    units = len({i for c in ranked for m in methods for i in found[c.key].get(("method", m), {})})
    images = _ranked_images(summary, {c.key for c in ranked}, methods) if separator else units
    rank, _ = _overall({m: [c.ranks[m] for c in ranked if m in c.ranks] for m in methods},
                       methods)
    table = MethodTable(methods, columns, rank, baselines=baselines, images=images,
                        meaningful=any(c.meaningful for c in ranked), seed=seed, unit=unit,
                        photos=units if separator else None)
    if table.meaningful:
        table.place, table.mean_place = _overall(
            {m: [c.cells[m].place for c in ranked if m in c.cells and c.cells[m].place]
             for m in methods}, methods)
    return table

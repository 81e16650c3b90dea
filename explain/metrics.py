"""Numbers that say which explanation to trust: faithfulness (pytorch_grad_cam.metrics),
localisation against ground-truth boxes, and the per-method table of the report.

Faithfulness: per image, each metric is one call of the library's metric object on all of the
image's maps (its classes x methods, in config order: a batch of copies of the image), with
numpy's and torch's generators seeded with the run's ``seed`` before the call (ROAD's
imputation adds random noise). So a score does not depend on how images were batched or on
``--resume``, and equals a direct library call on the same maps.

What the scores mean (the model's score is the class logit, as ``ClassifierOutputTarget``):

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.road import (ROADCombined, ROADLeastRelevantFirstAverage,
                                           ROADMostRelevantFirstAverage)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain.config import MetricSpec
from explain.results import Localisation, RunSummary

# +1: higher is better, -1: lower is better, 0: not a quality (shown, not ranked).
DIRECTION = {"road_combined": 1, "road_most_relevant_first": -1, "road_least_relevant_first": 1,
             "drop_in_confidence": -1, "increase_in_confidence": 1,
             "pointing_hit": 1, "energy_in_box": 1, "box_iou": 1, "agreement": 0}
LABELS = {"road_combined": "ROAD combined", "road_most_relevant_first": "ROAD most relevant first",
          "road_least_relevant_first": "ROAD least relevant first",
          "drop_in_confidence": "drop in confidence",
          "increase_in_confidence": "increase in confidence",
          "pointing_hit": "pointing game", "energy_in_box": "energy in box",
          "box_iou": "box IoU", "agreement": "agreement"}


def library_metric(spec: MetricSpec) -> Callable:
    """The library's metric object for a config entry."""
    if spec.name == "road_combined":
        return ROADCombined(percentiles=list(spec.percentiles))
    if spec.name == "road_most_relevant_first":
        return ROADMostRelevantFirstAverage(percentiles=list(spec.percentiles))
    if spec.name == "road_least_relevant_first":
        return ROADLeastRelevantFirstAverage(percentiles=list(spec.percentiles))
    if spec.name == "drop_in_confidence":
        return DropInConfidence()
    return IncreaseInConfidence()


def forward_passes(spec: MetricSpec) -> int:
    """Forward passes the metric costs per image (each of a batch holding the image once per
    map), for the run's estimate."""
    if spec.name == "road_combined":
        return 4 * len(spec.percentiles)
    if spec.name.startswith("road_"):
        return 2 * len(spec.percentiles)
    return 2


def faithfulness(specs: list[MetricSpec], model: torch.nn.Module, x: torch.Tensor,
                 cams: np.ndarray, classes: list[int], *, seed: int) -> list[dict[str, float]]:
    """Every configured metric for the maps of one image, one library call per metric: ``x`` is
    the (1, C, H, W) normalised input on the model's device, ``cams`` the (K, H, W) maps in
    0..1 and ``classes`` their K class indices. Returns K dicts, metric name -> score."""
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


# ---- the report's methods table -----------------------------------------------------------

@dataclass
class Column:
    """One column of the methods table: a metric, its direction and each method's mean."""
    key: str
    label: str
    direction: int
    means: dict[str, Optional[float]]
    counts: dict[str, int]
    best: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)


@dataclass
class MethodTable:
    """Mean per method and metric, the best method(s) per column, and an overall rank (methods
    ordered by their mean rank over the columns)."""
    methods: list[str]
    columns: list[Column]
    rank: dict[str, int]
    mean_rank: dict[str, float]


def _values(summary: RunSummary, method: str, key: str) -> list[float]:
    out = []
    for image in summary.images:
        for rec in image.cams:
            if rec.method != method:
                continue
            if rec.faithfulness and key in rec.faithfulness:
                out.append(rec.faithfulness[key])
            elif rec.localisation is not None and key in Localisation.model_fields:
                out.append(float(getattr(rec.localisation, key)))
            elif key == "agreement" and rec.agreement is not None:
                out.append(rec.agreement)
    return out


def method_table(summary: RunSummary, methods: list[str]) -> MethodTable:
    """The methods table from the map records: a column for every metric any map has."""
    keys = [k for k in DIRECTION if any(_values(summary, m, k) for m in methods)]
    columns = []
    for key in keys:
        values = {m: _values(summary, m, key) for m in methods}
        means = {m: (float(np.mean(v)) if v else None) for m, v in values.items()}
        col = Column(key, LABELS[key], DIRECTION[key], means, {m: len(v) for m, v in values.items()})
        columns.append(col)
        if not DIRECTION[key]:
            continue
        scored = sorted(((DIRECTION[key] * -v, m) for m, v in means.items() if v is not None))
        for m in means:  # competition ranking: ties share the better rank
            if means[m] is not None:
                own = DIRECTION[key] * -means[m]
                col.ranks[m] = 1 + sum(1 for s, _ in scored if s < own - 1e-12)
        col.best = [m for m, r in col.ranks.items() if r == 1] if len(col.ranks) > 1 else []
    mean_rank = {m: float(np.mean([c.ranks[m] for c in columns if m in c.ranks]))
                 for m in methods if any(m in c.ranks for c in columns)}
    order = sorted(mean_rank, key=lambda m: (mean_rank[m], methods.index(m)))
    rank = {m: 1 + sum(1 for o in order if mean_rank[o] < mean_rank[m] - 1e-12) for m in order}
    return MethodTable(methods, columns, rank, mean_rank)

"""One batch of a detection run: the detections each image gets, which of them are explained
(named classes, ``targets``, ``detection.score_threshold``, the ``max_boxes`` best), their
maps, and the image entries and map records (numbers of each map against its own box)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from explain import measures
from explain.enginedata import BatchResult, MapSlot
from explain.errors import ExplainError, model_failed
from explain.results import NONE_PREDICTED, ImageEntry, MapRecord
from explain.tasks.common import inside_outside, share_inside
from explain.tasks.drawing import box_mask
from explain.tasks.records import Detected, DetectionImage, DetectionNumbers



def wanted_labels(cfg: Any, classes: dict[int, str]) -> dict[int, str]:
    """Label index -> class name of the detections to explain: the named classes, or those
    ``targets`` lists."""
    if isinstance(cfg.targets, list):
        return {i: n for i, n in classes.items() if n in cfg.targets}
    return dict(classes)


def choose(cfg: Any, found: dict[str, np.ndarray], labels: dict[int, str],
           size: tuple[int, int]) -> tuple[int, list[tuple[Detected, np.ndarray, int]]]:
    """(how many detections pass the threshold, the best ``max_boxes`` of them as (record,
    the detector's own box, label index)), best score first; names <class>-<n>. A score is
    compared as recorded (6 decimals, as ``best_scores`` and the prediction read it: a box
    at 0.4999996 was no detection at 0.5 while it made the image's prediction)."""
    spec = cfg.detection
    keep = [i for i, (label, score) in enumerate(zip(found["labels"], found["scores"]))
            if int(label) in labels and round(float(score), 6) >= spec.score_threshold]
    keep.sort(key=lambda i: (-float(found["scores"][i]), i))
    counts: dict[str, int] = {}
    chosen = []
    h, w = size
    for i in keep[:spec.max_boxes]:
        label = int(found["labels"][i])
        name = labels[label]
        counts[name] = counts.get(name, 0) + 1
        x0, y0, x1, y1 = (float(v) for v in found["boxes"][i])
        box = [round(min(max(x0, 0.0), w), 3), round(min(max(y0, 0.0), h), 3),
               round(min(max(x1, 0.0), w), 3), round(min(max(y1, 0.0), h), 3)]
        record = Detected(name=f"{name}-{counts[name]}", label=name,
                          score=round(float(found["scores"][i]), 6), box=box)
        chosen.append((record, np.asarray(found["boxes"][i], dtype=np.float32), label))
    return len(keep), chosen


def best_scores(found: dict[str, np.ndarray], classes: dict[int, str]) -> dict[str, float]:
    """Per named class: the highest score of any of the image's detections of it (0: none)."""
    out = {}
    for index, name in sorted(classes.items()):
        scores = found["scores"][found["labels"] == index]
        out[name] = round(float(scores.max()), 6) if scores.size else 0.0
    return out


def _detect(cfg: Any, ctx: Any, engine: Any, x: torch.Tensor) -> tuple[list, list, dict]:
    """Detections, the chosen ones per image and each method's maps."""
    plan = ctx.plan
    raw = engine.detect(x)
    labels = wanted_labels(cfg, dict(plan.classes))
    chosen = [choose(cfg, one, labels, tuple(x.shape[-2:])) for one in raw]
    engine.iou = cfg.detection.iou_threshold
    maps = engine.explain(x, [[(box, label) for _, box, label in c] for _, c in chosen])
    return raw, chosen, {name: maps[name] for name in plan.methods}


def explain_boxes(cfg: Any, ctx: Any, engine: Any, group: list) -> Any:
    """One batch of images of one shape explained (see the module): a TaskBatch."""
    from explain.batches import ImageView, TaskBatch
    plan, t0 = ctx.plan, time.perf_counter()
    x = torch.stack([item.tensor for item in group])
    try:
        raw, chosen, maps = _detect(cfg, ctx, engine, x)
    except ExplainError:
        raise
    except Exception as exc:  # the model's own code failed on this batch: one line
        raise model_failed(exc, ", ".join(item.ref.id for item in group[:3]),
                           size=x.shape[-2:]) from None
    ctx.summary.durations_s["cams"] += time.perf_counter() - t0
    slots = max((len(c) for _, c in chosen), default=0)
    classes = np.full((len(group), slots), -1, dtype=np.int64)
    per_image = []
    for b, (_, picked) in enumerate(chosen):
        classes[b, :len(picked)] = [label for _, _, label in picked]
        per_image.append([MapSlot(b, s, label, det.name, m, maps[m][b, s])
                          for s, (det, _, label) in enumerate(picked) for m in maps])
    best = [best_scores(one, dict(plan.classes)) for one in raw]
    scores = np.zeros((len(group), max(plan.classes) + 1), dtype=np.float32)
    for b, found in enumerate(best):  # the result's "logits": each class's best box score
        for index, name in plan.classes.items():
            scores[b, index] = found[name]
    result = BatchResult(scores, classes, maps, per_image=per_image)
    views = []
    for b, item in enumerate(group):
        entry = _entry(ctx, item, best[b], chosen[b],
                       threshold=cfg.detection.score_threshold)
        for one in per_image[b]:
            one.record = _record(ctx, entry, one, chosen[b][1][one.slot][0])
            entry.cams.append(one.record)
        views.append(ImageView(item, entry, b, per_image[b]))
    return TaskBatch(x, result, views, found=[[d for d, _, _ in c] for _, c in chosen])


def _entry(ctx: Any, item: Any, probabilities: dict[str, float], chosen: tuple, *,
           threshold: float) -> ImageEntry:
    """The image's entry: ``predicted`` is the named class of its best detection scoring at
    least ``threshold`` (a best box at 0.016 predicts nothing), else NONE_PREDICTED."""
    above, picked = chosen
    best = max(probabilities, key=lambda name: probabilities[name]) if probabilities else None
    found = best is not None and probabilities[best] > 0 and probabilities[best] >= threshold
    predicted = best if found else NONE_PREDICTED
    return ImageEntry(id=item.ref.id, path=str(item.ref.path),
                      input_size=[int(item.rgb.shape[0]), int(item.rgb.shape[1])],
                      probabilities=probabilities, predicted=predicted,
                      detections=DetectionImage(above_threshold=above,
                                                explained=[d for d, _, _ in picked]))


def _record(ctx: Any, entry: ImageEntry, one: MapSlot, det: Detected) -> MapRecord:
    """A detection map's record: peak and halves, and its energy in its own box."""
    mask = box_mask(det.box, one.cam.shape)
    numbers = DetectionNumbers(label=det.label, score=det.score, box=det.box,
                               energy_in_box=share_inside(one.cam, mask),
                               inside_outside=inside_outside(one.cam, mask))
    return MapRecord(class_name=det.name, method=one.method,
                     file=f"cams/{one.method}/{entry.id}__{det.name}{ctx.ext}",
                     probability=det.score, detection=numbers, **measures.map_stats(one.cam))

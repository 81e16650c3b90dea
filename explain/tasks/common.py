"""What segmentation and detection share: picking the part of a model's output the task
reads (``model.output``), the one-line message when a model does not give what its task
expects, and the numbers of a map against a region (energy share, thresholded IoU, peak)."""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from explain.errors import ExplainError
from explain.models.heads import describe_output, task_hint


def output_part(out: Any, key: Union[int, str, None]) -> Any:
    """The part of what forward returned that ``model.output`` names (all of it for None)."""
    if key is None:
        return out
    if isinstance(key, int):
        found = out[key] if isinstance(out, (tuple, list)) and key < len(out) else None
    elif isinstance(out, dict):
        found = out.get(key)
    else:
        found = getattr(out, key, None)
    if found is None:
        raise ExplainError(f"model.output: {key!r} is not in what forward returns "
                           f"({describe_output(out)})")
    return found


def mismatch(task: str, expected: str, out: Any) -> ExplainError:
    """The model does not give what ``task`` reads: one line saying what it gives."""
    return ExplainError(f"model: task: {task} expects forward to return {expected}, it returns "
                        f"{describe_output(out)}{task_hint(out, task)}")


def share_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's sum inside ``mask`` (0 for an all-zero map)."""
    total = float(cam.sum(dtype=np.float64))
    return round(float(cam[mask].sum(dtype=np.float64)) / total, 6) if total > 0 else 0.0


def thresholded_iou(cam: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """IoU of ``mask`` with the map above ``threshold`` x its maximum."""
    peak = float(cam.max())
    hot = cam >= threshold * peak if peak > 0 else np.zeros_like(mask)
    union = int((hot | mask).sum())
    return round(int((hot & mask).sum()) / union, 6) if union else 0.0


def inside_outside(cam: np.ndarray, mask: np.ndarray) -> Optional[float]:
    """The mean map value inside ``mask`` over the mean outside it; None when either side is
    empty or the outside is all zero (a map wholly inside its box: no finite ratio; the
    run's means count the maps they hold, explain.tasks.writers.task_summary)."""
    inside, outside = cam[mask], cam[~mask]
    if not inside.size or not outside.size or float(outside.mean()) <= 0:
        return None
    return round(float(inside.mean()) / float(outside.mean()), 6)

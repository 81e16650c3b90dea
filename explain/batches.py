"""What the runner hands the writers for each engine call: the batch (``BatchContext``: the
input tensor, the engine's result, its images) and each image in it (``ImageView``: the decoded
input, its summary entry and its maps with their records); a task run's batch
(``TaskBatch``) adds the label maps or detections. Plain data, below the plan and the writers:
the runner and a task's ``explain_batch`` make them, the writers read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from explain.enginedata import BatchResult, MapSlot
from explain.images import Prepared
from explain.results import ImageEntry


@dataclass
class ImageView:
    """One image of a batch: its decoded input, its summary entry, its row in the batch and
    its maps (each with its record; made once by the engine and the runner)."""
    item: Prepared
    entry: ImageEntry
    row: int
    maps: list[MapSlot] = field(default_factory=list)

    def classes(self) -> list[MapSlot]:
        """One MapSlot per class explained for the image (the first method's)."""
        first = self.maps[0].method if self.maps else None
        return [m for m in self.maps if m.method == first]


@dataclass
class BatchContext:
    """One engine call: the input tensor, what the engine returned, and its images.
    ``overlays``: pictures drawn for the batch that a later writer may show again, by
    (image row, slot, method): (colormap, image weight, a call giving the map over the photo,
    uint8 RGB, drawn once)."""
    x: torch.Tensor
    result: BatchResult
    images: list[ImageView]
    overlays: dict[tuple[int, int, str], tuple[str, float, Any]] = field(default_factory=dict)


@dataclass
class TaskBatch(BatchContext):
    """A batch of a task run: per image its predicted label map and ground truth at input
    size (segmentation), or its explained detections (detection)."""
    labels: list[np.ndarray] = field(default_factory=list)
    truths: list[Optional[np.ndarray]] = field(default_factory=list)
    found: list[list[Any]] = field(default_factory=list)

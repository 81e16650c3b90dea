"""Outputs as writers: each output of a run is one small class with up to four steps.

``prepare`` runs before the results folder is claimed (and before ``--overwrite`` deletes an
earlier run): it reads and checks the writer's own inputs (annotation boxes, reference maps)
and writes nothing, so a bad input stops the run with nothing lost. ``start`` runs once
before the first batch (after ``--resume`` has read back the images it
keeps), ``write`` once per explained batch, ``finish`` once at the end. The runner builds a
``RunContext`` and, per batch, a ``BatchContext`` holding each image's ``ImageEntry`` with
its map records already filled in; writers write files and add to those records, and each
file a writer writes is named in them, by that writer (the map's, the image's or the run's
``files``: see explain.results), so the report and ``--resume`` read where things are from
the records, never from a naming convention. A new output is a new writer, a line in
``default_writers`` and, for each kind of file it writes, a field of a ``files`` record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from explain.config import Config, LabelledImages
from explain.engine import BatchResult, MapSlot
from explain.images import ImageRef, Prepared
from explain.outputs import RunFolder
from explain.plan import RunPlan
from explain.results import CompareRow, ImageEntry, RunSummary


@dataclass
class RunContext:
    """What every writer may read: the run's plan, its folder and the summary so far."""
    plan: RunPlan
    run: RunFolder
    summary: RunSummary
    compare_rows: dict[str, list[CompareRow]] = field(default_factory=dict)  # by image id
    started: float = 0.0  # time.perf_counter() when the run began
    log: Callable[[str], None] = print

    @property
    def cfg(self) -> Config:
        return self.plan.cfg

    @property
    def classes(self) -> Mapping[int, str]:
        """Output index -> class name."""
        return self.plan.classes

    @property
    def methods(self) -> list[str]:
        return self.plan.methods

    @property
    def ext(self) -> str:
        return self.plan.ext

    @property
    def image_order(self) -> list[str]:
        """Image ids in config order (kept and new alike)."""
        return [ref.id for ref in self.plan.images]

    @property
    def sources(self) -> dict[str, ImageRef]:
        """Image id -> where the image is (from the config): the only image files a writer
        reads."""
        return {ref.id: ref for ref in self.plan.images}


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
    (image row, slot, method): (colormap, image weight, the map over the photo, uint8 RGB)."""
    x: torch.Tensor
    result: BatchResult
    images: list[ImageView]
    overlays: dict[tuple[int, int, str], tuple[str, float, Any]] = field(default_factory=dict)


class Writer:
    """Base class: override the steps an output needs."""

    def prepare(self, plan: RunPlan) -> None:
        """Before the run folder is claimed: read and check this writer's inputs for the
        plan's images (ExplainError naming the file); nothing may be written."""

    def start(self, ctx: RunContext) -> None:
        """Before the first batch."""

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        """For each explained batch."""

    def finish(self, ctx: RunContext) -> None:
        """After the last batch."""

    # Under torchrun every rank writes its own images, and rank 0 alone runs ``finish``: a
    # writer whose ``finish`` reads what ``write`` kept in memory hands that over (see
    # explain.distributed.hand_in).
    def state(self) -> dict:
        """What ``write`` kept in memory that ``finish`` reads (picklable)."""
        return {}

    def merge(self, state: dict) -> None:
        """Add another rank's ``state()`` to this writer's."""

    def forget_kept(self) -> None:
        """On ranks other than 0, after ``start``: drop what ``start`` read back from an
        interrupted run (--resume), so that the kept images are counted once, by rank 0."""


def default_writers(cfg: Config) -> list[Writer]:
    """The outputs a config asks for, in the order they run (the summary, then the report
    made from it, last). A labelled dataset in ``images`` adds the dataset writer."""
    from explain.writers.channels import ChannelWriter
    from explain.writers.comparison import CompareWriter
    from explain.writers.maps import MapWriter
    from explain.writers.metrics import MetricsWriter
    from explain.writers.panels import PanelWriter
    from explain.writers.report import ReportWriter
    from explain.writers.summary import SummaryWriter
    if cfg.task != "classification":  # segmentation, detection: their own map writers
        from explain.tasks.writers import task_writers
        return task_writers(cfg)
    writers: list[Writer] = [MapWriter()]
    if cfg.sanity.enabled:  # finishes before the metrics writer, whose evidence reads it
        from explain.writers.sanity import SanityWriter
        writers.append(SanityWriter())
    writers.append(MetricsWriter())
    if cfg.channels.enabled:
        writers.append(ChannelWriter())
    if cfg.channels.atlas.enabled or cfg.channels.ablation.enabled:
        from explain.writers.atlas import AtlasWriter
        writers.append(AtlasWriter())
    if cfg.compare.enabled:
        writers.append(CompareWriter())
    if cfg.guided.enabled:
        from explain.writers.guided import GuidedWriter
        writers.append(GuidedWriter())
    if cfg.concepts.enabled:
        from explain.writers.concepts import ConceptWriter
        writers.append(ConceptWriter())
    if any(isinstance(entry, LabelledImages) for entry in cfg.images):
        from explain.writers.dataset import DatasetWriter
        writers.append(DatasetWriter())
    writers += [PanelWriter(), SummaryWriter()]
    if cfg.report.enabled:
        writers.append(ReportWriter())
    return writers

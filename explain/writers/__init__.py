"""Outputs as writers: each output of a run is one small class with up to four steps.

``prepare`` runs before the results folder is claimed (and before ``--overwrite`` deletes an
earlier run): it reads and checks the writer's own inputs (annotation boxes, reference maps)
and writes nothing, so a bad input stops the run with nothing lost. ``start`` runs once
before the first batch (after ``--resume`` has read back the images it
keeps), ``write`` once per explained batch, ``finish`` once at the end. The runner builds a
``RunContext`` and, per batch, a ``BatchContext`` holding each image's ``ImageEntry`` with
its map records already filled in; writers write files and may add to those records. A new
output is a new writer and a line in ``default_writers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from explain.config import Config, LabelledImages
from explain.engine import BatchResult
from explain.heads import Head
from explain.images import ImageRef, Prepared
from explain.outputs import RunFolder
from explain.results import CompareRow, ImageEntry, RunSummary


SMALL_RUN = 50  # images; larger runs default to JPEG pictures and no per-image channel grids


@dataclass
class RunContext:
    """What every writer may read: the config, the folder, names, the summary so far."""
    cfg: Config
    run: RunFolder
    classes: dict[int, str]  # output index -> class name
    methods: list[str]
    summary: RunSummary
    model: nn.Module  # explain.heads.Classifier: forward gives (N, outputs) logits
    layers: list[nn.Module]  # the target layers, in config order
    image_order: list[str]  # image ids in config order (kept and new alike)
    head: Head = field(default_factory=Head)  # how logits become the scores a map explains
    layouts: list = field(default_factory=list)  # explain.layouts.Layout per target layer
    net: Optional[nn.Module] = None  # the user's network (layer names are relative to it)
    concept_layer: Optional[tuple] = None  # (module, Layout) for the concepts view
    # image id -> where the image is (from the config): the only image files a writer reads
    sources: dict[str, ImageRef] = field(default_factory=dict)

    @property
    def ext(self) -> str:
        """The extension of overlays, guided images and channel views (output.image_format;
        unset: PNG for runs of up to SMALL_RUN images, JPEG above)."""
        chosen = self.cfg.output.image_format
        if chosen is None:
            chosen = "png" if len(self.image_order) <= SMALL_RUN else "jpg"
        return "." + chosen
    compare_rows: dict[str, list[CompareRow]] = field(default_factory=dict)  # by image id
    started: float = 0.0  # time.perf_counter() when the run began
    log: Callable[[str], None] = print


@dataclass
class ImageView:
    """One image of a batch: its decoded input, its summary entry, its row in the batch."""
    item: Prepared
    entry: ImageEntry
    row: int


@dataclass
class BatchContext:
    """One engine call: the input tensor, what the engine returned, and its images."""
    x: torch.Tensor
    result: BatchResult
    images: list[ImageView]


class Writer:
    """Base class: override the steps an output needs."""

    def prepare(self, cfg: Config, refs: list[ImageRef]) -> None:
        """Before the run folder is claimed: read and check this writer's inputs for these
        images (ExplainError naming the file); nothing may be written."""

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
    writers: list[Writer] = [MapWriter(), MetricsWriter()]
    if cfg.channels.enabled:
        writers.append(ChannelWriter())
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

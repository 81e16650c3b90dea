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
explain.writers.lineup and, for each kind of file it writes, a field of a ``files`` record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Optional

from explain.config import Config
from explain.images import ImageRef
from explain.outputs import RunFolder
from explain.results import CompareRow, RunSummary

if TYPE_CHECKING:  # the engine's types: explain report, diff and load read records without it
    from explain.batches import BatchContext
    from explain.plan import RunPlan


@dataclass
class RunContext:
    """What every writer may read: the run's plan, its folder and the summary so far."""
    plan: RunPlan
    run: RunFolder
    summary: RunSummary
    compare_rows: dict[str, list[CompareRow]] = field(default_factory=dict)  # by image id
    started: float = 0.0  # time.perf_counter() when the run began
    todo: Optional[int] = None  # images the run computes (fewer than the plan's on --resume)
    log: Callable[[str], None] = print
    # the step under way, beside the progress bar (a batch's maps, an image's faithfulness):
    # the bar moves once per batch, and a batch of three photos took 75 s
    stage: Callable[[str], None] = lambda text: None

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

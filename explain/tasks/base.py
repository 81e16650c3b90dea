"""What the run plan, the runner and the writers ask of a task (see explain.tasks): the base
class of SegmentationTask and DetectionTask."""

from __future__ import annotations

from typing import Any, Container


class Task:
    """What a segmentation or detection run needs beyond a classifier's (see the module)."""
    name = ""
    engine_class: Any = None  # an explain.engine.CamEngine subclass

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def wrap(self, net: Any) -> tuple[Any, Any]:
        """The network wrapped for the engine and the layer survey, and the task's head."""
        raise NotImplementedError

    def auto_layer(self, net: Any, model: Any, x: Any, rows: list) -> Any:
        """The survey row ``target_layers: auto`` picks (explain.layers.LayerRow)."""
        raise NotImplementedError

    def explain_batch(self, ctx: Any, engine: Any, group: list) -> Any:
        """One batch of images of one shape explained: an explain.writers.BatchContext whose
        image views hold their entries and map records."""
        raise NotImplementedError

    def record_names(self, plan: Any) -> Container[str]:
        """The class names a kept map record may have (``--resume``)."""
        return set(plan.classes.values())

"""Which writers a run uses, in the order they run: the summary, then the report made from it,
last. The one place that knows every writer (the writers know only their base, explain.writers,
so the package has no import circle); the runner asks it once per run. The writers are
imported when asked for, so that importing explain stays light."""

from __future__ import annotations

from typing import Any

from explain.config import Config, LabelledImages
from explain.writers import Writer


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


def task_writers(cfg: Any) -> list[Writer]:
    """The outputs of a segmentation or detection run, in the order they run."""
    from explain.tasks.writers import TaskWriter
    from explain.writers.panels import PanelWriter
    from explain.writers.report import ReportWriter
    from explain.writers.summary import SummaryWriter
    writers: list[Writer] = [TaskWriter()]
    if cfg.task == "segmentation":  # panels go per class; a detection's name is per image
        writers.append(PanelWriter())
    writers.append(SummaryWriter())
    if cfg.report.enabled:
        writers.append(ReportWriter())
    return writers

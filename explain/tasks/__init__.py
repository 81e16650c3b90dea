"""Beyond classifiers: semantic segmentation and object detection models, by config.

``task: segmentation`` explains a model returning (N, classes, H, W) score maps (torchvision's
FCN, DeepLabV3, LR-ASPP through ``model.output: out``): a target is a class and a region, the
pixels the model predicts as the class or the class's pixels in a ground-truth label map, and
the score is the library's ``SemanticSegmentationTarget`` (explain.tasks.segmentation).
``task: detection`` explains a detector returning one ``{boxes, labels, scores}`` per image
(torchvision's Faster R-CNN, RetinaNet, FCOS, SSD, Mask R-CNN in eval mode): every detection
above ``detection.score_threshold`` is a target, scored by the library's
``FasterRCNNBoxScoreTarget`` (explain.tasks.detection).

A ``Task`` (explain.tasks.base) is what the run plan, the runner and the writers ask of a
task: the model wrapper and head (``wrap``), the engine class, the layer
``target_layers: auto`` picks, how a batch becomes map records (``explain_batch``), the
record names ``--resume`` accepts and the writers. A classification config has no task
(``task_for`` gives None) and runs exactly as before. Nothing here imports torch until a task
is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from explain.tasks.base import Task


def task_for(cfg: Any) -> Optional["Task"]:
    """The config's task, or None for a classifier."""
    if cfg.task == "segmentation":
        from explain.tasks.segmentation import SegmentationTask
        return SegmentationTask(cfg)
    if cfg.task == "detection":
        from explain.tasks.detection import DetectionTask
        return DetectionTask(cfg)
    return None

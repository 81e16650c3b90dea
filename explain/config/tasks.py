"""The config's ``task`` and its sections: ``segmentation`` and ``detection`` (see
explain.tasks and docs/models.md#segmentation-and-detection).

``task: classification`` (the default) changes nothing. ``segmentation`` explains a model
returning (N, classes, H, W) score maps, ``detection`` a detector returning one
``{boxes, labels, scores}`` per image. What a classifier study has that these tasks do not
(channel views, comparison with hand-written references, guided backprop, concepts,
faithfulness metrics, ground-truth boxes, labelled datasets, heads) is refused in one line,
as is a task section set for another task."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, StrictBool, field_validator, model_validator

from explain.config.sections import Int, Number, Section, Text, is_finite

Task = Literal["classification", "segmentation", "detection"]
# What a task explains when the config lists no methods: the library's tutorials use
# Grad-CAM for segmentation and EigenCAM (gradient-free) for detectors.
DEFAULT_METHODS = {"segmentation": "gradcam", "detection": "eigencam"}


def _unit(value: Any, what: str) -> Any:
    """A number from 0 to 1 (a score, a fraction), with a message that says so."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_finite(value) \
            or not 0 <= value <= 1:
        raise ValueError(f"must be a number from 0 to 1 ({what}), got {str(value)[:40]}")
    return value


class Segmentation(Section):
    """task: segmentation. A map explains a class over a region: the pixels the model predicts
    as that class (``region: predicted``) or the class's pixels in the image's ground-truth
    label map (``region: label``, needs ``masks``)."""
    region: Literal["predicted", "label"] = "predicted"
    # a folder of PNG label maps, one per image: <image id>.png or <file stem>.png, the
    # image's size, each pixel value a class index (values that name no class are ignored)
    masks: Optional[Text] = None
    threshold: Number = 0.5  # mask IoU: the map above this fraction of its maximum
    outline: StrictBool = True  # the region's outline drawn on every overlay

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: Any) -> Any:
        if _unit(v, "a fraction of the map's maximum") == 0:
            raise ValueError("must be greater than 0 (the map above 0 is the whole image)")
        return v

    @model_validator(mode="after")
    def _label_needs_masks(self) -> "Segmentation":
        if self.region == "label" and self.masks is None:
            raise ValueError("region: label explains each class over its ground-truth pixels; "
                             "give 'masks' (a folder of PNG label maps)")
        return self


class Detection(Section):
    """task: detection. Every detection scoring at least ``score_threshold`` (the
    ``max_boxes`` best per image) is one target, matched by the library's
    FasterRCNNBoxScoreTarget: same label and IoU above ``iou_threshold``."""
    score_threshold: Number = 0.5
    max_boxes: Int = Field(5, ge=1, le=100)
    iou_threshold: Number = 0.5

    @field_validator("score_threshold")
    @classmethod
    def _score(cls, v: Any) -> Any:
        return _unit(v, "a detection's score is a probability")

    @field_validator("iou_threshold")
    @classmethod
    def _iou(cls, v: Any) -> Any:
        return _unit(v, "an intersection over union")


def task_defaults(data: Any) -> Any:
    """Before validation: a segmentation or detection config without ``methods`` gets its
    task's default method (DEFAULT_METHODS)."""
    if isinstance(data, dict) and data.get("task") in DEFAULT_METHODS and "methods" not in data:
        return {**data, "methods": [DEFAULT_METHODS[data["task"]]]}
    return data


def _classifier_only(cfg: Any) -> Optional[str]:
    """The first setting that only a classifier study has, when it is on."""
    on = {"channels.enabled": cfg.channels.enabled, "compare.enabled": cfg.compare.enabled,
          "guided.enabled": cfg.guided.enabled, "concepts.enabled": cfg.concepts.enabled,
          "sanity.enabled": cfg.sanity.enabled,
          "metrics": bool(cfg.metrics), "annotations": cfg.annotations.enabled,
          "model.head": cfg.model.head != "softmax", "model.target": cfg.model.target != "logit",
          "model.in_channels": cfg.model.in_channels != 3}
    return next((key for key, value in on.items() if value), None)


def task_problem(cfg: Any) -> Optional[str]:
    """Why the config's task does not fit its other settings, or None."""
    task = cfg.task
    if task == "classification":
        for section, default in (("segmentation", Segmentation()), ("detection", Detection())):
            if getattr(cfg, section) != default:
                return f"{section}: applies to task: {section} (this config's task is " \
                       f"classification); set task: {section} or remove the section"
        return None
    key = _classifier_only(cfg)
    if key is not None:
        why = "it is for grey classifiers; this task's network is given the 3 RGB channels" \
            if key == "model.in_channels" else "it reads a classifier's class scores"
        return (f"{key}: not available with task: {task} ({why}); remove it or use "
                f"task: classification")
    if any(not isinstance(entry, str) for entry in cfg.images):
        return f"images: labelled datasets ({{labelled: ...}}) are for classifiers; with " \
               f"task: {task} list image files, folders or globs"
    targets = cfg.targets
    if task == "detection" and cfg.aug_smooth:
        return ("aug_smooth: not available with task: detection (the flipped copies move the "
                "boxes the targets match); use eigen_smooth or leave it off")
    if task == "detection" and isinstance(targets, str) and targets != "all":
        return (f"targets: {targets!r} does not apply to task: detection (every detection "
                f"above detection.score_threshold is explained); use all or a list of classes")
    if targets == "label" or (isinstance(targets, list) and "label" in targets):
        return f"targets: 'label' needs a labelled dataset, which task: {task} has not"
    if task == "detection" and isinstance(targets, list) and "predicted" in targets:
        return "targets: 'predicted' does not apply to task: detection; list class names"
    other, default = ("detection", Detection()) if task == "segmentation" else \
        ("segmentation", Segmentation())
    if getattr(cfg, other) != default:
        return f"{other}: applies to task: {other} (this config's task is {task})"
    return None

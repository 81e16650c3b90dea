"""What a run finds, as typed records: one per map, one per image, one for the whole run.

summary.json, summary.csv, the per-image item files that ``--resume`` keeps and the console
summary are all made from these types, and ``--resume`` reads item files back through them,
so a malformed item file is an error that names it, never a KeyError somewhere later.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from explain.errors import ExplainError


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ChannelSummary(_Record):
    """How the map is built from the channel layer (see explain.channels.channel_stats)."""
    channels: int
    nonzero_gradient: int
    channels_50: int  # fewest channels that hold 50% of the positive contribution
    channels_90: int


class Localisation(_Record):
    """The map against the class's ground-truth boxes (see explain.metrics.localisation)."""
    pointing_hit: bool  # the map's peak lies inside a box
    energy_in_box: float  # share of the map's sum inside the boxes
    box_iou: float  # IoU of the boxes with the map above annotations.threshold x its max


class MapRecord(_Record):
    """One map: image x class x method. Peak in input pixels, mass share per half."""
    class_name: str = Field(alias="class")
    method: str
    peak_x: int
    peak_y: int
    peak_value: float
    mass_left: float
    mass_right: float
    mass_top: float
    mass_bottom: float
    file: str
    channels: Optional[ChannelSummary] = None
    # Strength: the map is scaled to 0..1, so these say how strong it was before (see
    # explain.writers.metrics). raw_max is absent for methods the library computes itself.
    raw_max: Optional[float] = None
    logit: Optional[float] = None
    probability: Optional[float] = None
    weak: Optional[bool] = None  # probability below report.weak_below
    faithfulness: Optional[dict[str, float]] = None  # metric name -> library score
    agreement: Optional[float] = None  # mean Pearson r with the other methods' maps (same
    #                                    image and class); only with two or more methods
    localisation: Optional[Localisation] = None
    guided_file: Optional[str] = None  # guided_cam/<method>/<image>__<class>.png (Guided Grad-CAM)


class ImageEntry(_Record):
    """One explained image: what the model said and every map made for it."""
    id: str
    path: str
    input_size: list[int]
    probabilities: dict[str, float]
    predicted: str
    label: Optional[str] = None  # ground truth, for labelled datasets
    cams: list[MapRecord] = Field(default_factory=list)
    # Ground truth from annotations: class -> boxes (x0, y0, x1, y1) in model-input pixels.
    boxes: Optional[dict[str, list[list[float]]]] = None
    guided: Optional[dict[str, str]] = None  # class -> guided/<image>__<class>.png
    concepts: Optional[str] = None  # concepts/<image>.json (Deep Feature Factorization)

    def record(self, class_name: str, method: str) -> MapRecord:
        return next(r for r in self.cams if r.class_name == class_name and r.method == method)


class CompareRow(_Record):
    """Library map vs its reference (see explain.compare.metrics)."""
    image: str
    class_name: str = Field(alias="class")
    method: str
    max_abs: float
    mean_abs: float
    pearson: float
    iou_top20: float


class ItemFile(_Record):
    """items/<image>.json: written after all of the image's files, read back by --resume."""
    entry: ImageEntry
    compare: list[CompareRow] = Field(default_factory=list)


class Skipped(_Record):
    path: str
    reason: str


class ClassNumbers(_Record):
    """One class of a labelled dataset (see explain.datasets.per_class)."""
    class_name: str = Field(alias="class")
    images: int  # labelled with this class
    correct: int  # of those, predicted as this class
    accuracy: Optional[float] = None  # correct / images (recall); None without images
    predicted_as: int  # images (labelled or not) the model predicts as this class
    pointing_maps: int = 0  # maps of this class with a ground-truth box
    pointing_hits: int = 0  # of those, maps whose peak lies inside the box
    pointing: Optional[float] = None  # hits / maps (pointing game); None without boxes
    pointing_by_method: Optional[dict[str, float]] = None


class MeanMap(_Record):
    """The mean of one method's maps of a class over the images labelled with that class that
    the model classifies correctly (outcome 'correct') or wrongly ('wrong')."""
    class_name: str = Field(alias="class")
    method: str
    outcome: str  # correct | wrong
    count: int  # maps averaged
    max: float  # the mean map's maximum (the picture is on the maps' 0..1 scale)
    file: str  # dataset/mean/<method>/<class>__<outcome>.png
    array: str  # the same, float32 .npy


class Disagreement(_Record):
    """One image x class: 1 - the mean pairwise Pearson r between the methods' maps."""
    image: str
    class_name: str = Field(alias="class")
    disagreement: float
    predicted: str
    label: Optional[str] = None


class DatasetSummary(_Record):
    """A labelled run's numbers (explain.datasets; files under dataset/)."""
    labelled: int  # images with a label
    unlabelled: int
    correct: int
    accuracy: Optional[float] = None  # correct / labelled
    classes: list[str] = Field(default_factory=list)  # rows and columns of the confusion table
    confusion: list[list[int]] = Field(default_factory=list)  # [label][predicted] counts
    per_class: list[ClassNumbers] = Field(default_factory=list)
    mean_size: list[int] = Field(default_factory=list)  # (H, W) every map is resized to
    mean_maps: list[MeanMap] = Field(default_factory=list)
    mean_missing: int = 0  # kept images of an interrupted run whose maps are not in the means
    disagreement: list[Disagreement] = Field(default_factory=list)  # the top DISAGREE_TOP


class RunSummary(_Record):
    """summary.json."""
    name: str
    config_file: str
    output_dir: str
    device: str
    config: dict[str, Any]
    versions: dict[str, str]
    images: list[ImageEntry] = Field(default_factory=list)
    skipped_images: list[Skipped] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=lambda: {"images": 0, "maps": 0})
    durations_s: dict[str, float] = Field(default_factory=lambda: {"cams": 0.0, "figures": 0.0})
    compare: Optional[dict[str, Any]] = None
    dataset: Optional[DatasetSummary] = None  # labelled images only


def versions() -> dict[str, str]:
    """The versions a run used, for summary.json."""
    out = {"python": platform.python_version()}
    for pkg in ("explain", "grad-cam", "torch", "torchvision", "numpy", "opencv-python-headless"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def read_item(path: Path) -> ItemFile:
    """An item file written by an earlier run; ExplainError naming it if it is malformed."""
    try:
        return ItemFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()
        raise ExplainError(f"{path}: not an item file of this explain version "
                           f"({first[0][:120] if first else type(exc).__name__}); "
                           f"delete it to recompute that image") from None


def csv_rows(summary: RunSummary) -> list[dict]:
    """summary.csv: one row per image x class x method, the image's prediction alongside,
    channel numbers as flat columns."""
    rows = []
    for image in summary.images:
        for record in image.cams:
            row = {"image": image.id, "predicted": image.predicted,
                   **{f"p_{k}": v for k, v in image.probabilities.items()},
                   **record.dump()}
            channels = row.pop("channels", None)
            if channels is not None:
                row.update(channels)
            for group in ("faithfulness", "localisation"):
                row.update(row.pop(group, None) or {})
            rows.append(row)
    return rows


def console_lines(summary: RunSummary) -> list[str]:
    lines = [f"explain: {summary.name} -> {summary.output_dir}"]
    lines += [f"  note: {note}" for note in summary.notes]
    for image in summary.images:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in image.probabilities.items())
        lines.append(f"  {image.id}: predicted {image.predicted} ({probs})")
    lines += [f"  skipped {s.path}: {s.reason}" for s in summary.skipped_images]
    lines += [f"  compare {v}" for v in (summary.compare or {}).get("verdicts", [])]
    if summary.dataset is not None and summary.dataset.accuracy is not None:
        d = summary.dataset
        lines.append(f"  dataset: accuracy {d.accuracy:.1%} ({d.correct} of {d.labelled} labelled "
                     f"images); see dataset/ and the report's Dataset section")
    d = summary.durations_s
    lines.append(f"  {summary.counts['maps']} maps in {d['total']:.1f}s (model load "
                 f"{d['model_load']:.1f}s, CAMs {d['cams']:.1f}s, figures {d['figures']:.1f}s"
                 + (f", of which metrics {d['metrics']:.1f}s" if d.get("metrics", 0) >= 0.05 else "")
                 + ")")
    return lines

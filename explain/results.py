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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explain.errors import ExplainError, first_line
from explain.names import quote
from explain.outputs import RunFolder

PICTURE_SUFFIXES = (".png", ".jpg", ".webp")  # of the overlays (output.image_format)
MAX_SIDE = 1 << 16  # pixels: an input side explain records (its own limit is far below)


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

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or not all(1 <= n <= MAX_SIDE for n in v):
            raise ValueError(f"expected [height, width] in pixels, got {str(v)[:40]}")
        return v

    @field_validator("boxes")
    @classmethod
    def _boxes(cls, v: Optional[dict[str, list[list[float]]]]):
        if v and any(len(box) != 4 for boxes in v.values() for box in boxes):
            raise ValueError("a box is four numbers x0, y0, x1, y1")
        return v

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


class MethodVerdict(BaseModel):
    """One method's line in summary.json's ``compare.per_method``."""
    model_config = ConfigDict(extra="allow")
    verdict: str
    max_abs: float
    maps: int


class CompareSummary(BaseModel):
    """summary.json's ``compare`` (explain.compare.Comparison.finish), as the report reads it."""
    model_config = ConfigDict(extra="allow")
    verdicts: list[str] = Field(default_factory=list)
    per_method: dict[str, MethodVerdict] = Field(default_factory=dict)


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

    @model_validator(mode="after")
    def _square(self) -> "DatasetSummary":
        n = len(self.classes)
        if len(self.confusion) != n or any(len(row) != n for row in self.confusion):
            raise ValueError(f"the confusion table is not {n} x {n} (one row and column per class)")
        return self


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

    @field_validator("compare")
    @classmethod
    def _compare(cls, v: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if v is not None:
            CompareSummary.model_validate(v)  # checked, kept as written
        return v


def versions() -> dict[str, str]:
    """The versions a run used, for summary.json."""
    out = {"python": platform.python_version()}
    for pkg in ("explain", "grad-cam", "torch", "torchvision", "numpy", "opencv-python-headless"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def why(exc: BaseException) -> str:
    """The first line of an error, short: for messages about a damaged file."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}"[:160] if where else first.get("msg", "")[:160]
    return first_line(exc, 160)


def parse_json(data: bytes, where: str, what: str) -> Any:
    """JSON from a file of a run folder; ExplainError naming the file when it is not JSON
    (or nested past the parser's depth)."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ExplainError(f"{where}: not {what} of this explain version ({why(exc)}); the "
                           f"run folder is damaged") from None


def parse_item(data: bytes, where: str) -> ItemFile:
    """An item file's bytes; ExplainError naming ``where`` if they are malformed."""
    try:
        return ItemFile.model_validate(json.loads(data.decode("utf-8")))
    except (ValueError, ValidationError, RecursionError) as exc:
        raise ExplainError(f"{where}: not an item file of this explain version ({why(exc)}); "
                           f"delete it to recompute that image") from None


def read_item(path: Path) -> ItemFile:
    """An item file written by an earlier run; ExplainError naming it if it is malformed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExplainError(f"{path}: cannot read the item file ({exc.strerror})") from None
    return parse_item(data, str(path))


def kept_problem(entry: ImageEntry, methods: list[str], classes: set[str],
                 ext: str) -> Optional[str]:
    """What makes an interrupted run's entry unfit for --resume with these methods, class
    names and picture extension (one map per class x method, under the file name the run
    gives it: ``ext`` or another picture format, as a run of fewer images chose), or None."""
    seen: dict[tuple[str, str], int] = {}
    for rec in entry.cams:
        if rec.method not in methods or rec.class_name not in classes:
            return f"a map of {quote(rec.class_name)} by {quote(rec.method)}, not a class and " \
                   f"method of this run"
        expected = f"cams/{rec.method}/{entry.id}__{rec.class_name}"
        if rec.file not in [expected + suffix for suffix in PICTURE_SUFFIXES]:
            return f"map file {quote(rec.file)}, expected {quote(expected + ext)}"
        key = (rec.class_name, rec.method)
        seen[key] = seen.get(key, 0) + 1
    for cls in dict.fromkeys(r.class_name for r in entry.cams):
        for method in methods:
            if seen.get((cls, method)) != 1:
                return f"{seen.get((cls, method), 0)} maps of class {quote(cls)} by {method}"
    return None


MAX_ITEM_BYTES = 64 * 1024 * 1024  # items/<image>.json: a few kB per map


def kept_entries(run: RunFolder, sources: dict[str, Any], names: tuple[list[str], set[str]],
                 ext: str) -> tuple[dict[str, ImageEntry], dict[str, list[CompareRow]]]:
    """--resume: the entries of the images an interrupted run finished (their item file was
    written last) and their compare rows, each checked against this run: ``sources`` (image
    id -> its ImageRef), ``names`` (methods, class names), ``ext`` (the picture extension).
    Its maps and their files must be there, inside the folder; the image's path and label are
    this run's, never what an item file holds."""
    kept, rows = {}, {}
    for rel in item_files(run):
        where = str(run.root / rel)
        data = run.read_bytes(rel, MAX_ITEM_BYTES)
        if data is None:
            continue  # not a regular file: not one explain wrote
        item = parse_item(data, where)
        entry, ref = item.entry, sources.get(item.entry.id)
        if ref is None:
            continue  # an image this run does not list
        problem = None if rel == f"items/{entry.id}.json" else f"holds image {quote(entry.id)}"
        if problem is None and entry.label != ref.label:
            problem = f"label {quote(entry.label)}, but the image list says {quote(ref.label)}"
        problem = problem or kept_problem(entry, names[0], names[1], ext)
        files = [f for rec in entry.cams for f in (rec.file, rec.guided_file) if f]
        missing = next((f for f in files if not run.has_file(f)), None) if not problem else None
        if missing:
            problem = f"its map file {quote(missing)} is missing or not a plain file"
        if problem:
            raise ExplainError(f"{where}: {problem}; the run folder is damaged (delete this item "
                               f"file to compute the image again)")
        entry.path = str(ref.path)
        kept[entry.id] = entry
        if item.compare:
            rows[entry.id] = list(item.compare)
    return kept, rows


def item_files(run: RunFolder) -> list[str]:
    """items/*.json of the run folder, when items/ is a folder (not a link)."""
    folder = run.root / "items"
    if folder.is_symlink() or not folder.is_dir():
        return []
    return sorted(f"items/{p.name}" for p in folder.iterdir() if p.suffix == ".json")


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

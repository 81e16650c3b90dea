"""What a run finds, as typed records: one per map, one per image, one for the whole run.

summary.json, summary.csv, the per-image item files that ``--resume`` keeps and the console
summary are all made from these types, and ``--resume`` and ``explain report`` read them back
through them (explain.recordfiles), so a malformed file is an error that names it, never a
KeyError somewhere later.
summary.json holds the validated config itself (``RunSummary.config``, an explain.config.Config).

The records are also the run's manifest: every file a writer writes is named in them, by the
writer that wrote it, at the level it belongs to (paths relative to the run folder):

- a map (``MapRecord``): ``file`` the overlay, ``guided_file`` its Guided Grad-CAM picture,
  and ``files`` (``MapFiles``) the rest: the .npy of the map and of the Guided Grad-CAM, the
  channel views (top channels, contributions picture and .npy, per-channel CSV) and the
  compare figure;
- an image (``ImageEntry``): ``guided`` (class -> guided backprop picture), ``concepts`` (the
  concepts .json), ``files`` (``ImageFiles``): the report's photo, the activation grid and .npy,
  the class contrast per method, guided backprop .npy, concepts figure and .npy, task picture,
  the atlas's part of the image;
- the run (``RunSummary.files``, ``RunFiles``): the report's colour bar, the panel per class,
  compare.csv and the dataset CSVs and mean-map sums, the atlas page; the mean maps in
  ``dataset.mean_maps``; the atlas's and the ablation's files in ``atlas`` and ``ablation``.

``ImageEntry.written()`` and ``RunSummary.written()`` list them all. Not recorded, because
every run folder has them under fixed names: the folder's marker (explain.outputs),
config.json, items/<image>.json, summary.json, summary.csv, and the report made from the
records, report.html and report/page-<n>.html. Files the finder left out are records too
(``Skipped``: ``skipped_images`` could not be decoded, ``skipped_files`` were not used at
all), never note text. ``FORMAT`` numbers this layout: a summary or item file without it was
written by an earlier version, and reading one is one line saying to run the config again.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from explain.atlas_results import AblationSummary, AtlasSummary
from explain.config import Config
from explain.evidence import BaselineMap, Evidence
from explain.sanity_records import SanitySummary
from explain.tasks import records as tasks

NONE_PREDICTED = "(none)"  # detection: the prediction of an image without a named class found
FORMAT = 2  # the layout of summary.json and items/*.json; 1 (no 'format' key): no manifest
PICTURE_SUFFIXES = (".png", ".jpg", ".webp")  # of the overlays (output.image_format)
MAX_SIDE = 1 << 16  # pixels: an input side explain records (its own limit is far below)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Files(_Record):
    """Files a record names, by kind: a path, or a dict of paths (by class or method)."""

    def paths(self) -> list[str]:
        out: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            out += list(value.values()) if isinstance(value, dict) else [value] if value else []
        return out


class MapFiles(_Files):
    """The files of one map besides its overlay and Guided Grad-CAM picture."""
    array: Optional[str] = None  # cams/<method>/<image>__<class>.npy (output.save_arrays)
    guided_array: Optional[str] = None  # guided_cam/<method>/<image>__<class>.npy
    top: Optional[str] = None  # channels/<method>/<image>__<class>__top.<ext>
    contributions: Optional[str] = None  # channels/<method>/<image>__<class>__contributions.<ext>
    contributions_array: Optional[str] = None  # the same, .npy
    channels_csv: Optional[str] = None  # channels/<method>/<image>__<class>__channels.csv
    compare: Optional[str] = None  # compare/<method>/<image>__<class>.png


class ImageFiles(_Files):
    """The files of one image besides its maps' (see ImageEntry.guided and .concepts too)."""
    photo: Optional[str] = None  # report/photos/<image>.jpg (the photo at model input size)
    activations: Optional[str] = None  # channels/<image>__activations.<ext>
    activations_array: Optional[str] = None  # channels/<image>__activations.npy
    contrast: dict[str, str] = Field(default_factory=dict)  # method -> class contrast figure
    guided_arrays: dict[str, str] = Field(default_factory=dict)  # class -> guided/....npy
    concepts_figure: Optional[str] = None  # concepts/<image>.png
    concepts_array: Optional[str] = None  # concepts/<image>.npy
    task: Optional[str] = None  # segmentation/<image>.<ext> (mask), detections/... (boxes)
    atlas: Optional[str] = None  # channels/atlas/images/<image>.npz (the atlas's per-image part)


class RunFiles(_Files):
    """The files of the whole run (the mean maps are in DatasetSummary.mean_maps)."""
    colorbar: Optional[str] = None  # report/colorbar-<colormap>.png
    panels: dict[str, str] = Field(default_factory=dict)  # class -> panels/<class>.png
    compare_csv: Optional[str] = None  # compare/compare.csv
    confusion_csv: Optional[str] = None  # dataset/confusion.csv
    per_class_csv: Optional[str] = None  # dataset/per_class.csv
    disagreement_csv: Optional[str] = None  # dataset/disagreement.csv (two or more methods)
    mean_sums: Optional[str] = None  # dataset/mean/sums.zip
    atlas_page: Optional[str] = None  # report/atlas.html (channels.atlas / channels.ablation)


class ChannelSummary(_Record):
    """How the map is built from the channel layer (see explain.channels.channel_stats)."""
    channels: int
    nonzero_gradient: int
    channels_50: int  # fewest channels that hold 50% of the positive contribution
    channels_90: int


class Localisation(_Record):
    """The map against the class's ground-truth boxes (see explain.annotations.localisation)."""
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
    agreement: Optional[float] = None  # mean Pearson r with the other methods' maps (2+ methods)
    localisation: Optional[Localisation] = None
    guided_file: Optional[str] = None  # guided_cam/<method>/<image>__<class>.png (Guided Grad-CAM)
    segment: Optional[tasks.RegionNumbers] = None  # task: segmentation (explain.tasks.records)
    detection: Optional[tasks.DetectionNumbers] = None  # task: detection
    files: MapFiles = Field(default_factory=MapFiles)  # its other files


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
    segmentation: Optional[tasks.SegmentationImage] = None  # task: segmentation
    detections: Optional[tasks.DetectionImage] = None  # task: detection
    baselines: list[BaselineMap] = Field(default_factory=list)  # explain.baselines: no files
    files: ImageFiles = Field(default_factory=ImageFiles)  # its other files
    look: Optional[str] = Field(None, pattern=r"^[0-9a-f]{32}$")  # explain.images.looks

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

    def explained_classes(self) -> list[str]:
        """The classes of the image's maps, each once, in the order its maps were made."""
        return list(dict.fromkeys(r.class_name for r in self.cams))

    def map_files(self) -> list[str]:
        """The files of the image's maps: overlays first, then the rest."""
        rest = [f for r in self.cams for f in (r.guided_file, *r.files.paths()) if f]
        return [r.file for r in self.cams] + rest

    def written(self) -> list[str]:
        """Every file recorded for this image and its maps."""
        own = list((self.guided or {}).values()) + ([self.concepts] if self.concepts else [])
        return self.map_files() + own + self.files.paths()


class CompareRow(_Record):
    """Library map vs its reference (see explain.compare.metrics): finite numbers, as a run
    writes them (a shared item file's NaN went through --resume into a summary.json that
    explain report and diff refused)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
    image: str
    class_name: str = Field(alias="class")
    method: str
    max_abs: float
    mean_abs: float
    pearson: float
    iou_top20: float
    # the user's reference (compare.reference_dir): of another shape, resized here ("13x13 ->
    # 224x224"), or more like another class's map (why): kept with the row, so a run --resume
    # continues and rank 0 of several say them for every image
    resized: Optional[str] = Field(None, max_length=200)
    crossed: Optional[str] = Field(None, max_length=400)
    no_relu: Optional[str] = Field(None, max_length=400)  # the channel sum without its ReLU


class MethodVerdict(BaseModel):
    """One method's line in summary.json's ``compare.per_method``."""
    model_config = ConfigDict(extra="allow")
    verdict: str
    max_abs: float
    maps: int
    missing: int = Field(default=0, ge=0)  # the method's maps without a reference file


MAX_COMPARE_ENTRIES = 10_000  # verdicts and methods in summary.json's compare (a run: a few)


class CompareSummary(BaseModel):
    """summary.json's ``compare`` (explain.compare.Comparison.finish), as the report reads it."""
    model_config = ConfigDict(extra="allow")
    verdicts: list[str] = Field(default_factory=list)
    per_method: dict[str, MethodVerdict] = Field(default_factory=dict)
    # the maps without a reference file and the files of no map, by name (the console and the
    # report's warnings quote them: explain.writers.summary.compare_file_lines)
    missing: list[str] = Field(default_factory=list)
    unmatched: list[str] = Field(default_factory=list)
    unmatched_count: Optional[int] = None  # all of them; ``unmatched`` lists the first 100


class ItemFile(_Record):
    """items/<image>.json: written after all of the image's files, read back by --resume."""
    format: int = FORMAT
    entry: ImageEntry
    compare: list[CompareRow] = Field(default_factory=list)


class Skipped(_Record):
    """A file the run found and did not explain, and why."""
    path: str
    reason: str


class ClassNumbers(_Record):
    """One class of a labelled dataset (see explain.datasets.per_class)."""
    class_name: str = Field(alias="class")
    images: int = Field(ge=0)  # labelled with this class
    correct: int = Field(ge=0)  # of those, predicted as this class
    accuracy: Optional[float] = Field(None, ge=0, le=1)  # correct / images (recall); None
    #                                                     without images
    predicted_as: int = Field(ge=0)  # images (labelled or not) the model predicts as this class
    pointing_maps: int = Field(0, ge=0)  # maps of this class with a ground-truth box
    pointing_hits: int = Field(0, ge=0)  # of those, maps whose peak lies inside the box
    pointing: Optional[float] = Field(None, ge=0, le=1)  # hits / maps (pointing game)
    # its 95% bootstrap interval over the images (explain.datasets.pointing_intervals); None
    # under 5 images with boxes
    pointing_interval: Optional[list[float]] = None
    pointing_units: Optional[int] = Field(None, ge=0)  # images, or photos, the interval is over
    # per method, its hits / maps (a shared summary's NaN read 'nan%' on the page)
    pointing_by_method: Optional[dict[str, Annotated[float, Field(ge=0, le=1)]]] = None

    @field_validator("pointing_interval")
    @classmethod
    def _interval(cls, v: Optional[list[float]]) -> Optional[list[float]]:
        """Two numbers, low and high (a shared summary's [0.5] stopped explain report in a
        traceback: the page reads both)."""
        if v is not None and len(v) != 2:
            raise ValueError(f"expected [low, high], got {len(v)} number(s)")
        if v is not None and not all(0 <= x <= 1 for x in v):  # a share's (NaN neither)
            raise ValueError(f"expected shares from 0 to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _parts(self) -> "ClassNumbers":
        """A part no larger than its whole (the page printed '(5 / 3)')."""
        if self.correct > self.images or self.pointing_hits > self.pointing_maps:
            raise ValueError("correct above images, or pointing_hits above pointing_maps")
        return self


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
    labelled: int = Field(ge=0)  # images with a label
    unlabelled: int = Field(ge=0)
    correct: int = Field(ge=0)
    accuracy: Optional[float] = Field(None, ge=0, le=1)  # correct / labelled
    classes: list[str] = Field(default_factory=list)  # rows and columns of the confusion table
    confusion: list[list[int]] = Field(default_factory=list)  # [label][predicted] counts
    per_class: list[ClassNumbers] = Field(default_factory=list)
    mean_size: list[int] = Field(default_factory=list)  # (H, W) every map is resized to
    mean_maps: list[MeanMap] = Field(default_factory=list)
    mean_missing: int = 0  # kept images of an interrupted run whose maps are not in the means
    disagreement: list[Disagreement] = Field(default_factory=list)  # the top DISAGREE_TOP

    @model_validator(mode="after")
    def _square(self) -> "DatasetSummary":
        if self.correct > self.labelled:  # '7 of 5 labelled image(s)', as a class's counts
            raise ValueError("correct above labelled")
        n = len(self.classes)
        if len(self.confusion) != n or any(len(row) != n for row in self.confusion):
            raise ValueError(f"the confusion table is not {n} x {n} (one row and column per class)")
        return self


class RunSummary(_Record):
    """summary.json."""
    format: int = FORMAT
    name: str
    config_file: str
    output_dir: str
    device: str
    processes: int = 1  # torchrun: the ranks, whose durations_s parts (not total) are summed
    config: Config  # as the run used it: validated, with resolved layers and classes
    versions: dict[str, str]
    images: list[ImageEntry] = Field(default_factory=list)
    skipped_images: list[Skipped] = Field(default_factory=list)  # found, could not be decoded
    skipped_files: list[Skipped] = Field(default_factory=list)  # found, not used (no class...)
    files: RunFiles = Field(default_factory=RunFiles)
    notes: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=lambda: {"images": 0, "maps": 0})
    durations_s: dict[str, float] = Field(default_factory=lambda: {"cams": 0.0, "figures": 0.0})
    # what the printed estimates said, per method with passes of its own (method_<name> in
    # durations_s is the time it took) and for the metrics: the whole run's, not summed
    estimates_s: dict[str, float] = Field(default_factory=dict)
    compare: Optional[dict[str, Any]] = None
    dataset: Optional[DatasetSummary] = None  # labelled images only
    task: Optional[tasks.TaskSummary] = None  # task: segmentation / detection
    sanity: Optional[SanitySummary] = None  # sanity.enabled (explain.sanity_records)
    trust: Optional[Evidence] = None  # baselines, intervals, comparisons, which map to trust
    atlas: Optional[AtlasSummary] = None  # channels.atlas (explain.atlas_results)
    ablation: Optional[AblationSummary] = None  # channels.ablation

    @field_validator("compare")
    @classmethod
    def _compare(cls, v: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if v is not None:
            for key in ("verdicts", "per_method"):  # bounded first: pydantic makes an error
                entries = v.get(key) if isinstance(v, dict) else None  # per bad entry
                if isinstance(entries, (list, dict)) and len(entries) > MAX_COMPARE_ENTRIES:
                    raise ValueError(f"compare.{key}: {len(entries)} entries, more than a run "
                                     f"writes ({MAX_COMPARE_ENTRIES})")
            CompareSummary.model_validate(v)  # checked, kept as written
        return v

    def class_names(self) -> list[str]:
        """The run's classes: the config's, in its order; a config naming none, the classes
        of the maps, as the images explained them."""
        return list(self.config.classes) or \
            list(dict.fromkeys(c for image in self.images for c in image.explained_classes()))

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["config"] = self.config.model_dump(mode="json")  # whole, unset values too
        return data

    def written(self) -> list[str]:
        """Every file the records name: the run's, the mean maps', each image's."""
        means = [f for m in (self.dataset.mean_maps if self.dataset else []) for f in
                 (m.file, m.array)]
        checks = self.sanity.files.paths() if self.sanity else []
        across = [f for r in (self.atlas, self.ablation) if r for f in r.paths()]
        return self.files.paths() + means + checks + across + \
            [f for i in self.images for f in i.written()]


def versions() -> dict[str, str]:
    """The versions a run used, for summary.json."""
    out = {"python": platform.python_version()}
    for pkg in ("explain", "grad-cam", "torch", "torchvision", "numpy", "opencv-python-headless"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out

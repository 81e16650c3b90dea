"""The records of segmentation and detection runs (task: segmentation / detection), as parts
of explain.results' map, image and run records: they land in summary.json, summary.csv (the
map numbers as flat columns) and the item files ``--resume`` reads back."""

from __future__ import annotations

import math

from typing import Any, Container, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from explain.names import listed, quote


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class RegionNumbers(_Part):
    """A segmentation map: the region it explains, and the map against it. summary.csv has
    these names as its columns: ``region_*`` is the explained region's (the class's
    ground-truth pixels with region: label), ``predicted_share`` the prediction's, whatever
    the region."""
    region: str  # predicted | label: the pixels the target sums the class's scores over
    region_pixels: int  # the class's pixels in the region (at model input size)
    # region_pixels over the image's pixels (None: a record written before it was kept)
    region_share: Optional[float] = Field(None, ge=0, le=1)
    # share of the image's pixels the model predicts as the class
    predicted_share: float = Field(ge=0, le=1)
    # what the map explains: the class's scores summed over the region (NaN read 'score +nan'
    # in explain diff)
    score: float = Field(allow_inf_nan=False)
    # shares of 0..1 (a shared summary's NaN or 7 read 'nan%', '700.0%' on the page and gave
    # explain diff intervals such as [+6, +1])
    energy_in_region: float = Field(ge=0, le=1)  # share of the map's sum inside the region
    energy_in_mask: Optional[float] = Field(None, ge=0, le=1)  # share inside the ground truth
    # IoU of the map above segmentation.threshold x its max with the ground truth
    mask_iou: Optional[float] = Field(None, ge=0, le=1)
    pointing_hit: Optional[bool] = None  # the map's peak lies in the ground-truth mask

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """A record of an earlier version: 'pixels' (the region's) and 'pixel_share' (the
        prediction's) read as the names that say whose they are."""
        if isinstance(data, dict) and "pixels" in data and "region_pixels" not in data:
            data = dict(data)
            data["region_pixels"] = data.pop("pixels")
            if "pixel_share" in data:
                data["predicted_share"] = data.pop("pixel_share")
        return data


class DetectionNumbers(_Part):
    """A detection map: the detection it explains, and the map against its box."""
    label: str  # the class name of the detection's label
    score: float = Field(allow_inf_nan=False)
    box: list[float]  # x0, y0, x1, y1 in model-input pixels
    energy_in_box: float = Field(ge=0, le=1)  # share of the map's sum inside the box
    # mean map value inside the box / outside it (NaN: an unfinished run's median 'nan')
    inside_outside: Optional[float] = Field(None, ge=0, allow_inf_nan=False)


UNNAMED_VALUES = 5  # values of a label map that name no class, kept per image


class SegmentationImage(_Part):
    """Per image (its ``probabilities`` hold each named class's share of the predicted
    pixels): whether a ground-truth mask was read, and the targets left out."""
    truth: bool = False  # a ground-truth label map was read for the image
    absent: list[str] = Field(default_factory=list)  # targets without a pixel in their region
    # the label map's pixels whose value is no class index of the model (VOC's 255 border):
    # their share, in no class's mask, and the first few such values
    unnamed: float = Field(0.0, ge=0, le=1)
    unnamed_values: list[int] = Field(default_factory=list, max_length=UNNAMED_VALUES)


class Detected(_Part):
    """One detection that was explained (a map per method)."""
    name: str  # the maps' class name: <label>-<n>, the n-th best box of the label
    label: str
    score: float = Field(allow_inf_nan=False)
    box: list[float]  # x0, y0, x1, y1 in model-input pixels


class DetectionImage(_Part):
    """Per image: the detections above the threshold, and those explained."""
    above_threshold: int  # of the named (and targeted) classes
    explained: list[Detected] = Field(default_factory=list)  # the best detection.max_boxes


# TaskSummary.numbers: the numbers of a map against its region or box. Not the predicted share
# or the detection's score: every method explains the same targets, so their means were the
# same in each method's row, as if they measured the method (RETIRED: an earlier version's).
MEANS = {"segmentation": ("energy_in_region", "energy_in_mask", "mask_iou", "pointing_hit"),
         "detection": ("energy_in_box", "inside_outside")}
RETIRED = {"segmentation": ("pixel_share",), "detection": ("score",)}
# ratios summarised by their median: a map with almost nothing outside its box has a ratio in
# the hundreds, and one such map made a method's mean 62 where its maps said 0.3 to 2.8
MEDIANS = ("inside_outside",)
# the numbers that are shares, shown in % (the report's Methods table, the notebook's)
PERCENT = ("energy_in_region", "energy_in_mask", "energy_in_box", "pointing_hit")


def number_name(key: str) -> str:
    """A task number's name in the Methods tables, as the cards name it ('mask IoU', 'inside
    / outside'; they said 'mask iou', 'inside outside')."""
    return {"mask_iou": "mask IoU", "inside_outside": "inside / outside"}.get(
        key, key.replace("_", " "))


class TaskSummary(_Part):
    """The run: the mean of each map number per method."""
    task: str
    numbers: list[str] = Field(default_factory=list)  # the numbers averaged, in order
    means: dict[str, dict[str, float]] = Field(default_factory=dict)  # method -> number -> mean
    medians: list[str] = Field(default_factory=list)  # the numbers in ``means`` that are medians
    maps: dict[str, int] = Field(default_factory=dict)  # method -> maps averaged
    # method -> number -> the maps its mean holds, where fewer than ``maps`` (a map without
    # that number: no ground truth, or no finite inside / outside ratio)
    counted: dict[str, dict[str, int]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        """An earlier version's summary: the target's numbers it averaged per method (RETIRED)
        left out, as this version leaves them."""
        task = data.get("task") if isinstance(data, dict) else None
        gone = RETIRED.get(task) if isinstance(task, str) else None  # a list: unhashable
        if not gone or not isinstance(data.get("numbers"), list):
            return data
        data = {**data, "numbers": [n for n in data["numbers"] if n not in gone]}
        for key in ("means", "counted"):
            if isinstance(data.get(key), dict):
                data[key] = {m: {k: v for k, v in per.items() if k not in gone}
                             if isinstance(per, dict) else per for m, per in data[key].items()}
        return data


class DetectionNames:
    """The class names a detection map record has: <class>-<n> for a named class (here, with
    the records, so that reading a run back needs no detection engine)."""

    def __init__(self, classes: Container[str]):
        self.classes = classes

    def __contains__(self, name: object) -> bool:
        base, _, number = str(name).rpartition("-")
        return base in self.classes and number.isascii() and number.isdigit() and \
            number[0] != "0"


def task_problem(summary: TaskSummary, task: str, methods: list[str]) -> Optional[str]:
    """What in a summary's task numbers its run (``task``, the config's; ``methods``) cannot
    have written, or None: another task, numbers that are not the task's (in their order,
    each once), medians of numbers that are means, means, counts or map counts of another
    method or number, means that are no shares (a ratio's: no finite number), counts that
    do not hold together. The report draws a column per number for every method: a shared
    summary.json's 1.7 million numbers made 375 MB of HTML."""
    known = MEANS.get(task)
    if known is None or summary.task != task:
        return f"numbers of task {quote(summary.task, 40)}, not its run's ({task})"
    order = {name: i for i, name in enumerate(known)}
    places = [order.get(n, -1) for n in summary.numbers]
    if -1 in places or places != sorted(set(places)):
        return "numbers that are not its task's, in their order"
    if any(n not in MEDIANS or n not in summary.numbers for n in summary.medians):
        return "medians of numbers it averages"  # a mean's column headed '(median)'
    names = set(methods)
    for per_method in (summary.means, summary.counted):
        if any(m not in names or any(k not in summary.numbers for k in numbers)
               for m, numbers in per_method.items()):
            return "means of a method or number that is not its run's"
    if any(not math.isfinite(v) or (k not in MEDIANS and not 0 <= v <= 1)  # 'nan%', '700.0%'
           for numbers in summary.means.values() for k, v in numbers.items()):
        return "means that are no shares (0 to 1) or no finite number"
    if any(m not in names for m in summary.maps):
        return "map counts of a method that is not its run's"
    if any(n < 0 for n in summary.maps.values()) or any(  # '(5 of 3 maps)', 'maps -3'
            not 0 <= n <= summary.maps.get(m, 0) for m, held in summary.counted.items()
            for n in held.values()):
        return "map counts below 0, or a mean over more maps than its method's"
    return None


def task_summary(task: str, images: list, methods: list[str]) -> TaskSummary:
    """Each method's mean (a ratio's: median) of each map number over its maps, from the
    records: a finished run's (explain.tasks.writers) and an interrupted one's
    (explain.reportload). Numbers a map lacks are left out of that mean, and the maps each
    such mean holds are counted (the
    report says "k of n")."""
    values: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for entry in images:
        for rec in entry.cams:
            numbers = rec.segment if task == "segmentation" else rec.detection
            for key in MEANS[task]:
                value = getattr(numbers, key, None) if numbers is not None else None
                if value is not None:
                    values.setdefault(rec.method, {}).setdefault(key, []).append(float(value))
    means = {m: {k: round(float(np.median(v) if k in MEDIANS else np.mean(v)), 6)
                 for k, v in found.items()} for m, found in values.items()}
    maps = {m: sum(1 for e in images for r in e.cams if r.method == m) for m in methods}
    numbers = [k for k in MEANS[task] if any(k in found for found in means.values())]
    counted = {m: {k: len(v) for k, v in found.items() if len(v) < maps.get(m, 0)}
               for m, found in values.items()}
    return TaskSummary(task=task, numbers=numbers, means=means, maps=maps,
                       medians=[k for k in numbers if k in MEDIANS],
                       counted={m: c for m, c in counted.items() if c})


def _case_note(cfg: Any, untold: list) -> str:
    """'; ... in another letter case' for the images without a label map whose names are in
    the masks folder in another letter case (names are matched exactly)."""
    from pathlib import Path
    from explain.tasks.masks import case_misses
    folder = cfg.resolve(cfg.segmentation.masks)
    near = case_misses(folder, [(e.id, Path(e.path)) for e in untold])
    if not near:
        return ""
    shown = listed([f"{quote(found)} for {quote(should)}" for found, should in near.values()])
    return (f"; names are matched exactly, letter case too, and {len(near)} of them are there "
            f"in another case: {shown}")


def _segmentation_notes(cfg: Any, images: list, listing: bool) -> list[str]:
    """task_notes of a segmentation run."""
    notes = []
    untold = [e for e in images if e.segmentation is not None and not e.segmentation.truth]
    if cfg.segmentation.masks is not None and untold:
        notes.append(f"segmentation.masks: no label map for {len(untold)} image(s) "
                     f"({listed([e.id for e in untold])}): no ground-truth numbers for them"
                     + (_case_note(cfg, untold) if listing else ""))
    absent = [(e.id, c) for e in images for c in (e.segmentation.absent if e.segmentation
                                                  else [])]
    if absent:
        shown = listed([f"{c} on {i}" for i, c in absent])
        notes.append(f"segmentation: {len(absent)} target(s) without a pixel in their region "
                     f"({cfg.segmentation.region} mask) were not explained: {shown}")
    unnamed = [e for e in images if e.segmentation is not None and e.segmentation.unnamed]
    if unnamed:
        values = sorted({v for e in unnamed for v in e.segmentation.unnamed_values})
        shown = listed([f"{e.id} " + (f"{100 * e.segmentation.unnamed:.1f}%" if
                                      e.segmentation.unnamed >= 0.0005 else "under 0.1%")
                        for e in unnamed])  # one pixel in 250,000 read '0.0%'
        notes.append(f"segmentation.masks: {len(unnamed)} label map(s) hold values that are no "
                     f"class index of the model ({', '.join(map(str, values[:UNNAMED_VALUES]))}"
                     f"; VOC's 255 border is one): those pixels are in no class's ground truth "
                     f"({shown} of the pixels)")
    return notes


def _best_box(images: list, targets: Any) -> str:
    """'; the best box scores 0.338 (class dog on image both): ...' over images without a detection
    explained (their probabilities: each class's best box score, whatever the threshold), of
    the classes ``targets`` lists (a cat at 0.9 beside targets: [dog] no threshold explains)."""
    best = max(((p, c, e.id) for e in images for c, p in (e.probabilities or {}).items()
                if math.isfinite(p)  # a shared item's inf or NaN: no score (a traceback)
                and (not isinstance(targets, list) or c in targets)),
               default=(0.0, "", ""))
    if best[0] <= 0:
        return ""
    step = 10.0 ** (math.floor(math.log10(best[0])) - 2)  # 3 digits, rounded down: at most it
    shown = math.floor(best[0] / step) * step if step > 0 else best[0]  # 5e-324: step 0
    return (f"; the best box scores {shown:.3g} (class {best[1]} "
            f"on image {best[2]}): a score_threshold at or below it explains it")


def task_notes(cfg: Any, images: list, listing: bool = True) -> list[str]:
    """What a reader must know of the run's images, from their records: images without a
    label map in segmentation.masks, targets without a region (segmentation), images without
    a detection or with more than ``max_boxes``. A finished run's (explain.tasks.writers) and
    an interrupted one's (explain.reportload: not ``listing`` the masks folder for names in
    another letter case, a folder a shared config.json names anywhere, '~' too)."""
    if cfg.task == "segmentation":
        return _segmentation_notes(cfg, images, listing)
    lacking = [e for e in images if e.detections is not None and not e.detections.explained]
    none = [e.id for e in lacking]
    more = [e.id for e in images if e.detections is not None and
            e.detections.above_threshold > len(e.detections.explained)]
    notes = []
    if none:
        shown = listed(none)
        which = f"a class in targets ({listed(cfg.targets)})" if isinstance(
            cfg.targets, list) else "a named class"  # a cat at 0.9 beside targets: [dog]
        notes.append(f"detection: no detection of {which} scores at least "
                     f"score_threshold {cfg.detection.score_threshold} on {len(none)} "
                     f"image(s): {shown}; nothing to explain there"
                     + _best_box(lacking, cfg.targets))
    if more:
        notes.append(f"detection: {len(more)} image(s) have more than max_boxes "
                     f"({cfg.detection.max_boxes}) detections above the threshold; the best "
                     f"{cfg.detection.max_boxes} of each were explained")
    return notes

"""The numbers of ``explain diff``: each map's correlation with its counterpart and the change
of every number of its record (diff.csv's rows), and the summaries the console and the page
give of them."""

from __future__ import annotations

import json

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from explain.diff.runs import DIFF_CSV, DIFF_PAGE, Pair, Side, read_map
from explain.names import LISTED, listed, photo_of, short
from explain.results import MapRecord, RunSummary
from explain.stats import figure

# Record numbers that describe the map's shape or the channels, not a metric: in the CSV and
# the page, not in the console's line of mean changes (faithfulness names are metrics).
CONSOLE_GROUPS = 12  # method / class lines printed (a run of 1,000 classes has 2,000 groups)
NOT_HEADLINE = {"logit", "raw_max", "peak_value", "peak_x", "peak_y", "mass_left", "mass_right",
                "mass_top", "mass_bottom", "channels", "nonzero_gradient", "channels_50",
                "channels_90", "region_pixels"}
# record numbers that lie in 0..1 (a map scaled to 0..1, its shares, a probability): their
# change lies in -1..1, and so does its interval (the metrics' own bounds: metrics.TABLE)
SHARES = ("probability", "peak_value", "mass_left", "mass_right", "mass_top", "mass_bottom",
          "region_share", "predicted_share", "energy_in_region", "energy_in_mask", "mask_iou")


@dataclass(kw_only=True)
class MapDiff:
    """One image x class x method in both runs: how the map and the record's numbers moved."""
    image: str
    class_name: str
    method: str
    correlation: float
    mean_abs_diff: float
    max_abs_diff: float
    peak_shift: float  # pixels between the two peaks (A's input size)
    resized: bool  # B's map was resized to A's input size
    predicted: tuple[str, str]
    numbers: tuple[dict[str, float], dict[str, float]]  # A's, B's (see numbers())
    # two detection runs: B's name of the box (A's is class_name; paired by box, the ranks
    # may differ: explain.diff.boxes)
    class_b: Optional[str] = None
    # a detection's class (class_name is its box, dog-1: the best dog box of *this* image):
    # the groups gather a class's boxes over the images
    label: Optional[str] = None
    # the changes peak_x and peak_y can make in A's input pixels: A's peak from 0 to W - 1,
    # B's (in A's pixels) from 0 to W - W / W_B
    reach: dict[str, tuple[float, float]] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The row of diff.csv: the map's numbers, then every record number A, B, change."""
        out: dict[str, Any] = {
            "image": self.image, "class": self.class_name,
            **({"class_b": self.class_b} if self.class_b is not None else {}),
            "method": self.method,
            "correlation": self.correlation, "mean_abs_diff": self.mean_abs_diff,
            "max_abs_diff": self.max_abs_diff, "peak_shift": self.peak_shift,
            "resized": self.resized, "predicted_a": self.predicted[0],
            "predicted_b": self.predicted[1]}
        a, b = self.numbers
        for key in dict.fromkeys([*a, *b]):
            out[f"{key}_a"], out[f"{key}_b"] = a.get(key), b.get(key)
            out[f"{key}_change"] = round(b[key] - a[key], 10) if key in a and key in b else None
        return out


@dataclass(kw_only=True)
class DiffResult:
    """What ``explain diff`` found and wrote; ``below``: maps under the threshold."""
    a: Side
    b: Side
    maps: list[MapDiff]
    left_out: list[str]
    config_changes: list[str]  # the first CONFIG_SHOWN
    threshold: Optional[float]
    below: list[MapDiff] = field(default_factory=list)
    out: Optional[Path] = None
    lines: list[str] = field(default_factory=list)
    config_total: int = 0  # settings that differ, config_changes' and the rest
    measured_apart: list[str] = field(default_factory=list)  # numbers of other definitions

    @property
    def config_more(self) -> int:
        """Settings that differ past those named in config_changes."""
        return max(0, self.config_total - len(self.config_changes))

    @property
    def compare_changes(self) -> list[str]:
        """Each method's --compare verdict in A and B, where either run compared (two
        students' reference folders against one model: the maps are the same, the verdicts
        are what differs): "gradcam: agree -> differ (max |diff| 2.5e-06 -> 1)"; a verdict
        over part of the maps says so ("agree over 3 of 6 maps (3 without a reference file)")."""
        a, b = (_verdicts(side.summary) for side in (self.a, self.b))
        none = ("none", "-")
        return [f"{m}: {a.get(m, none)[0]} -> {b.get(m, none)[0]} (max |diff| "
                f"{a.get(m, none)[1]} -> {b.get(m, none)[1]})" for m in dict.fromkeys([*a, *b])]


def measured_apart(a: Optional[RunSummary], b: Optional[RunSummary]) -> list[str]:
    """The faithfulness metrics both runs measured at other percentiles: their change B - A is
    partly the setting's (9 percentiles against [90] moved ROAD combined by -0.045)."""
    if a is None or b is None:
        return []
    theirs = {m.name: m.percentiles for m in b.config.metrics or ()}
    return [f"{m.name}: measured at percentiles {', '.join(map(str, m.percentiles))} in A and "
            f"{', '.join(map(str, theirs[m.name]))} in B: its change is partly the setting's, "
            f"not only the maps'" for m in a.config.metrics or ()
            if m.percentiles and theirs.get(m.name)  # a mean over them: their order no matter
            and set(theirs[m.name]) != set(m.percentiles)]


def _names(names: list[str], limit: int) -> str:
    """Names as the config writes them, '["a", "b"]', over ``limit`` characters cut between
    names around '...', as many of the first and the last as fit (nine methods read
    '"xgradc..."eigencam"', cut inside two)."""
    parts = [json.dumps(n, ensure_ascii=False) for n in names]

    def cut(head: int, tail: int) -> str:
        return f"[{', '.join(parts[:head] + ['...'] + parts[len(parts) - tail:])}]"
    whole = f"[{', '.join(parts)}]"
    if len(whole) <= limit or len(parts) < 3 or len(cut(1, 1)) > limit:
        return short(whole, limit)
    head, tail = 1, 1
    while head + tail < len(parts) - 1:
        wider = (head + 1, tail) if head <= tail else (head, tail + 1)
        if len(cut(*wider)) > limit:
            break
        head, tail = wider
    return cut(head, tail)


def _verdicts(summary: Optional[RunSummary]) -> dict[str, tuple[str, str]]:
    """A run's compare verdict per method of its config and its max |diff| ({} without
    --compare, or a folder without its summary); at most the config's 32 methods, whatever a
    shared summary.json lists (up to 10,000 entries: as many lines)."""
    if summary is None:
        return {}
    per_method = (summary.compare or {}).get("per_method") or {}
    return {m.name: (_verdict_words(per_method[m.name]),
                     f"{float(per_method[m.name].get('max_abs', 0)):.2g}")
            for m in summary.config.methods if m.name in per_method}


def _verdict_words(info: dict) -> str:
    """A method's verdict as the diff names it: "agree", or "agree over 3 of 6 maps (3
    without a reference file)" when some maps had none (an older summary has no count)."""
    from explain.compare import maps_words
    verdict = str(info.get("verdict"))[:40]
    return f"{verdict} over {maps_words(info)}" if info.get("missing") else verdict


# ---- reading the two runs ---------------------------------------------------------------
# ---- numbers ----------------------------------------------------------------------------

def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two maps of one shape (numpy's corrcoef); exactly 1.0 for equal maps. A
    map without variation (all zero) has none: 0.0 against any other map, so a map that went
    blank fails a threshold."""
    if np.array_equal(x, y):
        return 1.0
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    dx, dy = x.ravel() - x.mean(), y.ravel() - y.mean()
    r = float(dx @ dy / math.sqrt(float(dx @ dx) * float(dy @ dy)))
    return min(1.0, max(-1.0, r))


def numbers(rec: MapRecord) -> dict[str, float]:
    """Every number of a record, flat (the names of summary.csv): probability, logit, raw max,
    peak, mass shares, agreement, faithfulness, localisation (pointing hit as 1/0), channels,
    a segmentation or detection map's numbers against its region or box."""
    out = {key: getattr(rec, key) for key in (
        "probability", "logit", "raw_max", "peak_value", "peak_x", "peak_y", "mass_left",
        "mass_right", "mass_top", "mass_bottom", "agreement")}
    out.update(rec.faithfulness or {})
    for group in (rec.localisation, rec.channels):
        out.update(group.model_dump() if group is not None else {})
    for part in (rec.segment, rec.detection):  # their numbers; not the region, label or box
        out.update({k: v for k, v in (part.model_dump() if part is not None else {}).items()
                    if isinstance(v, (int, float))})
    return {k: float(v) for k, v in out.items() if v is not None}


def compare_maps(a: Side, b: Side, pair: Pair) -> tuple[MapDiff, np.ndarray, np.ndarray]:
    """One map in both runs: read, compared, the records' numbers alongside (B's peak in A's
    pixels); with the two maps (B's at A's size)."""
    ea, eb, ra, rb = pair
    x, y = read_map(a, ea, ra), read_map(b, eb, rb)
    resized = x.shape != y.shape
    if resized:
        y = cv2.resize(y, (x.shape[1], x.shape[0]), interpolation=cv2.INTER_LINEAR)
    scale = (x.shape[1] / eb.input_size[1], x.shape[0] / eb.input_size[0])
    shift = math.hypot(ra.peak_x - rb.peak_x * scale[0], ra.peak_y - rb.peak_y * scale[1])
    change = np.abs(y - x)
    # B's peak in A's input pixels, as B's map and peak_shift are: peak_x 56 of a 64-wide
    # input against 0 of a 96-wide one read as a change of 56 pixels, peak_shift 84.5
    at_a = numbers(rb)
    for key, factor in (("peak_x", scale[0]), ("peak_y", scale[1])):
        if key in at_a and factor != 1:
            at_a[key] = round(at_a[key] * factor, 3)
    one = MapDiff(image=ea.id, class_name=ra.class_name, method=ra.method,
                  correlation=correlation(x, y), mean_abs_diff=float(change.mean()),
                  max_abs_diff=float(change.max()), peak_shift=round(shift, 3), resized=resized,
                  predicted=(ea.predicted, eb.predicted), numbers=(numbers(ra), at_a),
                  class_b=rb.class_name if ra.detection is not None else None,
                  label=ra.detection.label if ra.detection is not None else None,
                  reach={"peak_x": (1 - x.shape[1], x.shape[1] - scale[0]),
                         "peak_y": (1 - x.shape[0], x.shape[0] - scale[1])})
    return one, x, y


CONFIG_SHOWN = 40  # settings that differ named on the page (the console names 3), the rest counted


def config_changes(a: RunSummary, b: RunSummary) -> tuple[list[str], int]:
    """The first CONFIG_SHOWN config keys whose values differ, as 'key: A -> B' (the run name
    and folder aside; keys and values cut to 80 characters), and how many differ in all."""
    from explain.settingsdiff import MISSING, changes
    both = [s.config.model_dump(mode="json") for s in (a, b)]
    found, total = changes(*both, skip=("name", "workers", "output.dir", *switched_off(*both)),
                           shown=CONFIG_SHOWN, limit=80)

    def shown(value: Any) -> str:  # as the config file writes it: true, null, [a, b]
        if value is MISSING:
            return "(none)"
        if isinstance(value, str):
            return short(value, 80)
        if isinstance(value, list) and value and all(  # methods without options: their names
                isinstance(v, dict) and list(v) == ["name"] for v in value):
            return _names([str(v["name"]) for v in value], 80)  # ('{"name": "gradca...e": ...')
        return short(json.dumps(value, default=str, ensure_ascii=False), 80)  # 'Äpfel'
    return [f"{key}: {shown(old)} -> {shown(new)}" for key, old, new in found], total


# sections whose settings act with ``enabled: false`` too: report's turns off the page only
# (weak_below marks each map's record, photo_separator sets the trust intervals' unit, and
# this diff's)
STILL_ACTING = ("report",)
# how deep the sections with an ``enabled`` lie (``channels.atlas``); not inside the model's
# own arguments, whose keys are the model's (a shared summary's 15 levels of 4,000-character
# keys over 1,000 leaves made 60 MB of dotted names here)
SECTION_DEPTH = 2


def switched_off(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings of each section (``sanity``, ``channels.atlas``; not STILL_ACTING) that
    has ``enabled: false`` in either config, ``enabled`` aside: off in both runs they did
    nothing, and off in one the ``enabled`` change says it (``sanity.images: 1 -> 2`` of a
    run that checked no sanity read as a change that mattered)."""
    out: list[str] = []
    todo: list[tuple[str, Any, Any]] = [("", a, b)]
    while todo:
        prefix, x, y = todo.pop()
        if not (isinstance(x, dict) and isinstance(y, dict)):
            continue
        if prefix and prefix[:-1] not in STILL_ACTING and \
                any(side.get("enabled") is False for side in (x, y)):
            out += [prefix + key for key in sorted(set(x) | set(y)) if key != "enabled"]
            continue
        if prefix.count(".") < SECTION_DEPTH and prefix not in ("model.",):  # the config's
            todo += [(f"{prefix}{key}.", value, y[key]) for key, value in x.items()  # sections
                     if isinstance(value, dict) and isinstance(y.get(key), dict)]
    return out


# ---- summaries for the console and the page -----------------------------------------------

@dataclass(kw_only=True)
class Group:
    """The maps of one method and class: how far their correlations went."""
    method: str
    class_name: str
    maps: int
    r_min: float
    r_median: float
    r_mean: float
    worst: str  # the image of the lowest correlation
    below: int  # maps under the threshold


@dataclass(kw_only=True)
class Change:
    """One record number over the compared maps of a method and class: mean in A, in B,
    mean change."""
    method: str
    class_name: str
    name: str
    maps: int
    mean_a: float
    mean_b: float
    mean_change: float
    largest: float  # the change of largest size (signed)
    where: str  # image / class of that change
    # the 95% bootstrap interval of the mean change over units (images, or photos with A's
    # report.photo_separator: a photo's variants averaged first); none below stats.MIN_IMAGES
    low: Optional[float] = None
    high: Optional[float] = None
    units: int = 0
    unit: str = "image"

    def interval(self) -> str:
        """' [low, high]' as the console prints it, or '' without one."""
        if self.low is None or self.high is None:
            return ""
        return f" [{figure(self.low, 3, sign=True)}, {figure(self.high, 3, sign=True)}]"


def _by_method_and_class(maps: list[MapDiff]) -> dict[tuple[str, str], list[MapDiff]]:
    """The maps of each method and class, in the order they came (one pass over them)."""
    out: dict[tuple[str, str], list[MapDiff]] = {}
    for m in maps:  # a detection's boxes by their class: dog-1 is another box on each image
        out.setdefault((m.method, m.label or m.class_name), []).append(m)
    return out


def _named(m: MapDiff) -> str:
    """The map's image, with its box for a detection's (both dog-1)."""
    return f"{m.image} ({m.class_name})" if m.label else m.image


def groups(result: DiffResult) -> list[Group]:
    """Per method and class, in the order the maps came."""
    below = {id(m) for m in result.below}
    out = []
    for (method, cls), some in _by_method_and_class(result.maps).items():
        rs = np.array([m.correlation for m in some])
        out.append(Group(method=method, class_name=cls, maps=len(some), r_min=float(rs.min()),
                         r_median=float(np.median(rs)), r_mean=float(rs.mean()),
                         worst=_named(some[int(rs.argmin())]),
                         below=sum(1 for m in some if id(m) in below)))
    return out


def changes(result: DiffResult) -> list[Change]:
    """Per method, class and record number present in both runs of some map: the means and
    the mean change over images (or A's photos, a photo's variants averaged first, as the
    report's means), with the change's interval over the same units (a mean over maps beside
    an interval over photos lay outside its middle). By class: over a two-class run's both
    classes the probabilities' mean is 0.5 in either run, and a shift to one class showed as
    no change."""
    out, units, reach = [], [], []
    photo = _photo_of(result.a.summary)
    for (method, cls), some in _by_method_and_class(result.maps).items():
        shared: dict[str, list[MapDiff]] = {}
        for m in some:
            for name in m.numbers[0]:
                if name in m.numbers[1]:
                    shared.setdefault(name, []).append(m)
        for name, both in shared.items():
            a, b = (np.array([m.numbers[side][name] for m in both]) for side in (0, 1))
            keys = [photo[0](m.image) for m in both]
            with np.errstate(over="ignore", invalid="ignore"):  # a record's 1e308: inf, not
                far = int(np.abs(b - a).argmax())               # numpy's warning lines
                unit_a, unit_b = _unit_means(keys, a), _unit_means(keys, b)
                out.append(Change(method=method, class_name=cls, name=name, maps=len(both),
                                  mean_a=float(unit_a.mean()), mean_b=float(unit_b.mean()),
                                  mean_change=round(float((unit_b - unit_a).mean()), 10),
                                  largest=round(float(b[far] - a[far]), 10),
                                  where=_named(both[far]), unit=photo[1]))
                units.append(unit_b - unit_a)
                ends = [m.reach.get(name) for m in both]  # a pixel number's: its input's size
                reach.append(None if None in ends else tuple(
                    float(_unit_means(keys, np.array(side)).mean()) for side in zip(*ends)))
    config = getattr(result.a.summary, "config", None)
    _intervals(out, units, config.seed if config is not None else 0, reach)
    return out


def _photo_of(summary: Optional[RunSummary]) -> tuple[Any, str]:
    """The unit of an image id in run A (its photo with report.photo_separator, else the
    image itself), and the unit's name. Each image's photo is found once: asked per map and
    record number, a shared summary's 5 MB paths took 46 s of a diff of 12 maps (1.8 s)."""
    config = getattr(summary, "config", None)
    separator = config.report.photo_separator if config is not None else None
    units = {image.id: photo_of(image.id, separator, image.path)
             for image in getattr(summary, "images", [])}
    return ((lambda image: units.get(image) or photo_of(image, separator)),
            "photo" if separator else "image")


def _unit_means(keys: list[str], values: np.ndarray) -> np.ndarray:
    """The mean of ``values`` per unit (keys in the order they first come)."""
    groups: dict[str, list[float]] = {}
    for key, value in zip(keys, values):
        groups.setdefault(key, []).append(float(value))
    return np.array([np.mean(v) for v in groups.values()])


def _intervals(out: list[Change], units: list[np.ndarray], seed: int,
               reach: Optional[list[Optional[tuple[float, float]]]] = None) -> None:
    """Each change's interval over its units, drawn together (explain.stats.intervals), for
    those with at least stats.MIN_IMAGES finite units; a yes-or-no number's (the pointing
    game) reaches 0 where the exact sign test finds no change, as the methods table's does
    (5 images that all flipped gave [1, 1]); each is cut to the changes its number can
    make, as the report's differences are (a 0..1 peak value's change read [-1.26, -0.333]),
    a peak's pixel to its ``reach``, the mean over units of the changes their inputs allow
    (peak_x [-20.5, 95.2] on a 96-pixel-wide input)."""
    from explain import stats
    from explain.metrics import SHARE, TABLE
    ready = [i for i, u in enumerate(units)
             if len(u) >= stats.MIN_IMAGES and np.isfinite(u).all()]
    for i, (low, high) in zip(ready, stats.intervals([units[i] for i in ready], seed=seed)):
        name = out[i].name
        bounds = SHARE if name in SHARES else TABLE[name].bounds if name in TABLE else None
        if bounds:
            span = bounds[1] - bounds[0]
            low, high = max(low, -span), min(high, span)
        if reach and reach[i] is not None:
            low, high = max(low, reach[i][0]), min(high, reach[i][1])
        if name in TABLE and TABLE[name].yes_no:
            low, high = stats.sign_checked((low, high), units[i])
        out[i].low, out[i].high = round(low, 10), round(high, 10)
    for change, u in zip(out, units):
        change.units = len(u)


def flips(result: DiffResult) -> list[tuple[str, tuple[str, str]]]:
    """The images whose predicted class differs between the runs: (image, (A's, B's))."""
    return list(dict.fromkeys((m.image, m.predicted) for m in result.maps
                              if m.predicted[0] != m.predicted[1]))


def flip_line(result: DiffResult) -> str:
    """The console's and the page's line on changed predictions ('' for none): the first
    few images, then how many more (the page listed 36 lines in its Read-first box)."""
    changed = flips(result)
    if not changed:
        return ""
    return f"prediction changed on {len(changed)} image(s): " + \
        listed([f"{i} ({p[0]} -> {p[1]})" for i, p in changed]) + \
        (f"; each map's in {DIFF_CSV} (predicted_a, predicted_b)" if len(changed) > LISTED
         else "")


def console_lines(result: DiffResult) -> list[str]:
    """The short summary printed after a diff."""
    maps = result.maps
    count = [len(set(key)) for key in zip(*((m.image, m.label or m.class_name, m.method)
                                            for m in maps))]  # a detection's class: dog
    kinds = [f"{n} {word}{'' if n == 1 else plural}" for n, word, plural in
             zip(count, ("image", "class", "method"), ("s", "es", "s"))]
    over = " x ".join(kinds) if count[0] * count[1] * count[2] == len(maps) else \
        f"of {', '.join(kinds)}: " + ("a map per detected box" if any(m.label for m in maps)
                                      else "not every class of every image")  # each label
    lines = [f"explain diff: A {result.a.root} vs B {result.b.root}: {len(maps)} shared maps "
             f"({over})"]
    lines += [f"  run {s.label} is unfinished: {len(s.summary.images)} image(s) so far"
              for s in (result.a, result.b) if not s.finished]
    lines += [f"  left out: {line}" for line in result.left_out]
    if result.config_changes:
        total = max(result.config_total, len(result.config_changes))
        lines.append(f"  config: {total} setting(s) differ: "
                     f"{'; '.join(result.config_changes[:3])}" + (" ..." if total > 3 else ""))
    lines += [f"  compare {line}" for line in result.compare_changes]
    lines += [f"  {line}" for line in result.measured_apart]
    every = groups(result)
    for g in sorted(every, key=lambda g: g.r_min)[:CONSOLE_GROUPS]:  # the worst first
        if f"{g.r_min:.3f}" == "1.000":  # no worst to name: every map is the same
            lines.append(f"  {g.method} / {g.class_name}: map r 1.000 on all {g.maps} map(s)")
            continue
        lines.append(f"  {g.method} / {g.class_name}: map r min {g.r_min:.3f} on {g.worst}, "
                     f"median {g.r_median:.3f}, mean {g.r_mean:.3f} over {g.maps} map(s)")
    moved: dict[tuple[str, str], list[Change]] = {}
    for c in changes(result):
        if c.name not in NOT_HEADLINE and c.mean_change != 0:
            moved.setdefault((c.method, c.class_name), []).append(c)
    for (method, cls), some in list(moved.items())[:CONSOLE_GROUPS]:
        said = f" [95% interval over {some[0].unit}s]" if any(c.interval() for c in some) \
            else f" (over {some[0].unit}s; too few for an interval)"
        lines.append(f"  {method} / {cls}: mean change B - A{said}: " + ", ".join(
            f"{c.name} {c.mean_change:+.3g}{c.interval()}" for c in some))
    if len(every) > CONSOLE_GROUPS:  # every group with a change is one of them
        lines.append(f"  ({len(every)} method / class groups: the {CONSOLE_GROUPS} lowest r and "
                     f"the first {CONSOLE_GROUPS} changes shown; all of them in "
                     f"{DIFF_PAGE} and {DIFF_CSV})")
    lines += [f"  {line}" for line in [flip_line(result)] if line]
    if result.threshold is not None:
        worst = listed([f"{m.image}/{m.class_name}/{m.method} r {m.correlation:.3f}"
                        for m in result.below])
        lines.append(f"  threshold {result.threshold}: {len(result.below)} of {len(maps)} map(s) "
                     f"below" + (f", exit 1: {worst}" if result.below else ""))
    if result.out is not None:
        lines.append(f"  -> {result.out / DIFF_PAGE} and {DIFF_CSV}")
    return lines

"""Reading the two runs of ``explain diff``: each folder as ``explain report`` reads it, the
maps both runs hold (matched by image, class and method; two detection runs' maps by image,
method and box: explain.diff.boxes), each saved map read back checked."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from explain.diff.boxes import paired_boxes, unpaired_line
from explain.errors import ExplainError
from explain.names import listed, short
from explain.outputs import RunFolder
from explain.readback import stored_array
from explain.results import ImageEntry, MapRecord, RunSummary

DIFF_CSV, DIFF_PAGE = "diff.csv", "diff.html"
MAX_MAP_BYTES = 64 * 1024 * 1024  # a saved map read back (cams/<method>/*.npy)
Pair = tuple[ImageEntry, ImageEntry, MapRecord, MapRecord]  # A's image and map, B's


@dataclass
class Side:
    """One of the two runs: its folder, its records, whether it finished."""
    label: str  # 'A' or 'B'
    root: Path
    folder: RunFolder
    summary: RunSummary
    finished: bool


def parse_threshold(text: Optional[str]) -> Optional[float]:
    """``--threshold R``: a correlation from -1 to 1 (one line otherwise)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:  # NaN fails too
        raise ExplainError(f"--threshold {short(text, 40)}: expected a correlation from -1 to 1, "
                           f"e.g. --threshold 0.9")
    return value


def open_side(root: Path, label: str) -> Side:
    """One run folder's records (ExplainError naming it when it is not a run of this version,
    or when its maps were not saved)."""
    from explain.reportload import load_run  # the report's reader (no torch)
    root = Path(root)
    if root.is_dir() and not root.is_symlink():
        here = RunFolder(root)
        if here.has_file(DIFF_CSV) and not here.has_file("summary.json"):
            raise ExplainError(f"{root}: a folder written by explain diff, not a run; give two "
                               f"run folders")
    data = load_run(root)
    summary = data.summary
    if not summary.config.output.save_arrays:
        raise ExplainError(f"{root}: run {label} did not save its maps (output.save_arrays is "
                           f"off; its overlays are pictures, not the maps); run its config again "
                           f"with --set output.save_arrays=true")
    return Side(label, root, RunFolder(root), summary, data.finished)


def _only(label: str, what: str, items: list[str]) -> list[str]:
    return [f"{what} only in {label}: {listed(items)}"] if items else []


def _by_box(a: Side, b: Side) -> bool:
    """Whether the maps are paired by box (two detection runs: explain.diff.boxes)."""
    return a.summary.config.task == b.summary.config.task == "detection"


def _class_of(rec: MapRecord, by_box: bool) -> str:
    """What a map explains as the runs are matched: its class, or its detection's label."""
    return rec.detection.label if by_box and rec.detection is not None else rec.class_name


@dataclass
class _Found:
    """What matching has found so far: the pairs, the maps of shared classes and methods in
    one run only, and the boxes of each run without a partner (image/name)."""
    pairs: list[Pair] = field(default_factory=list)
    alone: int = 0
    unpaired: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))


def _pair_image(ea: ImageEntry, eb: ImageEntry, shared: list[set[str]], by_box: bool,
                found: _Found) -> None:
    """One image's maps in both runs: by class and method; detection maps by the class and
    method of the same box (explain.diff.boxes), the boxes without a partner left out."""
    names: dict[str, str] = {}
    lone: tuple[list[str], list[str]] = ([], [])
    if by_box:
        names, lone_a, lone_b = paired_boxes(ea, eb)
        lone = (lone_a, lone_b)
        for k in (0, 1):
            found.unpaired[k].extend(f"{ea.id}/{n}" for n in lone[k])
    theirs = {(r.class_name, r.method): r for r in eb.cams}

    def counted(rec: MapRecord, k: int) -> bool:  # an unpaired box is listed, not counted
        return _class_of(rec, by_box) in shared[0] and rec.method in shared[1] and \
            rec.class_name not in lone[k]
    for ra in ea.cams:
        rb = theirs.pop((names.get(ra.class_name) if by_box else ra.class_name, ra.method),
                        None)
        if rb is not None:
            found.pairs.append((ea, eb, ra, rb))
        elif counted(ra, 0):
            found.alone += 1
    found.alone += sum(1 for rb in theirs.values() if counted(rb, 1))


def match(a: Side, b: Side) -> tuple[list[Pair], list[str]]:
    """The maps of both runs (A's order) and what was left out, as lines. ExplainError in
    one line when the runs share no image, no class, no method, or no map. Two detection
    runs' maps are paired by box (explain.diff.boxes); their classes are the boxes' labels."""
    tasks = [side.summary.config.task for side in (a, b)]
    if tasks[0] != tasks[1]:  # their classes differ too: a detection's are its boxes
        raise ExplainError(f"{a.root} is a task: {tasks[0]} run and {b.root} a task: "
                           f"{tasks[1]} run; explain diff compares two runs of one task")
    by_box = _by_box(a, b)
    entries = [{e.id: e for e in s.summary.images} for s in (a, b)]
    kinds = {"image": [list(e) for e in entries],
             "class": [list(dict.fromkeys(_class_of(r, by_box) for e in s.summary.images
                                          for r in e.cams)) for s in (a, b)],
             "method": [list(dict.fromkeys(r.method for e in s.summary.images for r in e.cams))
                        for s in (a, b)]}
    left_out = []
    for kind, (in_a, in_b) in kinds.items():
        set_a, set_b = set(in_a), set(in_b)  # once: per name it made the match quadratic
        if not set_a & set_b:
            raise ExplainError(f"the runs share no {kind}: {a.root} has {listed(in_a) or 'none'}; "
                               f"{b.root} has {listed(in_b) or 'none'}; compare runs of the same "
                               f"images, classes and methods")
        plural = "classes" if kind == "class" else f"{kind}s"
        left_out += _only("A", plural, [n for n in in_a if n not in set_b])
        left_out += _only("B", plural, [n for n in in_b if n not in set_a])
    # maps of a class or method only one run has are said above: not counted again below
    shared = [set(kinds[kind][0]) & set(kinds[kind][1]) for kind in ("class", "method")]
    found = _Found()
    for ident, ea in entries[0].items():
        eb = entries[1].get(ident)
        if eb is not None:
            _pair_image(ea, eb, shared, by_box, found)
    if not found.pairs:
        unpaired = unpaired_line("A", "B", found.unpaired[0])
        why = unpaired or "they explain other classes or methods of each shared image"
        raise ExplainError(f"the runs share no map (image x class x method): {a.root} and "
                           f"{b.root}; {why}")
    for k, side in enumerate((a, b)):
        _one_record_per_array(side, [pair[2 + k] for pair in found.pairs])
    left_out += [line for line in (unpaired_line("A", "B", found.unpaired[0]),
                                   unpaired_line("B", "A", found.unpaired[1])) if line]
    if found.alone:
        left_out.append(f"{found.alone} map(s) of shared images are in one run only (a class "
                        f"one run explains and the other does not)")
    return found.pairs, left_out


def _one_record_per_array(side: Side, records: list[MapRecord]) -> None:
    """explain saves each map in a file of its own: records naming one array file, by one name
    or by hard links, are a damaged (or crafted) folder, refused before any map is read (20
    records naming one 64 MiB array made 20 reads of it; the summary's size allowed half a
    million; 160 hard links to one file took 28 s)."""
    seen: dict[object, MapRecord] = {}
    for rec in records:
        name = rec.files.array
        if name is None:
            continue
        try:  # hard links (a tar keeps them) are one file under two names
            found = os.lstat(side.folder.path(name, reading=True))
            same: object = (found.st_dev, found.st_ino)
        except (OSError, ExplainError):  # missing or outside: read_map names it
            same = name
        first = seen.setdefault(same, rec)
        if first is not rec:
            raise ExplainError(f"{side.root}: the maps {first.class_name} / {first.method} "
                               f"and {rec.class_name} / {rec.method} name the same array file "
                               f"({first.files.array}, {name}); the run folder is damaged")


def read_map(side: Side, entry: ImageEntry, rec: MapRecord) -> np.ndarray:
    """A record's saved map (float64, at the image's input size); ExplainError naming the
    file when it is missing or not a map explain saved."""
    what = f"{entry.id} / {rec.class_name} / {rec.method}"
    if rec.files.array is None:
        raise ExplainError(f"{side.root}: the map {what} has no saved array in the records; "
                           f"the run folder is damaged")
    where = side.root / rec.files.array
    data = side.folder.read_bytes(rec.files.array, MAX_MAP_BYTES)
    if data is None:
        raise ExplainError(f"{where}: the map {what} is missing or not a plain file; the run "
                           f"folder is damaged")
    try:
        cam = stored_array(data)
    except (ValueError, OSError, EOFError):
        cam = None
    if not isinstance(cam, np.ndarray) or cam.dtype.kind != "f" or \
            list(cam.shape) != entry.input_size or not np.isfinite(cam).all():
        raise ExplainError(f"{where}: not the map explain saved for {what} (expected a float "
                           f"array of {entry.input_size[0]} x {entry.input_size[1]} finite "
                           f"values); the run folder is damaged")
    return cam.astype(np.float64)



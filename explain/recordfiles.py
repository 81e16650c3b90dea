"""Record files read back from a run folder (summary.json, items/<image>.json, config.json):
parsed and validated into explain.results' records, one line naming the file when they are
not such records. A shared run folder is anyone's edit: a file that is mostly lists and
objects is refused before it is parsed, validation stops at the first bad element of each
list or mapping, integers are bounded; --resume's kept images are checked against the run."""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Optional, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaValidator

from explain.annotations import MAX_BOXES_PER_IMAGE
from explain.baselines import BASELINES
from explain.config import Config
from explain.errors import ExplainError, first_line
from explain.metrics import TABLE as metric_table
from explain.names import fold, name_problem, quote
from explain.outputs import RunFolder
from explain.readback import container_problem
from explain.results import (FORMAT, NONE_PREDICTED, PICTURE_SUFFIXES, CompareRow,
                             CompareSummary, ImageEntry, ItemFile, RunSummary)


def why(exc: BaseException) -> str:
    """The first line of an error, short: for messages about a damaged file."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}"[:160] if where else first.get("msg", "")[:160]
    return first_line(exc, 160)


MAX_DIGITS = 300  # an integer in a record, as a float can hold it (a config's arch_args may
# hold sys.maxsize; 10**400 passed pydantic, then stopped a float conversion with a traceback)


def _whole(text: str) -> int:
    """An integer of the JSON text; ValueError past MAX_DIGITS digits."""
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


T = TypeVar("T", bound=BaseModel)


def validated(model: type[T], data: Any) -> T:
    """``model.model_validate(data)``, stopping at the first error of every list and mapping
    (pydantic's ``fail_fast``): a record file read back from a shared folder is not trusted,
    and pydantic otherwise makes one error, with its input, for each bad element (a 16 MB
    summary.json of empty lists took 7.3 GB; 48 MB aborted inside pydantic-core)."""
    return _FAIL_FAST[model].validate_python(data)


def _fail_fast(model: type[BaseModel]) -> SchemaValidator:
    """A validator of ``model`` whose lists and mappings stop at their first error. Built at
    import, while no other thread validates: pydantic-core reuses a model class's own
    validator for its schema, so the classes' validators are hidden while it is built."""
    schema = copy.deepcopy(model.__pydantic_core_schema__)
    todo: list[Any] = [schema]
    classes = set()
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if node.get("type") in ("list", "dict", "tuple", "set", "frozenset"):
                node["fail_fast"] = True
            if node.get("type") == "model" and isinstance(node.get("cls"), type):
                classes.add(node["cls"])
            todo.extend(node.values())
        elif isinstance(node, (list, tuple)):
            todo.extend(node)
    kept = {cls: cls.__dict__["__pydantic_validator__"] for cls in classes
            if "__pydantic_validator__" in cls.__dict__}
    try:
        for cls in kept:
            cls.__pydantic_validator__ = None
        return SchemaValidator(schema)
    finally:
        for cls, validator in kept.items():
            cls.__pydantic_validator__ = validator


def _loads(data: bytes) -> Any:
    """A record file's JSON, integers bounded (``_whole``), and refused before parsing when it
    is mostly lists and objects (``readback.container_problem``)."""
    problem = container_problem(data)
    if problem:
        raise ValueError(problem)
    return json.loads(data.decode("utf-8"), parse_int=_whole)


def parse_json(data: bytes, where: str, what: str) -> Any:
    """JSON from a file of a run folder; ExplainError naming the file when it is not JSON
    (or nested past the parser's depth)."""
    try:
        return _loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ExplainError(f"{where}: not {what} of this explain version ({why(exc)}); the "
                           f"run folder is damaged") from None


def check_format(data: Any, where: str) -> None:
    """One line when ``data`` (a summary or item file, read as JSON) was written in another
    FORMAT, as by an earlier version of explain, whose records name no files; or when an
    image holds more boxes than a run takes, said before validation builds them (a 60 MB
    summary of boxes took 1.4 GB to be refused after it)."""
    if not isinstance(data, dict):
        return  # not a mapping: the record's own validation says so
    if data.get("format") != FORMAT:
        was = f"format {quote(data['format'], 20)}" if "format" in data else \
            "no 'format': before 2"
        raise ExplainError(f"{where}: written by another version of explain ({was}; this "
                           f"version reads format {FORMAT}); run the config again, without "
                           f"--resume")
    images = data.get("images") if "images" in data else [data.get("entry")]
    for entry in images if isinstance(images, list) else ():
        boxes = entry.get("boxes") if isinstance(entry, dict) else None
        count = sum(len(b) for b in boxes.values() if isinstance(b, list)) \
            if isinstance(boxes, dict) else 0
        if count > MAX_BOXES_PER_IMAGE:  # as entry_problem says it, after validation
            raise ExplainError(f"{where}: image {quote(str(entry.get('id')))}: {count} boxes, "
                               f"more than a run takes for one image ({MAX_BOXES_PER_IMAGE}); "
                               f"the run folder is damaged")


def parse_item(data: bytes, where: str) -> ItemFile:
    """An item file's bytes; ExplainError naming ``where`` if they are malformed."""
    try:
        raw = _loads(data)
    except (ValueError, RecursionError) as exc:
        raise ExplainError(f"{where}: not an item file of this explain version ({why(exc)}); "
                           f"delete it to recompute that image") from None
    check_format(raw, where)
    try:
        return validated(ItemFile, raw)
    except (ValidationError, RecursionError) as exc:
        raise ExplainError(f"{where}: not an item file of this explain version ({why(exc)}); "
                           f"delete it to recompute that image") from None


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
        guided = f"guided_cam/{rec.method}/{entry.id}__{rec.class_name}"
        if rec.guided_file is not None and \
                rec.guided_file not in [guided + suffix for suffix in PICTURE_SUFFIXES]:
            return f"Guided Grad-CAM file {quote(rec.guided_file)}, expected {quote(guided + ext)}"
        key = (rec.class_name, rec.method)
        seen[key] = seen.get(key, 0) + 1
    for cls in entry.explained_classes():
        for method in methods:
            if seen.get((cls, method)) != 1:
                return f"{seen.get((cls, method), 0)} maps of class {quote(cls)} by {method}"
    return None


def entry_problem(entry: ImageEntry, cfg: Config) -> Optional[str]:
    """What in an image's entry read back from a run folder its run (``cfg``, the config it
    recorded) cannot have written, or None: an image id that is not a safe name, a prediction
    or label that is not a class, a map of another method or class, two maps of one
    class and method, a faithfulness number of a metric it did not run, a probability of a
    class it does not name, more boxes than a run takes. A shared summary.json of 2,000 made-up
    method names x 22,000 boxes (2 MB) asked the report for gigabytes; made-up metric names
    gave every summary.csv and diff.csv row thousands of columns; 3,200 boxes of one label
    (32 methods x 100, each box by one method) in both runs took explain diff's pairing 21 s
    and 2.6 GB an image."""
    methods = {m.name for m in cfg.methods}
    classes = set(cfg.classes)
    names: Any = classes
    if cfg.task == "detection":
        from explain.tasks.records import DetectionNames  # light: no detection engine
        names = DetectionNames(classes)
    # the metrics it ran (a run of an earlier version kept 'null': any of explain's)
    metrics = set(metric_table) if cfg.metrics is None else {m.name for m in cfg.metrics}
    problem = name_problem(entry.id)
    if problem:
        return f"an image id that {problem}"
    told = [entry.predicted, *([entry.label] if entry.label is not None else [])]
    other = next((n for n in told if n not in classes and n != NONE_PREDICTED), None)
    if other is not None:
        return f"a prediction or label {quote(other)}, not a class of its run"
    seen: set[tuple[str, str]] = set()
    for rec in entry.cams:
        if rec.method not in methods or rec.class_name not in names:
            return f"a map of {quote(rec.class_name)} by {quote(rec.method)}, not a class " \
                   f"and method of its run"
        if (rec.class_name, rec.method) in seen:
            return f"two maps of {quote(rec.class_name)} by {quote(rec.method)}"
        seen.add((rec.class_name, rec.method))
        other = next((k for k in rec.faithfulness or () if k not in metrics), None)
        if other is not None:
            return f"a faithfulness number {quote(other)} its run did not compute"
    known = set(metric_table)
    yardsticks: set[tuple[str, str]] = set()
    for base in entry.baselines:
        if base.baseline not in BASELINES or base.class_name not in names or \
                (base.class_name, base.baseline) in yardsticks:
            return f"a baseline {quote(base.baseline)} of {quote(base.class_name)} its run " \
                   f"did not make"
        yardsticks.add((base.class_name, base.baseline))
        other = next((k for k in base.scores if k not in known), None)
        if other is not None:
            return f"a baseline score {quote(other)}, not a metric of explain"
    boxes = len({name for name, _ in seen})  # a detection run's: one name a box explained
    if cfg.task == "detection" and boxes > cfg.detection.max_boxes:
        return f"maps of {boxes} boxes, more than its run explains (detection.max_boxes)"
    other = next((k for k in [*entry.probabilities, *(entry.boxes or ())] if k not in classes),
                 None)
    if other is not None:
        return f"a probability or box of {quote(other)}, not a class of its run"
    boxes = sum(len(b) for b in (entry.boxes or {}).values())
    if boxes > MAX_BOXES_PER_IMAGE:
        return f"{boxes} boxes, more than a run takes for one image ({MAX_BOXES_PER_IMAGE})"
    return _not_yes_or_no(entry)


def _not_yes_or_no(entry: ImageEntry) -> Optional[str]:
    """A finite number of a yes-or-no metric (increase_in_confidence, a baseline's
    pointing_hit) other than 0 or 1 in an entry's maps or baselines, or None: the intervals of
    such means are widened by their Wilson interval, and a shared summary's 2.0 made its
    square root negative (every reader stopped in a traceback: math domain error)."""
    yes_no = {name for name, traits in metric_table.items() if traits.yes_no}
    for scores in [r.faithfulness or {} for r in entry.cams] + [b.scores for b in
                                                                 entry.baselines]:
        for key in yes_no & scores.keys():
            if math.isfinite(scores[key]) and scores[key] not in (0, 1):
                return f"a number {scores[key]:g} of {quote(key)}, not 0 or 1"
    return None


def boxes_outside(entry: ImageEntry) -> Optional[str]:
    """What places a box of an entry (ground truth, a detection's) outside its input pixels,
    or None: a run writes four finite numbers, each clipped to its input's side. The report
    drew a box from its numbers in fixed decimals: a shared summary's -1e306 and 1e306 (6
    characters) were 310 digits in the style of every map of the class (658 KB: 29 MB of
    HTML; ordinary boxes 4 MB), and explain diff paired NaN boxes."""
    h, w = entry.input_size
    boxes = [box for many in (entry.boxes or {}).values() for box in many]
    boxes += [rec.detection.box for rec in entry.cams if rec.detection is not None]
    boxes += [det.box for det in (entry.detections.explained if entry.detections else [])]
    for box in boxes:
        if len(box) != 4 or not all(math.isfinite(v) and 0 <= v <= side
                                    for v, side in zip(box, (w, h, w, h))):
            return f"a box {quote(box[:5], 60)} that is not four numbers inside its {w}x{h} input"
    return None


def check_entries(entries: list[ImageEntry], cfg: Config, where: Any) -> None:
    """One line naming the file (``where``) when an entry holds what its run cannot have
    written (``entry_problem``)."""
    ids: set[str] = set()
    for entry in entries:
        problem = entry_problem(entry, cfg) or boxes_outside(entry) or \
            ("an id another entry has (as a disk ignoring case sees it)"
             if fold(entry.id) in ids else None)
        if problem:
            raise ExplainError(f"{where}: image {quote(entry.id)}: {problem}; the run folder "
                               f"is damaged")
        ids.add(fold(entry.id))


MAX_ITEM_BYTES = 64 * 1024 * 1024  # items/<image>.json: a few kB per map


def kept_entries(run: RunFolder, sources: dict[str, Any], *, cfg: Config, classes: set[str],
                 ext: str) -> tuple[dict[str, ImageEntry], dict[str, list[CompareRow]]]:
    """--resume: the entries of the images an interrupted run finished (their item file was
    written last) and their compare rows, each checked against this run: ``sources`` (image
    id -> its ImageRef), its config, its class names, ``ext`` (the picture extension).
    Its maps and their files must be there, inside the folder; the image's path and label are
    this run's, never what an item file holds."""
    kept, rows, seen = {}, {}, {}
    listed = {f"items/{ident}.json" for ident in sources}
    for rel in (r for r in item_files(run) if r in listed):  # others: images it does not list
        where = str(run.root / rel)
        read = run.read_stat(rel, MAX_ITEM_BYTES)
        if read is None:
            continue  # not a regular file: not one explain wrote
        found, data = read
        first = seen.setdefault((found.st_dev, found.st_ino), rel)
        if first != rel or data is None:  # each parse of a 64 MiB file took 2 GB and 5 s
            raise ExplainError(f"{where}: " + (f"the same file as {first} (a hard link)"
                                               if first != rel else "larger than an item file")
                               + "; the run folder is damaged (delete this item file to "
                               "compute the image again)")
        item = parse_item(data, where)
        entry, ref = item.entry, sources.get(item.entry.id)
        problem = None if rel == f"items/{entry.id}.json" else f"holds image {quote(entry.id)}"
        if problem is None and entry.label != ref.label:
            problem = f"label {quote(entry.label)}, but the image list says {quote(ref.label)}"
        problem = problem or kept_problem(entry, [m.name for m in cfg.methods], classes, ext) \
            or entry_problem(entry, cfg) or boxes_outside(entry) or _missing_file(run, entry)
        if problem:
            raise ExplainError(f"{where}: {problem}; the run folder is damaged (delete this item "
                               f"file to compute the image again)")
        entry.path = str(ref.path)
        kept[entry.id] = entry
        if item.compare:
            rows[entry.id] = own_rows(entry, item.compare)
    return kept, rows


def own_rows(entry: ImageEntry, rows: list[CompareRow]) -> list[CompareRow]:
    """The compare rows of ``entry``'s own maps, one per map (an item file is anyone's edit:
    rows of other images, classes or methods were all kept, ~16x the file's size; --resume
    ended in a traceback on a row of a class not in the run)."""
    maps = {(r.class_name, r.method) for r in entry.cams}
    kept: dict[tuple[str, str], CompareRow] = {}
    for row in rows:
        key = (row.class_name, row.method)
        if row.image == entry.id and key in maps and key not in kept:
            kept[key] = row
    return list(kept.values())


def _missing_file(run: RunFolder, entry: ImageEntry) -> Optional[str]:
    """What says that a file the entry records is not in the run folder, or None."""
    missing = next((f for f in entry.written() if not run.has_file(f)), None)
    if missing is None:
        return None
    kind = "map file" if missing in entry.map_files() else "file"
    return f"its {kind} {quote(missing)} is missing or not a plain file"


def item_files(run: RunFolder) -> list[str]:
    """items/*.json of the run folder, when items/ is a folder (not a link)."""
    folder = run.root / "items"
    if folder.is_symlink() or not folder.is_dir():
        return []
    return sorted(f"items/{p.name}" for p in folder.iterdir() if p.suffix == ".json")


_FAIL_FAST = {model: _fail_fast(model)
              for model in (RunSummary, ItemFile, CompareSummary, Config)}

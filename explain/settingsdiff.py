"""Which settings of an interrupted run's ``config.json`` differ from this run's (``--resume``),
and of two runs' recorded configs (``explain diff``).

The file is a shared run folder's, anyone's edit: it is parsed as the other record files are
(refused before parsing when mostly lists and objects, integers bounded), and compared by
walking both mappings side by side, without recursion, so a setting's dotted name is spelled
out only for the few the message shows. Building every leaf's dotted name (as a flattened
dictionary did) made a key of 8,000 characters nested 100 deep, above 1,500 small leaves, an
800 KB file, take 2.1 GB and 15 s: each leaf carried a copy of the 800 KB path.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

SHOWN_KEYS = 4  # settings named in the message; the rest are counted
KEY_CHARS = 80  # of a dotted name shown
VALUE_CHARS = 40  # of a value shown
MISSING = object()

Path = Optional[tuple[str, "Path"]]  # a dotted name as a linked list: (last key, the rest)


def load_settings(data: bytes) -> Any:
    """``config.json``'s JSON; ValueError (or RecursionError) when it is not a record file."""
    from explain.readback import container_problem
    problem = container_problem(data)
    if problem:
        raise ValueError(problem)
    return json.loads(data.decode("utf-8"))


def _differing(before: Any, now: Any) -> Iterator[tuple[Path, Any, Any]]:
    """(dotted name, value before, value now) of each setting that differs, mappings walked
    side by side in key order with an explicit stack."""
    todo: list[tuple[Path, Any, Any]] = [(None, before, now)]
    while todo:
        path, old, new = todo.pop()
        if isinstance(old, dict) and isinstance(new, dict) and (old or new):
            keys = sorted(set(map(str, old)) | set(map(str, new)), reverse=True)
            todo += [((key, path), old.get(key, MISSING), new.get(key, MISSING))
                     for key in keys]
        elif isinstance(old, dict) and old and new is MISSING:
            todo += [((str(key), path), value, MISSING)
                     for key, value in sorted(old.items(), reverse=True)]
        elif isinstance(new, dict) and new and old is MISSING:
            todo += [((str(key), path), MISSING, value)
                     for key, value in sorted(new.items(), reverse=True)]
        elif _item_wise(old, new):  # a list of sections: name the item and key that differ
            todo += [((f"[{i}]", path), a, b) for i, (a, b) in reversed(list(enumerate(
                zip(old, new))))]
        elif old != new:
            yield path, old, new


def _item_wise(old: Any, new: Any) -> bool:
    """Whether two lists are compared item by item: of one length, holding mappings or lists
    (``metrics: [{name: road_combined, percentiles: [90]}]``), so a message names
    ``metrics[0].percentiles`` where both whole values, cut to VALUE_CHARS, read the same."""
    return (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and old != new and any(isinstance(v, (dict, list)) for v in old + new))


def _dotted(path: Path, limit: int = KEY_CHARS) -> str:
    """A linked dotted name as text, at most ``limit`` characters (its first keys only are
    joined: a shared file's keys may be megabytes)."""
    parts: list[str] = []
    while path is not None:
        parts.append(path[0])
        path = path[1]
    shown, length = [], 0
    for part in reversed(parts):
        shown.append(part[:limit])
        length += len(shown[-1]) + 1
        if length > limit:
            break
    text = ".".join(shown).replace(".[", "[")  # a list item: metrics[0].percentiles
    return text[:limit]


def _root_first(path: Path) -> tuple[str, ...]:
    """A linked dotted name's keys, the outermost first."""
    parts: list[str] = []
    while path is not None:
        parts.append(path[0])
        path = path[1]
    return tuple(reversed(parts))


def changes(before: Any, now: Any, *, skip: tuple[str, ...] = (), shown: int = SHOWN_KEYS,
            limit: int = KEY_CHARS) -> tuple[list[tuple[str, Any, Any]], int]:
    """The first ``shown`` settings that differ as (dotted name cut to ``limit`` characters,
    value before, value now; MISSING where unset), and how many differ in all; the dotted
    names in ``skip``, and the settings inside them, are left out. Walked as
    ``settings_differ`` walks (explain diff's two recorded configs flattened into dotted
    names: two 615 KB summaries of a long key nested 15 deep above 1,000 leaves made a 600 MB
    diff.html, 3.6 GB held)."""
    found, total = [], 0
    # each name's keys: a setting is skipped when its keys start with them, its path walked
    # once (each name walked every path to its root: 25 names over a shared summary's 100,000
    # model arguments 14 deep took 4.6 s of CPU, 0.3 s before there were 25)
    names = {tuple(name.split(".")) for name in skip}
    lengths = sorted({len(name) for name in names})
    for path, old, new in _differing(before, now):
        parts = _root_first(path) if names else ()
        if any(parts[:k] in names for k in lengths):
            continue
        total += 1
        if len(found) < shown:
            found.append((_dotted(path, limit), old, new))
    return found, total


def _shown(value: Any, start: int = 0) -> str:
    """A setting's value for a one-line message: as JSON, cut to VALUE_CHARS characters from
    ``start`` (a '...' in front when that is past its beginning)."""
    if value is MISSING:
        return "not set"
    text = json.dumps(value, default=str)
    if start and len(text) > VALUE_CHARS:
        text = "..." + text[start:]
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS - 3] + "..."


def _start(old: Any, new: Any) -> int:
    """Where both values' texts are shown from: a little before their first difference when
    cutting both at VALUE_CHARS would show the same text (two method lists that part after
    their first two methods read 'was [{"name": "gradcam"}, {"name": "layer...' twice)."""
    if old is MISSING or new is MISSING:
        return 0
    a, b = (json.dumps(v, default=str)[:1_000_000] for v in (old, new))
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return 0 if first < VALUE_CHARS - 3 else first - VALUE_CHARS // 2


def settings_differ(before: Any, now: dict[str, Any]) -> Optional[str]:
    """The settings that differ, named for a message (the first SHOWN_KEYS, the rest counted),
    or None when they are the same."""
    shown, more = [], 0
    for path, old, new in _differing(before, now):
        if len(shown) < SHOWN_KEYS:
            start = _start(old, new)
            shown.append(f"{_dotted(path)} (was {_shown(old, start)}, now {_shown(new, start)})")
        else:
            more += 1
    if not shown:
        return None
    return ", ".join(shown) + (f" (+{more} more)" if more else "")

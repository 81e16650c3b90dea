"""Paths as a shared report page shows them: from the config's folder, as a config names
them, so a page someone mails does not carry their home folder (summary.json and config.json
keep the full paths the run read)."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path, PureWindowsPath
from typing import Optional


def shown_path(path: str, config_file: str) -> str:
    """A path as the page shows it: from the config's folder, as a config names it
    ('pics/cat.jpg', '../results/demo'), so a shared page does not carry the sharer's home
    folder; one more than two folders above it, on another drive, of another system (a
    Windows path read on POSIX), or without a config file (an unfinished run's rebuild), by
    its last folder and name ('.../datasets/cat.jpg'). A relative path is a config's value,
    from the config's folder (not the working directory)."""
    parts = [p for p in re.split(r"[\\/]+", str(path)) if p]  # a Windows run's paths too
    tail = ".../" + "/".join(parts[-2:])
    folder = _folder(str(config_file))
    if folder is None or (PureWindowsPath(path).is_absolute() and not Path(path).is_absolute()):
        return tail  # os.path.relpath took C:\\... for a path of the working folder
    if Path(path).is_absolute():
        target = Path(os.path.normpath(path)).parts
        if os.path.normcase(target[0]) != os.path.normcase(folder[0]):
            return tail  # another drive
        rel = _relative(target, folder)
    else:  # a config's own value ('../models/x.pth'), from the config's folder
        rest = Path(os.path.normpath(path)).parts
        up = next(n for n in range(len(rest) + 1) if rest[n:n + 1] != (os.pardir,))
        if up >= len(folder):  # above the root
            return tail
        rel = _relative(rest[up:], folder[len(folder) - up:])  # from the folder 'up' above
    return tail if rel is None else rel


def _relative(target: tuple[str, ...], folder: tuple[str, ...]) -> Optional[str]:
    """``target`` from ``folder`` (both absolute and normalised, as parts), or None when it is
    more than two folders above it. The work is the shorter one's length
    (os.path.relpath normalised the folder again for each path)."""
    same = 0
    while same < min(len(folder), len(target)) and \
            os.path.normcase(folder[same]) == os.path.normcase(target[same]):
        same += 1
    ups = len(folder) - same
    if ups >= 3:
        return None
    rel = [os.pardir] * ups + list(target[same:])
    return os.path.join(*rel) if rel else os.curdir


@lru_cache(maxsize=8)
def _folder(config_file: str) -> Optional[tuple[str, ...]]:
    """The parts of the config's folder, normalised, or None when the config file is not an
    absolute path. Worked out once per config: os.path.relpath parsed a shared summary's 40 KB
    ``config_file`` again for each path of a note (2,000 of them: 22 s for one report)."""
    if not Path(config_file).is_absolute():
        return None
    return Path(os.path.normpath(Path(config_file).parent)).parts


# an absolute path at the start or after a space, bracket or quote, up to the next space
_ABSOLUTE = re.compile(r"(?<![^\s(\['\"])(?:/|[A-Za-z]:\\)[^\s'\"]+")


def shown_text(text: str, config_file: str) -> str:
    """A note or a reason with each absolute path in it as ``shown_path`` shows one: a
    labelled tree's stray file was 'not in a class folder of /home/alice/...', and its links'
    note named the tree whole (summary.json keeps them so)."""
    def shown(found: re.Match) -> str:
        path = found.group().rstrip(".,;:)")
        return shown_path(path, config_file) + found.group()[len(path):]
    return _ABSOLUTE.sub(shown, str(text))

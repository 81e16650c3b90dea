"""Paths as a shared report page shows them: from the config's folder, as a config names
them, so a page someone mails does not carry their home folder (summary.json and config.json
keep the full paths the run read)."""

from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath


def shown_path(path: str, config_file: str) -> str:
    """A path as the page shows it: from the config's folder, as a config names it
    ('pics/cat.jpg', '../results/demo'), so a shared page does not carry the sharer's home
    folder; one more than two folders above it, on another drive, or without a config file
    (an unfinished run's rebuild), by its last folder and name ('.../datasets/cat.jpg'). A
    relative path is a config's value, from the config's folder (not the working directory)."""
    parts = [p for p in re.split(r"[\\/]+", str(path)) if p]  # a Windows run's paths too
    tail = ".../" + "/".join(parts[-2:])
    if not Path(config_file).is_absolute():
        return tail
    if not (Path(path).is_absolute() or PureWindowsPath(path).is_absolute()):
        path = str(Path(config_file).parent / path)  # a config's own value ('../models/x.pth')
    try:
        rel = os.path.relpath(path, Path(config_file).parent)
    except ValueError:  # another drive
        return tail
    return tail if Path(rel).parts[:3] == ("..",) * 3 else rel


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

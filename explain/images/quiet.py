"""Pillow and OpenCV as explain reads images with them, and only while it does.

Pillow refuses a header of over twice its ``MAX_IMAGE_PIXELS`` (179 M pixels) as a
decompression bomb, which read as 'not a readable image' for a file within
preprocess.max_pixels; explain bounds the pixels itself, from the header, before anything is
decoded. Pillow's warnings on a header (one per bad TIFF or EXIF tag: 19,800 for a 790 KB TIFF)
and OpenCV's log lines (libtiff's: 5 lines for one bad TIFF in a folder) would land on the
terminal beside the one line that says the file is skipped, and why.

These are settings of the whole process. They were set when explain was imported, so a
notebook's own ``Image.open`` lost Pillow's bomb bound and its warnings: ``reading`` changes
them while the first of explain's readers (threads, possibly several) is inside, and puts the
user's back when the last one leaves.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import cv2
from PIL import Image

_LOCK = threading.Lock()
_inside: list[Any] = [0, None]  # readers inside; what the first one replaced
SILENCED = (("ignore", UserWarning, r"PIL\."),  # (action, category, module) of the filters
            ("ignore", Image.DecompressionBombWarning, None))  # max_pixels says it


@contextmanager
def reading() -> Iterator[None]:
    """The block reads images: Pillow without its bomb bound (explain's max_pixels holds) and
    its header warnings, OpenCV without its log lines."""
    with _LOCK:
        if _inside[0] == 0:
            _inside[1] = (_filtered(), Image.MAX_IMAGE_PIXELS, cv2.utils.logging.getLogLevel())
            Image.MAX_IMAGE_PIXELS = None
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _inside[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            if _inside[0] > 0:  # 0: a fork in this block made this process (_forked)
                _inside[0] -= 1
                if _inside[0] == 0:
                    _restore()


def _restore() -> None:
    """The user's settings back: what the first reader replaced."""
    added, bound, level = _inside[1]
    Image.MAX_IMAGE_PIXELS = bound
    cv2.utils.logging.setLogLevel(level)
    _unfiltered(added)


def _forked() -> None:
    """A child forked while readers were inside (a notebook's multiprocessing, a data loader's
    worker): none of them runs on in it, so nobody would leave and put the user's settings
    back; the child starts with them, and with a lock no other thread holds."""
    global _LOCK
    _LOCK = threading.Lock()
    if _inside[0] > 0:
        _inside[0] = 0
        _restore()


if hasattr(os, "register_at_fork"):  # the lock is not held mid-change as the child is made
    os.register_at_fork(before=lambda: _LOCK.acquire(), after_in_parent=lambda: _LOCK.release(),
                        after_in_child=_forked)


def _filtered() -> tuple[list, tuple]:
    """Pillow's header warnings ignored: SILENCED put in front of the process's filter list,
    and (that list, those entries) returned for ``_unfiltered``. Not catch_warnings: it puts
    back a copy of the whole list, so another thread's catch_warnings (the concepts writer's
    'ignore', a library's) entered before and left while a reader was inside came back as
    'ignore every warning' for the rest of the process."""
    added = tuple((action, None, category, module and re.compile(module), 0)
                  for action, category, module in SILENCED)
    warnings.filters[:0] = added
    _mutated()
    return warnings.filters, added


def _unfiltered(added: tuple[list, tuple]) -> None:
    """``_filtered``'s entries taken out (by identity) of the list they were put in and of
    the process's list now (a catch_warnings meanwhile may have put back a copy holding
    them)."""
    where, entries = added
    for filters in {id(f): f for f in (where, warnings.filters)}.values():
        filters[:] = [f for f in filters if not any(f is e for e in entries)]
    _mutated()


def _mutated() -> None:
    """The warnings module told that its filters changed (its caches of what was shown)."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()

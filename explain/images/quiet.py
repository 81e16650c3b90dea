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

import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import cv2
from PIL import Image

_LOCK = threading.Lock()
_inside: list[Any] = [0, None]  # readers inside; what the first one replaced


@contextmanager
def reading() -> Iterator[None]:
    """The block reads images: Pillow without its bomb bound (explain's max_pixels holds) and
    its header warnings, OpenCV without its log lines."""
    with _LOCK:
        if _inside[0] == 0:
            caught = warnings.catch_warnings()
            caught.__enter__()
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            _inside[1] = (caught, Image.MAX_IMAGE_PIXELS, cv2.utils.logging.getLogLevel())
            Image.MAX_IMAGE_PIXELS = None
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _inside[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _inside[0] -= 1
            if _inside[0] == 0:
                caught, bound, level = _inside[1]
                Image.MAX_IMAGE_PIXELS = bound
                cv2.utils.logging.setLogLevel(level)
                caught.__exit__(None, None, None)

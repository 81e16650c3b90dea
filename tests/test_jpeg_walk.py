"""A JPEG's segments walked before decoding (explain.images.jpeg): bytes that are no marker
between two segments (an old editor's padding) are skipped as libjpeg and Pillow skip them,
so such a photo decodes to the pixels every other program shows; the skip stays bounded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from explain.config import Preprocess
from explain.images import ImageError, ImageRef, jpeg_complete, precheck, read_rgb
from explain.images.jpeg import JPEG_JUNK, TRUNCATED, first_scan, without_padding

CAT = Path(__file__).resolve().parent.parent / "images" / "cat.jpg"


def _padded(junk: bytes) -> tuple[bytes, bytes]:
    """(clean JPEG, the same with ``junk`` after its first segment, APP0)."""
    ok, buf = cv2.imencode(".jpg", cv2.imread(str(CAT))[:64, :96])
    data = bytes(buf)
    assert ok and data[2:4] == b"\xff\xe0"
    cut = 4 + int.from_bytes(data[4:6], "big")
    return data, data[:cut] + junk + data[cut:]


def test_padding_between_segments_decodes_to_the_clean_files_pixels(tmp_path, capfd):
    """The same pixels, and libjpeg's 'Corrupt JPEG data: 7 extraneous bytes' line is not
    printed at each decode (the padding is cut out before OpenCV sees the file)."""
    clean, padded = _padded(b"\x00" * 7)
    assert without_padding(padded) == clean and without_padding(clean) is clean
    path = tmp_path / "padded.jpg"
    path.write_bytes(padded)
    assert jpeg_complete(padded)
    assert first_scan(lambda at, n: padded[at:at + n]) == \
        first_scan(lambda at, n: clean[at:at + n]) + 7
    assert precheck(ImageRef("padded", path, from_folder=False), Preprocess()) == (64, 96)
    want = cv2.cvtColor(cv2.imdecode(np.frombuffer(clean, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)
    capfd.readouterr()
    assert np.array_equal(read_rgb(path, 10**6), want)
    assert capfd.readouterr().err == ""


def test_padding_without_a_marker_nearby_is_still_refused(tmp_path):
    """Past JPEG_JUNK bytes without an FF the walk stops (the file reads as truncated), and
    it never asked for more than JPEG_JUNK bytes at a time."""
    _, padded = _padded(b"\x00" * (JPEG_JUNK + 10))
    asked = []

    def read(at: int, n: int) -> bytes:
        asked.append(n)
        return padded[at:at + n]
    assert first_scan(read) is None and max(asked) <= JPEG_JUNK
    path = tmp_path / "junk.jpg"
    path.write_bytes(padded)
    with pytest.raises(ImageError, match=TRUNCATED.split(" (")[0]):
        precheck(ImageRef("junk", path, from_folder=False), Preprocess())

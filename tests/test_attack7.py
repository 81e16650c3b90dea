"""The seventh attack (a review session's findings): inputs and shared files that still asked
for unbounded time or memory, or ran or read what they should not."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from test_attack5 import _progressive
from explain.config import Preprocess
from explain.images import ImageRef, prepare
from explain.images.reading import (MAX_JPEG_SCANS, ImageError, decode_stored, precheck,
                                    read_rgb)


def _tiff_of_one_strip(strip: bytes, side: int, compression: int = 7) -> bytes:
    """A grey side x side TIFF whose one strip is ``strip`` (Compression ``compression``)."""
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, compression), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, side), (279, 4, len(strip))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        out += struct.pack("<HHIHH" if kind == 3 else "<HHII", tag, kind, 1, value,
                           *((0,) if kind == 3 else ()))
    return out + b"\x00\x00\x00\x00" + strip


def test_a_tiff_of_jpeg_strips_is_held_to_the_jpeg_bounds(tmp_path):
    """libtiff decodes a JPEG strip scan after scan, as a JPEG file is decoded: a TIFF header
    around a JPEG of repeated scans passed the JPEG checks (they looked at files starting
    FF D8 only) and took minutes. Its strips are checked now, in every reading path; a
    JPEG-compressed TIFF as Pillow writes it still decodes."""
    bomb = _progressive(tmp_path, MAX_JPEG_SCANS + 1).path.read_bytes()
    path = tmp_path / "bomb.png"  # OpenCV decodes by content, not by the name
    path.write_bytes(_tiff_of_one_strip(bomb, 64))
    ref, spec = ImageRef("bomb", path, from_folder=False), Preprocess(size=[32, 32])
    for step in (precheck, prepare):
        with pytest.raises(ImageError, match=rf"bomb.png: a JPEG strip or tile of this TIFF: "
                                             rf"more than {MAX_JPEG_SCANS} scans in one JPEG"):
            step(ref, spec)
    assert decode_stored(path.read_bytes()) is None
    old = tmp_path / "old.tif"
    old.write_bytes(_tiff_of_one_strip(bomb, 64, compression=6))
    with pytest.raises(ImageError, match="old-style JPEG compression in a TIFF"):
        read_rgb(old, 10**6)
    photo = (np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)
    for compression in ("jpeg", "tiff_deflate"):
        good = tmp_path / f"good_{compression}.tif"
        Image.fromarray(photo).save(good, compression=compression)
        back = read_rgb(good, 10**6)
        assert back.shape == (96, 80, 3)
        assert np.abs(back.astype(int) - photo).mean() < (12 if compression == "jpeg" else 1e-9)

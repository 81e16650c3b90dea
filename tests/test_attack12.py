"""The twelfth attack: what a shared file could still print or show that misleads (a PNG's
colour-profile name that libpng prints raw to the terminal, ...)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from explain.errors import ExplainError

FORGED = b"\x1b[2J\x1b[31mexplain: error: FORGED\x1b[0m"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def profiled_png(path: Path, gray: bool = False, name: bytes = FORGED) -> Path:
    """A 32 x 32 PNG with a broken colour profile (iCCP) named ``name``: libpng warns about
    it on stderr, naming the profile as it is."""
    pixels = np.full((32, 32) if gray else (32, 32, 3), 128, np.uint8)
    png = cv2.imencode(".png", pixels)[1].tobytes()
    profile = struct.pack(">I", 100) + b"\x00" * 200  # a profile of 100 bytes: too short
    iccp = _chunk(b"iCCP", name + b"\x00\x00" + zlib.compress(profile, 0))
    path.write_bytes(png[:33] + iccp + png[33:])  # after the signature and IHDR
    return path


def test_a_png_profile_name_reaches_no_terminal(tmp_path, capfd):
    """libpng prints 'libpng warning: iCCP: profile '<name>': 64h: too short' straight to
    file descriptor 2, past every escape of explain's own lines: a shared image (or a picture
    of a shared run folder, or a reference map) cleared the screen and forged a line. Now the
    profile never reaches libpng, and the picture decodes as before."""
    from explain.compare import read_reference
    from explain.images.reading import STORED_MAX_PIXELS, decode_stored, read_rgb
    path = profiled_png(tmp_path / "evil.png")
    assert read_rgb(path, 10**6).shape == (32, 32, 3)
    assert decode_stored(path.read_bytes(), max_pixels=STORED_MAX_PIXELS).shape == (32, 32, 3)
    gray = profiled_png(tmp_path / "ref.png", gray=True)
    assert read_reference(gray).shape == (32, 32)
    err = capfd.readouterr().err
    assert "\x1b" not in err and "FORGED" not in err, err


def test_a_png_of_endless_chunks_before_its_image_is_refused(tmp_path):
    from explain.images.reading import ImageError, read_rgb
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    path = tmp_path / "chunks.png"
    path.write_bytes(png[:33] + _chunk(b"tEXt", b"a\x00b") * 20_000 + png[33:])
    with pytest.raises(ImageError, match="more than 10000 chunks before the PNG's image data"):
        read_rgb(path, 10**6)
    assert isinstance(ImageError("x"), ExplainError)

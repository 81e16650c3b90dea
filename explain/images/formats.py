"""What a format's decoder holds beyond the pixels its header gives, which is what
``preprocess.max_pixels`` and a picture's size are checked against (explain.images.reading).

- A TIFF's tiles: OpenCV decodes a tile at a time into a buffer of the whole tile, and
  libtiff takes any tile size the file gives, so a 261 KB TIFF of 8 x 8 pixels stored as one
  16384 x 16368 tile held 1 GB and took 0.9 s of CPU to decode, and one of 2896 x 2896 pixels
  in 1 x 1 tiles (8.4 million, 67 MB) took 12.8 s (a photo's decoding: 0.1 s). The TIFF
  standard makes tiles multiples of 16 a side; a writer's are 256 or 512 (libtiff, GDAL),
  larger than a small image at most.
- A JPEG 2000 file's tiles: OpenJPEG sets up every tile the codestream's SIZ gives before
  any data (12 KB each), so an 80-byte file of 4000 x 4000 pixels in 16 x 16 tiles held
  770 MB and 0.7 s of CPU, then failed to decode (a writer's tiles: one, or 256 to 1024 a
  side); more than MAX_J2K_TILES tiles are one line.
- An AVIF file is refused: its header's size (the ``ispe`` box, which Pillow reads) need not
  be its AV1 picture's, which OpenCV's decoder makes whole, then crops: a 4 KB file said
  16 x 16 and held 3.4 GB and 4.6 s of CPU (16384 x 16384 decoded), under any file name (a
  folder's ``.jpg``). AVIF is none of explain's image suffixes (explain.images.found).
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from PIL import Image

TILE_WIDTH, TILE_LENGTH = 322, 323  # the TIFF tags
MIN_TILE_SIDE = 16
TILE_PIXELS = 2**20  # a tile may hold this many pixels, or the image's when it has more
UNBOUNDED = {"AVIF": "an AVIF file, whose header's size need not be the size its AV1 data "
                     "decodes to; convert it to PNG or JPEG"}


def header_problem(header: Image.Image) -> Optional[str]:
    """Why a file is refused though its header's pixels are within bounds (a TIFF's tiles,
    an AVIF file), or None."""
    if header.format in UNBOUNDED:
        return UNBOUNDED[header.format]
    if header.format == "JPEG2000":
        return j2k_tile_problem(header.fp)
    return tile_problem(header)


def tile_problem(header: Image.Image) -> Optional[str]:
    """Why a TIFF's tiles are refused (smaller than 16 a side, or holding more pixels than
    TILE_PIXELS and than the image), or None: a stripped TIFF or another format."""
    tags = getattr(header, "tag_v2", None) if header.format == "TIFF" else None
    if tags is None or (TILE_WIDTH not in tags and TILE_LENGTH not in tags):
        return None
    width, length = (_side(tags.get(tag)) for tag in (TILE_WIDTH, TILE_LENGTH))
    if min(width, length) < MIN_TILE_SIDE:
        return (f"a TIFF of {width} x {length} tiles; the TIFF standard's are multiples of "
                f"{MIN_TILE_SIDE} a side (re-save it)")
    if width * length > max(TILE_PIXELS, header.size[0] * header.size[1]):
        return (f"a TIFF of {header.size[0]} x {header.size[1]} pixels in tiles of {width} x "
                f"{length}, decoded a whole tile at a time (re-save it)")
    return None


def _side(value: object) -> int:
    """A tile side as libtiff reads the tag (its first value), 0 when it is none."""
    if isinstance(value, tuple):
        value = value[0] if value else 0
    return value if isinstance(value, int) else 0


MAX_J2K_TILES = 4096  # a 40 MP image in 128 x 128 tiles has 2,500
MAX_JP2_BOXES = 64  # boxes before a JP2 file's codestream (a writer's: 3 or 4)


def j2k_tile_problem(f: Any) -> Optional[str]:
    """Why a JPEG 2000 file's tiles are refused (more than MAX_J2K_TILES, or a tile of no
    pixels), or None; ``f``: the file, read at offsets (a raw codestream, or a JP2 file whose
    codestream box is among its first MAX_JP2_BOXES)."""
    at = _codestream(f)
    siz = f.seek(at) is not None and f.read(42) if at >= 0 else b""
    if len(siz) < 42 or siz[:4] != b"\xff\x4f\xff\x51":
        return "a JPEG 2000 file whose codestream explain cannot find; convert it to PNG"
    xsiz, ysiz, _, _, xtsiz, ytsiz, xtosiz, ytosiz = struct.unpack(">8I", siz[8:40])
    if not xtsiz or not ytsiz or xtosiz > xsiz or ytosiz > ysiz:
        return "a JPEG 2000 file of tiles of no pixels; convert it to PNG"
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    if tiles > MAX_J2K_TILES:
        return (f"a JPEG 2000 file in {tiles} tiles of {xtsiz} x {ytsiz}, more than "
                f"{MAX_J2K_TILES} (OpenJPEG sets up each before decoding); re-save it")
    return None


def _codestream(f: Any) -> int:
    """Where a JPEG 2000 file's codestream starts: 0 for a raw one, past its box's header in
    a JP2 file; -1 when it is not among the first MAX_JP2_BOXES boxes."""
    f.seek(0)
    if f.read(2) == b"\xff\x4f":
        return 0
    at = 0
    for _ in range(MAX_JP2_BOXES):
        f.seek(at)
        head = f.read(16)
        if len(head) < 8:
            return -1
        size, kind = int.from_bytes(head[:4], "big"), head[4:8]
        skip = 16 if size == 1 else 8
        if kind == b"jp2c":
            return at + skip
        size = int.from_bytes(head[8:16], "big") if size == 1 else size
        if size < skip:
            return -1
        at += size
    return -1

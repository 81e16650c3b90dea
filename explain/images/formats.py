"""What a format's decoder holds beyond the pixels its header gives, which is what
``preprocess.max_pixels`` and a picture's size are checked against (explain.images.reading).

- A TIFF's tiles: OpenCV decodes a tile at a time into a buffer of the whole tile, and
  libtiff takes any tile size the file gives, so a 261 KB TIFF of 8 x 8 pixels stored as one
  16384 x 16368 tile held 1 GB and took 0.9 s of CPU to decode, and one of 2896 x 2896 pixels
  in 1 x 1 tiles (8.4 million, 67 MB) took 12.8 s (a photo's decoding: 0.1 s). The TIFF
  standard makes tiles multiples of 16 a side; a writer's are 256 or 512 (libtiff, GDAL),
  larger than a small image at most.
- A JPEG 2000 file's tiles, code-blocks, precincts and packets (explain.images.j2k): an
  80-byte file of 4000 x 4000 pixels in 16 x 16 tiles held 770 MB, a 124-byte file of
  2 x 2 precincts 8.8 GB, one of 65,535 layers 12.9 s of CPU.
- An AVIF file is refused: its header's size (the ``ispe`` box, which Pillow reads) need not
  be its AV1 picture's, which OpenCV's decoder makes whole, then crops: a 4 KB file said
  16 x 16 and held 3.4 GB and 4.6 s of CPU (16384 x 16384 decoded), under any file name (a
  folder's ``.jpg``). AVIF is none of explain's image suffixes (explain.images.found).
- A file whose header Pillow reads as one format and OpenCV decodes as another: Pillow tries
  every plugin it has, Kodak PhotoCD's (``PCD_IPI`` at byte 2048, a fixed 768 x 512) and
  TGA's (no signature) among them, and OpenCV picks its decoder by the first bytes alone. A
  9 MB ``photo.jpg`` of a Radiance HDR picture (``#?RADIANCE``, 12000 x 12000 pixels of
  run-length data) with ``PCD_IPI`` in a header comment was 768 x 512 to Pillow and held
  2.2 GB to decode (32767 x 32767 in 68 MB: about 16 GB). A file is read only as a format
  both decode, starting with that format's own signature (``SIGNATURES``), so the decoder
  OpenCV picks is the one whose header Pillow read.
"""

from __future__ import annotations

from typing import Optional

from PIL import Image

from explain.images.j2k import MAX_J2K_TILES, j2k_problem

TILE_WIDTH, TILE_LENGTH = 322, 323  # the TIFF tags
MIN_TILE_SIDE = 16
TILE_PIXELS = 2**20  # a tile may hold this many pixels, or the image's when it has more
__all__ = ["MAX_J2K_TILES", "header_problem", "tile_problem"]
UNBOUNDED = {"AVIF": "an AVIF file, whose header's size need not be the size its AV1 data "
                     "decodes to; convert it to PNG or JPEG"}


SIGNATURES: dict[str, tuple[bytes, ...]] = {  # Pillow's format: the first bytes OpenCV reads
    "JPEG": (b"\xff\xd8\xff",), "MPO": (b"\xff\xd8\xff",), "PNG": (b"\x89PNG\r\n\x1a\n",),
    "BMP": (b"BM",), "GIF": (b"GIF87a", b"GIF89a"), "WEBP": (b"RIFF",),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "SUN": (b"\x59\xa6\x6a\x95",),
    "PPM": tuple(b"P%d%c" % (kind, space) for kind in range(1, 7) for space in b" \t\n\v\f\r")
    + (b"Pf\n",),
    "JPEG2000": (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"),
    "AVIF": (b"",),  # refused below, by its own reason
}
SIGNATURE_BYTES = 12  # the longest signature's, and WebP's "WEBP" at 8


def header_problem(header: Image.Image, start: bytes) -> Optional[str]:
    """Why a file is refused though its header's pixels are within bounds (a format OpenCV
    would decode by another decoder, a TIFF's tiles, an AVIF file), or None. ``start``: the
    file's first SIGNATURE_BYTES bytes."""
    known = SIGNATURES.get(header.format or "")
    if known is None:
        return (f"a {header.format or 'picture'} file by its header, which explain does not "
                f"read; save it as PNG or JPEG")
    if not start.startswith(known) or (header.format == "WEBP" and start[8:12] != b"WEBP"):
        return (f"its header reads as {header.format} but the file does not start as one "
                f"(another decoder would read its pixels); save it as PNG or JPEG")
    if header.format in UNBOUNDED:
        return UNBOUNDED[header.format]
    if header.format == "JPEG2000":
        return j2k_problem(header.fp)
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

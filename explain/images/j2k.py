"""What OpenJPEG (OpenCV's JPEG 2000 decoder, for a file of that format under any name) sets
up and visits for a codestream, read from its markers before it is decoded
(explain.images.formats): what ``preprocess.max_pixels`` does not see.

- Tiles: OpenJPEG sets up every tile the SIZ gives before any data (12 KB each): an 80-byte
  file of 4000 x 4000 pixels in 16 x 16 tiles held 770 MB; more than MAX_J2K_TILES are one
  line (the twenty-seventh attack).
- Code-blocks and precincts: each of a tile's resolutions, bands and components is cut into
  precincts (COD/COC give their size, down to 1 x 1 in a band) and code-blocks (down to 4 x 4),
  and OpenJPEG keeps a structure of about 530 bytes for each: a 124-byte file of 1000 x 1000
  RGB pixels with 2 x 2 precincts held 1.7 GB and 2.5 s of CPU (and decoded), 4000 x 4000
  8.8 GB (a writer's 64 x 64 code-blocks: 62 MB, 0.03 s). At most MIN_J2K_BLOCKS, or one per
  SAMPLES_PER_BLOCK samples of the image (those structures then hold about what the decoded
  samples do).
- Packets: OpenJPEG visits a packet per layer, precinct and component (and keeps a flag for
  each), data or none: a 124-byte file of 4000 x 4000 RGB pixels in 128 x 128 precincts and
  65,535 layers (COD allows them) took 12.9 s of CPU and 2.4 GB. At most MAX_J2K_PACKETS
  (a writer's: a few layers, a precinct or a few hundred per resolution).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional, Union

MAX_J2K_TILES = 4096  # a 40 MP image in 128 x 128 tiles has 2,500
MAX_JP2_BOXES = 64  # boxes before a JP2 file's codestream (a writer's: 3 or 4)
MAX_J2K_SEGMENTS = 20_000  # marker segments walked (a writer's: a few, and a few per tile)
MAX_J2K_STYLES = 256  # distinct coding styles (COD, COC) in a codestream (a writer's: 1 to 4)
MIN_J2K_BLOCKS = 2**18  # code-blocks and precincts any image may have (about 140 MB)
SAMPLES_PER_BLOCK = 128  # past MIN_J2K_BLOCKS (a writer's code-blocks: 1,024 to 4,096)
MAX_J2K_PACKETS = 2**22  # layers x precincts x components (x progression changes), all tiles
MAX_POCS = 32  # progression changes of a tile (OpenJPEG's J2K_MAX_POCS)
Style = tuple[int, int, int, tuple[int, ...]]  # levels, code-block exponents, precincts (yx)


@dataclass
class _Coding:
    """What the codestream's COD, COC and POC segments ask for, over all its tiles."""
    styles: set[Style] = field(default_factory=set)
    layers: int = 1
    pocs: int = 0


def j2k_problem(f: Any) -> Optional[str]:
    """Why a JPEG 2000 file is refused before OpenJPEG decodes it (see the module), or None;
    ``f``: the file, read at offsets (a raw codestream, or a JP2 file whose codestream box is
    among its first MAX_JP2_BOXES)."""
    at = _codestream(f)
    siz = f.seek(at) is not None and f.read(42) if at >= 0 else b""
    if len(siz) < 42 or siz[:4] != b"\xff\x4f\xff\x51":
        return "a JPEG 2000 file whose codestream explain cannot find; convert it to PNG"
    xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz = struct.unpack(">8I", siz[8:40])
    comps = int.from_bytes(siz[40:42], "big")
    if not xtsiz or not ytsiz or xtosiz > xsiz or ytosiz > ysiz:
        return "a JPEG 2000 file of tiles of no pixels; convert it to PNG"
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    if tiles > MAX_J2K_TILES:
        return (f"a JPEG 2000 file in {tiles} tiles of {xtsiz} x {ytsiz}, more than "
                f"{MAX_J2K_TILES} (OpenJPEG sets up each before decoding); re-save it")
    coding = _walk(f, at, comps >= 257)
    if isinstance(coding, str):
        return coding
    width, height = max(xsiz - xosiz, 0), max(ysiz - yosiz, 0)
    tile = (min(xtsiz, width), min(ytsiz, height))
    units = [_units(tile, style) for style in coding.styles] or [(0, 0)]
    blocks = tiles * comps * max(u[0] for u in units)
    limit = max(MIN_J2K_BLOCKS, width * height * comps // SAMPLES_PER_BLOCK)
    if blocks > limit:
        return (f"a JPEG 2000 file of {blocks} code-blocks and precincts for {width} x {height} "
                f"pixels, more than {limit} (OpenJPEG sets up each before decoding); re-save it")
    packets = tiles * comps * coding.layers * max(u[1] for u in units) * \
        min(max(coding.pocs, 1), MAX_POCS)
    if packets > MAX_J2K_PACKETS:
        return (f"a JPEG 2000 file of {packets} packets ({coding.layers} layers), more than "
                f"{MAX_J2K_PACKETS} (OpenJPEG visits each while decoding); re-save it")
    return None


def _ceil(size: int, exponent: int) -> int:
    return -(-size >> exponent)


def _spans(size: int, exponent: int) -> int:
    """How many cells of 2**exponent a run of ``size`` pixels touches at most, wherever the
    grid falls (one for a run of none: OpenJPEG still sets one up)."""
    return _ceil(size - 1, exponent) + 1 if size > 1 else 1


def _units(tile: tuple[int, int], style: Style) -> tuple[int, int]:
    """One tile-component's code-blocks (each band's precincts cut by the code-block size; a
    precinct of a band smaller than a code-block is one) and precincts (one packet a layer),
    counted from above: the band's or resolution's pixels wherever the grids fall."""
    levels, xcb, ycb, precincts = style
    blocks = packets = 0
    for r in range(levels + 1):
        width, height = (_ceil(side, levels - r) for side in tile)
        ppx, ppy = (precincts[r] & 15, precincts[r] >> 4) if r < len(precincts) else (15, 15)
        packets += _spans(width, ppx) * _spans(height, ppy)
        bands, shift = (1, 0) if r == 0 else (3, 1)
        cbw, cbh = min(xcb + 2, max(ppx - shift, 0)), min(ycb + 2, max(ppy - shift, 0))
        blocks += bands * _spans(_ceil(width, shift), cbw) * _spans(_ceil(height, shift), cbh)
    return blocks, packets


def _walk(f: Any, at: int, wide: bool) -> Union[_Coding, str]:
    """The coding styles, layers and progression changes of the main header and every
    tile-part header (a tile-part's Psot leads to the next), or why the walk is refused."""
    coding, pos, tile_part, psot = _Coding(), at + 2, at, 0
    for _ in range(MAX_J2K_SEGMENTS):
        f.seek(pos)
        head = f.read(12)
        if len(head) < 4 or head[0] != 0xFF or head[1] == 0xD9:  # the end, or no marker
            return coding  # what OpenJPEG makes of the rest is bounded by what was read
        marker, length = head[1], int.from_bytes(head[2:4], "big")
        if marker == 0x93:  # SOD: the tile-part's data, Psot bytes from its SOT (0: to the end)
            if not psot or tile_part + psot <= pos:
                return coding
            pos = tile_part + psot
            continue
        if 0x30 <= marker <= 0x3F:
            pos += 2
            continue
        if marker == 0x90:
            tile_part, psot = pos, int.from_bytes(head[6:10], "big")
        elif marker in (0x52, 0x53, 0x5F):
            f.seek(pos + 4)
            _segment(coding, marker, f.read(max(length - 2, 0)), wide)
            if len(coding.styles) > MAX_J2K_STYLES:
                return (f"a JPEG 2000 file of more than {MAX_J2K_STYLES} coding styles; "
                        f"re-save it")
        pos += 2 + length
    return (f"a JPEG 2000 file of more than {MAX_J2K_SEGMENTS} marker segments; re-save it")


def _segment(coding: _Coding, marker: int, body: bytes, wide: bool) -> None:
    """A COD (0x52), COC (0x53) or POC (0x5F) segment's body added to ``coding``; a short
    one adds what it holds (OpenJPEG refuses it)."""
    if marker == 0x5F:
        coding.pocs += len(body) // (9 if wide else 7)
        return
    if marker == 0x52:
        if len(body) >= 4:
            coding.layers = max(coding.layers, int.from_bytes(body[2:4], "big"))
        scod, spcod = body[:1], body[5:]
    else:
        skip = 2 if wide else 1
        scod, spcod = body[skip:skip + 1], body[skip + 1:]
    if len(spcod) < 3 or not scod:
        return
    levels = min(spcod[0], 32)  # OpenJPEG's bound
    precincts = tuple(spcod[5:6 + levels]) if scod[0] & 1 else ()
    coding.styles.add((levels, min(spcod[1], 8), min(spcod[2], 8), precincts))


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

"""The twenty-ninth attack: what OpenJPEG sets up and visits for a JPEG 2000 codestream past
its tiles (code-blocks, precincts, layers), read from its markers before it is decoded
(explain.images.j2k); docs/trust.md."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from explain.config import Preprocess
from explain.images import ImageError, ImageRef, precheck, read_rgb


def _segment(marker: bytes, body: bytes) -> bytes:
    return marker + struct.pack(">H", len(body) + 2) + body


def _j2k(side: int, *, layers: int = 1, precinct: int = 15, in_tile: bool = False) -> bytes:
    """A raw codestream of side x side RGB pixels in one tile, 5 levels, 64 x 64 code-blocks,
    precincts of 2**precinct a side, ``layers`` layers, and a few bytes of empty packets; the
    COD in the tile-part's header (``in_tile``: a plain one in the main header)."""
    siz = struct.pack(">HIIIIIIIIH", 0, side, side, 0, 0, side, side, 0, 0, 3) + \
        b"\x07\x01\x01" * 3
    cod = struct.pack(">BBHB", 1, 0, layers, 0) + bytes([5, 4, 4, 0, 1]) + \
        bytes([precinct * 17] * 6)
    qcd = bytes([0x40]) + bytes([9 << 3] * 16)
    main = _segment(b"\xff\x52", b"\x00\x00\x00\x01\x00\x05\x04\x04\x00\x01") if in_tile \
        else _segment(b"\xff\x52", cod)
    tile = _segment(b"\xff\x52", cod) if in_tile else b""
    return (b"\xff\x4f" + _segment(b"\xff\x51", siz) + main + _segment(b"\xff\x5c", qcd)
            + b"\xff\x90" + struct.pack(">HHIBB", 10, 0, 0, 0, 1) + tile
            + b"\xff\x93" + bytes(16) + b"\xff\xd9")


def _refused(path, data: bytes) -> str:
    path.write_bytes(data)
    with pytest.raises(ImageError) as caught:
        precheck(ImageRef("photo", path, from_folder=False), Preprocess())
    with pytest.raises(ImageError):
        read_rgb(path, 10**8)
    return str(caught.value)


def test_a_jpeg_2000_file_of_tiny_precincts_is_refused_before_decoding(tmp_path):
    """OpenJPEG keeps about 530 bytes for each code-block and precinct of every band: a
    124-byte 'photo.jpg' of 1000 x 1000 RGB pixels in 2 x 2 precincts held 1.7 GB and 2.5 s
    of CPU, and decoded (4000 x 4000: 8.8 GB, 11 s). It is one line before decoding now,
    the coding style in the main header or in a tile-part's (which overrides it)."""
    bomb = tmp_path / "photo.jpg"
    for in_tile in (False, True):
        assert _refused(bomb, _j2k(1000, precinct=1, in_tile=in_tile)) == (
            f"{bomb}: a JPEG 2000 file of 2998929 code-blocks and precincts for 1000 x 1000 "
            f"pixels, more than 262144 (OpenJPEG sets up each before decoding); re-save it")


def test_a_jpeg_2000_file_of_many_layers_is_refused_before_decoding(tmp_path):
    """OpenJPEG visits a packet per layer, precinct and component, data or none: a 124-byte
    file of 4000 x 4000 RGB pixels in 128 x 128 precincts and 65,535 layers took 12.9 s of
    CPU and 2.4 GB, and decoded. It is one line before decoding now."""
    bomb = tmp_path / "photo.png"
    assert _refused(bomb, _j2k(4000, layers=65535, precinct=7)) == (
        f"{bomb}: a JPEG 2000 file of 294317685 packets (65535 layers), more than 4194304 "
        f"(OpenJPEG visits each while decoding); re-save it")


@pytest.mark.parametrize("options", [
    {}, {"codeblock_size": (4, 4)}, {"codeblock_size": (16, 16), "precinct_size": (32, 32)},
    {"precinct_size": (128, 128), "tile_size": (64, 64)}, {"num_resolutions": 1},
    {"num_resolutions": 8, "progression": "RPCL"},
    {"quality_mode": "rates", "quality_layers": [40, 20, 10, 5, 1]}])
def test_a_writers_jpeg_2000_files_still_decode(tmp_path, options):
    """Writers' code-blocks (down to Pillow's smallest, 4 x 4), precincts, tiles, layers and
    resolutions pass; a lossless file decodes to its pixels."""
    pixels = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    for name in ("photo.jp2", "raw.j2k"):
        path = tmp_path / name
        Image.fromarray(pixels).save(path, "JPEG2000", no_jp2=name.endswith("j2k"),
                                     irreversible=False, **options)
        assert precheck(ImageRef(path.stem, path, from_folder=False), Preprocess()) == (300, 200)
        if "quality_layers" not in options:
            assert np.array_equal(read_rgb(path, 10**6), pixels), name


def test_a_detection_image_of_more_boxes_than_its_run_explains_is_refused():
    """explain diff pairs two detection runs' boxes of a label, every box of A with every box
    of B: an image of 3,200 boxes (32 methods x 100 boxes, each by one method, which the
    maps' bound allowed) took 21 s and 2.6 GB of the pairing, an image. A run explains at most
    detection.max_boxes boxes an image; a summary of more is a damaged folder."""
    from types import SimpleNamespace as NS

    from explain.recordfiles import entry_problem
    cfg = NS(methods=[NS(name=f"m{k}") for k in range(32)], classes={"dog": 0},
             task="detection", metrics=[], detection=NS(max_boxes=100))
    cams = [NS(class_name=f"dog-{i + 1}", method=f"m{i % 32}", faithfulness=None)
            for i in range(101)]
    entry = NS(id="p", predicted="dog", label=None, cams=cams, baselines=[],
               probabilities={}, boxes=None)
    assert entry_problem(entry, cfg) == ("maps of 101 boxes, more than its run explains "
                                         "(detection.max_boxes)")
    entry.cams = cams[:100]
    assert entry_problem(entry, cfg) is None

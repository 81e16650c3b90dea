"""The twenty-sixth attack (a helper's findings): what a shared TIFF's tiles and AVIF file ask
of OpenCV's decoding past the header's pixels (explain.images.formats), what a reference map's
float32-sized values made of a comparison (explain.compare.read_reference), and the compare
rows a shared interrupted run hands --resume (explain.results.CompareRow)."""

from __future__ import annotations

import json
import math
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch

from explain.compare import metrics
from explain.referencefiles import fit_reference, read_reference
from explain.config import load_config
from explain.images.reading import decode_stored, read_rgb
from explain.runner import RunOptions, run
from helpers import explain_error, tiny_config, tiny_net

# ---- a TIFF's tiles -----------------------------------------------------------------------------


def tiled_tiff(side: int, tile: int) -> bytes:
    """A grey 8-bit TIFF of ``side`` x ``side`` zeros in ``tile`` x ``tile`` deflated tiles,
    every tile's offset on the one stored tile (a few KB, whatever the count)."""
    body = zlib.compress(bytes(tile * tile), 9)
    count = (-(-side // tile)) ** 2
    tags = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 8),
            (262, 3, 1, 1), (277, 3, 1, 1), (322, 4, 1, tile), (323, 4, 1, tile),
            (324, 4, count, 0), (325, 4, count, 0)]
    start = 8 + 2 + 12 * len(tags) + 4  # the tile's data, then the offsets, then the counts
    arrays = {324: (start + len(body), start), 325: (start + len(body) + 4 * count, len(body))}
    out = b"II*\0" + struct.pack("<IH", 8, len(tags))
    for tag, kind, n, value in tags:
        value = arrays[tag][count == 1] if tag in arrays else value
        out += struct.pack("<HHIHH" if kind == 3 else "<HHII", tag, kind, n, value,
                           *([0] if kind == 3 else []))
    offsets = struct.pack("<I", start) * count if count > 1 else b""
    sizes = struct.pack("<I", len(body)) * count if count > 1 else b""
    return out + b"\0\0\0\0" + body + offsets + sizes


def test_a_tiff_of_one_tile_far_larger_than_its_image_is_refused_before_decoding(tmp_path):
    """An 8 x 8 TIFF stored as one 16384 x 16368 tile (261 KB) passed every pixel bound (the
    header says 64 pixels) and held 1 GB and 0.9 s of CPU in OpenCV each time it was decoded
    (an input image, a shared run's picture); here a 4096 x 4096 tile (16 KB), decoded
    without a word before."""
    path = tmp_path / "small.tif"
    path.write_bytes(tiled_tiff(8, 4096))
    line = explain_error(read_rgb, path, 40_000_000)
    assert line == (f"{path}: a TIFF of 8 x 8 pixels in tiles of 4096 x 4096, decoded a whole "
                    f"tile at a time (re-save it)")
    assert decode_stored(path.read_bytes()) is None  # a picture read back from a run folder


def test_a_tiff_of_tiny_tiles_is_refused_before_decoding(tmp_path):
    """A 2896 x 2896 TIFF of 1 x 1 tiles (8.4 million, 67 MB) took 12.8 s of CPU to decode (a
    photo of its pixels: 0.1 s); tiles are multiples of 16 a side in the TIFF standard."""
    path = tmp_path / "dust.tif"
    path.write_bytes(tiled_tiff(64, 1))
    assert explain_error(read_rgb, path, 40_000_000) == (
        f"{path}: a TIFF of 1 x 1 tiles; the TIFF standard's are multiples of 16 a side "
        f"(re-save it)")


@pytest.mark.parametrize("side, tile", [(8, 256), (100, 256), (1024, 1024), (300, 16)])
def test_tiffs_of_a_writers_tiles_are_decoded(tmp_path, side, tile):
    """libtiff's and GDAL's 256 x 256 tiles over a small image, a tile of the image's size,
    the standard's smallest."""
    path = tmp_path / "fine.tif"
    path.write_bytes(tiled_tiff(side, tile))
    rgb = read_rgb(path, 40_000_000)
    assert rgb.shape == (side, side, 3) and not rgb.any()


# ---- a reference map's values -------------------------------------------------------------------

def test_a_reference_of_float32_sized_values_gives_numbers_not_nan(tmp_path):
    """A student's map made with np.empty holds leftovers up to +-3e38: finite, so it passed,
    then its min-max scaling overflowed float32 (NaN metrics: items/*.json held NaN,
    summary.json null, and explain report and diff refused the run folder as damaged)."""
    path = tmp_path / "cat__cat__gradcam.npy"
    wild = np.zeros((16, 16), np.float32)
    wild[0, 0], wild[5, 5] = -3e38, 3e38
    np.save(path, wild)
    library = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    for size in ((32, 32), (16, 16)):  # resized, and of the input's size
        ref = fit_reference(read_reference(path), size)
        assert np.isfinite(ref).all() and ref.min() == 0 and ref.max() == pytest.approx(1)
    ref = fit_reference(read_reference(path), (32, 32))
    assert all(np.isfinite(v) for v in metrics(library, ref).values())


def test_a_reference_past_float32_is_scaled_not_called_infinite(tmp_path):
    """A float64 map of +-1e300 (finite) was cast to float32 first: a RuntimeWarning on the
    terminal, then 'holds NaN or infinite values', which it did not."""
    path = tmp_path / "cat__cat__gradcam.npy"
    big = np.zeros((8, 8))
    big[0, 0], big[1, 1] = -1e300, 1e300
    np.save(path, big)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = read_reference(path)
    assert m.dtype == np.float32 and (m[0, 0], m[1, 1], m[2, 2]) == (0.0, 1.0, 0.5)


# ---- a shared interrupted run's compare rows ---------------------------------------------------

def test_resume_refuses_compare_rows_no_run_writes(tmp_path):
    """A shared interrupted run whose item file held NaN compare numbers (what the reference
    above once made, or an edit): --resume kept them and wrote a summary.json ('max |diff|
    nan', null) that its own explain report and diff then refused as damaged."""
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": "m.pth"}, name="a", classes={"cat": 0, "dog": 1},
                       compare={"enabled": True}, metrics=[])
    run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    folder = tmp_path / "results" / "a"
    item = folder / "items" / "cat.json"
    record = json.loads(item.read_text())
    assert record["compare"] and all(math.isfinite(r["max_abs"]) for r in record["compare"])
    record["compare"][0]["max_abs"] = float("nan")
    item.write_text(json.dumps(record))
    (folder / "summary.json").unlink()  # interrupted before its end
    line = explain_error(run, load_config(path), RunOptions(resume=True, progress=False,
                                                            log=lambda _: None))
    assert line == (f"{item}: not an item file of this explain version (compare.0.max_abs: "
                    f"Input should be a finite number); delete it to recompute that image")


def test_an_avif_file_under_any_name_is_refused_before_decoding(tmp_path):
    """A 4 KB AVIF file named photo.jpg whose header (ispe) said 16 x 16: OpenCV decoded its
    16384 x 16384 AV1 picture whole, 3.4 GB and 4.6 s of CPU, then cropped it to 16 x 16.
    Here a 64 x 64 picture said to be 16 x 16, decoded without a word before."""
    import cv2
    ok, data = cv2.imencode(".avif", np.zeros((64, 64, 3), np.uint8))
    if not ok:
        pytest.skip("this OpenCV writes no AVIF")
    data = bytearray(data.tobytes())
    at = data.find(b"ispe")
    assert struct.unpack_from(">II", data, at + 8) == (64, 64)
    struct.pack_into(">II", data, at + 8, 16, 16)
    path = tmp_path / "photo.jpg"
    path.write_bytes(bytes(data))
    assert explain_error(read_rgb, path, 40_000_000) == (
        f"{path}: an AVIF file, whose header's size need not be the size its AV1 data decodes "
        f"to; convert it to PNG or JPEG")
    assert decode_stored(bytes(data)) is None

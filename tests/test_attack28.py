"""The twenty-eighth attack: what libpng inflates past the header Pillow reads (compressed
texts after a PNG's image data, explain.images.reading); docs/trust.md."""

from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from explain.images.reading import ImageError, read_rgb, without_profiles


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_texts(copies: int, kind: bytes = b"zTXt") -> bytes:
    """An 8 x 8 PNG with ``copies`` compressed texts of 7.9 MB each (8 KB in the file) after
    its image data, where Pillow's header never looks."""
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    png = cv2.imencode(".png", pixels)[1].tobytes()
    text = zlib.compress(b"a" * 7_900_000, 9)
    body = b"k\x00\x00" + text if kind == b"zTXt" else b"k\x00\x01\x00\x00\x00" + text
    end = png.rfind(b"IEND") - 4
    return png[:end] + _chunk(kind, body) * copies + png[end:]


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
def test_compressed_texts_after_a_pngs_image_data_are_never_inflated(tmp_path, kind):
    """A 2.3 MB PNG of 300 zTXt chunks after its image data held 2.3 GB and took 6 s of CPU
    to decode (libpng inflates each, up to 8 MB, and keeps 1,000 of them; 7.7 MB: 8 GB),
    in a shared folder or a shared run's pictures. OpenCV uses no text: they are cut."""
    path = tmp_path / "photo.png"
    path.write_bytes(_png_with_texts(100, kind))
    start = time.process_time()
    rgb = read_rgb(path, 2**20)
    assert time.process_time() - start < 0.5  # 2.2 s and 800 MB before
    expected = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)[..., ::-1]
    assert np.array_equal(rgb, expected)


def test_a_pngs_other_chunks_are_kept_as_they_are():
    """Only profiles and compressed texts are cut: an honest PNG is decoded from its own bytes,
    and one of more chunks than a PNG of max_bytes has is one line."""
    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    assert without_profiles(png) == png
    with_text = _png_with_texts(1)
    assert b"zTXt" not in without_profiles(with_text)
    assert without_profiles(with_text) == without_profiles(_png_with_texts(0))
    end = png.rfind(b"IEND") - 4
    with pytest.raises(ImageError, match="chunks in the PNG"):
        without_profiles(png[:end] + _chunk(b"tEXt", b"k\x00v") * 100_001 + png[end:])


# ---- arrays read back whose type holds no bytes -----------------------------------------------

def _npy_of_no_bytes(shape: tuple[int, ...], descr: str = "|V0") -> bytes:
    """A .npy file's header claiming ``shape`` values of a type of no bytes, and nothing else."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("descr", ["|V0", "|S0", "<U0", "<U4", "<M8[s]", "<c16"])
def test_an_array_read_back_holds_numbers_of_some_bytes(descr):
    """A type of no bytes accounts for no bytes at any shape: 128 bytes claiming 10^12 of
    them passed the check that a header's claim is its bytes. Only numbers are read back."""
    from explain.readback import stored_array
    data = _npy_of_no_bytes((10**6, 10**6), descr) if descr.endswith("0") else \
        _saved(np.zeros(3, descr))
    with pytest.raises(ValueError, match="not numbers"):
        stored_array(data)
    for kind in ("?", "<i2", "<u8", ">f4", "<f8"):
        array = np.arange(6).reshape(2, 3).astype(kind)
        assert np.array_equal(stored_array(_saved(array)), array)


def _saved(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_an_atlas_state_is_not_sized_by_a_shape_of_no_bytes():
    """A shared interrupted run's atlas state of the run's settings, its heaps' arrays of
    type ``|V0`` and shape 6000 x 6000 (a 2 KB zip), had --resume make heaps of that shape:
    1.4 GB (30000 x 30000: tens of GB, or a MemoryError traceback). Now one line, at once."""
    from explain.channels.atlas import AtlasState, unzip, zip_bytes
    from explain.errors import ExplainError
    from helpers import memory_peak
    import zipfile
    run_state = AtlasState(6, 3, top_k=2, crop=1, seed=0)
    header, arrays = unzip(run_state.to_bytes())
    honest = zip_bytes(header, arrays)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(honest)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name in src.namelist():
            data = src.read(name)
            if name.startswith("a."):
                data = _npy_of_no_bytes((1000, 1000))
            z.writestr(name, data)
    with memory_peak() as peak, pytest.raises(ExplainError, match=r"^state.zip: not an atlas "
                                                                   r"state of this explain"):
        AtlasState.from_bytes(out.getvalue(), "state.zip", run_state)
    assert peak[0] < 4 << 20, peak  # 80 MB before (1000 x 1000 heap slots)
    assert AtlasState.from_bytes(honest, "s", run_state).to_bytes() == run_state.to_bytes()

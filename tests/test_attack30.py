"""The thirtieth attack: a file whose header Pillow reads as one format while OpenCV decodes
it as another (explain.images.formats); docs/trust.md."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from explain.config import Preprocess
from explain.errors import ExplainError
from explain.images import ImageError, ImageRef, precheck, read_rgb
from explain.images.orientation import original_size
from explain.images.reading import stored_size
from explain.tasks.masks import _opened


def _radiance_as_photocd(side: int) -> bytes:
    """A Radiance HDR picture of side x side pixels in run-length scanlines (OpenCV picks its
    decoder by ``#?RADIANCE``), with ``PCD_IPI`` at byte 2048 inside a header comment: Pillow
    has no HDR reader and takes it for a Kodak PhotoCD of 768 x 512."""
    start = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n#"
    head = start + b"x" * (2048 - len(start)) + b"PCD_IPI" + b"x" * 16 + b"\n\n"
    head += b"-Y %d +X %d\n" % (side, side)
    runs = b"".join(bytes([128 + min(127, side - at), 100]) for at in range(0, side, 127))
    return head + (bytes([2, 2, side >> 8, side & 255]) + runs * 4) * side


def test_a_picture_pillow_reads_as_another_format_is_refused_before_decoding(tmp_path):
    """A 9 MB photo.jpg of 12000 x 12000 HDR pixels was 768 x 512 to Pillow (under every
    bound) and held 2.2 GB as OpenCV decoded it (32767 x 32767: 68 MB, about 16 GB)."""
    data = _radiance_as_photocd(1024)  # 1024 x 1024 decoded, 768 x 512 by the header
    with Image.open(io.BytesIO(data)) as fooled:
        assert (fooled.format, fooled.size) == ("PCD", (768, 512))
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    start = time.process_time()
    for read in (lambda: precheck(ImageRef("photo", path, False), Preprocess()),
                 lambda: read_rgb(path, 10**6), lambda: original_size(path)):
        with pytest.raises(ImageError, match="a PCD file by its header, which explain does"):
            read()
    assert stored_size(data) is None
    label_map = tmp_path / "photo.png"
    label_map.write_bytes(data)
    with pytest.raises(ExplainError, match="not a readable PNG label map"):
        _opened(label_map, SimpleNamespace(preprocess=Preprocess()))
    assert time.process_time() - start < 0.5


def test_a_format_signature_must_be_its_own(tmp_path):
    """The first bytes are the format's that Pillow read (OpenCV decodes by them alone); a
    format OpenCV does not read is refused by name, not as 'corrupt' after decoding."""
    from explain.images.formats import header_problem
    with Image.open(io.BytesIO(_png(8))) as png:
        assert header_problem(png, _png(8)[:12]) is None
        assert "does not start as one" in header_problem(png, b"#?RADIANCE\n")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "TGA")
    with pytest.raises(ImageError, match="a TGA file by its header"):
        stored_size(buffer.getvalue()) or read_rgb(_written(tmp_path, buffer), 10**6)


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM"])
def test_the_formats_both_decode_still_read(tmp_path, kind):
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 10, 3), 90, np.uint8)).save(buffer, kind)
    assert stored_size(buffer.getvalue()) == (6, 10)
    assert read_rgb(_written(tmp_path, buffer), 10**6).shape == (6, 10, 3)
    grey = io.BytesIO()
    Image.new("L", (10, 6), 7).save(grey, kind if kind != "PPM" else "PPM")
    assert read_rgb(_written(tmp_path, grey), 10**6).shape == (6, 10, 3)


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, "PNG")
    return buffer.getvalue()


def _written(tmp_path, buffer: io.BytesIO):
    path = tmp_path / "picture.jpg"
    path.write_bytes(buffer.getvalue())
    return path

"""The checks on the images a config names, before a run: the squeeze note reads each named
photo's shape as it is decoded (an EXIF quarter turn applied), not as its header stores it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, write_config
from explain.config import load_config
from explain.images.checking import first_image
from explain.images.reading import ImageRef


def _photo(path, turned: bool) -> None:
    """A 300 x 200 (width x height) JPEG; ``turned``: orientation 6 (OpenCV decodes it as 200 x
    300, a portrait)."""
    exif = Image.Exif()
    if turned:
        exif[0x0112] = 6
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(path, exif=exif.tobytes())


def _notes(tmp_path, size: list[int]) -> list[str]:
    for name, turned in (("flat.jpg", False), ("turned.jpg", True)):
        _photo(tmp_path / name, turned)
    cfg = load_config(write_config(tmp_path, images=[str(tmp_path / "flat.jpg"),
                                                     str(tmp_path / "turned.jpg")],
                                   preprocess={"size": size}, target_layers="auto",
                                   model={"file": "net.pth"}))  # (not loaded here)
    refs = [ImageRef(p.stem, p, False) for p in (tmp_path / "flat.jpg", tmp_path / "turned.jpg")]
    first, notes = first_image(cfg, refs)
    assert first.ref.id == "flat" and first.tensor.shape[-2:] == tuple(size)
    return notes


def test_a_photo_turned_by_its_exif_orientation_is_measured_as_decoded(tmp_path):
    """At [200, 300] (the header's 3:2) the turned photo is a 2:3 portrait squeezed 2.25x
    into a landscape; the flat one keeps its shape. At [300, 200] the other way round."""
    wide = _notes(tmp_path, [200, 300])
    assert len(wide) == 1 and "changes the shape of 1 named image(s)" in wide[0], wide
    assert "turned.jpg (200 x 300)" in wide[0] and "flat.jpg" not in wide[0], wide
    tall = _notes(tmp_path, [300, 200])
    assert len(tall) == 1 and "flat.jpg (300 x 200)" in tall[0], tall
    assert "turned.jpg" not in tall[0], tall
    square = _notes(tmp_path, [240, 240])[0]  # both squeezed 1.5x, each shown as decoded
    assert "2 named image(s)" in square and "flat.jpg (300 x 200), turned.jpg (200 x 300)" \
        in square, square


def test_pillow_and_opencv_settings_are_explains_only_while_it_reads(tmp_path):
    """Importing explain set Pillow's bomb bound, its warnings and OpenCV's log level for the
    whole process (a notebook's own Image.open lost Pillow's bound and its bomb warning): they
    are changed only while explain reads, and put back, also after several threads read at
    once."""
    import threading
    import warnings

    from PIL import Image

    from explain.images import quiet
    from explain.images.reading import read_rgb
    bound, level = Image.MAX_IMAGE_PIXELS, cv2.utils.logging.getLogLevel()
    filters = list(warnings.filters)
    assert bound == 89_478_485  # Pillow's own
    seen = []

    def read() -> None:
        with quiet.reading():
            seen.append(Image.MAX_IMAGE_PIXELS)
            read_rgb(IMAGES / "cat.jpg", 10**8)
    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [None] * 4  # explain's max_pixels bounds its reads, not Pillow's
    assert (Image.MAX_IMAGE_PIXELS, cv2.utils.logging.getLogLevel()) == (bound, level)
    assert warnings.filters == filters
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "x.png")
    Image.MAX_IMAGE_PIXELS = 3  # 4 pixels: over it, under twice it: a warning, no error
    try:
        with warnings.catch_warnings(record=True) as heard:  # the filters as they are
            Image.open(tmp_path / "x.png")
    finally:
        Image.MAX_IMAGE_PIXELS = bound
    assert [w.category for w in heard] == [Image.DecompressionBombWarning]  # not ignored


def test_a_truncated_png_is_one_line_and_libpng_prints_nothing(tmp_path, capfd):
    """A PNG whose last chunk runs past the end of the file: libpng printed 'libpng error: PNG
    input buffer is incomplete' to the terminal beside explain's line; it is refused before
    OpenCV decodes it, in explain's words only."""
    from explain.images.reading import ImageError, decode
    ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                                      dtype=np.uint8))
    data = png.tobytes()
    assert decode(data, cv2.IMREAD_COLOR).shape == (64, 64, 3)
    capfd.readouterr()
    with pytest.raises(ImageError, match="a truncated PNG: its IDAT chunk runs past the end"):
        decode(data[:len(data) // 2], cv2.IMREAD_COLOR)
    out, err = capfd.readouterr()
    assert out == err == ""

"""The checks on the images a config names, before a run: the squeeze note reads each named
photo's shape as it is decoded (an EXIF quarter turn applied), not as its header stores it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import write_config
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

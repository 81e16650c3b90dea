"""The twenty-fourth attack (a helper's findings): what a shared image folder, label map or
run folder asks of the header reads before any pixel is decoded (explain.images.reading),
and how long the swapped-classes warning (explain.swapped) grows (docs/trust.md)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from explain.images.orientation import original_size
from explain.config import Preprocess
from explain.errors import ExplainError
from explain.images.reading import ImageError, ImageRef, precheck, read_rgb, stored_size
from explain.tasks.masks import _opened

MB = 4_000_000  # bytes of each crafted header: Pillow alone took 1 to 3 s of CPU for each

HEADERS = {  # a header Pillow reads a byte or a block at a time, to the file's end
    "fill.jpg": b"\xff\xd8" + b"\xff" * MB,  # JPEG fill bytes
    "segments.jpg": b"\xff\xd8" + b"\xff\xe0\x00\x02" * (MB // 4) + b"\xff\xd9",  # empty APP0s
    "junk.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
                + b"\x00" * MB,
    "comment.ppm": b"P6\n#" + b"a" * MB + b"\n2 2\n255\n" + b"\x00" * 12,
    "spaces.ppm": b"P6" + b" " * MB + b"2 2\n255\n" + b"\x00" * 12,
    "blocks.gif": b"GIF89a\x02\x00\x02\x00\x00\x00\x00!\xfe" + b"\x01a" * (MB // 2) + b"\x00;",
    "lines.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n" + b"%%a\n" * (MB // 4),
}


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_a_header_read_a_byte_at_a_time_is_refused_in_bounded_reads(tmp_path, name):
    """Pillow reads a JPEG's fill bytes, empty segments and junk, a PPM's comments and
    spaces, a GIF's blocks and an EPS file's lines one read at a time, before any bound on
    pixels: 1 to 3 s of CPU for each 4 MB, so a shared folder's file of preprocess.max_bytes
    (256 MiB) held the run for minutes, each time its header was read (the named image's
    check, its decoding, its boxes' size, a label map, a shared run's pictures). A JPEG
    whose segments do not reach its image data is refused by explain's own walk, any other
    header past MAX_HEADER_READS reads."""
    path = tmp_path / name
    path.write_bytes(HEADERS[name])
    ref = ImageRef(path.stem, path, False)
    for read in (lambda: precheck(ref, Preprocess()), lambda: read_rgb(path, 10**8)):
        start = time.process_time()
        with pytest.raises(ImageError) as err:
            read()
        assert time.process_time() - start < 0.5, name
        assert str(err.value).startswith(f"{path}: ")
        assert "truncated JPEG" in str(err.value) if name.endswith(".jpg") else \
            "its header takes over 100000 reads" in str(err.value)
    start = time.process_time()
    assert stored_size(HEADERS[name]) is None
    with pytest.raises(ImageError):
        original_size(path)
    label_map = tmp_path / f"{path.stem}.png"
    label_map.write_bytes(HEADERS[name])
    with pytest.raises(ExplainError, match=f"{label_map}: not a readable PNG label map"):
        _opened(label_map, SimpleNamespace(preprocess=Preprocess()))
    assert time.process_time() - start < 1.0, name


def test_a_photos_header_is_still_read(tmp_path):
    """Every format OpenCV decodes and Pillow reads a header of keeps its size (a photo's
    header takes a few dozen reads), an MPO's (a JPEG with a second picture) too, and the
    size a box is scaled from reads it the same way."""
    import numpy as np
    from PIL import Image
    picture = Image.fromarray(np.zeros((40, 30, 3), np.uint8))
    for kind in ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "GIF", "JPEG2000", "MPO"):
        path = tmp_path / f"a.{kind.lower()}"
        picture.save(path, kind, **({"save_all": True, "append_images": [picture]}
                                    if kind == "MPO" else {}))
        assert precheck(ImageRef("a", path, False), Preprocess()) == (40, 30), kind
        assert stored_size(path.read_bytes()) == (40, 30), kind
        assert original_size(path) == (40, 30), kind


def test_the_swapped_classes_warning_names_the_indices_of_its_classes_only():
    """The warning that a config's class indices look swapped listed every class of the
    config with its index: a 1,000-class config (ImageNet's, or a shared summary's) made one
    warning line of 71 KB on the console and the page for a swap of two classes. It names
    the indices of the classes the images swap, the first five and how many more."""
    from types import SimpleNamespace as Ns

    from explain.swapped import swapped_classes
    classes = {f"n{k:08d}_{'x_' * 27}"[:64]: k + 2 for k in range(998)}
    classes.update({"cat": 0, "dog": 1})
    images = [Ns(path=f"pics/{n}_{k}.jpg", predicted=p, label=None,
                 probabilities={n: 0.05, p: 0.95}) for k in range(3)
              for n, p in (("cat", "dog"), ("dog", "cat"))]
    line = swapped_classes(Ns(images=images, config=Ns(task="classification",
                                                       classes=classes)))
    assert line.endswith("are the config's class indices (cat: 0, dog: 1) the model's own "
                         "order?"), line
    assert len(line) < 300
    names = [f"c{k}" for k in range(40)]
    rotated = [Ns(path=f"{n}.jpg", predicted=names[(k + 1) % 40], label=None,
                  probabilities={n: 0.01, names[(k + 1) % 40]: 0.99})
               for k, n in enumerate(names)]
    line = swapped_classes(Ns(images=rotated, config=Ns(
        task="classification", classes={n: k for k, n in enumerate(names)})))
    assert "(c0: 0, c1: 1, c2: 2, c3: 3, c4: 4 (+35 more)) the model's own order?" in line

"""The twenty-seventh attack: what a shared run folder's records ask of ``explain diff``
past its maps (the image paths of run A's summary, read once per map and number), and what
a shared image asks of the terminal (docs/trust.md)."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from PIL import Image

from explain.cli import main
from helpers import tiny_config, tiny_net

PHOTOS = 6


def _runs(tmp_path, separator):
    """Two tiny runs (nets of other seeds) of PHOTOS photos, maps saved; run A's config sets
    ``report.photo_separator``."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for n in range(PHOTOS):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            photos / f"p{n}.png")
    for name, seed in (("a", 0), ("b", 3)):
        torch.save(tiny_net(seed), tmp_path / f"{name}.pth")
        path = tiny_config(tmp_path, {"file": str(tmp_path / f"{name}.pth")}, stem=name,
                           images=[str(photos)], classes={"cat": 0, "dog": 1},
                           target_layers=["0"], methods=["gradcam"], metrics=[],
                           report={"photo_separator": separator},
                           output={"dir": str(tmp_path / "results"), "save_arrays": True})
        assert main([str(path), "--quiet"]) == 0
    return tmp_path / "results" / "a", tmp_path / "results" / "b"


def test_diff_finds_each_images_photo_once(tmp_path, capsys, monkeypatch):
    """A shared run A's summary.json of 5 MB image paths (30 MB in all) took 46 s of
    ``explain diff`` (1.8 s honest): each image's photo, a slug of its path, was found again
    for every map and record number (12 maps x 11 numbers). Now once per image each
    time the changes are summed up (the console's lines, the page)."""
    from explain.diff import numbers
    a, b = _runs(tmp_path, "-")
    data = json.loads((a / "summary.json").read_text())
    for image in data["images"]:
        image["path"] = image["path"][:-4] + "-" + "x" * 1000 + ".png"
    (a / "summary.json").write_text(json.dumps(data))
    slugs = []
    real = numbers.photo_of

    def counted(image, separator, path=None):
        slugs.append(path)
        return real(image, separator, path)
    monkeypatch.setattr(numbers, "photo_of", counted)
    capsys.readouterr()
    assert main(["diff", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    paths = [p for p in slugs if p is not None]  # the console's and the page's changes
    assert len(paths) <= 2 * PHOTOS and len(set(paths)) == PHOTOS, len(paths)
    out = capsys.readouterr().out
    assert "[95% interval over photos]: probability" in out


# ---- a JPEG's two-byte markers before its first scan ------------------------------------------

def _hidden(tmp_path, copies: int, marker: bytes):
    """A grey progressive JPEG whose last scan is repeated ``copies`` times, behind a two-byte
    ``marker`` whose next two bytes (its APP0's FF E0) a walk reading a length there takes for
    one of 65,504 bytes; past them, a scan and an end marker of nothing."""
    from test_attack5 import _segments
    from explain.images import ImageRef
    import io
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(
        buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    scans, end = _segments(data)
    image = data[:end] + scans[-1] * copies + b"\xff\xd9"
    assert image[2:4] == b"\xff\xe0"
    hidden = b"\xff\xd8" + marker + image[2:]
    hidden += b"\x00" * (4 + 0xFFE0 - len(hidden)) + b"\xff\xda\x00\x02\xff\xd9"
    path = tmp_path / f"hidden{copies}_{marker.hex()}.jpg"
    path.write_bytes(hidden)
    return ImageRef(path.stem, path, from_folder=False), data


def test_a_two_byte_marker_hides_no_scans_from_the_walk(tmp_path):
    """'FF 00' (a stuffed zero), TEM and the restarts have no length: libjpeg and Pillow read
    two bytes and go on. The walk read a length there, and so skipped the 65 KB in which
    libjpeg found a whole image: 5,400 repeats of one scan in a 65 KB file passed the scan
    bound and took 26 s of CPU to decode at 36 MP (0.2 s without them)."""
    import cv2
    from explain.config import Preprocess
    from explain.images import ImageError, precheck, read_rgb
    from explain.images.jpeg import MAX_JPEG_SCANS
    for marker in (b"\xff\x00", b"\xff\xd3"):  # TEM (FF 01): Pillow refuses its header
        bomb, _ = _hidden(tmp_path, MAX_JPEG_SCANS + 1, marker)
        try:
            precheck(bomb, Preprocess())
        except ImageError as exc:
            assert str(exc) == (f"{bomb.path}: more than {MAX_JPEG_SCANS} scans in one JPEG (a "
                                f"progressive photo has about 10, and decoding makes a pass "
                                f"over the image for each); re-encode it")
        else:
            raise AssertionError(f"{marker.hex()}: the repeated scans were not counted")
    plain, data = _hidden(tmp_path, 0, b"\xff\x00")  # such a file is still a picture
    assert precheck(plain, Preprocess()) == (64, 64)
    want = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)
    assert np.array_equal(read_rgb(plain.path, 10**6), want)

"""The twenty-seventh attack: what a shared run folder's records ask of ``explain diff``
past its maps (run A's image paths, slugged once per map and number), and what a shared
image's decoder does that the checks before it did not see: a JPEG's two-byte markers read as
lengths (explain.images.jpeg), a JPEG 2000 file's tiles (explain.images.formats);
docs/trust.md."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from explain.cli import main
from helpers import two_tiny_runs

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
    return two_tiny_runs(tmp_path, photos, separator)


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


# ---- a JPEG 2000 file's tiles ---------------------------------------------------------------

def _j2k(side: int, tile: int) -> bytes:
    """A raw JPEG 2000 codestream of side x side RGB pixels in tile x tile tiles:
    its main header, one empty tile-part, its end (80 bytes)."""
    import struct

    def segment(marker: bytes, body: bytes) -> bytes:
        return marker + struct.pack(">H", len(body) + 2) + body
    siz = struct.pack(">HIIIIIIIIH", 0, side, side, 0, 0, tile, tile, 0, 0, 3) + b"\x07\x01\x01" * 3
    return (b"\xff\x4f" + segment(b"\xff\x51", siz)
            + segment(b"\xff\x52", b"\x00\x00\x00\x01\x00\x00\x02\x02\x00\x01")
            + segment(b"\xff\x5c", b"\x40\x40") + b"\xff\x90"
            + struct.pack(">HHIBB", 10, 0, 14, 0, 1) + b"\xff\x93\xff\xd9")


def test_a_jpeg_2000_file_of_many_tiles_is_refused_before_decoding(tmp_path):
    """OpenJPEG sets up every tile the codestream's header gives before any data: an 80-byte
    'photo.jpg' of 4000 x 4000 pixels in 16 x 16 tiles held 770 MB and 0.7 s of CPU, then
    failed to decode. Past MAX_J2K_TILES tiles it is one line; a writer's tiles still decode."""
    from explain.config import Preprocess
    from explain.images import ImageError, ImageRef, precheck, read_rgb
    from explain.images.formats import MAX_J2K_TILES
    bomb = tmp_path / "photo.jpg"
    bomb.write_bytes(_j2k(4000, 16))
    try:
        precheck(ImageRef("photo", bomb, from_folder=False), Preprocess())
    except ImageError as exc:
        assert str(exc) == (f"{bomb}: a JPEG 2000 file in 62500 tiles of 16 x 16, more than "
                            f"{MAX_J2K_TILES} (OpenJPEG sets up each before decoding); "
                            f"re-save it")
    else:
        raise AssertionError("62,500 tiles were not refused")
    pixels = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    for name, options in (("one.jp2", {}), ("tiled.jp2", {"tile_size": (64, 64)}),
                          ("raw.j2k", {"tile_size": (128, 128)})):
        path = tmp_path / name
        Image.fromarray(pixels).save(path, "JPEG2000", irreversible=False, **options)
        assert precheck(ImageRef(path.stem, path, from_folder=False), Preprocess()) == (300, 200)
        assert np.array_equal(read_rgb(path, 10**6), pixels), name  # lossless

"""The twelfth attack: what a shared file could still print or show that misleads (a PNG's
colour-profile name that libpng prints raw to the terminal, ...)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from browser import Browser, find_browser
from explain.errors import ExplainError
from explain.images.jpeg import bytes_at

FORGED = b"\x1b[2J\x1b[31mexplain: error: FORGED\x1b[0m"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def profiled_png(path: Path, gray: bool = False, name: bytes = FORGED) -> Path:
    """A 32 x 32 PNG with a broken colour profile (iCCP) named ``name``: libpng warns about
    it on stderr, naming the profile as it is."""
    pixels = np.full((32, 32) if gray else (32, 32, 3), 128, np.uint8)
    png = cv2.imencode(".png", pixels)[1].tobytes()
    profile = struct.pack(">I", 100) + b"\x00" * 200  # a profile of 100 bytes: too short
    iccp = _chunk(b"iCCP", name + b"\x00\x00" + zlib.compress(profile, 0))
    path.write_bytes(png[:33] + iccp + png[33:])  # after the signature and IHDR
    return path


def test_a_png_profile_name_reaches_no_terminal(tmp_path, capfd):
    """libpng prints 'libpng warning: iCCP: profile '<name>': 64h: too short' straight to
    file descriptor 2, past every escape of explain's own lines: a shared image (or a picture
    of a shared run folder, or a reference map) cleared the screen and forged a line. Now the
    profile never reaches libpng, and the picture decodes as before."""
    from explain.referencefiles import read_reference
    from explain.images.reading import STORED_MAX_PIXELS, decode_stored, read_rgb
    path = profiled_png(tmp_path / "evil.png")
    assert read_rgb(path, 10**6).shape == (32, 32, 3)
    assert decode_stored(path.read_bytes(), max_pixels=STORED_MAX_PIXELS).shape == (32, 32, 3)
    gray = profiled_png(tmp_path / "ref.png", gray=True)
    assert read_reference(gray).shape == (32, 32)
    err = capfd.readouterr().err
    assert "\x1b" not in err and "FORGED" not in err, err


def test_a_png_of_endless_chunks_before_its_image_is_refused(tmp_path):
    from explain.images.reading import ImageError, read_rgb
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    path = tmp_path / "chunks.png"
    path.write_bytes(png[:33] + _chunk(b"tEXt", b"a\x00b") * 20_000 + png[33:])
    with pytest.raises(ImageError, match="more than 10000 chunks before the PNG's image data"):
        read_rgb(path, 10**6)
    assert isinstance(ImageError("x"), ExplainError)


XMP_TURNED = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
              b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
              b' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


def _turned_files(folder: Path) -> dict[str, Path]:
    """A 40 x 20 picture saved with orientation 6 (a quarter turn) where OpenCV reads it
    (JPEG EXIF, a TIFF's tag) and where only Pillow does (XMP, a PNG's text chunk)."""
    from PIL import Image, PngImagePlugin
    picture = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = exif.tobytes().hex()
    text = PngImagePlugin.PngInfo()
    text.add_text("Raw profile type exif", f"\nexif\n{len(raw) // 2:8d}\n{raw}\n")
    files = {"exif.jpg": dict(exif=exif.tobytes()), "tagged.tif": dict(exif=exif.tobytes()),
             "xmp.jpg": dict(xmp=XMP_TURNED), "text.png": dict(pnginfo=text)}
    for name, extra in files.items():
        picture.save(folder / name, **extra)
    return {name: folder / name for name in files}


def test_the_original_size_is_the_decoded_one_whatever_says_turned(tmp_path):
    """Boxes are scaled from the photo's size as explain decodes it, read from the header:
    Pillow took an orientation from XMP and from a PNG's 'Raw profile type exif' text, which
    OpenCV never applies, and turned a TIFF whose size Pillow had turned already: a box file
    written for the photo as shown was refused ('lies outside the 20x40 image') or its boxes
    scaled wrong (localisation numbers of other pixels). Now it is the decoded size."""
    from explain.annotations import Box, to_input
    from explain.images.orientation import original_size
    from explain.images.reading import read_rgb
    for name, path in _turned_files(tmp_path).items():
        decoded = read_rgb(path, 10**6).shape[:2]
        assert original_size(path) == decoded, name
    xmp = tmp_path / "xmp.jpg"  # shown 40 wide, as OpenCV decodes it: its right quarter
    box = Box(image="xmp.jpg", class_name="cat", x0=30, y0=0, x1=40, y1=20, where="boxes.csv: line 2")
    assert to_input(box, original_size(xmp), (20, 40)) == [30, 0, 40, 20]


def test_a_stored_picture_is_decoded_as_its_header_says_never_turned(tmp_path):
    """A photo or overlay of a shared run folder holding an EXIF orientation passed the
    size check (its header's size is the input size) and came back turned: explain diff
    drew its maps over it, a traceback ('operands could not be broadcast together with
    shapes (64,96,3) (96,64,3)'), and a notebook's picture() was of another size than its
    record. A run writes no orientation: a stored picture is decoded as its header says."""
    from explain.images.reading import decode_stored
    files = _turned_files(tmp_path)
    data = files["exif.jpg"].read_bytes()
    picture = decode_stored(data, size=(20, 40))
    assert picture is not None and picture.shape == (20, 40, 3)
    assert decode_stored(data, size=(40, 20)) is None
    tif = decode_stored(files["tagged.tif"].read_bytes())  # Pillow's header: turned already
    assert tif is None or tif.shape[:2] == (40, 20)


def test_a_png_header_of_millions_of_chunks_is_refused_before_pillow_reads_it(tmp_path):
    """Pillow walks a PNG's chunks before its image data one by one in Python: 2 million
    empty ones (24 MB) took 8 s to give an 8 x 8 header, a file of preprocess.max_bytes
    (256 MiB) minutes, for each image of a shared folder and each picture read back. Now
    more than 10,000 chunks there are refused before Pillow reads the header."""
    import time

    from explain.images.reading import ImageError, precheck, stored_size
    from explain.config import Preprocess
    from explain.images.reading import ImageRef
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    data = png[:33] + _chunk(b"abCd", b"") * 2_000_000 + png[33:]
    path = tmp_path / "many.png"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="many.png: more than 10000 chunks before the PNG"):
        precheck(ImageRef("many", path, True), Preprocess())
    assert stored_size(data) is None
    assert time.perf_counter() - start < 2.0


def _png_of_chunks(count: int) -> bytes:
    """An 8 x 8 PNG of ``count`` chunks before its image data (its IHDR, then text chunks)."""
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    return png[:33] + _chunk(b"tEXt", b"a\x00b") * (count - 1) + png[33:]


def test_a_png_of_exactly_max_chunks_before_its_image_is_not_refused(monkeypatch):
    """'more than MAX_PNG_CHUNKS chunks' is refused: a PNG of exactly that many was refused
    too (the walk stopped before reading the chunk after them, its image data)."""
    from explain.images import reading
    monkeypatch.setattr(reading, "MAX_PNG_CHUNKS", 5)
    assert len(reading.png_chunks(bytes_at(_png_of_chunks(5)))) == 5
    assert reading.stored_size(_png_of_chunks(5)) == (8, 8)
    with pytest.raises(reading.ImageError, match="more than 5 chunks before the PNG's image"):
        reading.png_chunks(bytes_at(_png_of_chunks(6)))


def test_a_reference_map_refused_says_why(tmp_path, monkeypatch):
    """A reference PNG refused for its chunks said only 'not a readable PNG'."""
    from explain.referencefiles import read_reference
    from explain.images import reading
    monkeypatch.setattr(reading, "MAX_PNG_CHUNKS", 5)
    path = tmp_path / "cat__cat__gradcam.png"
    path.write_bytes(_png_of_chunks(6))
    with pytest.raises(ExplainError, match=r"cat__cat__gradcam.png: not a readable PNG \(more "
                                           r"than 5 chunks before the PNG's image data"):
        read_reference(path)


def test_a_photos_size_for_its_boxes_walks_no_chunks_in_pillow(tmp_path):
    """original_size asked Pillow for a PNG's EXIF, and Pillow finds an eXIf after the image
    data only by decoding the whole image, then walking the chunks after it in Python: 2
    million empty ones (24 MB, past the 10,000-chunk check, which stops at the image data)
    took 6 s for each photo of a boxes or masks run. A late eXIf still turns the size, as
    OpenCV applies it."""
    import time

    from PIL import Image

    from explain.images.orientation import original_size
    from explain.images.reading import read_rgb
    png = cv2.imencode(".png", np.zeros((20, 40, 3), np.uint8))[1].tobytes()
    end = png.rfind(b"IEND") - 4
    slow = tmp_path / "slow.png"
    slow.write_bytes(png[:end] + _chunk(b"abCd", b"") * 2_000_000 + png[end:])
    start = time.perf_counter()
    assert original_size(slow) == (20, 40)
    assert time.perf_counter() - start < 1.0
    exif = Image.Exif()
    exif[0x0112] = 6
    late = tmp_path / "late.png"
    late.write_bytes(png[:end] + _chunk(b"eXIf", exif.tobytes()[6:]) + png[end:])
    assert original_size(late) == read_rgb(late, 10**6).shape[:2] == (40, 20)


def test_a_label_map_of_endless_chunks_after_its_image_is_refused(tmp_path):
    """A label map is decoded by Pillow (its values are palette indices), which walks the
    chunks after the image data in Python: 2 million empty ones (24 MB) took 5 s a map,
    past the 10,000-chunk check, which stops at the image data. A PNG of more than
    MAX_PNG_WALK chunks in all is refused as a label map; one of many chunks still reads."""
    import io
    from types import SimpleNamespace

    from PIL import Image

    from explain.config import Preprocess
    from explain.images.reading import MAX_PNG_WALK
    from explain.tasks.masks import _opened
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    end = png.rfind(b"IEND") - 4
    cfg = SimpleNamespace(preprocess=Preprocess())
    ok, slow = tmp_path / "ok.png", tmp_path / "slow.png"
    ok.write_bytes(png[:end] + _chunk(b"abCd", b"") * 1000 + png[end:])
    assert np.asarray(_opened(ok, cfg)).shape == (8, 8)
    slow.write_bytes(png[:end] + _chunk(b"abCd", b"") * MAX_PNG_WALK + png[end:])
    with pytest.raises(ExplainError, match="slow.png: not a readable PNG label map"):
        _opened(slow, cfg)


@pytest.mark.skipif(find_browser() is None, reason="no Chromium here: apt-get install chromium")
def test_pages_show_a_picture_as_stored_never_turned(tmp_path):
    """A shared run's photo carrying an EXIF orientation was shown turned by the browser (the
    report's pages, a notebook's embedded pictures) beside the maps the run drew unturned."""
    from explain.api.display import STYLE
    from explain.templates import __path__ as templates
    turned = _turned_files(tmp_path)["exif.jpg"]
    css = (Path(templates[0]) / "report.css").read_text()
    for style in (f"<style>{css}</style>", STYLE):
        page = tmp_path / "page.html"
        page.write_text(f'<html><head>{style}</head><body><div class="explain-api">'
                        f'<img src="{turned.name}"></div></body></html>')
        with Browser(find_browser()) as browser:
            browser.open_page()
            browser.goto(page.as_uri())
            shown = browser.evaluate("[document.images[0].getBoundingClientRect().width, "
                                     "document.images[0].getBoundingClientRect().height]")
        assert shown == [40, 20], style[:40]

"""An image's size as explain decodes it: OpenCV turns a photo by its EXIF orientation, so a
phone's portrait stored as a landscape is decoded as the portrait. The squeeze and enlarge
notes, the boxes' scaling and the label maps' checks all read the size from here."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from explain.images.reading import pillow_header, png_exif

EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)  # the orientations that swap width and height


def original_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image as explain decodes it: the header's size, turned for an
    EXIF orientation of 5 to 8 (a quarter turn), as OpenCV applies it: from the EXIF block
    only (JPEG, WebP, a PNG's eXIf), where Pillow's ``getexif`` also takes one from XMP or a
    PNG's text, which OpenCV never reads; a TIFF's size Pillow gives turned already. A PNG's
    eXIf is found without Pillow (``png_exif``), which decodes the whole image to find one
    after the image data."""
    with open(path, "rb") as f, pillow_header(f) as img:  # (Pillow alone: minutes a file)
        width, height = img.size
        if img.format == "TIFF":
            return height, width
        try:
            exif = Image.Exif()
            exif.load(png_exif(path) if img.format == "PNG" else img.info.get("exif") or b"")
            turned = exif.get(EXIF_ORIENTATION) in QUARTER_TURNS
        except Exception:  # a broken EXIF block: OpenCV ignores it too
            turned = False
    return (width, height) if turned else (height, width)

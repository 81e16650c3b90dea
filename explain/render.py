"""Pictures: CAM overlays (OpenCV), per-class panels, and the one text path of every figure
(``Text``, ``text_width``, ``line_height``, ``draw_text``: Pillow with DejaVu Sans). Arrays in,
arrays out; saving happens in ``explain.outputs``."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
from PIL import ImageFont


def colormap_code(name: str) -> int:
    """'jet' -> cv2.COLORMAP_JET."""
    return getattr(cv2, f"COLORMAP_{name.upper()}")


def as_uint8(picture: np.ndarray) -> np.ndarray:
    """A picture in 0..1 (float32) as uint8, clipped to 0..1 first: the bytes of
    ``np.uint8(np.round(np.clip(x, 0, 1) * 255))`` (OpenCV's saturating convert rounds half
    to even, as numpy does), without that formula's three float temporaries (30 to 50 times
    slower on a 224 x 448 photo). Float64, NaN and more than 4 channels take the formula
    itself (OpenCV would scale float64 in float32 and turn NaN into 255). A uint8 picture is
    returned as it is (the same array)."""
    if picture.dtype == np.uint8:
        return picture
    low = picture.min() if picture.size and picture.dtype == np.float32 else None
    if low is None or np.isnan(low) or picture.ndim > 3 or \
            (picture.ndim == 3 and picture.shape[2] > 4):  # NaN, float64, many channels
        return np.uint8(np.round(np.clip(picture, 0, 1) * 255))
    out = cv2.convertScaleAbs(np.ascontiguousarray(picture), alpha=255)  # |x*255|, rounded
    out = out.reshape(picture.shape)  # OpenCV drops a last axis of one channel
    if low < 0:  # |x| made them positive: clip to 0
        out[picture < 0] = 0
    return out


def overlay(rgb: np.ndarray, cam: np.ndarray, colormap: str = "jet",
            image_weight: float = 0.5) -> np.ndarray:
    """The CAM coloured with an OpenCV colormap over the photo (float, 0..1); uint8 RGB
    (H, W, 3). The same bytes as the library's ``show_cam_on_image``, twice as fast: its
    per-pixel colour term has 256 possible values, worked out once (``_colour_term``)."""
    index = np.uint8(255 * cam.astype(np.float32, copy=False))
    picture = cv2.LUT(cv2.merge([index, index, index]), _colour_term(colormap, image_weight))
    picture += image_weight * rgb.astype(np.float32, copy=False)
    picture /= np.max(picture)
    picture *= 255
    return picture.astype(np.uint8)


@lru_cache(maxsize=16)
def _colour_term(colormap: str, image_weight: float) -> np.ndarray:
    """(256, 1, 3) float32: (1 - image_weight) * colour / 255 for each CAM level, RGB, the
    library's own float32 operations on the colormap's table."""
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], colormap_code(colormap))
    colour = np.float32(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) / 255
    return np.ascontiguousarray((1 - image_weight) * colour)


@dataclass(frozen=True)
class Panel:
    """A per-class panel: the picture (uint8 RGB) and, per row and column, the pixel box
    (x0, y0, x1, y1) where each photo or overlay was placed."""
    image: np.ndarray
    boxes: list[list[tuple[int, int, int, int]]]


PANEL_GAP = 6  # pixels between cells
INK = (20, 20, 20)


# ---- text: every figure's words go through here ------------------------------------------------

def font_file() -> Path:
    """DejaVuSans.ttf as matplotlib ships it (mpl-data/fonts/ttf)."""
    import matplotlib
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


LINES_KEPT = 4096  # rendered lines kept per text size: a few MB of masks at most


class KeptLines(ImageFont.FreeTypeFont):
    """A FreeType font that keeps its last LINES_KEPT rendered lines: figures repeat their
    words (captions, titles, tick numbers, channel labels), and rendering a line is most of
    drawing it. Pillow draws a kept line (a read-only mask and its offset) exactly as a fresh
    one: the same pixels."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__(path, size)
        self._kept: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # writer threads draw too

    def getmask2(self, text, mode="", *args: Any, **kwargs: Any):
        key = (text, mode, args, tuple(sorted(kwargs.items())))
        try:
            hash(key)
        except TypeError:  # e.g. a list of font features: not kept
            return super().getmask2(text, mode, *args, **kwargs)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        found = super().getmask2(text, mode, *args, **kwargs)
        with self._lock:
            self._kept[key] = found
            if len(self._kept) > LINES_KEPT:
                self._kept.popitem(last=False)
        return found


@lru_cache(maxsize=16)
def _font(size: int) -> KeptLines:
    """DejaVu Sans at ``size`` px, the copy matplotlib ships (a package file, so the same font
    offline and on every machine, never a system font): Latin, Greek and Cyrillic image ids and
    class names draw as themselves; a character the font lacks (CJK) draws as its
    missing-glyph box, never as an ASCII '?'."""
    return KeptLines(str(font_file()), size)


@dataclass(frozen=True)
class Text:
    """One line of text to draw: ``(x, y)`` is the top-left corner of its line box, which is
    ``text_width(text, size)`` wide and ``line_height(size)`` high."""
    text: str
    x: int
    y: int
    size: int = 13
    colour: tuple[int, int, int] = INK


@lru_cache(maxsize=4096)
def text_width(text: str, size: int) -> int:
    """Width in pixels of ``text`` drawn at ``size`` px."""
    return int(math.ceil(_font(size).getlength(text)))


def line_height(size: int) -> int:
    """Height in pixels of a line of text at ``size`` px (the font's ascent + descent)."""
    ascent, descent = _font(size).getmetrics()
    return ascent + descent


def draw_text(picture: np.ndarray, texts: Iterable[Text]) -> np.ndarray:
    """A copy of the uint8 RGB ``picture`` with every line of ``texts`` drawn on it
    (antialiased, clipped to the picture)."""
    from PIL import Image, ImageDraw
    page = Image.fromarray(picture)
    draw = ImageDraw.Draw(page)
    for t in texts:
        draw.text((t.x, t.y), t.text, fill=t.colour, font=_font(t.size))
    return np.array(page)


def panel(rows: list[tuple[str, np.ndarray, list[np.ndarray]]], methods: list[str],
          title: str) -> Panel:
    """A row per image (label, photo, overlays), a column per method (photo first), pictures
    placed at their own size, centred in their cell, on white; drawn with arrays, not a
    plotting library (a 24-row panel in well under a second)."""
    columns = ["original", *methods]
    pictures = [[photo, *overlays] for _, photo, overlays in rows]
    col_w = [max(max(p[c].shape[1] for p in pictures), text_width(name, 13))  # a 32-px input:
             for c, name in enumerate(columns)]  # its names ran into each other ('gradcamlayercam')
    row_h = [max(p.shape[0] for p in row) for row in pictures]
    label_w = max([text_width(label, 13) for label, _, _ in rows] + [40]) + 2 * PANEL_GAP
    label_w = min(label_w, 220)
    title_h, head_h = 30, 22
    width = label_w + sum(col_w) + PANEL_GAP * (len(columns) + 1)
    width = max(width, text_width(title, 15) + 2 * PANEL_GAP)
    height = title_h + head_h + sum(row_h) + PANEL_GAP * (len(rows) + 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    boxes: list[list[tuple[int, int, int, int]]] = []
    y = title_h + head_h + PANEL_GAP
    for row, h in zip(pictures, row_h):
        x, placed = label_w + PANEL_GAP, []
        for picture, w in zip(row, col_w):
            ph, pw = picture.shape[:2]
            x0, y0 = x + (w - pw) // 2, y + (h - ph) // 2
            canvas[y0:y0 + ph, x0:x0 + pw] = picture[..., :3]
            placed.append((x0, y0, x0 + pw, y0 + ph))
            x += w + PANEL_GAP
        boxes.append(placed)
        y += h + PANEL_GAP
    texts = [Text(title, PANEL_GAP, 7, 15)]
    for c, (name, w) in enumerate(zip(columns, col_w)):
        left = label_w + PANEL_GAP + sum(col_w[:c]) + PANEL_GAP * c
        texts.append(Text(name, left + (w - text_width(name, 13)) // 2, title_h + 2))
    for (label, _, _), placed in zip(rows, boxes):
        y_mid = (placed[0][1] + placed[0][3]) // 2
        texts.append(Text(fitted(label, 13, label_w - 2 * PANEL_GAP), PANEL_GAP, y_mid - 8))
    return Panel(draw_text(canvas, texts), boxes)


def label_image(picture: np.ndarray, texts: list[tuple[str, tuple[int, int], int]]) -> np.ndarray:
    """``picture`` with each (text, (x, y), size px) written on it in dark ink (``draw_text``)."""
    return draw_text(picture, [Text(text, x, y, size) for text, (x, y), size in texts])


def fitted(text: str, size: int, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels at ``size`` px (first to a
    character a pixel: no glyph is narrower, and measuring a long text again per character
    took seconds)."""
    cut = text[:width + 1]
    if cut == text and text_width(text, size) <= width:
        return text
    text = cut
    while text and text_width(text + "…", size) > width:
        text = text[:-1]
    return text + "…"

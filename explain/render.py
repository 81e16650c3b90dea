"""Pictures: CAM overlays (OpenCV) and per-class panels (arrays, text by Pillow). Arrays in,
arrays out; saving happens in ``explain.outputs``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from pytorch_grad_cam.utils.image import show_cam_on_image


def colormap_code(name: str) -> int:
    """'jet' -> cv2.COLORMAP_JET."""
    return getattr(cv2, f"COLORMAP_{name.upper()}")


def overlay(rgb: np.ndarray, cam: np.ndarray, colormap: str = "jet",
            image_weight: float = 0.5) -> np.ndarray:
    """The CAM coloured with an OpenCV colormap over the photo; uint8 RGB (H, W, 3)."""
    return show_cam_on_image(rgb.astype(np.float32), cam.astype(np.float32), use_rgb=True,
                             colormap=colormap_code(colormap), image_weight=image_weight)


@dataclass(frozen=True)
class Panel:
    """A per-class panel: the picture (uint8 RGB) and, per row and column, the pixel box
    (x0, y0, x1, y1) where each photo or overlay was placed."""
    image: np.ndarray
    boxes: list[list[tuple[int, int, int, int]]]


PANEL_GAP = 6  # pixels between cells
INK = (20, 20, 20)


@lru_cache(maxsize=4)
def _font(size: int):
    """DejaVu Sans (shipped with matplotlib, so offline) at ``size`` px: any Latin, Greek or
    Cyrillic image id or class name renders, not only ASCII."""
    from matplotlib import font_manager
    from PIL import ImageFont
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _text_width(text: str, size: int) -> int:
    return int(math.ceil(_font(size).getlength(text)))


def panel(rows: list[tuple[str, np.ndarray, list[np.ndarray]]], methods: list[str],
          title: str) -> Panel:
    """A row per image (label, photo, overlays), a column per method (photo first), pictures
    placed at their own size, centred in their cell, on white; drawn with arrays, not a
    plotting library (a 24-row panel in well under a second)."""
    from PIL import Image, ImageDraw
    columns = ["original", *methods]
    pictures = [[photo, *overlays] for _, photo, overlays in rows]
    col_w = [max(p[c].shape[1] for p in pictures) for c in range(len(columns))]
    row_h = [max(p.shape[0] for p in row) for row in pictures]
    label_w = max([_text_width(label, 13) for label, _, _ in rows] + [40]) + 2 * PANEL_GAP
    label_w = min(label_w, 220)
    title_h, head_h = 30, 22
    width = label_w + sum(col_w) + PANEL_GAP * (len(columns) + 1)
    width = max(width, _text_width(title, 15) + 2 * PANEL_GAP)
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
    page = Image.fromarray(canvas)
    draw = ImageDraw.Draw(page)
    draw.text((PANEL_GAP, 7), title, fill=INK, font=_font(15))
    for c, (name, w) in enumerate(zip(columns, col_w)):
        left = label_w + PANEL_GAP + sum(col_w[:c]) + PANEL_GAP * c
        draw.text((left + (w - _text_width(name, 13)) // 2, title_h + 2), name, fill=INK,
                  font=_font(13))
    for (label, _, _), placed in zip(rows, boxes):
        y_mid = (placed[0][1] + placed[0][3]) // 2
        draw.text((PANEL_GAP, y_mid - 8), _fit(label, label_w - 2 * PANEL_GAP), fill=INK,
                  font=_font(13))
    return Panel(np.asarray(page), boxes)


def label_image(picture: np.ndarray, texts: list[tuple[str, tuple[int, int], int]]) -> np.ndarray:
    """``picture`` with each (text, (x, y), size px) written on it in dark ink."""
    from PIL import Image, ImageDraw
    page = Image.fromarray(picture)
    draw = ImageDraw.Draw(page)
    for text, xy, size in texts:
        draw.text(xy, text, fill=INK, font=_font(size))
    return np.asarray(page)


def _fit(text: str, width: int) -> str:
    """``text`` cut with an ellipsis so it fits ``width`` pixels at 13 px."""
    if _text_width(text, 13) <= width:
        return text
    while text and _text_width(text + "…", 13) > width:
        text = text[:-1]
    return text + "…"

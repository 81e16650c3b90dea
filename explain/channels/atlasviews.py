"""The atlas's pictures, arrays in and arrays out: a channel's reference regions
(``channel_picture``: a row of crops per ranking) and the ablation curve of one method
(``ablation_curve``). Text goes through explain.render's one text path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from explain.render import INK, Text, draw_text, fitted, line_height, text_width

TILE = 80  # the side of a crop's tile, pixels
GAP = 6
SMALL, TEXT, TITLE = 10, 12, 14  # text sizes, pixels
LINES = {"top": (214, 39, 40), "random": (120, 120, 120), "bottom": (31, 119, 180)}


@dataclass(frozen=True)
class Crop:
    """One reference region: the photo's pixels (uint8 RGB), its caption lines, and the peak
    cell inside it (x0, y0, x1, y1 in the crop's pixels), framed on the tile."""
    rgb: np.ndarray
    lines: tuple[str, ...]
    peak: Optional[tuple[int, int, int, int]] = None


def _tile(crop: Crop) -> np.ndarray:
    """The crop scaled to fit TILE x TILE (aspect kept), centred on light grey, the peak
    cell framed in white over black."""
    tile = np.full((TILE, TILE, 3), 235, np.uint8)
    h, w = crop.rgb.shape[:2]
    scale = TILE / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(crop.rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1
                       else cv2.INTER_LINEAR)
    y, x = (TILE - nh) // 2, (TILE - nw) // 2
    tile[y:y + nh, x:x + nw] = small
    if crop.peak is not None:
        x0, y0, x1, y1 = (round(v * scale) for v in crop.peak)
        cv2.rectangle(tile, (x + x0, y + y0), (x + x1 - 1, y + y1 - 1), (0, 0, 0), 2)
        cv2.rectangle(tile, (x + x0, y + y0), (x + x1 - 1, y + y1 - 1), (255, 255, 255), 1)
    return tile


def channel_picture(title: str, rows: Sequence[tuple[str, Sequence[Crop]]]) -> np.ndarray:
    """A title, then per ranking a label line and its crops left to right, each captioned."""
    cap_h, label_h = line_height(SMALL) + 1, line_height(TEXT) + 4
    per_tile = max([len(c.lines) for _, crops in rows for c in crops] + [1])
    n = max([len(crops) for _, crops in rows] + [1])
    width = max(GAP + n * (TILE + GAP), text_width(title, TITLE) + 2 * GAP,
                max([text_width(label, TEXT) for label, _ in rows] + [0]) + 2 * GAP)
    row_h = label_h + TILE + per_tile * cap_h + GAP
    top = line_height(TITLE) + 2 * GAP
    canvas = np.full((top + len(rows) * row_h + GAP, width, 3), 255, np.uint8)
    texts = [Text(title, GAP, GAP, TITLE)]
    for r, (label, crops) in enumerate(rows):
        y = top + r * row_h
        texts.append(Text(label, GAP, y, TEXT))
        for i, crop in enumerate(crops):
            x = GAP + i * (TILE + GAP)
            canvas[y + label_h:y + label_h + TILE, x:x + TILE] = _tile(crop)
            for j, line in enumerate(crop.lines):
                texts.append(Text(fitted(line, SMALL, TILE), x, y + label_h + TILE + j * cap_h,
                                  SMALL, INK))
    return draw_text(canvas, texts)


def ablation_curve(title: str, ks: Sequence[int], drops: dict[str, Sequence[float]],
                   note: str = "") -> np.ndarray:
    """Mean drop of the class score (y) against k (x, evenly spaced), one line each for
    ``drops`` 'top', 'random', 'bottom'; zero dashed; a legend; ``note`` under the title."""
    width, height = 420, 300
    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = 56, width - 16, height - 34, 44 + (16 if note else 0)
    values = [v for line in drops.values() for v in line] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad

    def at(i: int, v: float) -> tuple[int, int]:
        x = x0 + (x1 - x0) * (i / max(1, len(ks) - 1) if len(ks) > 1 else 0.5)
        return int(round(x)), int(round(y0 - (y0 - y1) * (v - lo) / (hi - lo)))
    cv2.line(img, (x0, y0), (x1, y0), (90, 90, 90), 1)
    cv2.line(img, (x0, y0), (x0, y1), (90, 90, 90), 1)
    zero = at(0, 0.0)[1]
    for x in range(x0, x1, 8):
        cv2.line(img, (x, zero), (min(x + 4, x1), zero), (170, 170, 170), 1)
    half = line_height(SMALL) // 2
    texts = [Text(title, 8, 6, TITLE)] + ([Text(note, 8, 26, TEXT, (170, 30, 30))] if note else [])
    for v in (lo + pad, 0.0, hi - pad):
        texts.append(Text(f"{v:+.3g}", 4, at(0, v)[1] - half, SMALL))
    for i, k in enumerate(ks):
        x, _ = at(i, lo)
        texts.append(Text(str(k), x - text_width(str(k), SMALL) // 2, y0 + 4, SMALL))
    texts.append(Text("k channels zeroed", (x0 + x1) // 2 - 40, y0 + 16, SMALL))
    for r, (name, line) in enumerate(drops.items()):
        colour = LINES.get(name, INK)
        points = np.array([at(i, v) for i, v in enumerate(line)], np.int32)
        cv2.polylines(img, [points], False, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(img, (int(p[0]), int(p[1])), 3, colour, -1, cv2.LINE_AA)
        lx = x0 + 8 + r * 90
        cv2.line(img, (lx, y1 - 10), (lx + 16, y1 - 10), colour, 2, cv2.LINE_AA)
        texts.append(Text(name, lx + 20, y1 - 10 - half, SMALL, colour))
    return draw_text(img, texts)

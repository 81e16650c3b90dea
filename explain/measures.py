"""Numbers about each map: the peak and where the map's mass lies (probabilities: explain.models.heads)."""

from __future__ import annotations

from typing import Any

import numpy as np


def significant(value: float, digits: int = 7) -> float:
    """``value`` rounded to ``digits`` significant digits, for records of numbers whose scale
    depends on the model (gradients, activations, raw map maxima): rounding to decimals made a
    weight of 3e-9 a 0 and kept one digit of 1.12e-05."""
    return float(f"{value:.{digits}g}")


def peak_inside(cam: np.ndarray, mask: np.ndarray) -> bool:
    """The pointing game's hit: the map's peak lies inside ``mask`` (bool, the map's shape).
    A peak shared by several pixels (a flat top, a saturated edge map, a centre prior exactly
    between two boxes) is a hit when at least half of those pixels lie inside: the first of
    them in row order decided it before, so a box's place in the image did. False for an
    all-zero map."""
    peak = cam.max()
    if not peak > 0:
        return False
    top = cam == peak
    count = int(np.count_nonzero(top))
    if count == 1:
        y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
        return bool(mask[y, x])
    return 2 * int(np.count_nonzero(top & mask)) >= count


def map_stats(cam: np.ndarray) -> dict[str, Any]:
    """Peak location (x, y in input pixels) and the share of the map's mass in each half.

    An all-zero map has no peak and its shares are reported as 0.
    """
    h, w = cam.shape
    total = float(cam.sum())
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)

    def share(part: np.ndarray) -> float:
        return round(float(part.sum()) / total, 4) if total > 0 else 0.0

    return {
        "peak_x": int(x), "peak_y": int(y), "peak_value": round(float(cam.max()), 4),
        "mass_left": share(cam[:, : w // 2]), "mass_right": share(cam[:, w - w // 2:]),
        "mass_top": share(cam[: h // 2]), "mass_bottom": share(cam[h - h // 2:]),
    }

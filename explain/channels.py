"""Per-channel views of one layer: activation mosaics, per-channel CAM contributions, stats.

All functions are pure (arrays in, arrays out). The mosaic is built by array tiling, not one
plot per channel, so a 256-channel grid takes milliseconds.

Mosaic layout: ``cols = ceil(sqrt(C))``, ``rows = ceil(C / cols)``; tile k sits at row
k // cols, column k % cols; tiles are separated by ``separator`` pixels of white (255), and
the padding tiles after the last channel are white too. Each tile is min-max normalised on its
own (or on one scale shared by all channels); a constant channel becomes a flat black tile.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from explain import reference

BLANK = 255


def grid_shape(channels: int) -> tuple[int, int]:
    """(rows, cols) of the mosaic for C channels: 16 x 16 for 256, 20 x 20 for 384, 3 x 4 for 10."""
    cols = math.ceil(math.sqrt(channels))
    return math.ceil(channels / cols), cols


def normalise(stack: np.ndarray, shared: bool = False) -> np.ndarray:
    """(C, H, W) -> float32 in 0..1, per channel or on one shared scale; flat -> zeros."""
    stack = stack.astype(np.float32)
    axes = None if shared else (1, 2)
    low = stack.min(axis=axes, keepdims=True)
    span = stack.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (stack - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def _resize_stack(stack: np.ndarray, height: int, width: int) -> np.ndarray:
    if stack.shape[1:] == (height, width):
        return stack
    return np.stack([cv2.resize(np.ascontiguousarray(tile), (width, height),
                                interpolation=cv2.INTER_LINEAR) for tile in stack])


def _tile(stack: np.ndarray, cols: int, separator: int, fill) -> np.ndarray:
    """(C, h, w[, 3]) -> mosaic with padding tiles and separators set to ``fill``."""
    c, h, w = stack.shape[:3]
    rows = math.ceil(c / cols)
    extra = stack.shape[3:]
    padded = np.full((rows * cols, h + separator, w + separator, *extra), fill, dtype=stack.dtype)
    padded[:c, :h, :w] = stack
    mosaic = padded.reshape(rows, cols, h + separator, w + separator, *extra).swapaxes(1, 2)
    mosaic = mosaic.reshape(rows * (h + separator), cols * (w + separator), *extra)
    return mosaic[: mosaic.shape[0] - separator, : mosaic.shape[1] - separator]


def channel_grid(stack: np.ndarray, *, shared_scale: bool = False, tile_size: Optional[int] = None,
                 colormap: Optional[int] = None, photo: Optional[np.ndarray] = None,
                 image_weight: float = 0.5, separator: int = 1, labels: bool = False) -> np.ndarray:
    """Every channel of a (C, H, W) array as one uint8 image.

    tile_size: tile height in pixels (width keeps the aspect); None keeps the native size.
    colormap: an OpenCV colormap code (cv2.COLORMAP_JET); photo: RGB float 0..1 to overlay on.
    Returns (rows*h', cols*w') grayscale, or RGB when a colormap or photo is given.
    """
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"expected a (C, H, W) array, got shape {stack.shape}")
    _, cols = grid_shape(stack.shape[0])
    tiles = normalise(stack, shared_scale)
    if tile_size is not None:
        width = max(1, round(stack.shape[2] * tile_size / stack.shape[1]))
        tiles = _resize_stack(tiles, tile_size, width)
    gray = np.uint8(np.round(tiles * 255))
    if colormap is None and photo is None:
        out = _tile(gray, cols, separator, BLANK)
    else:
        code = cv2.COLORMAP_JET if colormap is None else colormap
        h, w = gray.shape[1:]
        heat = cv2.applyColorMap(gray.reshape(-1, w), code).reshape(len(gray), h, w, 3)[..., ::-1]
        if photo is not None:
            small = cv2.resize(photo.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
            heat = np.uint8(np.round((1 - image_weight) * heat + image_weight * small[None] * 255))
        out = _tile(np.ascontiguousarray(heat), cols, separator, BLANK)
    if labels:
        _label(out, stack.shape[0], cols, tiles.shape[1:], separator)
    return out


def _label(mosaic: np.ndarray, channels: int, cols: int, tile_hw, separator: int) -> None:
    h, w = tile_hw
    scale = max(0.25, h / 64)
    color = (255, 255, 255) if mosaic.ndim == 3 else 255
    for k in range(channels):
        y, x = (k // cols) * (h + separator), (k % cols) * (w + separator)
        cv2.putText(mosaic, str(k), (x + 1, y + int(12 * scale) + 1), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * scale, color, 1, cv2.LINE_AA)


def channel_contributions(method: str, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Each channel's term of the method's CAM sum for one image: (C, h, w).

    GradCAM: w_k * A_k with w_k the spatial mean of dy/dA_k; LayerCAM: ReLU(dy/dA_k) * A_k;
    GradCAM++: its alpha-weighted w_k * A_k. ReLU(sum over k), min-max scaled and resized,
    is the method's map.
    """
    return reference.contributions(method, acts[None], grads[None])[0]


def channel_stats(method: str, acts: np.ndarray, grads: np.ndarray) -> tuple[list[dict], dict]:
    """Per-channel rows (sorted by share, largest first) and a summary for one image and class.

    share_k = sum_ij contribution_k / (sum of the positive channel totals): positive shares add
    up to 1, a channel that works against the class has a negative share. ``channels_50`` /
    ``channels_90``: how few channels hold 50% / 90% of the total positive contribution.
    """
    contrib = channel_contributions(method, acts, grads)
    totals = contrib.sum(axis=(1, 2)).astype(np.float64)
    positive = totals[totals > 0]
    pos_sum = positive.sum()
    weights = reference.CHANNEL_WEIGHTS[method](acts[None], grads[None])[0] \
        if method in reference.CHANNEL_WEIGHTS else None
    zero_grad = ~np.any(grads != 0, axis=(1, 2))
    rows = [{"channel": k, "mean_activation": round(float(acts[k].mean()), 6),
             "weight": None if weights is None else round(float(weights[k]), 8),
             "share": round(float(totals[k] / pos_sum), 6) if pos_sum > 0 else 0.0,
             "zero_gradient": bool(zero_grad[k])} for k in range(len(totals))]
    rows.sort(key=lambda r: (-r["share"], r["channel"]))
    cumulative = np.cumsum(np.sort(positive)[::-1]) / pos_sum if pos_sum > 0 else np.array([])

    def needed(fraction: float) -> int:
        return int(np.searchsorted(cumulative, fraction - 1e-12) + 1) if len(cumulative) else 0

    summary = {"channels": int(len(totals)), "nonzero_gradient": int((~zero_grad).sum()),
               "channels_50": needed(0.5), "channels_90": needed(0.9)}
    return rows, summary

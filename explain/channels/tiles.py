"""The channel pictures' building blocks: where tiles go (``GridLayout``), drawing options
(``ViewOptions``), colour scales and the tiles themselves.

Mosaic layout: ``cols = ceil(sqrt(C))``, ``rows = ceil(C / cols)`` (16 x 16 for AlexNet's 256
channels); tile k sits at row k // cols, column k % cols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import cv2
import numpy as np


SOFT_INK = (90, 90, 90)
BAND = (236, 236, 236)  # background of the number band above each tile
GAP = 150               # separator grey between tiles of a view
TITLE_SIZE = 15         # text sizes, pixels: the first title line
TEXT_SIZE = 12          # the other title lines, captions and the colour bar's numbers
SMALL_SIZE = 10         # the numbers on the cumulative-share curve
MIN_LABEL_SIZE = 8      # tile labels shrink down to this size to fit their tile


def grid_shape(channels: int) -> tuple[int, int]:
    """(rows, cols) of the mosaic for C channels: 16 x 16 for 256, 20 x 20 for 384, 3 x 4 for 10."""
    cols = math.ceil(math.sqrt(channels))
    return math.ceil(channels / cols), cols


@dataclass(frozen=True)
class GridLayout:
    """Where each channel's tile and label lie inside a view (pixel coordinates of the picture).

    The mosaic's top-left corner is (top, left). Position p (row p // cols, column p % cols)
    is a cell of ``label_h`` rows of number band above ``tile_h`` x ``tile_w`` tile pixels; cells
    are ``separator`` pixels apart. ``channels[p]`` is the channel shown at position p. Label
    line i of channel k is ``render.Text(text, *label_origin(k, i), font_size)``, clipped to the
    band (``label_h`` x ``tile_w`` pixels from ``cell_origin(k)``; one ``line_h`` per line).
    """
    channels: tuple[int, ...]
    rows: int
    cols: int
    tile_h: int
    tile_w: int
    label_h: int
    line_h: int
    separator: int
    top: int
    left: int
    font_size: int

    def cell_origin(self, channel: int) -> tuple[int, int]:
        """(y, x) of the top-left corner of the cell (number band) showing ``channel``."""
        r, c = divmod(self.channels.index(channel), self.cols)
        return (self.top + r * (self.label_h + self.tile_h + self.separator),
                self.left + c * (self.tile_w + self.separator))

    def tile_box(self, channel: int) -> tuple[slice, slice]:
        """Row and column slices of the tile pixels of ``channel``: ``img[layout.tile_box(k)]``."""
        y, x = self.cell_origin(channel)
        y += self.label_h
        return slice(y, y + self.tile_h), slice(x, x + self.tile_w)

    def label_origin(self, channel: int, line: int = 0) -> tuple[int, int]:
        """(x, y) top-left corner of label line ``line`` of ``channel``."""
        y, x = self.cell_origin(channel)
        return x + 2, y + 1 + line * self.line_h


@dataclass(frozen=True)
class ViewOptions:
    """How the views are drawn. Sizes are pixels; colormaps are matplotlib names."""
    tile_size: int = 48            # tile height in grids (width keeps the feature map's aspect)
    detail_tile_size: int = 96     # tile height in the top-channels / class-contrast views
    separator: int = 2             # grey gap between tiles
    labels: bool = True            # channel numbers above the tiles
    shared_scale: bool = True      # activation view: one scale for all tiles (False: per tile)
    limit: Optional[float] = None  # signed views: colour scale -limit..+limit (None: max |value|)
    diverging: str = "RdBu_r"      # signed values: negative blue, 0 white, positive red
    sequential: str = "viridis"    # activations of one sign
    signed: str = "PuOr_r"         # activations of both signs: negative purple, 0 white
    centre_activations: Optional[bool] = None  # None: centred at 0 when both signs occur
    smooth: bool = False           # bilinear tiles (False: each feature cell a flat block)
    font_size: int = 11            # tile labels, pixels (smaller where a label is too wide)
    panel_height: int = 160        # photo / CAM / curve panels of the detail views


@dataclass(frozen=True)
class ColourScale:
    """Values ``low``..``high`` spread over the colormap; a centred scale has low == -high, so 0
    is the colormap's middle entry (white for RdBu_r). ``per_tile``: each tile was min-max scaled
    on its own first, so low..high = 0..1 is each tile's own min..max."""
    low: float
    high: float
    colormap: str
    per_tile: bool = False

    @property
    def centred(self) -> bool:
        return self.low == -self.high

    def lut(self) -> np.ndarray:
        """The colormap as a (255, 3) uint8 RGB table; entry 127 is its middle colour."""
        return colour_lut(self.colormap)

    def paint(self, values: np.ndarray) -> np.ndarray:
        """Float values (any shape) -> uint8 RGB of shape values.shape + (3,)."""
        lut = self.lut()
        top = len(lut) - 1
        span = self.high - self.low
        if span <= 0:
            index = np.full(values.shape, top // 2 if self.centred else 0, np.uint8)
        else:  # in place, and a uint8 index for np.take: 5x faster than lut[intp index]
            scaled = (values - self.low) * (top / span)
            np.rint(scaled, out=scaled)
            np.clip(scaled, 0, top, out=scaled)
            index = scaled.astype(np.uint8)
        return np.take(lut, index, axis=0)


@lru_cache(maxsize=None)
def colour_lut(name: str) -> np.ndarray:
    """A matplotlib colormap as a read-only (255, 3) uint8 RGB table (odd length: a true middle)."""
    import matplotlib
    rgba = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 255))
    lut = np.uint8(np.round(rgba[:, :3] * 255))
    lut.flags.writeable = False
    return lut


def view_title(image: str, layer: str, class_name: str = "", method: str = "") -> str:
    """'both | class dog | gradcam | layer backbone._blocks.15' (empty parts left out)."""
    parts = [image, f"class {class_name}" if class_name else "", method, f"layer {layer}"]
    return " | ".join(p for p in parts if p)


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


def tile_mosaic(stack: np.ndarray, cols: int, separator: int, fill, pad_fill=None) -> np.ndarray:
    """(C, h, w[, 3]) -> mosaic; separators set to ``fill``, padding tiles to ``pad_fill``
    (default ``fill``)."""
    c, h, w = stack.shape[:3]
    rows = math.ceil(c / cols)
    extra = stack.shape[3:]
    padded = np.full((rows * cols, h + separator, w + separator, *extra), fill, dtype=stack.dtype)
    padded[:c, :h, :w] = stack
    if pad_fill is not None:
        padded[c:] = pad_fill
    mosaic = padded.reshape(rows, cols, h + separator, w + separator, *extra).swapaxes(1, 2)
    mosaic = mosaic.reshape(rows * (h + separator), cols * (w + separator), *extra)
    return mosaic[: mosaic.shape[0] - separator, : mosaic.shape[1] - separator]


def fit_tiles(stack: np.ndarray, tile_h: int, smooth: bool) -> np.ndarray:
    """(C, h, w) -> (C, tile_h, tile_w) float32, width keeping the aspect."""
    c, h, w = stack.shape
    tile_w = max(1, round(w * tile_h / h))
    stack = stack.astype(np.float32)
    if smooth:
        return _resize_stack(stack, tile_h, tile_w)
    return _blocks(stack, tile_h, tile_w)


def _blocks(stack: np.ndarray, tile_h: int, tile_w: int) -> np.ndarray:
    """(C, h, w, ...) -> (C, tile_h, tile_w, ...): each feature cell a flat block. Output row
    i shows cell row (i * h) // tile_h (columns alike); those indices never go down, so each
    cell is repeated as often as it is picked (np.repeat: twice as fast as fancy indexing)."""
    h, w = stack.shape[1:3]
    rows = np.bincount((np.arange(tile_h) * h) // tile_h, minlength=h)
    cols = np.bincount((np.arange(tile_w) * w) // tile_w, minlength=w)
    return np.repeat(np.repeat(stack, rows, axis=1), cols, axis=2)


def painted_tiles(stack: np.ndarray, tile_h: int, smooth: bool, scale: ColourScale
                  ) -> np.ndarray:
    """``scale.paint(fit_tiles(stack, tile_h, smooth))``: uint8 RGB tiles. Flat-block tiles
    are painted cell by cell before they are enlarged (the same pixels: painting is per value
    and enlarging only repeats values), so a 96-pixel tile paints its few cells, not 18,000."""
    if smooth:
        return scale.paint(fit_tiles(stack, tile_h, smooth))
    h, w = stack.shape[1:]
    return _blocks(scale.paint(stack.astype(np.float32)), tile_h, max(1, round(w * tile_h / h)))

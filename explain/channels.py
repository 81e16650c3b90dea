"""Per-channel views of one layer: activation mosaics, per-channel CAM contributions, stats.

All functions are pure (arrays in, arrays out; no file I/O). The file has two halves: the
per-channel numbers (contributions, weights, shares, stats) and, below them, the pictures.

Mosaic layout: ``cols = ceil(sqrt(C))``, ``rows = ceil(C / cols)`` (16 x 16 for AlexNet's 256
channels); tile k sits at row k // cols, column k % cols. The views (``activation_view``,
``contribution_view``, ``top_channels_view``, ``class_contrast_view``) are built by array
tiling, not one plot per channel, so a 256-channel view with labels and colour bar takes
milliseconds: a title, a number band above each tile, one colour scale and a colour bar; each
returns a ``GridLayout`` that says where every tile and label lies in the picture. All their
text goes through ``explain.render``'s one text path (Pillow, DejaVu Sans).

Contributions come from pytorch-grad-cam's own per-method code, for the channel-sum methods
(those with a ``channel_term`` in explain.methods.TABLE): none of these methods mixes
channels, so the library's ``get_cam_image`` run on the channels as a batch of one-channel
maps gives each channel's term of the CAM sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image

from explain.methods import ChannelTerm, having, registry, traits
from explain.render import INK, Text, draw_text, line_height, text_width


SOFT_INK = (90, 90, 90)
BAND = (236, 236, 236)  # background of the number band above each tile
GAP = 150               # separator grey between tiles of a view
TITLE_SIZE = 15         # text sizes, pixels: the first title line
TEXT_SIZE = 12          # the other title lines, captions and the colour bar's numbers
SMALL_SIZE = 10         # the numbers on the cumulative-share curve
MIN_LABEL_SIZE = 8      # tile labels shrink down to this size to fit their tile


# ---- per-channel numbers, from the library's own per-method code ------------------------------

def _check_stack(stack: np.ndarray) -> None:
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"expected a (C, H, W) array, got shape {stack.shape}")



def _library_math(method: str) -> BaseCAM:
    """The library's CAM object for ``method``, lent only for its math (its hooks are removed)."""
    if traits(method).channel_term is None:
        raise ValueError(f"'{method}' is not a per-channel sum; channel methods: "
                         f"{', '.join(having('channel_term'))}")
    return _lent(registry()[method])


@lru_cache(maxsize=None)
def _lent(cls: type) -> BaseCAM:
    anchor = torch.nn.Conv2d(1, 1, 1)  # BaseCAM wants a model and a layer; neither is used
    cam = cls(anchor, [anchor])
    cam.activations_and_grads.release()
    return cam


def _term(method: Optional[str]) -> tuple[str, str]:
    """The method's per-channel term and its units (a generic one for no method)."""
    found = (traits(method).channel_term if method else None) or \
        ChannelTerm("contribution", "arbitrary units")
    return found.term, found.units


def _pair(acts: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _check_stack(acts)
    if grads.shape != acts.shape:
        raise ValueError(f"gradients {grads.shape} and activations {acts.shape} differ in shape")
    return np.asarray(acts, np.float32), np.asarray(grads, np.float32)


def channel_contributions(method: str, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Each channel's term of the method's CAM sum for one image: (C, h, w) float32.

    acts, grads: (C, h, w) activations and d(class score)/d(activations). ReLU(sum over k),
    min-max scaled and resized, is the method's map. Computed by pytorch-grad-cam's own
    ``get_cam_image`` (its table entry's ``channel_term`` names the term); ``method`` is a
    channel-sum method (explain.methods.having('channel_term')).
    """
    acts, grads = _pair(acts, grads)
    cam = _library_math(method)  # channels as a batch of one-channel maps: one term each
    out = cam.get_cam_image(None, None, None, acts[:, None], grads[:, None], False)
    return np.asarray(out, np.float32)


def channel_weights(method: str, acts: np.ndarray, grads: np.ndarray) -> Optional[np.ndarray]:
    """The library's per-channel weights w_k (C,) for weight x activation methods (GradCAM,
    GradCAM++, XGradCAM); None for the elementwise ones (LayerCAM, HiResCAM, ...)."""
    acts, grads = _pair(acts, grads)
    cam = _library_math(method)
    if type(cam).get_cam_image is not BaseCAM.get_cam_image:
        return None
    return np.asarray(cam.get_cam_weights(None, None, None, acts[None], grads[None])[0], np.float32)


def channel_totals(contrib: np.ndarray) -> np.ndarray:
    """Each channel's contribution summed over positions: (C,) float64."""
    return contrib.sum(axis=(1, 2), dtype=np.float64)


def channel_shares(totals: np.ndarray) -> np.ndarray:
    """share_k = total_k / (sum of the positive totals); all zeros when nothing is positive."""
    pos_sum = totals[totals > 0].sum()
    return totals / pos_sum if pos_sum > 0 else np.zeros_like(totals)


def cumulative_share(totals: np.ndarray) -> np.ndarray:
    """Share of the positive contribution held by the n largest channels, n = 1, 2, ...:
    (number of positive channels,), rising to 1."""
    positive = np.sort(totals[totals > 0])[::-1]
    return np.cumsum(positive) / positive.sum() if len(positive) else positive


def channels_needed(cumulative: np.ndarray, fraction: float) -> int:
    """How few channels hold ``fraction`` of the positive contribution (0 when none is positive)."""
    return int(np.searchsorted(cumulative, fraction - 1e-12) + 1) if len(cumulative) else 0


def channel_stats(method: str, acts: np.ndarray, grads: np.ndarray) -> tuple[list[dict], dict]:
    """Per-channel rows (sorted by share, largest first) and a summary for one image and class.

    share_k = sum_ij contribution_k / (sum of the positive channel totals): positive shares add
    up to 1, a channel that works against the class has a negative share. ``channels_50`` /
    ``channels_90``: how few channels hold 50% / 90% of the total positive contribution.
    """
    totals = channel_totals(channel_contributions(method, acts, grads))
    shares = channel_shares(totals)
    weights = channel_weights(method, acts, grads)
    zero_grad = ~np.any(grads != 0, axis=(1, 2))
    zero_list = zero_grad.tolist()
    means = acts.reshape(len(acts), -1).mean(axis=1).tolist()  # one call, not one per channel
    weight_list = None if weights is None else np.asarray(weights).tolist()
    share_list = np.asarray(shares).tolist()
    rows = [{"channel": k, "mean_activation": round(means[k], 6),
             "weight": None if weight_list is None else round(weight_list[k], 8),
             "share": round(share_list[k], 6),
             "zero_gradient": zero_list[k]} for k in range(len(totals))]
    rows.sort(key=lambda r: (-r["share"], r["channel"]))
    cumulative = cumulative_share(totals)
    summary = {"channels": int(len(totals)), "nonzero_gradient": int((~zero_grad).sum()),
               "channels_50": channels_needed(cumulative, 0.5),
               "channels_90": channels_needed(cumulative, 0.9)}
    return rows, summary


def top_channels(totals: np.ndarray, k: int) -> np.ndarray:
    """The k channels with the largest |total|, largest first (ties: lower channel first)."""
    order = np.lexsort((np.arange(len(totals)), -np.abs(totals)))
    return order[:k]


# ---- pictures: layout, colours, tiles --------------------------------------------------------

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


def _tile(stack: np.ndarray, cols: int, separator: int, fill, pad_fill=None) -> np.ndarray:
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


def _fit_tiles(stack: np.ndarray, tile_h: int, smooth: bool) -> np.ndarray:
    """(C, h, w) -> (C, tile_h, tile_w) float32, width keeping the aspect."""
    c, h, w = stack.shape
    tile_w = max(1, round(w * tile_h / h))
    stack = stack.astype(np.float32)
    if smooth:
        return _resize_stack(stack, tile_h, tile_w)
    rows = (np.arange(tile_h) * h) // tile_h
    cols = (np.arange(tile_w) * w) // tile_w
    return stack[:, rows][:, :, cols]


# ---- pictures: text and assembly -----------------------------------------------------------------

def _line_h(size: int) -> int:
    """Rows of one line of text at ``size`` px, with a pixel to spare."""
    return line_height(size) + 1


def _text_block(lines: Sequence[tuple[str, int, tuple]], pad: int = 4) -> np.ndarray:
    """Lines of (text, size px, colour), left aligned, on white."""
    width = max([text_width(t, s) for t, s, _ in lines] + [1]) + 2 * pad
    heights = [_line_h(s) + 2 for _, s, _ in lines]
    block = np.full((sum(heights) + pad, width, 3), 255, np.uint8)
    texts, y = [], pad // 2
    for (text, size, colour), h in zip(lines, heights):
        texts.append(Text(text, pad, y + 1, size, colour))
        y += h
    return draw_text(block, texts)


def _centred(text: str, size: int, *, x: int, y: int, width: int, colour=INK) -> Text:
    """``text`` centred on ``x`` (kept inside 0..``width``), its line's top at ``y``."""
    w = text_width(text, size)
    return Text(text, min(max(0, x - w // 2), max(0, width - w)), y, size, colour)


def _stack_rows(parts: Sequence[np.ndarray], gap: int = 6, margin: int = 8
                ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """RGB parts one under the other, each centred, on white; returns the picture and each
    part's (top, left)."""
    width = max(p.shape[1] for p in parts) + 2 * margin
    height = sum(p.shape[0] for p in parts) + gap * (len(parts) - 1) + 2 * margin
    canvas = np.full((height, width, 3), 255, np.uint8)
    origins, y = [], margin
    for p in parts:
        x = (width - p.shape[1]) // 2
        canvas[y:y + p.shape[0], x:x + p.shape[1]] = p
        origins.append((y, x))
        y += p.shape[0] + gap
    return canvas, origins


def _side_by_side(parts: Sequence[np.ndarray], gap: int = 10) -> np.ndarray:
    """RGB parts left to right, top aligned, on white."""
    height = max(p.shape[0] for p in parts)
    width = sum(p.shape[1] for p in parts) + gap * (len(parts) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for p in parts:
        canvas[:p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + gap
    return canvas


def _fmt(value: float, signed: bool) -> str:
    if value == 0:
        return "0"
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def _colour_bar(scale: ColourScale, width: int, caption: str) -> np.ndarray:
    """A horizontal colour bar: the colormap strip, ticks with values, and a caption (units)."""
    bar_h, line, size = 14, _line_h(TEXT_SIZE), TEXT_SIZE
    img_w = max(width + 68, text_width(caption, size) + 8)
    pad = (img_w - width) // 2
    img = np.full((bar_h + 6 + 2 * line + 4, img_w, 3), 255, np.uint8)
    img[1:1 + bar_h, pad:pad + width] = scale.paint(np.linspace(scale.low, scale.high, width))[None]
    cv2.rectangle(img, (pad - 1, 0), (pad + width, bar_h + 1), SOFT_INK, 1)
    if scale.per_tile:
        ticks = [(0.0, "tile min"), (1.0, "tile max")]
    else:
        values = np.linspace(scale.low, scale.high, 5) if scale.high > scale.low else [scale.low]
        ticks = [(float(v), _fmt(float(v), scale.centred)) for v in values]
        widest = max(text_width(t, size) for _, t in ticks)
        if len(ticks) == 5 and widest + 8 > width / 4:  # crowded: low, middle, high only
            ticks = ticks[::2]
    span = (scale.high - scale.low) or 1.0
    texts = []
    for value, text in ticks:
        x = pad + int(round((value - scale.low) / span * (width - 1)))
        cv2.line(img, (x, bar_h + 2), (x, bar_h + 5), INK, 1)
        texts.append(_centred(text, size, x=x, y=bar_h + 6, width=img_w))
    texts.append(_centred(caption, size, x=img_w // 2, y=bar_h + 6 + line, width=img_w,
                          colour=SOFT_INK))
    return draw_text(img, texts)


def _label_font(labels: Sequence[Sequence[str]], tile_w: int, size: int) -> int:
    """The largest text size <= ``size`` (down to MIN_LABEL_SIZE) at which every label line
    fits the tile."""
    texts = [t for lines in labels for t in lines] or [""]
    while size > MIN_LABEL_SIZE and max(text_width(t, size) for t in texts) + 4 > tile_w:
        size -= 1
    return size


def _mosaic(tiles: np.ndarray, channels: Sequence[int], labels: Sequence[Sequence[str]],
            cols: int, opts: ViewOptions) -> tuple[np.ndarray, GridLayout]:
    """(N, h, w, 3) uint8 tiles -> mosaic with a number band above each tile; the layout's
    origin is (0, 0), to be moved when the mosaic is placed in a picture."""
    n, h, w = tiles.shape[:3]
    font = _label_font(labels, w, opts.font_size)
    lines = max((len(lab) for lab in labels), default=0) if opts.labels else 0
    line_h = _line_h(font)
    label_h = lines * line_h + (2 if lines else 0)
    layout = GridLayout(tuple(int(c) for c in channels), math.ceil(n / cols), cols, h, w, label_h,
                        line_h, opts.separator, 0, 0, font)
    cells = np.empty((n, label_h + h, w, 3), np.uint8)
    if lines:
        bands = _label_bands(layout, tuple(tuple(lab) for lab in labels))
        cells[:, :label_h] = bands.reshape(n, label_h, w, 3)
    cells[:, label_h:] = tiles
    mosaic = _tile(cells, cols, opts.separator, GAP, pad_fill=255)
    return mosaic, layout


@lru_cache(maxsize=8)
def _label_bands(layout: GridLayout, labels: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """The number bands of all cells one under the other, (cells * label_h, tile_w, 3), with
    their labels drawn in one pass, each clipped to its tile's width. Kept for the next view:
    every grid view of a layer carries the same numbers (read-only)."""
    n, h = len(layout.channels), layout.label_h
    texts = []
    for c, (k, text_lines) in enumerate(zip(layout.channels, labels)):
        top, left = layout.cell_origin(k)
        for i, text in enumerate(text_lines):
            x, y = layout.label_origin(k, i)
            texts.append(Text(text, x - left, c * h + y - top, layout.font_size))
    bands = draw_text(np.full((n * h, layout.tile_w, 3), BAND, np.uint8), texts)
    bands.flags.writeable = False
    return bands


@dataclass(frozen=True)
class ChannelView:
    """A rendered view: ``image`` uint8 RGB (H, W, 3), where its tiles are, and its colour scale."""
    image: np.ndarray
    layout: GridLayout
    scale: ColourScale


def _grid_view(values: np.ndarray, scale: ColourScale, head: Sequence[str], caption: str,
               opts: ViewOptions) -> ChannelView:
    """Title lines, the labelled mosaic of all channels, colour bar; values already scaled."""
    _, cols = grid_shape(len(values))
    tiles = scale.paint(_fit_tiles(values, opts.tile_size, opts.smooth))
    mosaic, layout = _mosaic(tiles, range(len(values)), [(str(k),) for k in range(len(values))],
                             cols, opts)
    image, layout = _figure(head, [], mosaic, layout, scale=scale, caption=caption)
    return ChannelView(image, layout, scale)


def _figure(head: Sequence[str], panels: Sequence[np.ndarray], mosaic: np.ndarray,
            layout: GridLayout, *, scale: ColourScale, caption: str
            ) -> tuple[np.ndarray, GridLayout]:
    """Title lines (first one larger), a row of panels (if any), the mosaic, the colour bar of
    ``scale`` with its ``caption``; returns the picture and the mosaic's layout moved to where
    the mosaic landed."""
    title = _text_block([(head[0], TITLE_SIZE, INK)] + [(t, TEXT_SIZE, SOFT_INK) for t in head[1:]])
    strip = _colour_bar(scale, int(np.clip(mosaic.shape[1] * 0.6, 240, 480)), caption)
    parts = [title, _side_by_side(panels), mosaic, strip] if panels else [title, mosaic, strip]
    image, origins = _stack_rows(parts, gap=8 if panels else 6)
    top, left = origins[-2]
    return image, replace(layout, top=top, left=left)


def _photo_panel(photo: Optional[np.ndarray], height: int) -> list[np.ndarray]:
    """[the photo, captioned, ``height`` rows high], or [] without a photo."""
    if photo is None:
        return []
    return [_captioned(_panel(np.uint8(np.round(_as_photo(photo) * 255)), height), "photo")]


def _signed_scale(arrays: Sequence[np.ndarray], opts: ViewOptions) -> ColourScale:
    limit = opts.limit if opts.limit is not None else max(float(np.abs(a).max()) for a in arrays)
    return ColourScale(-limit, limit, opts.diverging)


def _as_photo(photo: np.ndarray) -> np.ndarray:
    """RGB uint8 or float 0..1 -> float32 0..1."""
    return photo.astype(np.float32) / 255 if photo.dtype == np.uint8 else photo.astype(np.float32)


def _cam_panel(contrib: np.ndarray, cam: Optional[np.ndarray], photo: Optional[np.ndarray],
               height: int) -> np.ndarray:
    """The CAM over the photo (or alone), ``height`` rows. Without ``cam`` it is rebuilt from the
    contributions the library's way: ReLU of the channel sum, min-max scaled, resized."""
    from explain.render import overlay
    size = photo.shape[:2] if photo is not None else (height, round(height * contrib.shape[2] /
                                                                     contrib.shape[1]))
    if cam is None:
        cam = scale_cam_image(np.maximum(contrib.sum(axis=0), 0)[None], (size[1], size[0]))[0]
    base = _as_photo(photo) if photo is not None else np.zeros((*cam.shape, 3), np.float32)
    weight = 0.5 if photo is not None else 0.0
    return _panel(overlay(base, cam, "jet", weight), height)


def _panel(rgb: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _captioned(img: np.ndarray, caption: str) -> np.ndarray:
    return _stack_rows([_text_block([(caption, TEXT_SIZE, INK)], pad=2), img], gap=0, margin=0)[0]


def _dashed(img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], colour) -> None:
    n = max(1, int(math.hypot(p1[0] - p0[0], p1[1] - p0[1])) // 6)
    for i in range(0, n, 2):
        a = (p0[0] + (p1[0] - p0[0]) * i // n, p0[1] + (p1[1] - p0[1]) * i // n)
        b = (p0[0] + (p1[0] - p0[0]) * (i + 1) // n, p0[1] + (p1[1] - p0[1]) * (i + 1) // n)
        cv2.line(img, a, b, colour, 1, cv2.LINE_AA)


def _curve_panel(cumulative: np.ndarray, marks: tuple[int, int], height: int) -> np.ndarray:
    """Cumulative share (y, 0..100%) against the number of channels, largest first (x);
    ``marks``: how many channels hold 50% and 90%."""
    width = max(260, round(height * 1.6))
    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = 38, width - 10, height - 20, 6  # plot box: left, right, bottom, top
    n, half = max(1, len(cumulative)), line_height(SMALL_SIZE) // 2

    def at(count: float, share: float) -> tuple[int, int]:
        return int(round(x0 + (x1 - x0) * count / n)), int(round(y0 - (y0 - y1) * share))

    cv2.line(img, (x0, y0), (x1, y0), SOFT_INK, 1)
    cv2.line(img, (x0, y0), (x0, y1), SOFT_INK, 1)
    texts = []
    for share in (0.0, 0.5, 0.9, 1.0):
        y = at(0, share)[1]
        texts.append(Text(f"{share:.0%}", 2, y - half, SMALL_SIZE))
        if share in (0.5, 0.9):
            _dashed(img, (x0, y), (x1, y), (170, 170, 170))
    for count in sorted({0, n}):
        texts.append(_centred(str(count), SMALL_SIZE, x=at(count, 0)[0], y=y0 + 3, width=width))
    points = np.array([at(0, 0)] + [at(i + 1, s) for i, s in enumerate(cumulative)], np.int32)
    cv2.polylines(img, [points], False, (31, 119, 180), 2, cv2.LINE_AA)
    for count, share, colour in ((marks[0], 0.5, (214, 39, 40)), (marks[1], 0.9, (148, 103, 189))):
        if count:
            x, y = at(count, share)
            _dashed(img, (x, y0), (x, y), colour)
            cv2.circle(img, (x, y), 3, colour, -1, cv2.LINE_AA)
            texts.append(Text(f"{share:.0%}: {count} ch", min(x + 5, x1 - 60), y + 3, SMALL_SIZE,
                              colour))
    return draw_text(img, texts)


def _detail_tiles(contribs: Sequence[np.ndarray], channels: np.ndarray, scale: ColourScale,
                  opts: ViewOptions) -> np.ndarray:
    """Tiles of the chosen channels; several contribution stacks side by side in each tile."""
    gap = opts.separator
    parts = [scale.paint(_fit_tiles(c[channels], opts.detail_tile_size, opts.smooth))
             for c in contribs]
    n, h, w = parts[0].shape[:3]
    tiles = np.full((n, h, len(parts) * (w + gap) - gap, 3), GAP, np.uint8)
    for i, p in enumerate(parts):
        tiles[:, :, i * (w + gap): i * (w + gap) + w] = p
    return tiles


# ---- views -------------------------------------------------------------------------------------

def activation_view(acts: np.ndarray, title: str = "", *,
                    options: Optional[ViewOptions] = None) -> ChannelView:
    """Every channel of a (C, h, w) activation stack, numbered, with title and colour bar.

    One scale for all tiles by default, so a strong channel and a nearly dead one look
    different: min..max of the stack (viridis), or -max|A|..+max|A| centred at 0 (PuOr_r) when
    the stack has both signs (``centre_activations``); ``shared_scale=False`` scales each tile
    alone (min..max, viridis).
    """
    opts = options or ViewOptions()
    _check_stack(acts)
    values = acts.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    centre = low < 0 < high if opts.centre_activations is None else opts.centre_activations
    if opts.shared_scale and centre:
        limit = max(-low, high)
        scale = ColourScale(-limit, limit, opts.signed)
        how = "one scale for all tiles, 0 = white"
    elif opts.shared_scale:
        scale = ColourScale(low, high, opts.sequential)
        how = "one scale for all tiles"
    else:
        values = normalise(acts)
        scale = ColourScale(0.0, 1.0, opts.sequential, per_tile=True)
        how = "each tile scaled to its own min..max"
    head = [title or "activations", f"activations of {len(acts)} channels ({acts.shape[1]} x "
                                    f"{acts.shape[2]} each); {how}"]
    return _grid_view(values, scale, head, "activation (layer output)", opts)


def contribution_view(contrib: np.ndarray, title: str = "", *, method: Optional[str] = None,
                      options: Optional[ViewOptions] = None) -> ChannelView:
    """Each channel's term of the CAM sum (C, h, w), numbered, on ONE scale centred at zero with
    a diverging colormap (positive red, negative blue, zero white) and a colour bar.

    method: names the term and its units on the picture (its channel_term). The scale is
    -max|contrib|..+max|contrib| unless ``options.limit`` fixes it (to compare views).
    """
    opts = options or ViewOptions()
    _check_stack(contrib)
    term, units = _term(method)
    head = [title or "contributions",
            f"contribution of each channel: {term}; one scale for all tiles, 0 = white"]
    return _grid_view(contrib.astype(np.float32), _signed_scale([contrib], opts), head,
                      f"contribution per position ({units}): red adds to the class map, "
                      f"blue takes away", opts)


@dataclass(frozen=True)
class TopChannels:
    """The top-channels figure and what it shows. ``channels``: the k channels with the largest
    |contribution|, largest first; ``totals``/``shares``/``weights`` are per channel (all C);
    ``cumulative``: share held by the n largest positive channels, n = 1, 2, ..."""
    image: np.ndarray
    layout: GridLayout
    scale: ColourScale
    channels: tuple[int, ...]
    totals: np.ndarray
    shares: np.ndarray
    weights: Optional[np.ndarray]
    cumulative: np.ndarray
    channels_50: int
    channels_90: int


def top_channels_view(method: str, acts: np.ndarray, grads: np.ndarray, *,
                      photo: Optional[np.ndarray] = None, cam: Optional[np.ndarray] = None,
                      k: int = 16, title: str = "",
                      options: Optional[ViewOptions] = None) -> TopChannels:
    """The k channels with the largest |contribution| for one image x class x method, largest
    first, each tile numbered with its weight and share of the map; next to the photo, the CAM
    and the cumulative share curve (how many channels make 50% / 90% of the map).

    photo: RGB (H, W, 3), uint8 or float 0..1; cam: the method's map (H, W) in 0..1 (rebuilt
    from the contributions when None). Tiles use the contribution view's signed scale.
    """
    opts = options or ViewOptions()
    contrib = channel_contributions(method, acts, grads)
    weights = channel_weights(method, acts, grads)
    totals = channel_totals(contrib)
    shares = channel_shares(totals)
    cumulative = cumulative_share(totals)
    marks = channels_needed(cumulative, 0.5), channels_needed(cumulative, 0.9)
    chosen = top_channels(totals, max(1, min(k, len(totals))))
    scale = _signed_scale([contrib], opts)
    labels = [(f"#{r + 1}  ch {c}",
               *(() if weights is None else (f"w {_fmt(float(weights[c]), True)}",)),
               f"{shares[c]:+.1%} of map") for r, c in enumerate(chosen)]
    _, cols = grid_shape(len(chosen))
    mosaic, layout = _mosaic(_detail_tiles([contrib], chosen, scale, opts), chosen, labels, cols,
                             opts)
    height = opts.panel_height
    panels = _photo_panel(photo, height) + [
        _captioned(_cam_panel(contrib, cam, photo, height), f"CAM ({method})"),
        _captioned(_curve_panel(cumulative, marks, height),
                   "cumulative share of the map vs channels")]
    term, units = _term(method)
    head = [title or f"top channels, {method}",
            f"the {len(chosen)} channels with the largest |contribution| ({term}), largest first",
            f"50% of the map: {marks[0]} channels, 90%: {marks[1]} channels "
            f"(of {len(totals)}; {len(cumulative)} add to the map)"]
    caption = f"contribution per position ({units}), same scale as the contribution grid"
    image, layout = _figure(head, panels, mosaic, layout, scale=scale, caption=caption)
    return TopChannels(image, layout, scale, tuple(int(c) for c in chosen), totals, shares,
                       weights, cumulative, *marks)


@dataclass(frozen=True)
class ClassContrast:
    """The class-contrast figure and what it shows. ``channels``: the k channels whose total
    contribution differs most between the two classes, largest |difference| first;
    ``totals``: (2, C) per class; ``difference`` = totals[0] - totals[1]. Each tile holds the
    channel's contribution for class 0 (left) and class 1 (right), one shared signed scale."""
    image: np.ndarray
    layout: GridLayout
    scale: ColourScale
    channels: tuple[int, ...]
    totals: np.ndarray
    difference: np.ndarray


def class_contrast_view(method: str, acts: np.ndarray, grads_a: np.ndarray,
                        grads_b: np.ndarray, *, classes: tuple[str, str] = ("class 0", "class 1"),
                        photo: Optional[np.ndarray] = None,
                        cams: Optional[tuple[np.ndarray, np.ndarray]] = None, k: int = 16,
                        title: str = "", options: Optional[ViewOptions] = None) -> ClassContrast:
    """For a two-class question (cat vs dog) on one image: the k channels whose contribution
    differs most between the classes, each tile showing both classes' contribution maps.

    grads_a / grads_b: d(score of classes[0] / classes[1])/d(acts); cams: the two maps (H, W)
    in 0..1 (rebuilt from the contributions when None).
    """
    opts = options or ViewOptions()
    contribs = [channel_contributions(method, acts, g) for g in (grads_a, grads_b)]
    totals = np.stack([channel_totals(c) for c in contribs])
    difference = totals[0] - totals[1]
    chosen = top_channels(difference, max(1, min(k, len(difference))))
    scale = _signed_scale(contribs, opts)
    _, cols = grid_shape(len(chosen))
    _, h, w = contribs[0].shape  # tile height: each half about detail_tile_size wide
    tile_h = min(opts.detail_tile_size, max(opts.tile_size, round(opts.detail_tile_size * h / w)))
    tiles = _detail_tiles(contribs, chosen, scale, replace(opts, detail_tile_size=tile_h))
    numbers = [(f"#{r + 1}  ch {c}", f"diff {_fmt(float(difference[c]), True)}",
                f"{classes[0]} {_fmt(float(totals[0, c]), True)}",
                f"{classes[1]} {_fmt(float(totals[1, c]), True)}") for r, c in enumerate(chosen)]
    two_lines = [(f"{a}  {b}", f"{x}  {y}") for a, b, x, y in numbers]
    fits = _label_font(two_lines, tiles.shape[2], opts.font_size) == opts.font_size
    mosaic, layout = _mosaic(tiles, chosen, two_lines if fits else numbers, cols, opts)
    height = opts.panel_height
    panels = _photo_panel(photo, height) + [
        _captioned(_cam_panel(c, None if cams is None else cams[i], photo, height),
                   f"CAM {classes[i]} ({method})") for i, c in enumerate(contribs)]
    term, units = _term(method)
    head = [title or f"class contrast, {method}",
            f"the {len(chosen)} channels whose contribution ({term}) differs most between "
            f"{classes[0]} and {classes[1]}",
            f"each tile: {classes[0]} left, {classes[1]} right; numbers: the channel's total "
            f"contribution ({units}), diff = {classes[0]} - {classes[1]}"]
    caption = f"contribution per position ({units}), one scale for both classes"
    image, layout = _figure(head, panels, mosaic, layout, scale=scale, caption=caption)
    return ClassContrast(image, layout, scale, tuple(int(c) for c in chosen), totals, difference)


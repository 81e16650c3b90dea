"""Assembling a channel picture: text blocks, tile labels, colour bars, photo and CAM panels,
the cumulative-share curve. All text goes through ``explain.render``'s one text path
(Pillow, DejaVu Sans)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Sequence

import cv2
import numpy as np
from pytorch_grad_cam.utils.image import scale_cam_image

from explain.render import INK, Text, as_uint8, draw_text, line_height, text_width
from explain.channels.tiles import (BAND, ColourScale, GAP, GridLayout, MIN_LABEL_SIZE, SMALL_SIZE,
                                    SOFT_INK, TEXT_SIZE, TITLE_SIZE, ViewOptions, painted_tiles,
                                    tile_mosaic, grid_shape)


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


def format_number(value: float, signed: bool) -> str:
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
        ticks = [(float(v), format_number(float(v), scale.centred)) for v in values]
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


def label_font_size(labels: Sequence[Sequence[str]], tile_w: int, size: int) -> int:
    """The largest text size <= ``size`` (down to MIN_LABEL_SIZE) at which every label line
    fits the tile."""
    texts = [t for lines in labels for t in lines] or [""]
    while size > MIN_LABEL_SIZE and max(text_width(t, size) for t in texts) + 4 > tile_w:
        size -= 1
    return size


def tile_grid(tiles: np.ndarray, channels: Sequence[int], labels: Sequence[Sequence[str]],
            cols: int, opts: ViewOptions) -> tuple[np.ndarray, GridLayout]:
    """(N, h, w, 3) uint8 tiles -> mosaic with a number band above each tile; the layout's
    origin is (0, 0), to be moved when the mosaic is placed in a picture."""
    n, h, w = tiles.shape[:3]
    font = label_font_size(labels, w, opts.font_size)
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
    mosaic = tile_mosaic(cells, cols, opts.separator, GAP, pad_fill=255)
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


def grid_view(values: np.ndarray, scale: ColourScale, head: Sequence[str], caption: str,
               opts: ViewOptions) -> ChannelView:
    """Title lines, the labelled mosaic of all channels, colour bar; values already scaled."""
    _, cols = grid_shape(len(values))
    tiles = painted_tiles(values, opts.tile_size, opts.smooth, scale)
    mosaic, layout = tile_grid(tiles, range(len(values)), [(str(k),) for k in range(len(values))],
                             cols, opts)
    image, layout = assemble_figure(head, [], mosaic, layout, scale=scale, caption=caption)
    return ChannelView(image, layout, scale)


def assemble_figure(head: Sequence[str], panels: Sequence[np.ndarray], mosaic: np.ndarray,
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


class SharedPanels:
    """The panels several figures of one image show, drawn once: the photo, and each map's CAM
    over it (a class's top-channels figure and its method's class contrast show the same CAM).
    A CAM is known by its array (kept here, so its id stays its own). ``overlay(cam, picture)``
    hands in a CAM's overlay at photo size that the caller already drew with the figures'
    colours (``render.overlay(photo, cam, "jet", 0.5)``: the map writer's, by default)."""

    def __init__(self) -> None:
        self._photos: dict[tuple[int, int], tuple[np.ndarray, list[np.ndarray]]] = {}
        self._cams: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._overlays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def overlay(self, cam: np.ndarray, picture: np.ndarray) -> None:
        self._overlays[id(cam)] = (cam, picture)

    def photo(self, photo: np.ndarray, height: int) -> list[np.ndarray]:
        key = (id(photo), height)
        if key not in self._photos:
            self._photos[key] = (photo, _photo_panel(photo, height))
        return self._photos[key][1]

    def cam(self, cam: np.ndarray, photo: np.ndarray, height: int) -> np.ndarray:
        key = (id(cam), height)
        if key not in self._cams:
            known = self._overlays.get(id(cam))
            picture = known[1] if known is not None else _cam_overlay(cam, photo)
            self._cams[key] = (cam, _panel(picture, height))
        return self._cams[key][1]


def photo_panel(photo: Optional[np.ndarray], height: int,
                shared: Optional[SharedPanels] = None) -> list[np.ndarray]:
    """[the photo, captioned, ``height`` rows high], or [] without a photo."""
    if photo is None:
        return []
    return shared.photo(photo, height) if shared is not None else _photo_panel(photo, height)


def _photo_panel(photo: np.ndarray, height: int) -> list[np.ndarray]:
    return [captioned(_panel(as_uint8(photo), height), "photo")]


def signed_scale(arrays: Sequence[np.ndarray], opts: ViewOptions) -> ColourScale:
    limit = opts.limit if opts.limit is not None else max(float(np.abs(a).max()) for a in arrays)
    return ColourScale(-limit, limit, opts.diverging)


def _as_photo(photo: np.ndarray) -> np.ndarray:
    """RGB uint8 or float 0..1 -> float32 0..1."""
    return photo.astype(np.float32) / 255 if photo.dtype == np.uint8 else photo.astype(np.float32)


def cam_panel(contrib: np.ndarray, cam: Optional[np.ndarray], photo: Optional[np.ndarray],
              height: int, shared: Optional[SharedPanels] = None) -> np.ndarray:
    """The CAM over the photo (or alone), ``height`` rows. Without ``cam`` it is rebuilt from the
    contributions the library's way: ReLU of the channel sum, min-max scaled, resized."""
    if cam is not None and photo is not None and shared is not None:
        return shared.cam(cam, photo, height)
    size = photo.shape[:2] if photo is not None else (height, round(height * contrib.shape[2] /
                                                                     contrib.shape[1]))
    if cam is None:
        cam = scale_cam_image(np.maximum(contrib.sum(axis=0), 0)[None], (size[1], size[0]))[0]
    return _panel(_cam_overlay(cam, photo), height)


def _cam_overlay(cam: np.ndarray, photo: Optional[np.ndarray]) -> np.ndarray:
    """The CAM (jet) over the photo, half and half, at the CAM's size; alone without a photo."""
    from explain.render import overlay
    if photo is None:
        return overlay(np.zeros((*cam.shape, 3), np.float32), cam, "jet", 0.0)
    return overlay(_as_photo(photo), cam, "jet", 0.5)


def _panel(rgb: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def captioned(img: np.ndarray, caption: str) -> np.ndarray:
    return _stack_rows([_text_block([(caption, TEXT_SIZE, INK)], pad=2), img], gap=0, margin=0)[0]


def _dashed(img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], colour) -> None:
    n = max(1, int(math.hypot(p1[0] - p0[0], p1[1] - p0[1])) // 6)
    for i in range(0, n, 2):
        a = (p0[0] + (p1[0] - p0[0]) * i // n, p0[1] + (p1[1] - p0[1]) * i // n)
        b = (p0[0] + (p1[0] - p0[0]) * (i + 1) // n, p0[1] + (p1[1] - p0[1]) * (i + 1) // n)
        cv2.line(img, a, b, colour, 1, cv2.LINE_AA)


def curve_panel(cumulative: np.ndarray, marks: tuple[int, int], height: int) -> np.ndarray:
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


def detail_tiles(contribs: Sequence[np.ndarray], channels: np.ndarray, scale: ColourScale,
                  opts: ViewOptions) -> np.ndarray:
    """Tiles of the chosen channels; several contribution stacks side by side in each tile."""
    gap = opts.separator
    parts = [painted_tiles(c[channels], opts.detail_tile_size, opts.smooth, scale)
             for c in contribs]
    n, h, w = parts[0].shape[:3]
    tiles = np.full((n, h, len(parts) * (w + gap) - gap, 3), GAP, np.uint8)
    for i, p in enumerate(parts):
        tiles[:, :, i * (w + gap): i * (w + gap) + w] = p
    return tiles

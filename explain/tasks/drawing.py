"""Drawing on the overlays of segmentation and detection runs: a region's outline (white for
the predicted mask, magenta for the ground truth), a detection's box (white, one pixel) with
its label and score above it (below it at the picture's top), and the per-image pictures
(the predicted mask in colour, every explained box). Every shape is drawn at exact pixels, so
a test can read it back: a box's edges are the pixel rectangle ``pixel_box`` gives, an
outline the pixels ``outline`` marks."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from explain.render import Text, as_uint8, draw_text, line_height, text_width

PREDICTED = (255, 255, 255)  # outline of the predicted mask; detection boxes
TRUTH = (255, 0, 255)  # outline of the ground-truth mask
TEXT = (0, 0, 0)


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour outside it (the image's edge counts as
    outside): a one-pixel line along the region's border."""
    m = np.pad(mask.astype(bool), 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~inner


def draw_outline(rgb: np.ndarray, mask: np.ndarray, color: Sequence[int] = PREDICTED) -> None:
    """Paint the outline of ``mask`` on the uint8 RGB picture, in place."""
    rgb[outline(mask)] = color


def pixel_box(box: Sequence[float], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1, continuous, x1 and y1 exclusive) as the inclusive pixel
    rectangle (px0, py0, px1, py1) it covers, inside an image of ``shape`` (H, W)."""
    h, w = shape
    x0, y0 = (int(np.clip(np.floor(v), 0, n - 1)) for v, n in ((box[0], w), (box[1], h)))
    x1 = int(np.clip(np.ceil(box[2]) - 1, x0, w - 1))
    y1 = int(np.clip(np.ceil(box[3]) - 1, y0, h - 1))
    return x0, y0, x1, y1


def box_mask(box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """The pixels of ``pixel_box`` as a boolean (H, W) mask."""
    x0, y0, x1, y1 = pixel_box(box, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def draw_label(rgb: np.ndarray, box: Sequence[float], text: str,
               taken: list[tuple[int, int, int, int]] | None = None) -> None:
    """The text on a white label at the box's left: above the box when there is room (its
    bottom row on the box's top edge), else below it (its top row on the bottom edge), else
    hanging inside it from the top (a line lower, and so on, where that is taken); moved left
    to stay whole in the picture; in place. ``taken``: the labels already drawn (x0, y0, x1,
    y1), which a place that overlaps one gives way to the next; the new label is added to it."""
    h, w = rgb.shape[:2]
    x0, y0, _, y1 = pixel_box(box, (h, w))
    size = max(8, min(13, h // 30))  # px, in explain.render's font
    tw = text_width(text, size)
    tall, left = line_height(size) + 1, max(0, min(x0, w - 1 - (tw + 2)))
    right = min(w - 1, left + tw + 2)
    places = [top for top in (y0 - tall, y1) if 0 <= top and top + tall < h] + [y0]
    # then stacked lower inside the box, so boxes sharing a top edge (often the picture's)
    # keep every label readable
    places += [top for top in range(y0 + tall, y1 - tall + 1, tall) if top + tall < h]
    free = [top for top in places if not any(
        left <= r[2] and r[0] <= right and top <= r[3] and r[1] <= top + tall
        for r in taken or [])]
    top = (free or places)[0]
    if taken is not None:
        taken.append((left, top, right, top + tall))
    cv2.rectangle(rgb, (left, top), (right, top + tall), PREDICTED, -1)
    rgb[:] = draw_text(rgb, [Text(text, left + 1, top + 1, size, TEXT)])


def draw_boxes(rgb: np.ndarray, boxes: Sequence[tuple[Sequence[float], str]]) -> None:
    """Each (box, text): the labels first (a later one where it overlaps no earlier one, if
    it can), then every box as a one-pixel white rectangle on its ``pixel_box``, so no label
    hides an edge; in place."""
    taken: list[tuple[int, int, int, int]] = []
    for box, text in boxes:
        if text:
            draw_label(rgb, box, text, taken)
    for box, _ in boxes:
        x0, y0, x1, y1 = pixel_box(box, rgb.shape[:2])
        cv2.rectangle(rgb, (x0, y0), (x1, y1), PREDICTED, 1)


def palette(count: int) -> np.ndarray:
    """``count`` distinct RGB colours (class c's colour is row c), the same in every run."""
    rng = np.random.default_rng(7)
    colours = rng.integers(40, 256, size=(max(count, 1), 3)).astype(np.uint8)
    colours[0] = (0, 0, 0)  # class 0 (background in most label sets) stays the photo
    return colours


def mask_picture(rgb: np.ndarray, labels: np.ndarray, count: int,
                 truth: np.ndarray | None = None) -> np.ndarray:
    """The photo (float RGB 0..1) with the predicted label map in colour over it (class 0
    left clear), each class's outline in white and, with ``truth``, the ground truth's in
    magenta."""
    photo = as_uint8(rgb)
    colours = palette(max(count, int(labels.max()) + 1))
    coloured = colours[np.clip(labels, 0, len(colours) - 1)]
    tint = labels > 0
    picture = photo.copy()
    picture[tint] = (0.5 * photo[tint] + 0.5 * coloured[tint]).astype(np.uint8)
    for c in np.unique(labels):
        draw_outline(picture, labels == c)
    if truth is not None:
        for c in np.unique(truth):
            draw_outline(picture, truth == c, TRUTH)
    return picture

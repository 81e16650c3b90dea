"""panels/<class>.png: per class, a row per image (first PANEL_MAX_ROWS), photo + each method.

The overlays are read back from the files this run wrote, so a resumed run's panels are
byte-identical to an uninterrupted run's. The photos are kept while the run explains the
images (the first PANEL_MAX_ROWS per class), so no image is decoded a second time; an image
explained by an earlier, interrupted run or by another torchrun rank is decoded from the
file the config names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from explain import render
from explain.errors import ExplainError
from explain.images import preprocess, read_rgb
from explain.images.reading import decode_stored
from explain.outputs import RunFolder
from explain.results import ImageEntry
from explain.writers import RunContext, Writer

if TYPE_CHECKING:
    from explain.batches import BatchContext

PANEL_MAX_ROWS = 24  # a panel with more rows is unreadable; the rest are in cams/
THUMB = 224
MAX_OVERLAY_PIXELS = 64 * 1024 * 1024  # an overlay read back (at input size: far smaller)


def thumbnail(img: np.ndarray, longest: int = THUMB) -> np.ndarray:
    """Shrink so the longer side is at most ``longest`` (INTER_AREA); never enlarge."""
    h, w = img.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def panel_photo(rgb: np.ndarray) -> np.ndarray:
    """An image's photo in the panels: the model's input (RGB 0..1) as a uint8 thumbnail."""
    return thumbnail(render.as_uint8(rgb))


class PanelWriter(Writer):
    def __init__(self) -> None:
        self.photos: dict[str, np.ndarray] = {}  # image id -> its panel photo
        self.seen: dict[str, int] = {}  # class -> images explained with it so far

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        for view in batch.images:
            for one in view.classes():
                if self.seen.get(one.class_name, 0) < PANEL_MAX_ROWS:
                    self.photos.setdefault(view.entry.id, panel_photo(view.item.rgb))
                self.seen[one.class_name] = self.seen.get(one.class_name, 0) + 1

    def finish(self, ctx: RunContext) -> None:
        cfg, methods = ctx.cfg, ctx.methods
        rows: dict[str, list] = {}
        for entry in ctx.summary.images:
            ref = ctx.sources.get(entry.id)
            wanted = [c for c in entry.explained_classes()
                      if len(rows.setdefault(c, [])) < PANEL_MAX_ROWS]
            if not wanted or ref is None:
                continue
            photo = self.photos.get(entry.id)
            if photo is None:  # the image the config names (never a path an item file holds)
                photo = panel_photo(preprocess(read_rgb(ref.path, cfg.preprocess.max_pixels,
                                                        cfg.preprocess.max_bytes),
                                               cfg.preprocess)[1])
            for cls in wanted:
                overlays = [read_overlay(ctx.run, _record_file(entry, cls, m),
                                         size=entry.input_size) for m in methods]
                rows[cls].append((entry.id, photo, [thumbnail(o) for o in overlays]))
        for cls, class_rows in rows.items():
            picture = render.panel(class_rows, methods, f"class '{cls}' — {', '.join(methods)} "
                                                        f"at {', '.join(cfg.target_layers)}")
            ctx.summary.files.panels[cls] = f"panels/{cls}.png"
            ctx.run.write_image(ctx.summary.files.panels[cls], picture.image)


def _record_file(entry: ImageEntry, cls: str, method: str) -> str:
    rec = next((r for r in entry.cams if r.class_name == cls and r.method == method), None)
    if rec is None:
        raise ExplainError(f"image '{entry.id}': no {method} map of class '{cls}' in its "
                           f"record; the run folder is damaged")
    return rec.file


def read_overlay(run: RunFolder, rel: str, *, size: Sequence[int]) -> np.ndarray:
    """An overlay this run wrote, read back as RGB from inside the run folder (no link is
    followed); ExplainError naming the file when it is missing, not a picture or not of its
    image's input ``size`` (height, width)."""
    data = run.read_bytes(rel)
    picture = None if data is None else decode_stored(data, max_pixels=MAX_OVERLAY_PIXELS,
                                                      size=(size[0], size[1]))
    if picture is None:
        raise ExplainError(f"{run.root / rel}: the map picture is missing, unreadable or not "
                           f"{size[0]} x {size[1]} pixels (its image's input size); the run "
                           f"folder is damaged")
    return cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)

"""panels/<class>.png: per class, a row per image (first PANEL_MAX_ROWS), photo + each method.

The overlays are read back from the files this run wrote, so a resumed run's panels are
byte-identical to an uninterrupted run's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from explain import render
from explain.images import preprocess, read_rgb
from explain.writers import RunContext, Writer

PANEL_MAX_ROWS = 24  # a panel with more rows is unreadable; the rest are in cams/
THUMB = 224


def thumbnail(img: np.ndarray, longest: int = THUMB) -> np.ndarray:
    """Shrink so the longer side is at most ``longest`` (INTER_AREA); never enlarge."""
    h, w = img.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


class PanelWriter(Writer):
    def finish(self, ctx: RunContext) -> None:
        cfg, methods = ctx.cfg, ctx.methods
        rows: dict[str, list] = {}
        for entry in ctx.summary.images:
            wanted = [c for c in dict.fromkeys(r.class_name for r in entry.cams)
                      if len(rows.setdefault(c, [])) < PANEL_MAX_ROWS]
            if not wanted:
                continue
            rgb = preprocess(read_rgb(Path(entry.path), cfg.preprocess.max_pixels), cfg.preprocess)[1]
            photo = thumbnail(np.uint8(np.round(rgb * 255)))  # decoded once for all its classes
            for cls in wanted:
                overlays = [cv2.cvtColor(cv2.imread(str(ctx.run.path(entry.record(cls, m).file))),
                                         cv2.COLOR_BGR2RGB) for m in methods]
                rows[cls].append((entry.id, photo, [thumbnail(o) for o in overlays]))
        for cls, class_rows in rows.items():
            picture = render.panel(class_rows, methods, f"class '{cls}' — {', '.join(methods)} "
                                                        f"at {', '.join(cfg.target_layers)}")
            ctx.run.write_image(f"panels/{cls}.png", picture.image)

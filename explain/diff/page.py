"""diff.html of ``explain diff`` and its pictures: for each of the maps that changed most,
run A's map, run B's map (drawn as the runs draw them, over the photo) and the change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from explain import render
from explain.diff.numbers import DiffResult, MapDiff, changes, flip_line, groups
from explain.diff.runs import DIFF_CSV, Side
from explain.errors import ExplainError
from explain.images.reading import decode_stored
from explain.outputs import RunFolder
from explain.results import ImageEntry

MAX_PHOTO_BYTES = 32 * 1024 * 1024  # report/photos/<image>.jpg read back
THUMB_SIDE = 256  # the pictures' longest side at most (pixels)


@dataclass
class Case:
    """One of the maps that changed most, with its pictures (paths in the diff folder)."""
    rank: int
    map: MapDiff
    pictures: dict[str, str]  # 'a', 'b', 'change' -> pictures/<rank>-<which>.png
    size: tuple[int, int]  # (height, width) of the pictures
    photo: bool  # drawn over the photo (else the map alone)


def _photo(side: Side, entry: ImageEntry) -> Optional[np.ndarray]:
    """The run's photo of the image at input size (RGB float 0..1), or None when the records
    name none, or it is not a picture of that size (the header is read before decoding)."""
    rel = entry.files.photo
    try:
        data = side.folder.read_bytes(rel, MAX_PHOTO_BYTES) if rel else None
        if data is None:
            return None
        bgr = decode_stored(data, size=(entry.input_size[0], entry.input_size[1]))
    except (ExplainError, OSError, ValueError, cv2.error):
        return None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) / 255.0


def change_picture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """B - A as colour: white where equal, red where B is stronger, blue where weaker
    (full colour at a change of 1, the whole 0..1 range of a map); uint8 RGB."""
    d = np.clip(y - x, -1.0, 1.0)
    up, down = np.clip(d, 0, None), np.clip(-d, 0, None)
    rgb = np.stack([1 - down, 1 - up - down, 1 - up], axis=-1)
    return render.as_uint8(rgb)


def map_picture(cam: np.ndarray, photo: Optional[np.ndarray], colormap: str,
                weight: float) -> np.ndarray:
    """A map as the run draws it (colormap over the photo), or the map alone; uint8 RGB."""
    cam = np.clip(cam, 0.0, 1.0)
    if photo is not None:
        return render.overlay(photo, cam, colormap, weight)
    bgr = cv2.applyColorMap(render.as_uint8(cam), render.colormap_code(colormap))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _thumb(picture: np.ndarray) -> np.ndarray:
    h, w = picture.shape[:2]
    scale = THUMB_SIDE / max(h, w)
    if scale >= 1:
        return picture
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def write_pictures(folder: RunFolder, result: DiffResult, rank: int, item: tuple) -> Case:
    """Write one case's three pictures (A, B, the change) under pictures/."""
    one, x, y = item
    entry = next(e for e in result.a.summary.images if e.id == one.image)
    out = result.a.summary.config.output
    photo = _photo(result.a, entry)
    drawn = {"a": map_picture(x, photo, out.colormap, out.image_weight),
             "b": map_picture(y, photo, out.colormap, out.image_weight),
             "change": change_picture(x, y)}
    paths = {which: f"pictures/{rank:02d}-{which}.png" for which in drawn}
    for which, picture in drawn.items():
        picture = _thumb(picture)
        folder.write_image(paths[which], picture)
    return Case(rank, one, paths, picture.shape[:2], photo is not None)


def render_page(result: DiffResult, cases: list[Case]) -> str:
    """diff.html: the two runs, the correlations per method and class, the mean changes of
    the records' numbers, and the maps that changed most (text escaped by the templates)."""
    from explain.shownpaths import shown_path  # a run's config by its name, as report.html
    from explain.writers.report import environment
    every = changes(result)
    moved = [c for c in every if c.mean_change or c.largest]  # the rest: one line of names
    names = {c.name for c in moved}
    return environment().get_template("diff.html.j2").render(
        summary=result.b.summary, result=result, groups=groups(result), changes=moved,
        unchanged=[n for n in dict.fromkeys(c.name for c in every) if n not in names],
        cases=cases, flip_line=flip_line(result), csv=DIFF_CSV,
        config_of=lambda side: shown_path(side.summary.config_file, side.summary.config_file))

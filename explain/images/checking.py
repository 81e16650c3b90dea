"""The images a config names, checked before anything is written: every named file's header
(``reading.precheck``), how a fixed ``preprocess.size`` changes their shape, and the first
image that decodes (the preflight pass's; it is not decoded again)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from explain.annotations import original_size
from explain.errors import ExplainError
from explain.images.reading import ImageError, ImageRef, Prepared, precheck, prepare

if TYPE_CHECKING:
    from explain.config import Config

SQUEEZED = 1.25  # a shape changed by more than this factor is said (4:3 made square: 1.33)


def aspect_change(height: int, width: int, size: object) -> float:
    """How far resizing a height x width picture to a fixed ``size`` ([H, W]) changes its
    shape: the larger aspect ratio over the smaller (1.0 for one number, the short side,
    which keeps the shape; 2.0 for a 2:1 photo made square)."""
    if isinstance(size, int):
        return 1.0
    ratios = (width / height, size[1] / size[0])
    return max(ratios) / min(ratios)


def first_image(cfg: "Config", refs: list[ImageRef]) -> tuple[Prepared, list[str]]:
    """Every image the user named passes the checks that need no decoding; returns the first
    image that decodes (for the preflight pass) and a note on the named images a fixed size
    squeezes (the course's both.jpg, 2:1, made 224 x 224: its maps are of a squeezed photo)."""
    squeezed = []
    try:
        for ref in refs:
            if not ref.from_folder:
                height, width = precheck(ref, cfg.preprocess)
                if not isinstance(cfg.preprocess.size, int):  # as decoded: EXIF turns it
                    height, width = original_size(ref.path)
                if aspect_change(height, width, cfg.preprocess.size) > SQUEEZED:
                    squeezed.append(f"{ref.path.name} ({width} x {height})")
    except ImageError as exc:  # the field that named it, and (naming_the_file) the config
        raise ExplainError(f"images: {exc}") from None
    why = None
    for ref in refs:
        try:
            return prepare(ref, cfg.preprocess), _squeeze_note(cfg, squeezed)
        except ImageError as exc:
            if not ref.from_folder:
                raise ExplainError(f"images: {exc}") from None
            why = why or exc
    raise ExplainError(f"images: none of the {len(refs)} image(s) could be read (first: {why})")


def _squeeze_note(cfg: "Config", squeezed: list[str]) -> list[str]:
    if not squeezed:
        return []
    height, width = cfg.preprocess.size
    shown = ", ".join(squeezed[:3]) + (", ..." if len(squeezed) > 3 else "")
    return [f"preprocess.size [{height}, {width}] changes the shape of {len(squeezed)} named "
            f"image(s) by more than {SQUEEZED}x: {shown}; their pictures and maps are of the "
            f"squeezed photo (one number, preprocess.size: {min(height, width)}, is the short "
            f"side and keeps each photo's shape, where the model takes any size)"]

"""The images a config names, checked before anything is written: every named file's header
(``reading.precheck``), how a fixed ``preprocess.size`` changes their shape, and the first
image that decodes (the preflight pass's; it is not decoded again)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from explain.images.orientation import original_size
from explain.errors import ExplainError
from explain.images.reading import ImageError, ImageRef, Prepared, precheck, prepare

if TYPE_CHECKING:
    from explain.config import Config

SQUEEZED = 1.25  # a shape changed by more than this factor is said (4:3 made square: 1.33)
ENLARGED = 2.0  # a first image made this many times larger (or more) is said


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
            first = prepare(ref, cfg.preprocess)
            return first, _squeeze_note(cfg, squeezed) + _enlarge_note(cfg, first)
        except ImageError as exc:
            if not ref.from_folder:
                raise ExplainError(f"images: {exc}") from None
            why = why or exc
    raise ExplainError(f"images: none of the {len(refs)} image(s) could be read (first: {why})")


def _enlarge_note(cfg: "Config", first: Prepared) -> list[str]:
    """A note when ``preprocess.size`` enlarges the first image ENLARGED times or more: a
    student's 64 x 64 scans fed at the default 224 went from 100% to 67% accuracy, silently
    (a network sees a feature 3.5x larger than it learned it)."""
    height, width = original_size(first.ref.path)  # its header, as decoded: no second decode
    fed_h, fed_w = first.tensor.shape[-2:]
    factor = min(fed_h / height, fed_w / width)
    if factor < ENLARGED:
        return []
    size = cfg.preprocess.size
    said = size if isinstance(size, int) else f"[{size[0]}, {size[1]}]"
    return [f"preprocess.size {said} enlarges the first image, {first.ref.path.name} "
            f"({width} x {height}), {factor:.1f}x to {fed_w} x {fed_h}; a network trained at "
            f"the images' own size sees every feature {factor:.1f}x larger than it learned "
            f"it: set preprocess.size to the size it was trained at (e.g. preprocess.size: "
            f"{min(height, width)})"]


def _squeeze_note(cfg: "Config", squeezed: list[str]) -> list[str]:
    if not squeezed:
        return []
    height, width = cfg.preprocess.size
    shown = ", ".join(squeezed[:3]) + (", ..." if len(squeezed) > 3 else "")
    return [f"preprocess.size [{height}, {width}] changes the shape of {len(squeezed)} named "
            f"image(s) by more than {SQUEEZED}x: {shown}; their pictures and maps are of the "
            f"squeezed photo (one number, preprocess.size: {min(height, width)}, is the short "
            f"side and keeps each photo's shape, where the model takes any size)"]

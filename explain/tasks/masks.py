"""Ground-truth label maps for task: segmentation (``segmentation.masks``): one PNG per image
in a folder, named ``<image id>.png`` or ``<image file stem>.png``, of the image's size (as
displayed: EXIF orientation applied), each pixel value a class index (a palette PNG's index,
a grayscale PNG's value; values that name no class, such as VOC's 255 border, are in no
class's mask). Read with the image limits (``preprocess.max_bytes``, ``max_pixels``),
resized to the model's input by nearest neighbour. Every problem is one line naming the
file: not a folder, a missing map (with ``region: label``; one named in another letter
case is pointed at), the wrong size, a colour PNG."""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
from PIL import Image

from explain.images import quiet
from explain.images.orientation import original_size
from explain.images.reading import pillow_header, png_chunks
from explain.config import read_bounded_bytes
from explain.errors import ExplainError
from explain.names import quote

LABEL_MODES = ("1", "L", "P", "I;16", "I")  # single-channel PNGs whose values are indices


def mask_folder(cfg: Any) -> Optional[Path]:
    """The folder ``segmentation.masks`` names (resolved), or None; one line when it is not
    a folder."""
    if cfg.segmentation.masks is None:
        return None
    folder = cfg.resolve(cfg.segmentation.masks)
    if not folder.is_dir():
        raise ExplainError(f"segmentation.masks: {folder}: not a folder (a folder of PNG label "
                           f"maps, <image id>.png)")
    return folder


def mask_names(image_id: str, path: Path) -> tuple[str, ...]:
    """The names an image's label map may have: ``<image id>.png``, ``<file stem>.png``."""
    return tuple(dict.fromkeys((f"{image_id}.png", f"{path.stem}.png")))


def mask_file(folder: Path, ref: Any) -> Optional[Path]:
    """The image's label map in ``folder`` (a regular file, not a link), or None."""
    for name in mask_names(ref.id, ref.path):
        path = folder / name
        if path.is_file() and not path.is_symlink():
            return path
    return None


LISTED_MASKS = 100_000  # folder entries the letter-case hint reads at most


def case_misses(folder: Path, images: list[tuple[str, Path]]) -> dict[str, tuple[str, str]]:
    """Per image (id, path) without its label map: (a file in ``folder`` whose name is one of
    the image's names in another letter case, that name), as 'Cat.png' or 'cat.PNG' for
    cat.JPG's 'cat.png': names are matched exactly. The folder is listed once, its first
    LISTED_MASKS entries."""
    if not images:
        return {}
    lower: dict[str, str] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in itertools.islice(entries, LISTED_MASKS):
                lower.setdefault(entry.name.lower(), entry.name)
    except OSError:
        return {}
    found = {}
    for image_id, path in images:
        near = [(lower[n.lower()], n) for n in mask_names(image_id, path) if n.lower() in lower]
        if near:
            found[image_id] = near[0]
    return found


def case_hint(folder: Path, image_id: str, path: Path) -> str:
    """'; there is 'Cat.png' ...' when the folder has the image's label map in another letter
    case, else ''."""
    near = case_misses(folder, [(image_id, path)]).get(image_id)
    return (f"; there is {quote(near[0])}, its name in another letter case (names are "
            f"matched exactly: rename it {quote(near[1])})") if near else ""


def _opened(path: Path, cfg: Any) -> Image.Image:
    spec = cfg.preprocess
    data = read_bounded_bytes(path, spec.max_bytes, "a label map")
    try:
        png_chunks(lambda at, count: data[at:at + count], True)  # before Pillow walks them
        with pillow_header(io.BytesIO(data)) as header:  # any format's, in bounded reads
            width, height, kind = *header.size, header.format
        with quiet.reading():  # max_pixels bounds it below, not Pillow's own bound
            img = Image.open(io.BytesIO(data), formats=["PNG"]) if kind == "PNG" else None
    except Exception:
        raise ExplainError(f"segmentation.masks: {path}: not a readable PNG label map") from None
    if img is None:  # lossless, as class indices must be; and a JPEG of repeated scans
        # decoded by Pillow had no scan bound here (minutes per map)
        raise ExplainError(f"segmentation.masks: {path}: a {kind or 'non-PNG'} file; a "
                           f"label map is a PNG (lossless: its pixel values are class indices)")
    if width * height > spec.max_pixels:
        raise ExplainError(f"segmentation.masks: {path}: {width}x{height} is over "
                           f"preprocess.max_pixels ({spec.max_pixels})")
    if img.mode not in LABEL_MODES:
        raise ExplainError(f"segmentation.masks: {path}: a {img.mode} picture; a label map is "
                           f"a single-channel PNG (grayscale or palette) whose pixel values "
                           f"are class indices")
    return img


def _same_size(path: Path, img: Image.Image, ref: Any) -> None:
    height, width = original_size(ref.path)
    if img.size != (width, height):
        raise ExplainError(f"segmentation.masks: {path}: {img.size[0]}x{img.size[1]} pixels, "
                           f"but image {quote(ref.id)} is {width}x{height}; a label map has its "
                           f"image's size")


def check_masks(cfg: Any, refs: list) -> None:
    """Before anything is written: every label map there has a usable mode and its image's
    size; with ``region: label`` every image has one. (The images without one are a note
    from their records: explain.tasks.records.task_notes.)"""
    folder = mask_folder(cfg)
    if folder is None:
        return
    for ref in refs:
        path = mask_file(folder, ref)
        if path is None:
            if cfg.segmentation.region == "label":
                raise ExplainError(f"segmentation.masks: no label map for image "
                                   f"{quote(ref.id)} ({folder / (ref.id + '.png')})"
                                   f"{case_hint(folder, ref.id, ref.path)}; region: label "
                                   f"explains each class over its ground-truth pixels")
            continue
        try:
            original_size(ref.path)
        except Exception:  # an unreadable image: the run skips it or says so
            continue
        _same_size(path, _opened(path, cfg), ref)


def read_truth(cfg: Any, item: Any) -> Optional[np.ndarray]:
    """The image's label map at model input size (int32), or None without one."""
    folder = mask_folder(cfg)
    path = None if folder is None else mask_file(folder, item.ref)
    if path is None:
        return None
    img = _opened(path, cfg)
    _same_size(path, img, item.ref)
    labels = np.asarray(img).astype(np.int32)
    return to_size(labels, tuple(item.rgb.shape[:2]))


def to_size(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map resized to (H, W) by nearest neighbour (unchanged when it fits)."""
    if tuple(labels.shape) == tuple(size):
        return labels
    return cv2.resize(labels.astype(np.int32), (size[1], size[0]),
                      interpolation=cv2.INTER_NEAREST)

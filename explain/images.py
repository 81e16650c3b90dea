"""Finding, decoding and preprocessing images with OpenCV.

Decoding uses ``cv2.IMREAD_COLOR``, which applies EXIF orientation and turns grayscale,
palette, RGBA (alpha dropped) and 16-bit files into 8-bit BGR; we convert to RGB.
Images over ``preprocess.max_pixels`` are refused before decoding (the header is read with
Pillow), so a huge file cannot exhaust memory.

``images`` entries are files, folders, globs, or labelled datasets (``{labelled: PATH}``: an
ImageFolder-style tree or a .csv / .json list), whose images carry ``ImageRef.label``.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from PIL import Image

from explain.config import MAX_SIDE, Config, LabelledImages, Preprocess, read_bounded_text
from explain.errors import ExplainError
from explain.names import quote, safe_slug, short, suggest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class ImageError(ExplainError):
    """One image cannot be used; inside a folder it is skipped, named alone it stops the run."""


@dataclass(frozen=True)
class ImageRef:
    """An image to explain: its unique id (used in output names) and where it lives."""
    id: str
    path: Path
    from_folder: bool  # found by a folder or glob: a bad file is skipped, not fatal
    label: Optional[str] = None  # ground-truth class name (labelled datasets)


@dataclass
class Prepared:
    """One image ready for the model: normalised CHW tensor and the resized RGB in 0..1."""
    ref: ImageRef
    tensor: torch.Tensor
    rgb: np.ndarray  # float32 (H, W, 3), the photo at model input size, for overlays


MAX_IMAGES = 1_000_000  # files one images entry may expand to (a link loop stops here)


def _matches(pattern: str, where: str) -> list[Path]:
    """Files a glob matches, at most MAX_IMAGES. pathlib's '**' does not descend into linked
    folders, so a symbolic link loop cannot make it run forever."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    found = []
    for path in Path(*parts[:first]).glob(str(Path(*parts[first:]))):
        if len(found) >= MAX_IMAGES:
            raise ExplainError(f"{where}: the pattern matches over {MAX_IMAGES} files; "
                               f"split the images into several runs")
        if path.is_file():
            found.append(path)
    return sorted(found)


Found = tuple[Path, bool, Optional[str]]  # a file, whether from a folder/glob/list, its label


def find_images(cfg: Config) -> tuple[list[ImageRef], list[str]]:
    """Expand files, folders, globs and labelled datasets of ``images``; returns the images
    and skip notes."""
    paths: list[Found] = []
    notes: list[str] = []
    for i, entry in enumerate(cfg.images):
        where = f"images[{i}]"
        if isinstance(entry, LabelledImages):
            paths += labelled_files(cfg, entry, where, notes)
            continue
        try:
            path = cfg.resolve(entry)
            if glob.has_magic(entry):
                candidates = [(p, True) for p in _matches(str(path), where)]
                if not candidates:
                    raise ExplainError(f"{where}: the pattern {quote(entry)} matches no file")
            elif path.is_dir():
                candidates = [(p, True) for p in sorted(path.iterdir()) if p.is_file()]
            elif path.is_file():
                candidates = [(path, False)]
            else:
                raise ExplainError(f"{where}: image not found: {short(path)}")
        except OSError as exc:  # a name too long, a folder we may not read
            raise ExplainError(f"{where}: {quote(entry)}: {exc.strerror}") from None
        images = [(p, f, None) for p, f in candidates
                  if not f or p.suffix.lower() in IMAGE_SUFFIXES]
        notes += [f"skipped {short(p)} (not an image file)" for p, f in candidates
                  if f and p.suffix.lower() not in IMAGE_SUFFIXES]
        if not images:
            raise ExplainError(f"{where}: no image files in {quote(entry)}")
        paths += images
    return _with_ids(paths), notes


# ---- labelled datasets: {labelled: PATH} ---------------------------------------------------

MAX_LIST_BYTES = 64 * 1024 * 1024  # a .csv / .json list of labelled images


def labelled_files(cfg: Config, spec: LabelledImages, where: str,
                   notes: list[str]) -> list[Found]:
    """The (file, True, label) of a labelled entry: an ImageFolder-style tree
    (``root/<class>/**/<image>``) or a ``.csv`` / ``.json`` list; labels must be named
    classes (or, with ``skip_unknown``, are skipped with a note)."""
    where = f"{where}.labelled"
    path = cfg.resolve(spec.labelled)
    try:
        if path.is_dir():
            found = _image_folder(path, list(cfg.classes), spec.skip_unknown, (where, notes))
        elif path.is_file():
            found = _label_list(path, list(cfg.classes), spec.skip_unknown, (where, notes))
        else:
            raise ExplainError(f"{where}: not found: {short(path)}")
    except OSError as exc:
        raise ExplainError(f"{where}: {short(exc.filename or path)}: {exc.strerror}") from None
    if not found:
        raise ExplainError(f"{where}: no labelled image files in {short(path)}")
    return found


def _image_folder(root: Path, classes: list[str], skip_unknown: bool,
                  report: tuple[str, list[str]]) -> list[Found]:
    """``root/<class>/...``: every image file under a class folder (subfolders included,
    linked folders not followed), labelled with the folder's name. Hidden entries are
    ignored; files directly in ``root`` are noted and skipped."""
    where, notes = report
    found: list[Found] = []
    for sub in sorted(root.iterdir()):
        if sub.name.startswith("."):
            continue
        if not sub.is_dir():
            notes.append(f"skipped {short(sub)} (not in a class folder of {short(root)})")
            continue
        if sub.name not in classes:
            if skip_unknown:
                notes.append(f"skipped {short(sub)} (folder names no class)")
                continue
            raise ExplainError(f"{where}: {short(sub)}: subfolder {quote(sub.name)} names no "
                               f"class{suggest(sub.name, classes)} (classes: "
                               f"{', '.join(classes)}); rename it, add the class, or set "
                               f"skip_unknown: true")
        for folder, dirs, files in os.walk(sub):  # does not follow linked folders
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                file = Path(folder) / name
                if name.startswith(".") or not file.is_file():
                    continue
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    notes.append(f"skipped {short(file)} (not an image file)")
                    continue
                if len(found) >= MAX_IMAGES:
                    raise ExplainError(f"{where}: {short(root)} holds over {MAX_IMAGES} images; "
                                       f"split the dataset into several runs")
                found.append((file, True, sub.name))
    return found


def _label_list(path: Path, classes: list[str], skip_unknown: bool,
                report: tuple[str, list[str]]) -> list[Found]:
    """A ``.csv`` (header ``path,label``) or ``.json`` (list of ``{path, label}``) list of
    labelled images; paths relative to the list's folder. Every row names an existing
    image file and a named class, else one line naming the file and row."""
    where, notes = report
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ExplainError(f"{where}: {short(path)}: expected a folder of class folders, a .csv "
                           f"or a .json list")
    text = read_bounded_text(path, MAX_LIST_BYTES, "a list", encoding="utf-8-sig")
    rows = _csv_rows(path, text) if suffix == ".csv" else _json_rows(path, text)
    found: list[Found] = []
    labels: dict[Path, tuple[str, str]] = {}
    unknown = 0
    for row_where, file, label in rows:
        if len(found) >= MAX_IMAGES:
            raise ExplainError(f"{short(path)}: over {MAX_IMAGES} rows; split the dataset into "
                               f"several runs")
        if not file or not label:
            raise ExplainError(f"{row_where}: needs a path and a label "
                               f"(got {quote([file, label])})")
        if label not in classes:
            if skip_unknown:
                unknown += 1
                continue
            raise ExplainError(f"{row_where}: label {quote(label)} is not a named class"
                               f"{suggest(label, classes)} (classes: {', '.join(classes)})")
        image = path.parent / Path(file).expanduser()
        try:
            ok = image.is_file()
        except OSError:
            ok = False
        if not ok:
            raise ExplainError(f"{row_where}: image not found (or not a regular file): "
                               f"{short(image)}")
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise ExplainError(f"{row_where}: {short(image)} is not an image file "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        key = image.resolve()
        if key in labels and labels[key][0] != label:
            raise ExplainError(f"{row_where}: {short(image)} is labelled {quote(label)} here and "
                               f"{quote(labels[key][0])} at {labels[key][1]}")
        labels.setdefault(key, (label, row_where))
        found.append((image, True, label))
    if unknown:
        notes.append(f"skipped {unknown} row(s) of {short(path)} (label names no class)")
    return found


def _csv_rows(path: Path, text: str) -> list[tuple[str, str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [(f or "").strip() for f in reader.fieldnames or []]
    if not {"path", "label"} <= set(fields):
        raise ExplainError(f"{short(path)}: line 1: expected a header with the columns path, "
                           f"label (got {quote(reader.fieldnames)})")
    rows = []
    try:
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            values = [v for v in row.values() if isinstance(v, str)]
            if not any(v.strip() for v in values):
                continue  # a blank line
            rows.append((f"{short(path)}: line {reader.line_num}",
                         (row.get("path") or "").strip(), (row.get("label") or "").strip()))
    except csv.Error as exc:
        raise ExplainError(f"{short(path)}: line {reader.line_num}: {exc}") from None
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[str, str, str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ExplainError(f"{short(path)}: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ExplainError(f"{short(path)}: expected a list of objects with the keys path, label")
    rows = []
    for i, row in enumerate(data):
        file, label = row.get("path"), row.get("label")
        if not isinstance(file, str) or not isinstance(label, str):
            raise ExplainError(f"{short(path)}: item {i}: path and label must be texts "
                               f"(got {quote([file, label])})")
        rows.append((f"{short(path)}: item {i}", file.strip(), label.strip()))
    return rows


def precheck(ref: ImageRef, spec: Preprocess) -> None:
    """The checks that need no decoding (header, size, complete JPEG), so a bad file the user
    named is found before anything is written or deleted; ImageError if it fails."""
    width, height = _header_size(ref.path)
    _check_pixels(ref.path, width, height, spec.max_pixels)
    with open(ref.path, "rb") as f:
        data = f.read()
    if data[:2] == b"\xff\xd8" and not jpeg_complete(data):
        raise ImageError(f"{short(ref.path)}: truncated JPEG (no end-of-image marker after the "
                         f"image data)")
    try:
        input_size(height, width, spec)
    except ImageError as exc:
        raise ImageError(f"{short(ref.path)}: {exc}") from None


def _with_ids(paths: list[Found]) -> list[ImageRef]:
    """One ImageRef per file (a file listed twice is explained once, with its label), each
    with a unique, safe id made from its name."""
    seen: dict[Path, list] = {}
    for p, from_folder, label in paths:
        known = seen.setdefault(p.resolve(), [p, from_folder, label])
        if label is not None and known[2] is None:
            known[2] = label
        elif label is not None and known[2] != label:
            raise ExplainError(f"images: {short(p)} is listed with the labels {quote(known[2])} "
                               f"and {quote(label)}; give it one")
    refs, used = [], set()
    for key, (p, from_folder, label) in seen.items():
        base = safe_slug(p.stem, "image")
        ident, n = base, 2
        while ident.lower() in used:  # ignoring case: 'Cat.jpg' and 'cat.jpg' on macOS
            ident, n = f"{base}-{n}", n + 1
        used.add(ident.lower())
        refs.append(ImageRef(ident, key, from_folder, label))
    return refs


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as header:
            return header.size
    except Exception:
        raise ImageError(f"{short(path)}: not a readable image") from None


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{short(path)}: {width}x{height} is over preprocess.max_pixels "
                         f"({max_pixels}); downscale it first or raise the limit")


def read_rgb(path: Path, max_pixels: int) -> np.ndarray:
    """Decode a file to uint8 RGB (H, W, 3); ImageError naming the file if it is unusable."""
    width, height = _header_size(path)
    _check_pixels(path, width, height, max_pixels)
    data = np.fromfile(path, dtype=np.uint8)
    if data[:2].tobytes() == b"\xff\xd8" and not jpeg_complete(data.tobytes()):
        raise ImageError(f"{short(path)}: truncated JPEG (no end-of-image marker after the image data)")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{short(path)}: corrupt or unsupported image data")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's image data ends with its end-of-image marker (FFD9).

    The marker is looked for after the first start-of-scan segment, so an EXIF thumbnail's
    own marker does not count, and bytes a phone appends after the end are allowed."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return data.find(b"\xff\xd9", pos) != -1
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def input_size(height: int, width: int, spec: Preprocess) -> tuple[int, int]:
    """(H, W) fed to the model: fixed, or short side = size with the aspect ratio kept.
    ImageError when the long side would pass MAX_SIDE (an extreme aspect ratio)."""
    if not isinstance(spec.size, int):
        return tuple(spec.size)
    scale = spec.size / min(height, width)

    def snap(n: float) -> int:
        return max(spec.multiple_of, int(round(n / spec.multiple_of)) * spec.multiple_of)

    size = (spec.size, snap(width * scale)) if height <= width else (snap(height * scale), spec.size)
    if max(size) > MAX_SIDE:
        raise ImageError(f"{width}x{height} pixels: with the short side at {spec.size} the long "
                         f"side would be {max(size)} (over {MAX_SIDE}); crop the image or use a "
                         f"fixed preprocess.size: [H, W]")
    return size


CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # ImageNet pixel means, B, G, R, on 0..255


def preprocess(rgb: np.ndarray, spec: Preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 RGB -> (normalised float CHW tensor, resized RGB float32 in 0..1).

    ``spec.mode`` normalises as Keras' ``preprocess_input`` functions do: torch: (x/255 -
    mean) / std (with the config's mean and std); caffe: RGB -> BGR on 0..255 minus
    CAFFE_MEAN_BGR (VGG16, ResNet50); tf: x/127.5 - 1 (MobileNet, Inception). The tensor is
    channels-first in every mode (explain.keras_model hands Keras models channels-last)."""
    h, w = input_size(rgb.shape[0], rgb.shape[1], spec)
    shrink = h * w < rgb.shape[0] * rgb.shape[1]
    resized = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    pixels = resized.astype(np.float32)
    scaled = pixels / np.float32(255.0)
    if spec.mode == "caffe":
        normed = pixels[..., ::-1] - np.float32(CAFFE_MEAN_BGR)
    elif spec.mode == "tf":
        normed = pixels / np.float32(127.5) - np.float32(1.0)
    else:
        normed = (scaled - np.float32(spec.mean)) / np.float32(spec.std)
    return torch.from_numpy(np.ascontiguousarray(normed.transpose(2, 0, 1))), scaled


def prepare(ref: ImageRef, spec: Preprocess) -> Prepared:
    rgb = read_rgb(ref.path, spec.max_pixels)
    try:
        tensor, scaled = preprocess(rgb, spec)
    except ImageError as exc:
        raise ImageError(f"{short(ref.path)}: {exc}") from None
    return Prepared(ref, tensor, scaled)


def batches(refs: list[ImageRef], size: int) -> list[list[ImageRef]]:
    """Consecutive chunks of at most ``size`` images (decoded lazily, one chunk at a time)."""
    return [refs[i:i + size] for i in range(0, len(refs), size)]


def group_by_shape(items: list[Prepared]) -> list[list[Prepared]]:
    """Split a chunk into runs of equal input shape, so each can be stacked into one tensor."""
    groups: dict[tuple, list[Prepared]] = {}
    for item in items:
        groups.setdefault(tuple(item.tensor.shape), []).append(item)
    return list(groups.values())

"""Finding, decoding and preprocessing images with OpenCV.

Decoding uses ``cv2.IMREAD_COLOR``, which applies EXIF orientation and turns grayscale,
palette, RGBA (alpha dropped) and 16-bit files into 8-bit BGR; we convert to RGB.
Files over ``preprocess.max_bytes`` are refused before anything is read (the size of the open
file), images over ``preprocess.max_pixels`` before decoding (the header is read with
Pillow), so a huge file cannot exhaust memory; each file is read whole once, when decoded.

``images`` entries are files, folders, globs, or labelled datasets (``{labelled: PATH}``: an
ImageFolder-style tree or a .csv / .json list), whose images carry ``ImageRef.label``.

Links: what the config (or a list's row) names may be a link, as the user chose it; what a
folder, a glob or a labelled tree *finds* is never a link nor reached through one (skipped
with a note), so a shared dataset holding ``cat -> /`` reads nothing outside itself.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

import cv2
import numpy as np
import torch
from PIL import Image

from explain.config import MAX_SIDE, Config, LabelledImages, Preprocess, read_bounded_text
from explain.errors import ExplainError, first_line
from explain.names import quote, safe_slug, short, suggest
from explain.results import Skipped

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
NOT_IMAGE = "not an image file"


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


def _matches(pattern: str, where: str, links: list[Path]) -> list[Path]:
    """Files a glob matches, at most MAX_IMAGES. pathlib's '**' does not descend into linked
    folders, so a symbolic link loop cannot make it run forever; a match that is a link, or
    lies under a linked folder below the pattern's fixed start, is put in ``links``."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first])
    found = []
    for path in base.glob(str(Path(*parts[first:]))):
        if len(found) >= MAX_IMAGES:
            raise ExplainError(f"{where}: the pattern matches over {MAX_IMAGES} files; "
                               f"split the images into several runs")
        rel = path.relative_to(base).parts
        if any((base.joinpath(*rel[:k])).is_symlink() for k in range(1, len(rel) + 1)):
            links.append(path)
        elif path.is_file():
            found.append(path)
    return sorted(found)


LINKS_SKIPPED = "symbolic link(s) in"


def _link_note(root: Path, links: list[Path], inside: str) -> list[str]:
    """The note for symbolic links found (and not followed) under ``root``."""
    return [f"skipped {len(links)} {LINKS_SKIPPED} {short(root)} (e.g. {short(min(links))}): "
            f"links found in {inside} are not followed; name a linked file or folder in the "
            f"config to use it"] if links else []


def _links_hint(notes: list[Note]) -> str:
    """' (...)' when these notes skipped links: why a folder held no usable file."""
    hint = any(isinstance(note, str) and LINKS_SKIPPED in note for note in notes)
    return " (symbolic links there are not followed)" if hint else ""


Found = tuple[Path, bool, Optional[str]]  # a file, whether from a folder/glob/list, its label
Note = Union[str, Skipped]  # what finding images says: a note, or a file it left out


def find_images(cfg: Config) -> tuple[list[ImageRef], list[Note]]:
    """Expand files, folders, globs and labelled datasets of ``images``; returns the images
    and what was left out: notes (links not followed) and Skipped records (other files)."""
    paths: list[Found] = []
    notes: list[Note] = []
    for i, entry in enumerate(cfg.images):
        where = f"images[{i}]"
        if isinstance(entry, LabelledImages):
            paths += labelled_files(cfg, entry, where, notes)
        else:
            paths += _plain_files(cfg, entry, where, notes)
    return _with_ids(paths), notes


def _plain_files(cfg: Config, entry: str, where: str, notes: list[Note]) -> list[Found]:
    """The files of one plain ``images`` entry: a file, a folder's files or a glob's matches
    (links found in a folder or by a glob are skipped with a note)."""
    links: list[Path] = []
    before = len(notes)
    try:
        path = cfg.resolve(entry)
        if glob.has_magic(entry):
            candidates = [(p, True) for p in _matches(str(path), where, links)]
            notes += _link_note(path, links, "a glob")
            if not candidates:
                raise ExplainError(f"{where}: the pattern {quote(entry)} matches no file"
                                   f"{_links_hint(notes[before:])}")
        elif path.is_dir():
            listed = sorted(path.iterdir())
            links = [p for p in listed if p.is_symlink()]
            candidates = [(p, True) for p in listed if not p.is_symlink() and p.is_file()]
            notes += _link_note(path, links, "a folder")
        elif path.is_file():
            candidates = [(path, False)]
        else:
            raise ExplainError(f"{where}: image not found: {short(path)}")
    except OSError as exc:  # a name too long, a folder we may not read
        raise ExplainError(f"{where}: {quote(entry)}: {exc.strerror}") from None
    images = [(p, f, None) for p, f in candidates if not f or p.suffix.lower() in IMAGE_SUFFIXES]
    notes += [Skipped(path=str(p), reason=NOT_IMAGE) for p, f in candidates
              if f and p.suffix.lower() not in IMAGE_SUFFIXES]
    if not images:
        raise ExplainError(f"{where}: no image files in {quote(entry)}"
                           f"{_links_hint(notes[before:])}")
    return images


# ---- labelled datasets: {labelled: PATH} ---------------------------------------------------

MAX_LIST_BYTES = 64 * 1024 * 1024  # a .csv / .json list of labelled images


def labelled_files(cfg: Config, spec: LabelledImages, where: str,
                   notes: list[Note]) -> list[Found]:
    """The (file, True, label) of a labelled entry: an ImageFolder-style tree
    (``root/<class>/**/<image>``) or a ``.csv`` / ``.json`` list; labels must be named
    classes (or, with ``skip_unknown``, are skipped with a note)."""
    where = f"{where}.labelled"
    path = cfg.resolve(spec.labelled)
    before = len(notes)
    try:
        if path.is_dir():
            found = _image_folder(path, list(cfg.classes), spec.skip_unknown,
                                  where=where, notes=notes)
        elif path.is_file():
            found = _label_list(path, list(cfg.classes), spec.skip_unknown,
                                where=where, notes=notes)
        else:
            raise ExplainError(f"{where}: not found: {short(path)}")
    except OSError as exc:
        raise ExplainError(f"{where}: {short(exc.filename or path)}: {exc.strerror}") from None
    if not found:
        raise ExplainError(f"{where}: no labelled image files in {short(path)}"
                           f"{_links_hint(notes[before:])}")
    return found


def _image_folder(root: Path, classes: list[str], skip_unknown: bool, *, where: str,
                  notes: list[Note]) -> list[Found]:
    """``root/<class>/...``: every image file under a class folder (subfolders included),
    labelled with the folder's name. Hidden entries are ignored; files directly in ``root``
    are noted and skipped; a symbolic link anywhere below ``root`` (a class folder, a
    subfolder, a file) is never followed: it is skipped with a note."""
    found: list[Found] = []
    links: list[Path] = []
    for sub in sorted(root.iterdir()):
        if sub.name.startswith("."):
            continue
        if sub.is_symlink():
            links.append(sub)
            continue
        if not sub.is_dir():
            notes.append(Skipped(path=str(sub), reason=f"not in a class folder of {root}"))
            continue
        if sub.name not in classes:
            if skip_unknown:
                notes.append(Skipped(path=str(sub), reason="the folder names no class"))
                continue
            raise ExplainError(f"{where}: {short(sub)}: subfolder {quote(sub.name)} names no "
                               f"class{suggest(sub.name, classes)} (classes: "
                               f"{', '.join(classes)}); rename it, add the class, or set "
                               f"skip_unknown: true")
        for folder, dirs, files in os.walk(sub):  # does not descend into linked folders
            here = Path(folder)
            linked = {d for d in dirs if not d.startswith(".") and (here / d).is_symlink()}
            links += [here / d for d in linked]
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
            for file in (here / name for name in sorted(files) if not name.startswith(".")):
                if file.is_symlink() or not file.is_file():
                    links += [file] if file.is_symlink() else []
                    continue
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    notes.append(Skipped(path=str(file), reason=NOT_IMAGE))
                    continue
                if len(found) >= MAX_IMAGES:
                    raise ExplainError(f"{where}: {short(root)} holds over {MAX_IMAGES} images; "
                                       f"split the dataset into several runs")
                found.append((file, True, sub.name))
    notes += _link_note(root, links, "a labelled tree")
    return found


def _label_list(path: Path, classes: list[str], skip_unknown: bool, *, where: str,
                notes: list[Note]) -> list[Found]:
    """A ``.csv`` (header ``path,label``) or ``.json`` (list of ``{path, label}``) list of
    labelled images; paths relative to the list's folder. Every row names an existing
    image file and a named class, else one line naming the file and row. A row names its file
    as the config does: it may lie outside the list's folder or be a link (followed)."""
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
        notes.append(Skipped(path=str(path), reason=f"{unknown} row(s) naming no class"))
    return found


def _csv_rows(path: Path, text: str) -> list[tuple[str, str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    try:  # csv.Error: a field over csv's limit (128 KiB), a NUL, a bad quote
        fields = [(f or "").strip() for f in reader.fieldnames or []]
        if not {"path", "label"} <= set(fields):
            raise ExplainError(f"{short(path)}: line 1: expected a header with the columns "
                               f"path, label (got {short(quote(reader.fieldnames), 200)})")
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            values = [v for v in row.values() if isinstance(v, str)]
            if not any(v.strip() for v in values):
                continue  # a blank line
            rows.append((f"{short(path)}: line {reader.line_num}",
                         (row.get("path") or "").strip(), (row.get("label") or "").strip()))
    except csv.Error as exc:  # the line being read (DictReader counts only finished rows)
        raise ExplainError(f"{short(path)}: line {max(reader.reader.line_num, 1)}: {exc}") \
            from None
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[str, str, str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ExplainError(f"{short(path)}: not valid JSON ({first_line(exc, 120)})") from None
    except RecursionError:
        raise ExplainError(f"{short(path)}: the JSON is nested too deep (a list is a list of "
                           f"{{path, label}} objects)") from None
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
    """The checks that need no decoding (byte size, header, pixels, complete JPEG), so a bad
    file the user named is found before anything is written or deleted; ImageError if it
    fails. Only the header, the JPEG segment headers and the file's tail are read."""
    with _open_image(ref.path, spec.max_bytes, spec.max_pixels) as (f, size, width, height):
        if _read_at(f, 0, 2) == JPEG_START and not _jpeg_ends(partial(_read_at, f), size):
            raise ImageError(f"{short(ref.path)}: {TRUNCATED}")
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


@contextmanager
def _open_image(path: Path, max_bytes: int, max_pixels: int) -> Iterator[tuple]:
    """(open file, bytes, width, height) of an image file, opened without following a link (ids
    name resolved paths); ImageError when it cannot be opened, is not a regular file, is over
    ``max_bytes`` (the open file's size, before anything is read) or ``max_pixels`` (header)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        f = os.fdopen(os.open(path, flags | getattr(os, "O_BINARY", 0)), "rb")
    except OSError as exc:
        raise ImageError(f"{short(path)}: cannot be read ({exc.strerror})") from None
    with f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{short(path)}: not a regular file")
        if info.st_size > max_bytes:
            raise ImageError(f"{short(path)}: {info.st_size} bytes is over preprocess.max_bytes "
                             f"({max_bytes}); shrink the file or raise the limit")
        try:
            with Image.open(f) as header:  # Pillow reads the header only
                width, height = header.size
        except Exception:
            raise ImageError(f"{short(path)}: not a readable image") from None
        if width * height > max_pixels:
            raise ImageError(f"{short(path)}: {width}x{height} is over preprocess.max_pixels "
                             f"({max_pixels}); downscale it first or raise the limit")
        yield f, info.st_size, width, height


def _read_at(f: BinaryIO, at: int, count: int) -> bytes:
    f.seek(at)
    return f.read(count)


DEFAULT_MAX_BYTES: int = Preprocess.model_fields["max_bytes"].default
JPEG_START, TRUNCATED = b"\xff\xd8", "truncated JPEG (no end-of-image marker after the image data)"


def read_rgb(path: Path, max_pixels: int, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Decode a file to uint8 RGB (H, W, 3); ImageError naming the file if it is unusable.
    The byte size and the header's pixels are checked before the file is read (once)."""
    with _open_image(path, max_bytes, max_pixels) as (f, size, _, _):
        data = _read_at(f, 0, size + 1)
    if len(data) != size:
        raise ImageError(f"{short(path)}: the file changed while it was read")
    if data[:2] == JPEG_START and not jpeg_complete(data):
        raise ImageError(f"{short(path)}: {TRUNCATED}")
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a buffer over 2 GB, with max_bytes raised
        raise ImageError(f"{short(path)}: OpenCV cannot decode it "
                         f"({short(' '.join(str(exc).split()), 160)})") from None
    if bgr is None:
        raise ImageError(f"{short(path)}: corrupt or unsupported image data")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's image data ends with its end-of-image marker (FFD9).

    The marker is looked for after the first start-of-scan segment, so an EXIF thumbnail's
    own marker does not count, and bytes a phone appends after the end are allowed."""
    return _jpeg_ends(lambda at, n: data[at:at + n], len(data))


MAX_JPEG_STEPS, TAIL_CHUNK = 10_000, 2**20  # segments before the scan (a photo: a few dozen)


def _jpeg_ends(read: Callable[[int, int], bytes], size: int) -> bool:
    """jpeg_complete on ``size`` bytes read through ``read(offset, count)``: segment headers
    up to the first scan (at most MAX_JPEG_STEPS), then the end marker looked for backwards
    from the end, so a complete file is decided by its tail without reading it all."""
    pos = 2
    for _ in range(MAX_JPEG_STEPS):
        head = read(pos, 4)
        if len(head) < 4 or head[0] != 0xFF:
            return False
        if head[1] == 0xFF:  # fill byte
            pos += 1
            continue
        if head[1] == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + int.from_bytes(head[2:4], "big")
    end = size
    while end > pos:
        start = max(pos, end - TAIL_CHUNK)
        if b"\xff\xd9" in read(start, end - start + 1):  # one byte more: a marker across
            return True
        end = start
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
    rgb = read_rgb(ref.path, spec.max_pixels, spec.max_bytes)
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

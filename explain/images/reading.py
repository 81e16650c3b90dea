"""Reading, decoding and preprocessing images with OpenCV, bounded before anything is read.

Decoding uses ``cv2.IMREAD_COLOR``, which applies EXIF orientation and turns grayscale,
palette, RGBA (alpha dropped) and 16-bit files into 8-bit BGR; we convert to RGB.
Files over ``preprocess.max_bytes`` are refused before anything is read (the size of the open
file), images over ``preprocess.max_pixels`` before decoding (the header is read with
Pillow), so a huge file cannot exhaust memory; each file is read whole once, when decoded
(a JPEG the config names is also read through once, a chunk at a time, by ``precheck``). A
JPEG without its end marker, or of more scans than a photo has, is refused before decoding
(``explain.images.jpeg``).
"""

from __future__ import annotations

import io
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Optional

import cv2
import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch comes with the first image prepared: reading records needs none
    import torch

from explain.config import MAX_SIDE, Preprocess
from explain.errors import ExplainError
from explain.images import quiet
from explain.images.formats import SIGNATURE_BYTES, header_problem
from explain.images.jpeg import (JPEG_START, TRUNCATED, bytes_at, first_scan, jpeg_problem,
                                 without_padding)
from explain.names import short



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


def precheck(ref: ImageRef, spec: Preprocess) -> tuple[int, int]:
    """The checks that need no decoding (byte size, header, pixels, a complete JPEG of at most
    MAX_JPEG_SCANS scans), so a bad file the user named is found before anything is written
    or deleted; ImageError if it fails. Returns the file's (height, width)."""
    with _open_image(ref.path, spec.max_bytes, spec.max_pixels) as (f, size, width, height):
        if _read_at(f, 0, 2) == JPEG_START:
            problem = jpeg_problem(partial(_read_at, f), size)
            if problem:
                raise ImageError(f"{short(ref.path)}: {problem}")
    try:
        input_size(height, width, spec)
    except ImageError as exc:
        raise ImageError(f"{short(ref.path)}: {exc}") from None
    return height, width


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
            with pillow_header(f) as header:
                width, height = header.size
        except ImageError as exc:
            raise ImageError(f"{short(path)}: {exc}") from None
        if width * height > max_pixels:
            raise ImageError(f"{short(path)}: {width}x{height} is over preprocess.max_pixels "
                             f"({max_pixels}); downscale it first or raise the limit")
        yield f, info.st_size, width, height


MAX_HEADER_READS = 100_000  # reads Pillow makes for a header (a photo's: a few dozen)


class _CountedReads:
    """A file as Pillow reads a header from it, ImageError past MAX_HEADER_READS reads:
    Pillow reads a JPEG's fill bytes and empty segments, a PPM's comments and a GIF's
    blocks one at a time, 2 s a 4 MB file (a 256 MiB file of preprocess.max_bytes: minutes),
    before any bound on pixels."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.reads = f, 0

    def read(self, count: int = -1) -> bytes:
        return self._counted(self.f.read, count)

    def readline(self, count: int = -1) -> bytes:
        return self._counted(self.f.readline, count)

    def _counted(self, call: Callable[[int], bytes], count: int) -> bytes:
        self.reads += 1
        if self.reads > MAX_HEADER_READS:
            raise ImageError(f"not a readable image (its header takes over {MAX_HEADER_READS} "
                             f"reads; a photo's takes a few dozen)")
        return call(count)

    def seek(self, at: int, whence: int = 0) -> int:
        return self.f.seek(at, whence)

    def tell(self) -> int:
        return self.f.tell()


@contextmanager
def pillow_header(f: BinaryIO) -> Iterator[Image.Image]:
    """The file opened by Pillow (which reads the header only), in reads bounded as
    ``png_chunks``, ``first_scan`` and ``_CountedReads`` say; ImageError (no file name) when
    it is no image, a JPEG whose segments do not reach its image data, or header_problem's."""
    read = partial(_read_at, f)
    png_chunks(read)  # before Pillow walks them (seconds per MB)
    start = read(0, SIGNATURE_BYTES)
    if read(0, 2) == JPEG_START and first_scan(read) is None:
        raise ImageError(TRUNCATED)
    with quiet.reading():  # Pillow's bound and warnings: explain's, not the user's (quiet)
        try:
            header = Image.open(_CountedReads(f))  # type: ignore[arg-type]
        except Exception as exc:  # an ImageError: past MAX_HEADER_READS (_CountedReads)
            raise (exc if isinstance(exc, ImageError) else ImageError("not a readable image")
                   ) from None
        with header:
            problem = header_problem(header, start)  # as OpenCV decodes it (.formats)
            if problem:
                raise ImageError(problem)
            yield header


def _read_at(f: BinaryIO, at: int, count: int) -> bytes:
    f.seek(at)
    return f.read(count)


DEFAULT_MAX_BYTES: int = Preprocess.model_fields["max_bytes"].default
STORED_MAX_PIXELS = 2**27  # a picture read back from a run folder: a panel of big overlays fits


def read_rgb(path: Path, max_pixels: int, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Decode a file to uint8 RGB (H, W, 3); ImageError naming the file if it is unusable.
    The byte size and the header's pixels are checked before the file is read (once)."""
    with _open_image(path, max_bytes, max_pixels) as (f, size, _, _):
        data = _read_at(f, 0, size + 1)
    if len(data) != size:
        raise ImageError(f"{short(path)}: the file changed while it was read")
    try:
        bgr = decode(data, cv2.IMREAD_COLOR)
    except ImageError as exc:
        raise ImageError(f"{short(path)}: {exc}") from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode(data: bytes, flags: int) -> np.ndarray:
    """OpenCV's decoding of ``data`` (``flags``) once a JPEG's scans are checked (see
    jpeg_problem): one function for input images and pictures read back. ImageError saying
    why (without a file name: the callers name it) when it is refused or cannot be decoded."""
    problem = jpeg_problem(bytes_at(data), len(data)) if data[:2] == JPEG_START else None
    if problem:
        raise ImageError(problem)
    data = without_padding(data) if data[:2] == JPEG_START else without_profiles(data)
    try:
        with quiet.reading():  # OpenCV's log lines (libtiff's) off while it decodes
            out = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:  # e.g. a buffer over 2 GB, with max_bytes raised
        raise ImageError(f"OpenCV cannot decode it ({short(' '.join(str(exc).split()), 160)})"
                         ) from None
    if out is None:
        raise ImageError("corrupt or unsupported image data")
    return out


PNG_START = b"\x89PNG\r\n\x1a\n"
MAX_PNG_CHUNKS = 10_000  # chunks before a PNG's image data (a photo: a dozen)


def without_profiles(data: bytes) -> bytes:
    """A PNG's bytes without its colour profiles (iCCP) and compressed texts (zTXt, iTXt),
    wherever they are (OpenCV decodes no colours or texts by them), other data as it is.
    libpng prints a profile's name, raw, to the terminal when it finds the profile broken
    ('libpng warning: iCCP: profile '<name>': ...'): any 79 bytes the file chose, escape
    codes included. And it inflates every compressed text it reads, up to 8 MB each, and
    keeps up to 1,000 of them until the image is decoded: a 2.3 MB file of 300 zTXt chunks
    after its image data (which Pillow's header never reads) held 2.3 GB and took 6 s of CPU.
    ImageError as ``png_chunks`` says (before the image data, then ``whole``)."""
    png_chunks(bytes_at(data))
    chunks = png_chunks(bytes_at(data), True)
    if chunks and chunks[-1][1][1] > len(data):  # libpng would print its own line about it
        raise ImageError(f"a truncated PNG: its {_printable_kind(chunks[-1][0])} chunk runs "
                         f"past the end of the file")
    cut = [span for kind, span in chunks if kind in PNG_CUT]
    if not cut:
        return data
    kept, start = [], 0
    for begin, end in cut:
        kept.append(data[start:begin])
        start = end
    return b"".join(kept + [data[start:]])


PNG_CUT = frozenset([b"iCCP", b"zTXt", b"iTXt"])  # chunks libpng inflates that OpenCV never uses


def _printable_kind(kind: bytes) -> str:
    """A chunk type as the message names it: four letters, or their bytes escaped."""
    return kind.decode("ascii") if kind.isalpha() else repr(kind)


def png_chunks(read: Callable[[int, int], bytes],
               whole: bool = False) -> list[tuple[bytes, tuple[int, int]]]:
    """(type, (start, end)) of a PNG's chunks before its image data (``whole``: all of them,
    to IEND), walked as libpng reads them, through ``read(offset, count)``; none when it is
    no PNG. ImageError past MAX_PNG_CHUNKS of them (``whole``: MAX_PNG_WALK): Pillow reads a
    header of 2 million empty chunks (24 MB) in 8 s, a file of preprocess.max_bytes in
    minutes, before any bound on pixels, and walks those after the image data as slowly when
    it decodes (a label map)."""
    stops, limit = ((b"IEND",), MAX_PNG_WALK) if whole else ((b"IDAT", b"IEND"), MAX_PNG_CHUNKS)
    return [(kind, (at, at + 12 + length)) for kind, at, length in _png_walk(read, stops, limit)]


MAX_PNG_WALK = 100_000  # chunks of a whole PNG (a 256 MiB PNG of 8 KB IDATs has 32,768)
MAX_EXIF_BYTES = 1 << 20  # of an eXIf read (a JPEG's EXIF block is at most 64 KB)


def _png_walk(read: Callable[[int, int], bytes], stops: tuple[bytes, ...],
              limit: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, data length) of a PNG's chunks, from the first up to one of a type in
    ``stops``, the data's end or a break (libpng reads no profile after the image data, nor
    past a break); none when it is no PNG. ImageError at a chunk past ``limit`` of them."""
    if read(0, len(PNG_START)) != PNG_START:
        return
    pos = len(PNG_START)
    for count in range(limit + 1):
        head = read(pos, 8)
        if len(head) < 8 or head[4:] in stops:
            return
        if count == limit:
            break
        length = int.from_bytes(head[:4], "big")
        yield head[4:], pos, length
        pos += 12 + length
    where = "before the PNG's image data (a picture has a dozen)" if b"IDAT" in stops else \
        "in the PNG (one of 256 MiB in 8 KB data chunks has about 33,000)"
    raise ImageError(f"more than {limit} chunks {where}; re-encode it")


def png_exif(path: Path) -> bytes:
    """The data of a PNG's first eXIf chunk, before or after its image data (libpng reads
    either, and OpenCV turns the image by it); b"" when it has none, is no PNG, or has more
    than MAX_PNG_WALK chunks (a crafted file). A chunk header is read at a time: Pillow finds
    a late eXIf only by decoding the whole image, then walks the chunks after it in Python
    (2 million empty ones, 24 MB, took 6 s), past ``png_chunks``'s bound."""
    with open(path, "rb") as f:
        read = partial(_read_at, f)
        try:
            for kind, at, length in _png_walk(read, (b"IEND",), MAX_PNG_WALK):
                if kind == b"eXIf":
                    return read(at + 8, min(length, MAX_EXIF_BYTES))
        except ImageError:
            pass
    return b""


def decode_stored(data: bytes, flags: int = cv2.IMREAD_COLOR,
                  max_pixels: int = STORED_MAX_PIXELS, *,
                  size: Optional[tuple[int, int]] = None) -> Optional[np.ndarray]:
    """A picture read back from a run folder (a panel's overlays, a photo for a page or the
    notebook display), decoded by OpenCV as ``flags`` say, with the checks an input image gets
    first: the header's pixels (Pillow; a 3 MB PNG of 32768 x 32768 asked for 3 GB), the
    (height, width) ``size`` the record gives it, when given (a shared run's overlays of
    2**27 pixels over a 32 x 32 input), and a JPEG's scans (a 1 MB progressive JPEG of
    repeated scans took minutes). None when it is not a picture, not of its size, too large
    or too slow to decode (the caller names the file). A run writes no orientation: one in a
    shared picture is not applied, and the picture decoded must be the header's size (an
    EXIF tag turned a photo the header gave as its input size: a traceback in explain diff)."""
    found = stored_size(data)
    if found is None or found[0] * found[1] > max_pixels or \
            (size is not None and found != tuple(size)):
        return None
    try:
        out = decode(data, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except ImageError:
        return None
    return out if tuple(out.shape[:2]) == found else None


def stored_size(data: bytes) -> Optional[tuple[int, int]]:
    """(height, width) in a picture's header (Pillow reads no pixels), None when ``data`` is
    no picture (nor a PNG of more than MAX_PNG_CHUNKS chunks before its image data)."""
    try:
        with pillow_header(io.BytesIO(data)) as header:
            width, height = header.size
    except ImageError:
        return None
    return height, width


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
    channels-first in every mode (explain.models.keras hands Keras models channels-last)."""
    h, w = input_size(rgb.shape[0], rgb.shape[1], spec)
    shrink = h * w < rgb.shape[0] * rgb.shape[1]
    resized = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    pixels = resized.astype(np.float32)
    scaled = pixels / np.float32(255.0)
    # channels first before the arithmetic: the same float32 operations on each value, ten
    # times faster than broadcasting over a last axis of three
    if spec.mode == "caffe":
        normed = _channels_first(pixels[..., ::-1])
        normed -= _per_channel(CAFFE_MEAN_BGR)
    elif spec.mode == "tf":
        normed = _channels_first(pixels)
        normed /= np.float32(127.5)
        normed -= np.float32(1.0)
    else:
        normed = _channels_first(scaled)
        normed -= _per_channel(spec.mean)
        normed /= _per_channel(spec.std)
    import torch
    return torch.from_numpy(normed), scaled


def unnormalised(chw: np.ndarray, spec: Preprocess) -> np.ndarray:
    """``preprocess``'s normalisation undone: a (3, H, W) float32 input of ``spec.mode`` ->
    its (H, W, 3) RGB float32 photo in 0..1 (clipped), for the overlays of a prepared tensor."""
    if spec.mode == "caffe":
        rgb = (chw + _per_channel(CAFFE_MEAN_BGR))[::-1] / 255  # BGR -> RGB
    elif spec.mode == "tf":
        rgb = (chw + 1) / 2
    else:
        rgb = chw * _per_channel(spec.std) + _per_channel(spec.mean)
    return np.clip(rgb.transpose(1, 2, 0), 0, 1).astype(np.float32)


def _channels_first(hwc: np.ndarray) -> np.ndarray:
    """A new contiguous (C, H, W) float32 copy of an (H, W, C) array (always a copy: the
    caller changes it in place)."""
    return np.array(hwc.transpose(2, 0, 1), dtype=np.float32, order="C", copy=True)


def _per_channel(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


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

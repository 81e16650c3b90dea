"""Reference maps made elsewhere (a student's hand-written Grad-CAM, another tool's output),
as files in ``compare.reference_dir``: their names (``<image>__<class>__<method>.npy|.png``,
the suffix in any case), finding and reading them (bounded, finite, grey), and bringing them
to the run's maps' size and scale. ``explain.compare`` compares them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from explain.errors import ExplainError

MAX_REFERENCE_PIXELS = 64 * 1024 * 1024  # values in one reference map (8192 x 8192)
# a grayscale PNG reference's value step (png_step): its rounding is allowed beside the tolerance
PNG_STEPS = {1 / 255: "1/255 for the 8-bit", 1 / 65535: "1/65535 for the 16-bit"}


def reference_name(image: str, cls: str, method: str) -> str:
    return f"{image}__{cls}__{method}"


SUFFIXES = (".npy", ".png")  # a reference map's file types, the one preferred first


def _file_names(name: str) -> list[str]:
    """The file names a map's reference may have, in the order tried: each suffix in SUFFIXES'
    order, in lower case then upper (cv2.imwrite keeps a '.PNG' it is given)."""
    return [name + s for suffix in SUFFIXES for s in (suffix, suffix.upper())]


def _usable(path: Path) -> bool:
    """A regular file, never a link (a link is counted as missing, like the links of a listed
    image folder)."""
    return path.is_file() and not path.is_symlink()


def find_reference(folder: Path, image: str, cls: str, method: str) -> Path | None:
    """The map's file in the reference folder (``_usable``), NPY before PNG."""
    for file_name in _file_names(reference_name(image, cls, method)):
        path = folder / file_name
        if _usable(path):
            return path
    return None


def read_reference(path: Path) -> np.ndarray:
    """A reference map file as a finite, non-empty 2-D float32 array (any scale, any size):
    NPY (numeric, no pickles) or a grayscale PNG (0..255 or 16-bit, as 0..1). ExplainError
    naming the file for anything else, or a map over MAX_REFERENCE_PIXELS. Values past half of
    float32's range are min-max scaled (np.empty's 3e38s: NaN metrics, a folder unreadable)."""
    if path.suffix.lower() == ".npy":
        try:
            m = np.load(path, mmap_mode="r", allow_pickle=False)  # the header: shape and type
        except Exception:
            raise ExplainError(f"{path}: not a readable .npy array") from None
        if not isinstance(m, np.ndarray) or m.size > MAX_REFERENCE_PIXELS:
            raise ExplainError(f"{path}: not a map of at most {MAX_REFERENCE_PIXELS} values")
        if m.dtype.kind not in "iuf" or m.dtype.itemsize > 8:  # before a copy: a structured
            raise ExplainError(f"{path}: expected a 2-D numeric map, got shape {np.shape(m)} "
                               f"of {m.dtype}")  # type of 1 GB an element is no map
        m = np.squeeze(np.array(m))
        if m.ndim != 2 or m.dtype.kind not in "iuf":
            raise ExplainError(f"{path}: expected a 2-D numeric map, got shape {np.shape(m)} "
                               f"of {m.dtype}")
    else:
        width, height = _png_size(path)
        if width * height > MAX_REFERENCE_PIXELS:
            raise ExplainError(f"{path}: {width}x{height} pixels, over {MAX_REFERENCE_PIXELS}")
        m = _decoded_png(path)
        m = m.astype(np.float32) / (65535.0 if m.dtype == np.uint16 else 255.0)
    if m.size == 0:
        raise ExplainError(f"{path}: the map is empty (shape {m.shape})")
    if not np.isfinite(m).all():
        raise ExplainError(f"{path}: the map holds NaN or infinite values")
    if np.abs(m).max() > np.finfo(np.float32).max / 2:  # float32 holds neither it nor its range
        m = np.subtract(m, m.min(), dtype=np.float64) / (np.ptp(m.astype(np.float64)) or 1.0)
    return m.astype(np.float32)


def png_step(path: Path | None) -> float:
    """The value step of a reference map file: 1/255 for an 8-bit PNG, 1/65535 for a 16-bit
    one (what writing a 0..1 map to it changes it by: at most half of it rounded, up to all of
    it truncated, as ``(m * 255).astype(np.uint8)`` does); 0 for anything else."""
    if path is None or path.suffix.lower() != ".png":
        return 0.0
    try:
        with open(path, "rb") as f:
            depth = f.read(25)[24:]
    except OSError:
        return 0.0
    return {b"\x08": 1 / 255, b"\x10": 1 / 65535}.get(depth, 0.0)  # the keys of PNG_STEPS


def _decoded_png(path: Path) -> np.ndarray:
    """A reference PNG as OpenCV decodes it (grayscale, 8 or 16 bits), read once, at most
    DEFAULT_MAX_BYTES, and decoded as input images are (no colour profile reaches libpng,
    which prints a broken one's name raw to the terminal)."""
    from explain.config import read_bounded_bytes
    from explain.images.reading import DEFAULT_MAX_BYTES, ImageError, decode
    try:
        data = read_bounded_bytes(path, DEFAULT_MAX_BYTES, "a reference map")
        if data[25:26] in (b"\x02", b"\x03", b"\x06"):  # RGB, palette, RGBA: a colormap's?
            _grey_or_refused(decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH), path)
        return decode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    except OSError as exc:
        raise ExplainError(f"{path}: cannot read ({exc.strerror})") from None
    except ImageError as exc:  # why, when it is more than undecodable (chunks, scans)
        raise ExplainError(f"{path}: not a readable PNG ({exc})") from None


def _grey_or_refused(colour: np.ndarray | None, path: Path) -> None:
    """A colour PNG is a map only when its three channels are one grey (plt.imsave with
    cmap='gray'); a colormap's picture (cv2.applyColorMap, plt.imsave's viridis) is refused:
    read as grey, its brightness is not the map's values."""
    if colour is None or colour.ndim != 3 or colour.size == 0:
        return
    step = 257 if colour.dtype == np.uint16 else 1
    if _spread(colour) > 2 * step:
        raise ExplainError(f"{path}: a colour picture (its red, green and blue differ, as a "
                           f"colormap's do), not a map: save the map's values, np.save(...) "
                           f"of the 2-D array or a grayscale PNG (cv2.imwrite of it as uint8)")


SPREAD_ROWS = 256  # rows of a colour reference compared at once


def _spread(colour: np.ndarray) -> int:
    """The largest difference between one pixel's channels, a block of rows at a time, on
    the channels' own type (max >= min: nothing wraps). numpy's max and min over a last axis
    of 3, as int64, took 12.6 s and 1 GB for a 392 KB 16-bit PNG of 8192 x 8192."""
    spread = 0
    for top in range(0, colour.shape[0], SPREAD_ROWS):
        part = colour[top:top + SPREAD_ROWS]
        channels = [part[..., c] for c in range(part.shape[2])]
        high, low = channels[0].copy(), channels[0].copy()
        for channel in channels[1:]:
            np.maximum(high, channel, out=high)
            np.minimum(low, channel, out=low)
        spread = max(spread, int((high - low).max()))
    return spread


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; ExplainError when it is not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise ExplainError(f"{path}: cannot read ({exc.strerror})") from None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ExplainError(f"{path}: not a readable PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def load_reference(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A reference map as ours are: (H, W) float32 in 0..1 at the input size.

    NPY arrays and grayscale PNGs (0..255 or 16-bit) of the input size are min-max scaled only
    when their values fall outside 0..1, so a map we wrote ourselves comes back unchanged (NPY)
    or within PNG quantisation, 1/255 (PNG). A map of another shape (the layer's 13 x 13, not
    upsampled) is resized bilinearly and min-max scaled after, as the library's maps are
    (explain.reference.finish): the layer's map, scaled any way, then agrees with ours.
    """
    return fit_reference(read_reference(path), size)


def fit_reference(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A read reference map at the input size, in 0..1 (see load_reference)."""
    if m.shape != tuple(size):
        m = cv2.resize(_span_scaled(m), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        return (m - m.min()) / (m.max() - m.min() + 1e-7)
    if m.min() < 0 or m.max() > 1:
        m = _span_scaled(m)
        m = (m - m.min()) / (m.max() - m.min() + 1e-7)
    return m


def _span_scaled(m: np.ndarray) -> np.ndarray:
    """``m`` min-max scaled by its own range first (a constant map: as it is), so the library's
    ``+ 1e-7`` after acts on a range of 1, as in its second scaling: a raw map of the layer
    (Grad-CAM of an untrained AlexNet peaks near 3e-6) was shrunk by it, up to 0.97 at most."""
    span = float(m.max()) - float(m.min())
    return (m - m.min()) / np.float32(span) if span > 0 else m


def check_references(folder: Path, images: list[str], classes: list[str],
                     methods: list[str]) -> None:
    """Every file in ``folder`` that a run of these images, classes and methods would compare
    with is a usable map (read_reference): checked before the run folder is claimed, so a bad
    reference loses no earlier run. The folder is listed once."""
    files = {p.name: p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES}
    for image in images:
        for cls in classes:
            for method in methods:
                name = reference_name(image, cls, method)
                path = next((files[f] for f in _file_names(name)
                             if f in files and _usable(files[f])), None)
                if path is not None:  # the file find_reference picks
                    read_reference(path)


def unmatched_files(folder: Path, expected: set[str]) -> list[str]:
    """Files in the reference folder that no image x class x method of the run asked for
    (a suffix in mixed case, '.Png', is never looked for: listed)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and
                  (p.stem not in expected or p.name not in _file_names(p.stem)))

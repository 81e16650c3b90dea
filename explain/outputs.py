"""The results folder: claiming it without clobbering earlier runs, and safe, atomic writes.

Every file a run writes goes through ``RunFolder``: the relative path is checked part by part
(no '..', no separators, no NUL), the folders on the way are created one at a time and must
not be symbolic links, so no write can land outside the run folder, whatever names a config
holds or what was planted in the folder. Each file is written under a temporary name in its
folder and renamed into place, so a run killed at any moment leaves only complete files.
Files get the usual permissions (0666 less the umask). PNGs carry no timestamps, so two runs
of the same config give byte-identical pictures.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from explain.errors import ExplainError

RUN_MARKER = ".explain-run"


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# OpenCV encoder settings per picture format (output.image_format)
IMAGE_PARAMS = {".png": [], ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 90],
                ".webp": [cv2.IMWRITE_WEBP_QUALITY, 90]}


class RunFolder:
    """One run's folder; ``write_*`` take paths relative to it, like 'cams/gradcam/x.png'."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.mode = 0o666 & ~current_umask()

    def path(self, rel: str) -> Path:
        """The absolute path of ``rel``, after checking every part of it."""
        parts = rel.split("/")
        for part in parts:
            if part in ("", ".", "..") or "\\" in part or "\x00" in part:
                raise ExplainError(f"{self.root}: refusing to write '{rel[:120]}': not a plain "
                                   f"relative path inside the run folder")
        return self.root.joinpath(*parts)

    def folder(self, rel: str) -> Path:
        """Create the folders of ``rel`` one by one; none of them may be a symbolic link."""
        here = self.folder_root()
        for part in self.path(rel).relative_to(self.root).parts:
            here = here / part
            try:
                here.mkdir()  # another writer thread may make it at the same moment
            except FileExistsError:
                pass
            if here.is_symlink() or not here.is_dir():
                raise ExplainError(f"{here}: expected a folder written by explain, found a "
                                   f"{'symbolic link' if here.is_symlink() else 'file'}")
        return here

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write atomically: temporary file in the same folder, renamed into place."""
        target = self.path(rel)
        folder = rel.rpartition("/")[0]
        parent = self.folder(folder) if folder else self.folder_root()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=parent)
        except OSError as exc:
            raise ExplainError(f"{target}: cannot write ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, self.mode)
            os.replace(tmp, target)  # replaces a planted link itself, never writes through it
        except OSError as exc:  # disk full, quota, folder gone
            Path(tmp).unlink(missing_ok=True)
            raise ExplainError(f"{target}: cannot write ({exc.strerror})") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def folder_root(self) -> Path:
        if self.root.is_symlink() or not self.root.is_dir():
            raise ExplainError(f"{self.root}: the run folder is missing or a symbolic link")
        return self.root

    def write_image(self, rel: str, rgb: np.ndarray) -> None:
        """An RGB (or gray) uint8 picture, encoded by the file's extension: .png (lossless),
        .jpg or .webp (quality 90: about 10x faster to encode than PNG)."""
        img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        suffix = Path(rel).suffix.lower()
        params = IMAGE_PARAMS.get(suffix)
        if params is None:
            raise ExplainError(f"{self.path(rel)}: unknown picture format '{suffix}'")
        ok, buf = cv2.imencode(suffix, img, params)
        if not ok:
            raise ExplainError(f"{self.path(rel)}: could not encode {suffix[1:].upper()}")
        self.write_bytes(rel, buf.tobytes())

    def write_npy(self, rel: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, array)
        self.write_bytes(rel, buf.getvalue())

    @staticmethod
    def json_bytes(data: Any) -> bytes:
        return (json.dumps(data, indent=2, default=str) + "\n").encode()

    @staticmethod
    def csv_bytes(rows: Iterable[dict]) -> bytes:
        """Columns: every key of every row, in the order first seen."""
        rows = list(rows)
        buf = io.StringIO()
        if rows:
            fields = list(dict.fromkeys(key for row in rows for key in row))
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return buf.getvalue().encode()

    def write_json(self, rel: str, data: Any) -> None:
        self.write_bytes(rel, self.json_bytes(data))

    def write_csv(self, rel: str, rows: Iterable[dict]) -> None:
        self.write_bytes(rel, self.csv_bytes(rows))


def _results_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ExplainError(f"{root}: the results folder (output.dir / --out) is a file")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExplainError(f"{root}: cannot create the results folder ({exc.strerror})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ExplainError(f"{root}: the results folder is not writable")


def _ours(folder: Path, flag: str) -> None:
    if folder.is_symlink():
        raise ExplainError(f"{flag}: {folder} is a symbolic link; refusing to use it")
    if not (folder / RUN_MARKER).is_file():
        raise ExplainError(f"{flag}: {folder} was not written by explain; refusing to touch it")


def open_run_dir(root: Path, name: str) -> RunFolder:
    """The earlier run results/<name>, for --resume: it must be one explain wrote."""
    first = root / name
    if not first.exists():
        raise ExplainError(f"--resume: no earlier explain run at {first}")
    _ours(first, "--resume")
    for stale in first.rglob(".*.part"):  # temporaries of writes the interruption cut short
        if not stale.is_symlink():
            stale.unlink()
    return RunFolder(first)


def claim_run_dir(root: Path, name: str, overwrite: bool = False) -> RunFolder:
    """Claim results/<name>, or <name>-2, -3, ... when taken; atomically (mkdir), so two runs
    started at once never share a folder. ``overwrite`` deletes an earlier explain run first."""
    _results_root(root)
    first = root / name
    if overwrite and (first.exists() or first.is_symlink()):
        _ours(first, "--overwrite")
        shutil.rmtree(first)
    candidate, n = first, 2
    while True:
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            if overwrite:
                raise ExplainError(f"--overwrite: {first} was taken by another run meanwhile") from None
            candidate, n = root / f"{name}-{n}", n + 1
    run = RunFolder(candidate)
    run.write_bytes(RUN_MARKER, b"written by explain\n")
    return run

"""The results folder: claiming it without clobbering earlier runs, and safe, atomic writes.

Every file a run writes goes through ``RunFolder``: the relative path is checked part by part
(no '..', no separators, no NUL), the folders on the way are created one at a time and must
not be symbolic links, so no write can land outside the run folder, whatever names a config
holds or what was planted in the folder, even one swapped for a link while the run writes:
the folders are held open from the run folder's own descriptor (``explain.safewrite``). Each
file is written under a temporary name in its folder and renamed into place, so a run killed
at any moment leaves only complete files.
Files get the usual permissions (0666 less the umask). PNGs carry no timestamps, so two runs
of the same config give byte-identical pictures.

Reading a run folder back (``explain report``, ``--resume``) goes through ``has_file`` and
``read_bytes``: a plain relative path, opened folder by folder without following any symbolic
link, a regular file of bounded size. A run holds the folder's lock (``RunLock``) from the
moment it claims or reopens the folder until it ends, so ``--overwrite`` and ``--resume``
never take a folder a live run is writing.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import cv2
import numpy as np

from explain.config import parse_value
from explain.errors import ExplainError, RunInterrupted
from explain.names import name_problem, quote
from explain.runlock import LOCK_FILE, RUN_MARKER, RunLock
from explain.safewrite import Folders, results_folder
from explain.settingsdiff import load_settings, settings_differ

MAX_READ_BYTES = 256 * 1024 * 1024  # a file of the run folder read back (a map, an item file)


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

    def __init__(self, root: Path, lock: Optional[RunLock] = None):
        self.root = Path(root)
        self.mode = 0o666 & ~current_umask()
        self.lock = lock  # held while this process runs in the folder (rank 0 under torchrun)
        self.folders = Folders(self.root)  # its folders' descriptors, the writes go through

    def pin(self, parent: Optional[int] = None) -> "RunFolder":
        """Open the folder now without following a link, and keep it open until ``release``:
        every write finds its folders from it (at ``parent``, the descriptor of the folder
        holding it, when given); ExplainError when it is missing or a link."""
        self.folders.pin(parent)
        return self

    def release(self) -> None:
        """Give the folder's lock back (the run ended, or failed) and close its descriptors."""
        try:
            if self.lock is not None:
                self.lock.release()
        finally:
            self.folders.close()

    def path(self, rel: str, reading: bool = False) -> Path:
        """The absolute path of ``rel``, after checking every part of it."""
        if not plain_relative(rel):
            raise ExplainError(f"{self.root}: refusing to {'read' if reading else 'write'} "
                               f"'{str(rel)[:120]}': not a plain relative path inside the "
                               f"run folder")
        return self.root.joinpath(*rel.split("/"))

    def _open(self, rel: str) -> Optional[int]:
        """A read-only descriptor of ``rel`` when it is a regular file reached without a
        symbolic link (folder by folder, each opened relative to the last), else None."""
        parts = self.path(rel, reading=True).relative_to(self.root).parts
        nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            if os.open not in os.supports_dir_fd:  # no openat: look at each folder first
                for n in range(1, len(parts)):
                    if not stat.S_ISDIR(os.lstat(self.root.joinpath(*parts[:n])).st_mode):
                        return None
                fd = os.open(self.root.joinpath(*parts), os.O_RDONLY | nofollow)
            else:
                fd = self._open_at(parts, nofollow)
        except OSError:  # missing, a link (ELOOP), not a folder
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a device, a folder
            os.close(fd)
            return None
        return fd

    def _open_at(self, parts: tuple[str, ...], nofollow: int) -> int:
        here = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | nofollow)
        try:
            for part in parts[:-1]:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=here)
                os.close(here)
                here = inner
            return os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | nofollow, dir_fd=here)
        finally:
            os.close(here)

    def has_file(self, rel: str) -> bool:
        """Whether ``rel`` is a regular file inside the folder, reached without a link."""
        fd = self._open(rel)
        if fd is None:
            return False
        os.close(fd)
        return True

    def file_names(self, folder: str) -> frozenset[str]:
        """The names of the regular files directly in ``folder`` ('' for the run folder), the
        folder reached without a symbolic link; empty when it is missing or not such a folder.
        One listing answers what a ``has_file`` per file would (see ``Listing``)."""
        parts = self.path(folder, reading=True).relative_to(self.root).parts if folder else ()
        nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow
        try:
            if os.open not in os.supports_dir_fd or os.scandir not in os.supports_fd:
                here = self.root
                for part in parts:
                    here = here / part
                    if not stat.S_ISDIR(os.lstat(here).st_mode):
                        return frozenset()
                with os.scandir(here) as entries:
                    return frozenset(e.name for e in entries if e.is_file(follow_symlinks=False))
            fd = os.open(self.root, flags)
            try:
                for part in parts:
                    inner = os.open(part, flags, dir_fd=fd)
                    os.close(fd)
                    fd = inner
                with os.scandir(fd) as entries:
                    return frozenset(e.name for e in entries if e.is_file(follow_symlinks=False))
            finally:
                os.close(fd)
        except OSError:  # missing, a link (ELOOP), not a folder
            return frozenset()

    def read_bytes(self, rel: str, limit: int = MAX_READ_BYTES) -> Optional[bytes]:
        """The bytes of ``rel`` (see ``has_file``), None when it is not such a file;
        ExplainError when it is larger than ``limit``."""
        fd = self._open(rel)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise ExplainError(f"{self.root / rel}: {size} bytes, more than an explain run "
                                   f"writes there ({limit}); the run folder is damaged")
            return f.read(size + 1)[:limit]  # not limit + 1: read() allocates what it asks

    def read_stat(self, rel: str, limit: int) -> Optional[tuple[os.stat_result, Optional[bytes]]]:
        """``rel`` opened once (see ``has_file``): its stat and its bytes, or None for the bytes
        when it is larger than ``limit`` (not read); None when it is not such a file. The
        checks are of the file that is read: a file swapped after a check by path is not."""
        fd = self._open(rel)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as f:
            found = os.fstat(f.fileno())
            return found, (None if found.st_size > limit else f.read(found.st_size + 1)[:limit])

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write atomically: temporary file in the same folder, renamed into place; every
        folder on the way reached from the run folder's descriptor (``safewrite.Folders``)."""
        target = self.path(rel)
        self.folders.write(rel, data, self.mode, target)
        return target

    def write_image(self, rel: str, rgb: np.ndarray, quality: Optional[int] = None) -> None:
        """An RGB (or gray) uint8 picture, encoded by the file's extension: .png (lossless),
        .jpg or .webp (``quality``, default 90: about 10x faster to encode than PNG)."""
        img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        suffix = Path(rel).suffix.lower()
        params = IMAGE_PARAMS.get(suffix)
        if params is None:
            raise ExplainError(f"{self.path(rel)}: unknown picture format '{suffix}'")
        if params and quality is not None:
            params = [params[0], quality]
        ok, buf = cv2.imencode(suffix, img, params)
        if not ok:
            raise ExplainError(f"{self.path(rel)}: could not encode {suffix[1:].upper()}")
        self.write_bytes(rel, buf.tobytes())

    def write_drawn(self, rel: str, draw: Callable[[], np.ndarray]) -> None:
        """``write_image`` of the picture ``draw()`` makes (a file pool draws it in its thread)."""
        self.write_image(rel, draw())

    def write_npy(self, rel: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, array)
        self.write_bytes(rel, buf.getvalue())

    @staticmethod
    def json_bytes(data: Any) -> bytes:
        return (json.dumps(data, indent=2, default=str) + "\n").encode()

    @staticmethod
    def csv_bytes(rows: Iterable[dict]) -> bytes:
        """Columns: every key of every row, in the order first seen; every text cell as
        ``names.inert_cell`` makes it (a spreadsheet opening the file runs no formula)."""
        from explain.names import encoded, inert_rows
        fields, rows = inert_rows(rows)
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return encoded(buf.getvalue())

    def write_json(self, rel: str, data: Any) -> None:
        self.write_bytes(rel, self.json_bytes(data))

    def write_csv(self, rel: str, rows: Iterable[dict]) -> None:
        self.write_bytes(rel, self.csv_bytes(rows))


def plain_relative(rel: Any) -> bool:
    """Whether ``rel`` is a relative path of plain parts, ``a/b.png``: no empty part (a
    leading or doubled ``/``), ``.``, ``..``, backslash or NUL, so it names a file inside
    whatever folder it is joined to."""
    return isinstance(rel, str) and all(
        part not in ("", ".", "..") and "\\" not in part and "\x00" not in part
        for part in rel.split("/"))


def resume_flags(name: Optional[str], folder: str) -> str:
    """The flags that resume the run in ``folder`` for a config whose run name is ``name``:
    ``--resume`` for results/<name>, with ``--set name=<folder>`` for <name>-2, -3, ...
    (quoted where YAML would read the folder's name as a number or a date: 1.0e-2). ``name``
    None: not known (a config.json keeps ``name`` only where the config set it, not the
    file's name): the folder's less its -N."""
    if name_problem(re.sub(r"-[0-9]{1,9}$", "", folder) or folder):  # a shared folder renamed
        return (f"--resume --set name=NAME with the folder renamed NAME ({quote(folder)} "
                f"is no run name)")  # 'name=x;rm ...' was a command line to paste
    if name is None:
        name = re.sub(r"-[0-9]+$", "", folder)
    if folder == name:
        return "--resume"
    value = folder if parse_value(folder) == folder else f'"{folder}"'
    return f"--resume --set 'name={value}'" if value != folder else \
        f"--resume --set name={folder}"


def unfinished_runs(root: Path, name: str) -> list[Path]:
    """The runs <name>-2, -3, ... in ``root`` that explain started and did not finish (no
    summary.json), oldest number first: what --resume on a finished <name> may have meant."""
    found = []
    for path in root.glob(f"{glob.escape(name)}-*"):
        suffix = path.name[len(name) + 1:]
        try:
            if suffix.isascii() and suffix.isdigit() and path.is_dir() and \
                    not path.is_symlink() and (path / RUN_MARKER).is_file() and \
                    not (path / "summary.json").exists():
                found.append((int(suffix), path))
        except OSError:  # a sibling we may not look into: not a run to point to
            continue
    return [path for _, path in sorted(found)]


def same_settings(run: RunFolder, rel: str, now: dict[str, Any]) -> None:
    """--resume continues only a run of the same settings (``now``, as the run's ``rel``
    holds them) that has not finished; ExplainError naming the keys that differ."""
    if (run.root / "summary.json").exists():
        waiting = unfinished_runs(run.root.parent, run.root.name)
        hint = (f"; the interrupted run {waiting[-1]} goes on with "
                f"{resume_flags(run.root.name, waiting[-1].name)}") if waiting else ""
        raise ExplainError(f"--resume: {run.root} is already finished (summary.json is there); "
                           f"run without --resume for a new run{hint}")
    where = run.root / rel
    data = run.read_bytes(rel, 16 * 1024 * 1024)
    if data is None:
        raise ExplainError(f"--resume: {where} is missing or unreadable; cannot tell which "
                           f"settings made that run")
    try:  # compared without a dotted name per leaf: see explain.settingsdiff
        shown = settings_differ(load_settings(data), now)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else \
            f"not JSON ({str(exc)[:100]})"
        raise ExplainError(f"--resume: {where}: {reason}; the run folder is damaged, cannot "
                           f"tell which settings made that run") from None
    if shown:
        raise ExplainError(f"--resume: the config differs from the interrupted run's in {shown}; "
                           f"resume with the same config, or start a new run")


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
        if (folder / LOCK_FILE).is_file():  # a run that has just made the folder, or its remains
            RunLock.take(folder, flag).release()  # refused while that run lives
        raise ExplainError(f"{flag}: {folder} was not written by explain; refusing to touch it")


def open_run_dir(root: Path, name: str) -> RunFolder:
    """The earlier run results/<name>, for --resume: it must be one explain wrote, and no live
    run may hold it. The folder's lock is taken before anything in it changes."""
    first = root / name
    if not first.exists():
        raise ExplainError(f"--resume: no earlier explain run at {first}")
    _ours(first, "--resume")
    run = RunFolder(first).pin()  # the writes go where _ours looked, even if it is swapped
    try:
        run.lock = RunLock.take(first, "--resume", run.folders.root_fd())
        _drop_parts(run)
    except BaseException:
        run.release()
        raise
    return run


MAX_RUN_DEPTH = 12  # folders below a run folder: explain writes at most 4 levels


def _drop_parts(run: RunFolder) -> None:
    """--resume: delete the temporaries of cut-short writes (.<name>.part), walked from the
    folder's held descriptor where the system allows (a folder swapped for a link meanwhile
    is not followed), else by path; deeper than MAX_RUN_DEPTH: ExplainError, as
    ``_files_below``."""
    fd = run.folders.root_fd()
    if fd is None or os.unlink not in os.supports_dir_fd:
        for stale in _files_below(run.root, "--resume"):
            if stale.name.startswith(".") and stale.name.endswith(".part"):
                stale.unlink(missing_ok=True)
        return
    for where, _, files, here in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        if where.count("/") > MAX_RUN_DEPTH:  # top-down: refused before it goes deeper
            raise ExplainError(f"--resume: {run.root} holds folders nested more than "
                               f"{MAX_RUN_DEPTH} deep, which explain never writes; refusing "
                               f"to touch it")
        for name in files:
            if name.startswith(".") and name.endswith(".part"):
                try:
                    os.unlink(name, dir_fd=here)
                except FileNotFoundError:
                    pass


def _files_below(folder: Path, flag: str) -> list[Path]:
    """Every plain file below ``folder`` (links neither followed nor listed), walked without
    recursion; ExplainError when folders nest deeper than MAX_RUN_DEPTH (1,100 nested folders
    in a shared run made pathlib's and shutil's recursion a traceback)."""
    found, todo = [], [(folder, 0)]
    while todo:
        here, depth = todo.pop()
        if depth > MAX_RUN_DEPTH:
            raise ExplainError(f"{flag}: {folder} holds folders nested more than "
                               f"{MAX_RUN_DEPTH} deep, which explain never writes; refusing "
                               f"to touch it")
        try:
            with os.scandir(here) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append((Path(entry.path), depth + 1))
                    elif entry.is_file(follow_symlinks=False):
                        found.append(Path(entry.path))
        except OSError as exc:
            raise ExplainError(f"{flag}: {here}: cannot be read ({exc.strerror})") from None
    return found


def _replace(root: Path, first: Path) -> None:
    """--overwrite: delete the earlier run ``first`` unless a live run holds it. It is moved
    aside first (one rename), so no other run ever sees it half deleted; one nested deeper
    than explain writes is refused before anything changes."""
    _ours(first, "--overwrite")
    old = RunLock.take(first, "--overwrite")
    aside = root / f".{first.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _files_below(first, "--overwrite")
        try:
            os.rename(first, aside)
        except OSError as exc:
            raise ExplainError(f"--overwrite: cannot move the earlier run {first} aside "
                               f"({exc.strerror})") from None
        try:
            shutil.rmtree(aside)
        except KeyboardInterrupt:
            raise RunInterrupted(f"explain: interrupted while --overwrite deleted the earlier "
                                 f"run; what is left of it is in {aside}") from None
        except OSError as exc:
            raise ExplainError(f"--overwrite: cannot delete the earlier run (moved to {aside}): "
                               f"{exc.strerror}") from None
    finally:
        old.release()


def claim_run_dir(root: Path, name: str, overwrite: bool = False) -> RunFolder:
    """Claim results/<name>, or <name>-2, -3, ... when taken; atomically (mkdir), so two runs
    started at once never share a folder. ``overwrite`` deletes an earlier explain run first,
    unless a live run holds it. The new folder is locked before its marker is written; it is
    made and opened (kept for the run's writes) at the results folder's descriptor, so the
    folder the run writes is the one it made, whatever is renamed meanwhile."""
    _results_root(root)
    first = root / name
    if overwrite and (first.exists() or first.is_symlink()):
        _replace(root, first)
    parent = results_folder(root)  # None: made and opened by path
    try:
        candidate, n = name, 2
        while True:
            try:
                os.mkdir(candidate if parent is not None else root / candidate, dir_fd=parent)
                break
            except FileExistsError:
                if overwrite:
                    raise ExplainError(f"--overwrite: {first} was taken by another run "
                                       f"meanwhile") from None
                candidate, n = f"{name}-{n}", n + 1
        run = RunFolder(root / candidate)
        _started(run, parent)
    finally:
        if parent is not None:
            os.close(parent)
    return run


def _started(run: RunFolder, parent: Optional[int]) -> None:
    """The new run folder opened (at ``parent``), locked and marked; after a failure or
    Ctrl-C it is not left behind."""
    try:
        run.pin(parent)
        run.lock = RunLock.take(run.root, "explain", run.folders.root_fd())
        run.write_bytes(RUN_MARKER, b"written by explain\n")
    except BaseException:  # a failure or Ctrl-C: the folder just made is not left behind
        run.release()
        shutil.rmtree(run.root, ignore_errors=True)
        raise


class Listing:
    """A run folder seen through one listing per folder: ``has_file`` (a regular file reached
    without a link) answered from ``file_names``, for a reader that asks about thousands of
    files (the report's pages). Files written afterwards are not seen: read, don't write."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.names: dict[str, frozenset[str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run, name)

    def has_file(self, rel: str) -> bool:
        folder, _, name = rel.rpartition("/")
        self.run.path(rel, reading=True)  # the same refusal of a path that leaves the folder
        if folder not in self.names:
            self.names[folder] = self.run.file_names(folder)
        return name in self.names[folder]

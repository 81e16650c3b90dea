"""A run folder's writes through folder descriptors: no folder on the way is ever followed.

A run folder may sit in a folder other local users can rename entries of (a shared config's
output.dir: /tmp/x, made by someone else first). A folder checked with lstat and then written
by path can be swapped for a symbolic link in between, and the write lands where the link
points. So ``Folders`` opens the run folder once, without following a link, when the run
claims or reopens it (``pin``), and keeps that descriptor until the run releases the folder;
every folder below it is opened from its parent's descriptor (O_NOFOLLOW | O_DIRECTORY), made
there when missing (mkdir at the parent's descriptor), and kept for the run. A file is created
under a temporary name at its folder's descriptor (O_EXCL | O_NOFOLLOW) and renamed into place
within that descriptor, so whatever is renamed meanwhile, the bytes land in the folder that
was checked. Where the system has no such calls (Windows), each folder is checked with lstat
and the file written by path, as before.
"""

from __future__ import annotations

import os
import random
import stat
import tempfile
import threading
from pathlib import Path
from typing import Optional

from explain.errors import ExplainError

AT_CALLS = all(f in os.supports_dir_fd for f in (os.open, os.mkdir, os.rename, os.unlink,
                                                  os.stat)) and hasattr(os, "O_DIRECTORY") \
    and hasattr(os, "O_NOFOLLOW") and hasattr(os, "fchmod")
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW
TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
MAX_KEPT = 256  # folder descriptors kept per run folder (a run writes to a few dozen folders)
_names = random.Random()  # temporary names: O_EXCL makes a taken one a retry, not a risk


def what(mode: Optional[int]) -> str:
    """'a file', 'a symbolic link', ... for a mode from ``kind``."""
    if mode is None:
        return "nothing"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a file" if stat.S_ISREG(mode) else "a FIFO, socket or device"


def kind(path: Path) -> Optional[int]:
    """The mode of ``path`` itself (a link is not followed); None when nothing is there."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # a part of the path is a file: not a folder either
        return stat.S_IFREG


def results_folder(root: Path) -> Optional[int]:
    """A descriptor of the folder that holds run folders (a link to it is followed: output.dir
    may be one), to make and open a new run folder at; None where that cannot be done."""
    if not AT_CALLS:
        return None
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # no read permission: made and opened by path
        return None


def missing_root(root: Path) -> ExplainError:
    """The error of a run folder that is not there, or a symbolic link."""
    return ExplainError(f"{root}: the run folder is missing or a symbolic link")


class Folders:
    """The descriptors of one run folder ('') and of its folders ('cams/gradcam'), each opened
    once and kept until ``close``; shared by the run's writer threads (one lock guards the
    table; a descriptor taken off it while a write uses it is closed after that write)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.guard = threading.Lock()
        self.fds: dict[str, int] = {}
        self.users: dict[int, int] = {}  # descriptor -> writes using it right now
        self.stale: list[int] = []  # taken off the table, closed once no write uses them

    def __getstate__(self) -> dict:  # another process's copy (torchrun ranks) holds nothing
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    def pin(self, parent: Optional[int] = None) -> None:
        """Open the run folder now, without following a link (ExplainError when it is missing
        or a link), and keep it: at ``parent``, the descriptor of the folder holding it, when
        given, else by its path. A no-op when it is open already."""
        if AT_CALLS:
            with self.guard:
                if "" not in self.fds:
                    self.fds[""] = open_root(self.root, parent)
        elif not stat.S_ISDIR(kind(self.root) or 0):
            raise missing_root(self.root)

    def root_fd(self) -> Optional[int]:
        """The run folder's descriptor once ``pin`` (or a write) opened it, else None."""
        with self.guard:
            return self.fds.get("")

    def close(self) -> None:
        """Close every descriptor (those in use once their writes end); a later write opens
        the run folder again by its path."""
        with self.guard:
            self.stale += self.fds.values()
            self.fds = {}
            self._flush()

    def __del__(self) -> None:  # a folder object dropped without release()
        try:
            self.close()
        except Exception:  # at interpreter exit: the OS closes them anyway
            pass

    def _flush(self) -> None:
        """Close the stale descriptors no write uses (the guard is held)."""
        busy = [fd for fd in self.stale if fd in self.users]
        for fd in self.stale:
            if fd not in self.users:
                os.close(fd)
        self.stale = busy

    def _fd(self, rel: str) -> int:
        """The descriptor of folder ``rel``, opened (and made) part by part from the run
        folder's (the guard is held)."""
        fd = self.fds.get(rel)
        if fd is None:
            if rel:
                parent, _, name = rel.rpartition("/")
                fd = subfolder(self._fd(parent), name, self.root / rel)
            else:
                fd = open_root(self.root)
            self.fds[rel] = fd
        return fd

    def write(self, rel: str, data: bytes, mode: int, target: Path) -> None:
        """Write ``data`` to ``rel`` (a checked relative path; ``target`` names it in errors)
        atomically, with permissions ``mode``."""
        folder, _, name = rel.rpartition("/")
        if not AT_CALLS:
            write_by_path(self.root, rel, data, mode, target)
            return
        with self.guard:
            if folder not in self.fds and len(self.fds) >= MAX_KEPT:  # keep the run folder's
                self.stale += [fd for key, fd in self.fds.items() if key]
                self.fds = {"": self.fds[""]} if "" in self.fds else {}
                self._flush()
            fd = self._fd(folder)
            self.users[fd] = self.users.get(fd, 0) + 1
        try:
            write_at(fd, name, data, mode, target)
        finally:
            with self.guard:
                self.users[fd] -= 1
                if not self.users[fd]:
                    del self.users[fd]
                    if fd in self.stale:
                        self._flush()


def open_root(root: Path, parent: Optional[int] = None) -> int:
    """The run folder's descriptor, opened without following a link (at ``parent``, the
    descriptor of the folder holding it, when given)."""
    try:
        return os.open(root if parent is None else root.name, FOLDER_FLAGS, dir_fd=parent)
    except OSError as exc:
        if stat.S_ISDIR(kind(root) or 0):  # there, and a folder: no permission, too many files
            raise ExplainError(f"{root}: cannot open the run folder ({exc.strerror})") from None
        raise missing_root(root) from None


def subfolder(parent: int, name: str, where: Path) -> int:
    """The folder ``name`` in the folder ``parent``, made when missing; ExplainError naming
    ``where`` when it is a link, a file or anything but a folder."""
    try:
        return os.open(name, FOLDER_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _not_a_folder(parent, name, where, exc) from None
    try:
        os.mkdir(name, dir_fd=parent)
    except FileExistsError:
        pass  # another writer thread made it at the same moment
    except OSError as exc:
        raise ExplainError(f"{where}: cannot make the folder ({exc.strerror})") from None
    try:
        return os.open(name, FOLDER_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _not_a_folder(parent, name, where, exc) from None


def _not_a_folder(parent: int, name: str, where: Path, exc: OSError) -> ExplainError:
    try:
        mode: Optional[int] = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        mode = None
    if stat.S_ISDIR(mode or 0):  # a folder we may not open (no permission, no descriptors)
        return ExplainError(f"{where}: cannot open the folder ({exc.strerror})")
    return ExplainError(f"{where}: expected a folder written by explain, found {what(mode)}")


def temporary(folder: int, name: str, target: Path) -> tuple[str, int]:
    """A new file '.<name>.<random>.part' in ``folder``, open for writing: (its name, fd)."""
    for _ in range(100):
        tmp = f".{name}.{_names.getrandbits(40):010x}.part"
        try:
            return tmp, os.open(tmp, TEMP_FLAGS, 0o600, dir_fd=folder)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ExplainError(f"{target}: cannot write ({exc.strerror})") from None
    raise ExplainError(f"{target}: cannot write (no unused temporary name)")


def write_at(folder: int, name: str, data: bytes, mode: int, target: Path) -> None:
    """Write ``data`` to ``name`` in the folder ``folder`` (a descriptor): a temporary file
    there, renamed into place there (a planted link at ``name`` is replaced, not followed)."""
    tmp, fd = temporary(folder, name, target)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError as exc:  # disk full, quota, folder gone
        _discard(tmp, folder)
        raise ExplainError(f"{target}: cannot write ({exc.strerror})") from None
    except BaseException:
        _discard(tmp, folder)
        raise


def _discard(tmp: str, folder: int) -> None:
    try:
        os.unlink(tmp, dir_fd=folder)
    except FileNotFoundError:
        pass


def write_by_path(root: Path, rel: str, data: bytes, mode: int, target: Path) -> None:
    """``write_at`` where there are no descriptor-relative calls: each folder checked with
    lstat (made when missing), then the file written by path."""
    here = root
    if not stat.S_ISDIR(kind(root) or 0):
        raise missing_root(root)
    for part in rel.split("/")[:-1]:
        here = here / part
        found = kind(here)
        if found is None:
            try:
                here.mkdir()  # another writer thread may make it at the same moment
            except FileExistsError:
                pass
            found = kind(here)
        if not stat.S_ISDIR(found or 0):
            raise ExplainError(f"{here}: expected a folder written by explain, found "
                               f"{what(found)}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=here)
    except OSError as exc:
        raise ExplainError(f"{target}: cannot write ({exc.strerror})") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)  # replaces a planted link itself, never writes through it
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # disk full, quota, folder gone
            raise ExplainError(f"{target}: cannot write ({exc.strerror})") from None
        raise

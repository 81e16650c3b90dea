"""The run folder's lock: one process writes a run folder at a time (a second one, or a
--resume / --overwrite of a folder in use, is refused, naming the process that holds it); a lock
left by a process that died is taken over. Beside it, the name of the marker every run folder
holds (``RUN_MARKER``: what --overwrite may delete), here at the bottom of the imports so the
config loader can say when it was given a run folder."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any, Optional

from explain.errors import ExplainError

LOCK_FILE = ".explain-lock"
RUN_MARKER = ".explain-run"  # in every folder explain made (outputs: what --overwrite may delete)


def _start_time(pid: int) -> Optional[str]:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22), or None
    where /proc is not there. With the pid it names one process, even after pid reuse."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return text.rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return None


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "start": _start_time(os.getpid()),
            "host": socket.gethostname(), "boot": _boot_id()}


def _alive(owner: dict[str, Any]) -> Optional[bool]:
    """Whether the process a lock names still runs: None when it is on another machine."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if owner.get("host") != socket.gethostname():
        return None
    if owner.get("boot") and _boot_id() and owner["boot"] != _boot_id():
        return False  # the machine restarted since
    if pid == os.getpid():
        return False  # this process holds no other lock on the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    started = _start_time(pid)
    return not (owner.get("start") and started and started != owner["start"])  # reused pid


def _flock(fd: int) -> Optional[bool]:
    """Take the OS lock on the lock file: True taken, False held by another process, None
    where the file system has no such locks (then the recorded pid decides alone)."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    except (ImportError, OSError):
        return None
    return True


def _owner(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _busy(flag: str, folder: Path, owner: dict[str, Any]) -> ExplainError:
    pid = owner.get("pid")
    who = f"pid {pid}" if isinstance(pid, int) else "pid not recorded yet"
    if owner.get("host") not in (None, socket.gethostname()):
        who += f" on {str(owner['host'])[:60]}"
    return ExplainError(f"{flag}: {folder} is in use by a running explain ({who}); wait for it "
                        f"to end or stop it, or choose another run name")


class RunLock:
    """``.explain-lock`` in a run folder: an OS lock (flock) held while the run lives, and the
    holder's pid, start time, host and boot id. A lock whose process is gone (killed: the OS
    lock is gone with it, and the recorded pid is dead or reused) is taken over."""

    def __init__(self, path: Path, fd: Optional[int], at: Optional[int] = None):
        self.path, self.fd = path, fd
        self.at = at  # this lock's own descriptor of the folder, or None: found by path

    def __getstate__(self) -> dict:  # another process's copy (torchrun ranks) holds nothing
        return {"path": self.path, "fd": None, "at": None}

    @classmethod
    def take(cls, folder: Path, flag: str, at: Optional[int] = None) -> "RunLock":
        """Lock ``folder``; ExplainError naming the folder and the pid when a live run holds
        it. ``flag`` says who asks (--overwrite, --resume) in the message. ``at``: a
        descriptor of ``folder`` (the run's, ``RunFolder.pin``): the lock file is found there,
        not by a path a swapped folder could redirect."""
        path = folder / LOCK_FILE
        name = path if at is None else LOCK_FILE
        for _ in range(8):  # the file replaced between open and lock: open it again
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW |
                             getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=at)
            except FileNotFoundError:
                raise ExplainError(f"{flag}: {folder} was removed by another run meanwhile") from None
            except OSError as exc:
                raise ExplainError(f"{flag}: cannot lock {folder} ({exc.strerror})") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # a planted FIFO or device
                    raise ExplainError(f"{flag}: {path} is not a lock file explain wrote (not a "
                                       f"regular file); remove it")
                taken = _flock(fd)
                if taken is False or (taken is None and _alive(_owner(fd)) is None):
                    raise _busy(flag, folder, _owner(fd))
                try:
                    same = os.path.samestat(os.fstat(fd), os.lstat(name, dir_fd=at))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                if _alive(_owner(fd)):  # recorded by a live process, yet not locked by it
                    raise _busy(flag, folder, _owner(fd))
                if os.fstat(fd).st_nlink > 1:  # a planted hard link: writing it writes elsewhere
                    raise ExplainError(f"{flag}: {path} is not a lock file explain wrote (a hard "
                                       f"link to another file); remove it")
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(_me()).encode(), 0)
                return cls(path, fd, None if at is None else os.dup(at))
            except OSError as exc:
                os.close(fd)
                raise ExplainError(f"{flag}: cannot lock {path} ({exc.strerror})") from None
            except BaseException:
                os.close(fd)
                raise
        raise ExplainError(f"{flag}: {folder} is being claimed by another explain run")

    def release(self) -> None:
        """Remove the lock file (if it is still this lock's) and drop the OS lock."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        at, self.at = getattr(self, "at", None), None
        name = self.path if at is None else LOCK_FILE
        try:
            if os.path.samestat(os.fstat(fd), os.lstat(name, dir_fd=at)):
                os.unlink(name, dir_fd=at)
        except OSError:
            pass  # the folder was deleted or moved: nothing left to remove
        finally:
            os.close(fd)
            if at is not None:
                os.close(at)

    def __del__(self) -> None:  # a folder object dropped without release()
        if getattr(self, "fd", None) is not None:
            try:
                self.release()
            except Exception:  # at interpreter exit: the OS drops the lock anyway
                pass

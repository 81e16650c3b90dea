"""Several processes, GPUs and nodes: ``torchrun --nproc-per-node N -m explain CONFIG``.

torchrun starts N copies of the command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in their environment. ``join`` reads them: with WORLD_SIZE > 1 it makes the process
group (nccl when CUDA is available, gloo otherwise) and returns ``Ranks``; without torchrun (or
with one process) it returns a single-process ``Ranks`` whose every step is the plain one and no
process group is made.

The ranks never exchange tensors: each explains its own share of the images
(``shard``: every WORLD_SIZE-th image in config order) into the same run folder. They talk at a
few points only, over gloo groups of their own (plain Python objects, reliable timeouts):

- ``together``: a block every rank runs; when it fails on any rank, every rank raises that
  rank's one-line error (the early checks, reading --resume's items, the batch loop);
- ``share_folder``: rank 0 claims (or, with --resume, reopens) the run folder, the others open
  the folder it names, which must be on storage every node sees;
- ``hand_in``: after the batch loop each rank hands rank 0 what its writers kept in memory
  (notes, skipped images, timings, counts, mean-map sums), and rank 0 alone finishes the run.

The ranks meet within RENDEZVOUS_TIMEOUT seconds (EXPLAIN_RENDEZVOUS_TIMEOUT sets it): a
WORLD_SIZE left in a shell, with no torchrun and no other process, is one line after that
wait, naming WORLD_SIZE and MASTER_ADDR:MASTER_PORT, not a silent wait of CHECK_TIMEOUT.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar

import torch

from explain.errors import ExplainError, first_line, relayed
from explain.names import short
from explain.outputs import RUN_MARKER, RunFolder
from explain.writers.summary import ONCE  # the parts that are rank 0's, as the run says

if TYPE_CHECKING:
    from explain.writers import RunContext, Writer

T = TypeVar("T")

CHECK_TIMEOUT = timedelta(minutes=30)  # the checks, the claim: every rank does the same work
RENDEZVOUS_TIMEOUT = 20.0  # seconds for the other ranks to appear (torchrun starts them at once)
RENDEZVOUS_ENV = "EXPLAIN_RENDEZVOUS_TIMEOUT"  # sets it, in seconds
RUN_TIMEOUT = timedelta(days=7)  # waiting for the slowest rank's share of the images
ESTIMATE = "estimate: "  # each rank estimates the whole run from its own timed passes
# Tests only: the rank with this number exits at once, as a lost node would, right after the
# files of its first batch are written (see tests/test_torchrun.py).
CRASH_ENV = "EXPLAIN_TEST_CRASH_RANK"


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ExplainError(f"torchrun: {name}={text[:40]!r} is not a whole number") from None


@dataclass
class Ranks:
    """This process's place among the ranks, and the few steps they take together."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    quick: Any = None  # gloo group for the checks and the claim (CHECK_TIMEOUT)
    patient: Any = None  # gloo group for the end of the batch loop (RUN_TIMEOUT)

    @property
    def lead(self) -> bool:
        """Rank 0: claims the folder, logs, finishes the run."""
        return self.rank == 0

    def device(self, chosen: torch.device) -> torch.device:
        """cuda -> cuda:LOCAL_RANK (each rank on its own GPU); others unchanged."""
        if self.world == 1 or chosen.type != "cuda":
            return chosen
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ExplainError(f"torchrun: LOCAL_RANK {self.local_rank}, but this node has "
                               f"{count} CUDA device(s); start at most {count} processes per node")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share: every ``world``-th item, starting at its rank."""
        return items[self.rank::self.world]

    @contextmanager
    def together(self, patient: bool = False) -> Iterator[None]:
        """Run a block on every rank; when it fails on any, every rank raises the same one-line
        error: the first failing rank's, naming that rank unless all failed alike.
        ``patient``: the ranks may finish the block far apart (the batch loop)."""
        try:
            yield
        except Exception as exc:
            self._agree(exc, patient)
            raise
        self._agree(None, patient)

    def _agree(self, exc: Optional[Exception], patient: bool) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist
        said: list[Optional[str]] = [None] * self.world
        dist.all_gather_object(said, None if exc is None else describe(exc),
                               group=self.patient if patient else self.quick)
        failed = [(rank, text) for rank, text in enumerate(said) if text is not None]
        if not failed:
            return
        rank, text = failed[0]
        if len(failed) == self.world and all(t == text for _, t in failed):
            raise relayed(text) from exc  # the same on every rank: no rank to name
        raise relayed(text, f" (on rank {rank} of {self.world})") from exc

    def from_lead(self, make: Callable[[], T]) -> T:
        """``make()`` on rank 0 only; every rank gets its result, or raises its error."""
        if self.world == 1:
            return make()
        import torch.distributed as dist
        box: list[Any] = [None, None]
        if self.lead:
            try:
                box[0] = make()
            except Exception as exc:
                box[1] = describe(exc)
                dist.broadcast_object_list(box, src=0, group=self.quick)
                raise
        dist.broadcast_object_list(box, src=0, group=self.quick)
        if box[1] is not None:
            raise relayed(box[1])
        return box[0]

    def share_folder(self, claim: Callable[[], RunFolder]) -> RunFolder:
        """Rank 0 runs ``claim``; the other ranks open the folder it got."""
        run_dir = self.from_lead(claim)
        with self.together():
            if not self.lead:
                run_dir = open_shared(run_dir.root)
        return run_dir

    def same(self, what: str, value: Any) -> None:
        """Every rank must have the same ``value`` (compared by digest) as rank 0."""
        if self.world == 1:
            return
        seen = self.gather(hashlib.sha256(repr(value).encode()).hexdigest())
        other = next((rank for rank, d in enumerate(seen) if d != seen[0]), None)
        if other is not None:
            raise ExplainError(f"torchrun: rank 0 and rank {other} find different {what}; "
                               f"every node must see the same files")

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order (on every rank)."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.quick)
        return out

    def to_lead(self, value: T, take: Callable[[T], None]) -> None:
        """The other ranks send ``value`` to rank 0, which calls ``take`` on each, in rank order,
        one at a time (so it holds one other rank's value at a time)."""
        if self.world == 1:
            return
        import torch.distributed as dist
        if not self.lead:
            dist.send_object_list([value], dst=0, group=self.quick)
            return
        for rank in range(1, self.world):
            box: list[Any] = [None]
            dist.recv_object_list(box, src=rank, group=self.quick)
            take(box[0])

    def crash_point(self, settle: Optional[Callable[[], None]] = None) -> None:
        """Tests only: the rank named by EXPLAIN_TEST_CRASH_RANK dies here (see CRASH_ENV),
        after ``settle`` (the files of the batch written so far reach the disk)."""
        if self.world > 1 and os.environ.get(CRASH_ENV) == str(self.rank):
            if settle is not None:
                settle()
            os._exit(1)

    def close(self) -> None:
        """Leave the process group (no-op for a single process)."""
        if self.world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def describe(exc: BaseException) -> str:
    """The one line the command line prints for this error."""
    if isinstance(exc, ExplainError):
        return str(exc)
    if isinstance(exc, OSError):  # its file name may hold anything: escaped, as an
        where = f"{exc.filename}: " if exc.filename else ""  # ExplainError's text is
        return str(ExplainError(f"{where}{exc.strerror or exc}"))
    return str(ExplainError(f"{type(exc).__name__}: {first_line(exc)}"))


def join(device: str = "auto") -> Ranks:
    """The ranks torchrun started (process group made), or a single process (nothing made).
    ``device``: the config's; nccl is the default group's backend when it may use CUDA."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Ranks()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ExplainError(f"torchrun: RANK {rank} is outside 0..{world - 1}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ExplainError(f"torchrun: WORLD_SIZE is {world} but {name} is not set; start "
                               f"the processes with torchrun")
    import torch.distributed as dist
    if not dist.is_available():
        raise ExplainError("torchrun: this torch build has no torch.distributed")
    backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, store=_rendezvous(rank, world), rank=rank,
                            world_size=world, timeout=CHECK_TIMEOUT)
    return Ranks(rank, world, local_rank,
                 quick=dist.new_group(backend="gloo", timeout=CHECK_TIMEOUT),
                 patient=dist.new_group(backend="gloo", timeout=RUN_TIMEOUT))


def _rendezvous_timeout() -> timedelta:
    text = os.environ.get(RENDEZVOUS_ENV, "")
    try:
        seconds = float(text) if text else RENDEZVOUS_TIMEOUT
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 7 * 86400:  # also NaN
        raise ExplainError(f"torchrun: {RENDEZVOUS_ENV}={text[:40]!r} is not a number of "
                           f"seconds (0 to 604800)")
    return timedelta(seconds=seconds)


@contextmanager
def _held_stderr() -> Iterator[None]:
    """Whatever is written to file descriptor 2 in the block (torch's C++ side logs every
    failed connection there) is held back, and written out only if the block succeeds."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        os.write(2, held.read(1 << 20))


def _rendezvous(rank: int, world: int) -> Any:
    """The store of the default process group, made the way torch's env:// rendezvous makes
    it (torchrun's agent store included), but within the rendezvous timeout."""
    import torch.distributed as dist
    wait = _rendezvous_timeout()
    where = short(f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", 120)
    try:
        with _held_stderr():
            store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=wait))
    except (RuntimeError, ValueError) as exc:  # torch's DistError is a RuntimeError
        cause = first_line(exc, 160)
        what = (f"no other process joined at MASTER_ADDR:MASTER_PORT {where} within "
                f"{wait.total_seconds():g} s" if "timed out" in cause.lower() else
                f"it cannot meet the other processes at MASTER_ADDR:MASTER_PORT {where} ({cause})")
        raise ExplainError(f"torchrun: WORLD_SIZE={world} is set (RANK={rank}) but {what}; "
                           f"unset WORLD_SIZE and RANK to run alone, or start with torchrun "
                           f"({RENDEZVOUS_ENV} sets the wait)") from None
    store.set_timeout(CHECK_TIMEOUT)
    return dist.PrefixStore("default_pg", store)  # the prefix init_process_group would add


def open_shared(folder: Path) -> RunFolder:
    """The run folder rank 0 claimed, as another rank sees it: opened at once and held, so
    this rank's writes go where it looked, not where a link swapped in later points."""
    if not (folder / RUN_MARKER).is_file() or folder.is_symlink():
        raise ExplainError(f"torchrun: rank 0 claimed {folder}, but it is not visible on this "
                           f"node; the results folder must be on storage every node shares")
    return RunFolder(folder).pin()


# ---- handing the writers' memory to rank 0 --------------------------------------------------

# What writers keep in memory between batches and read in ``finish`` (besides the item files)
# is each writer's own business: ``Writer.state`` hands it over, ``Writer.merge`` adds another
# rank's, ``Writer.forget_kept`` drops what --resume read back; nothing is listed here.

def drop_kept(ranks: Ranks, writers: list[Writer]) -> None:
    """On ranks other than 0, right after the writers' start: forget what they read back from
    an interrupted run (--resume), so that rank 0 alone counts the kept images."""
    if not ranks.lead:
        for writer in writers:
            writer.forget_kept()


def hand_in(ranks: Ranks, ctx: RunContext, writers: list[Writer], paths: list[str]) -> bool:
    """After the batch loop: every rank's notes, skipped images, timings and writer counts go
    to rank 0's summary and writers. True on rank 0, which then finishes the run; ``paths``:
    the images' paths in config order (skipped images are listed in that order)."""
    summary = ctx.summary
    devices = [summary.device]

    def take(other: dict[str, Any]) -> None:
        summary.notes.extend(n for n in other["notes"] if n not in summary.notes
                             and not n.startswith(ESTIMATE))  # rank 0's, as estimates_s
        summary.skipped_images += other["skipped"]
        for key, seconds in other["durations"].items():
            if key not in ONCE:  # work summed over the ranks; the model load is rank 0's
                summary.durations_s[key] = summary.durations_s.get(key, 0.0) + seconds
        for writer, kept in zip(writers, other["writers"]):
            writer.merge(kept)
        devices.append(other["device"])

    ranks.to_lead({"notes": list(summary.notes), "durations": dict(summary.durations_s),
                   "skipped": list(summary.skipped_images), "device": summary.device,
                   "writers": [w.state() for w in writers]}, take)
    if not ranks.lead:
        return False
    order = {path: i for i, path in enumerate(paths)}
    summary.skipped_images.sort(key=lambda s: order.get(s.path, len(order)))
    summary.device = f"{', '.join(dict.fromkeys(devices))} ({ranks.world} processes)"
    summary.processes = ranks.world
    return True

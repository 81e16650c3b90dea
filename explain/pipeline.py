"""Keeping the engine busy: images decoded ahead of the model, files encoded behind it.

Profiled on the demo (96 images x 2 classes x 2 methods, 2 cores): the CAMs were 17-33% of a
run; PNG encoding, figure encoding and tile resizing, all in the main thread, were the rest.
Two helpers move that work beside the model:

- ``prefetch``: the next chunks of images are read, decoded and resized by a thread pool
  (OpenCV releases the GIL) while the engine works on the current one;
- ``FilePool``: a bounded pool of threads that encode pictures and write files. A writer hands
  it the array; ``then`` runs a step (the image's item file) only after every file handed in
  before it is on disk, so an item file still means "all of this image's files exist".

Both are bounded (a few chunks ahead, a few dozen files in flight), so memory stays flat, and
an error in a thread (a full disk, a broken image) is raised again in the main thread as the
same exception, so the command line prints the same one-line error.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """cores - 1, and none on two cores or fewer: torch's threads take every core, and on two
    the reader and writer threads cost the model more than they save (benchmarks/end_to_end.py,
    channel views off: 0 workers ahead of 1 in 11 of 14 interleaved pairs, CPU ratio to the
    limit 0.73-0.95 against 0.71-0.79)."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else cores - 1


def finish_workers(workers: int) -> int:
    """Writer threads for a run's last step (panels, tables, summary, report): at least one
    (cores - 1 when more), whatever ``workers`` is: the model is done by then, so a thread
    no longer takes a core from it (2 cores, 192 images: the last step 0.40-0.55 s in the
    main thread alone, 0.25-0.49 s with the panels' PNGs encoded beside it)."""
    return max(workers, (os.cpu_count() or 1) - 1, 1)


def prefetch(chunks: Iterable[list[T]], work: Callable[[T], R], workers: int,
             ahead: int = 2) -> Iterator[list[R]]:
    """``[work(x) for x in chunk]`` for each chunk, in order, computed by ``workers`` threads
    up to ``ahead`` chunks before they are asked for. ``work`` should return its failures
    (e.g. an ImageError) rather than raise them when the caller wants to skip an item;
    an exception raised by ``work`` is raised here, in the caller's thread."""
    if workers < 1:
        for chunk in chunks:
            yield [work(item) for item in chunk]
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="explain-read")
    queued: deque[list[Future]] = deque()
    source = iter(chunks)
    try:
        while True:
            while len(queued) <= ahead:
                chunk = next(source, None)
                if chunk is None:
                    break
                queued.append([pool.submit(work, item) for item in chunk])
            if not queued:
                return
            yield [f.result() for f in queued.popleft()]
    finally:
        for futures in queued:
            for f in futures:
                f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class FilePool:
    """A bounded thread pool for file writes, with ordered "after everything so far" steps.

    ``submit(fn, *args)`` runs ``fn`` in a thread (blocking the caller when ``limit`` writes
    are already in flight); ``then(fn, *args)`` runs ``fn`` once every write submitted before
    it has finished; ``drain()`` waits for all and raises the first error. With ``workers``
    0 everything runs at once in the caller's thread (the same files, the same order).
    """

    def __init__(self, workers: int, limit: Optional[int] = None):
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="explain-write") \
            if workers > 0 else None
        self.slots = threading.BoundedSemaphore(limit or 8 * max(workers, 1))
        self.pending: list[Future] = []
        self.error: Optional[BaseException] = None

    def _check(self) -> None:
        """Forget finished writes; raise the first error one of them met."""
        running = []
        for f in self.pending:
            if not f.done():
                running.append(f)
            elif not f.cancelled() and f.exception() is not None and self.error is None:
                self.error = f.exception()
        self.pending = running
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def submit(self, fn: Callable[..., Any], *args: Any) -> Optional[Future]:
        """Run ``fn(*args)`` in a writer thread (at once, without workers)."""
        if self.pool is None:
            fn(*args)
            return None
        self._check()
        self.slots.acquire()
        try:
            future = self.pool.submit(fn, *args)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self.slots.release())
        self.pending.append(future)
        return future

    def then(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after every write submitted so far has finished without error."""
        if self.pool is None:
            fn(*args)
            return
        before = list(self.pending)

        def after() -> None:
            for f in before:
                f.result()  # an earlier write failed: this step does not run
            fn(*args)
        self.submit(after)

    def drain(self) -> None:
        """Wait for every write; raise the first error one of them met."""
        if self.pool is None:
            return
        for f in list(self.pending):
            try:
                f.result()
            except BaseException:  # noqa: BLE001 - _check raises the first one
                pass
        self._check()

    def close(self, cancel: bool = False) -> None:
        """Stop the threads: after the queued writes, or (``cancel``) dropping those not
        started yet (an interrupted run keeps what finished; item files come last)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)


class QueuedWrites:
    """A RunFolder whose file writes run on a FilePool: the caller renders the picture, a
    writer thread encodes and writes it; reading a file (``read_bytes``) waits for its queued
    write, and ``has_file`` / ``file_names`` count a queued file as there. JSON is serialised
    in the caller's thread (the records may change afterwards); CSV rows are copied into a
    list at once and formatted in the writer thread (``write_csv``). Anything else (reads,
    folders) goes straight to the RunFolder."""

    def __init__(self, run: Any, pool: FilePool):
        self.run = run
        self.pool = pool
        self.last: dict[str, Future] = {}  # a file written again waits for its earlier write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run, name)

    def _queue(self, rel: str, fn: Callable[..., Any], *args: Any) -> None:
        before = self.last.get(rel)

        def write() -> None:
            if before is not None:
                before.result()
            fn(rel, *args)
        future = self.pool.submit(write)
        if future is not None:
            self.last[rel] = future
            if len(self.last) > 4096:  # forget finished ones: memory stays flat
                self.last = {k: f for k, f in self.last.items() if not f.done()}

    def write_image(self, rel: str, rgb: Any, quality: Optional[int] = None) -> None:
        self._queue(rel, self.run.write_image, rgb, quality)

    def write_drawn(self, rel: str, draw: Callable[[], Any]) -> None:
        self._queue(rel, self.run.write_drawn, draw)

    def write_npy(self, rel: str, array: Any) -> None:
        self._queue(rel, self.run.write_npy, array)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._queue(rel, self.run.write_bytes, data)

    def write_json(self, rel: str, data: Any) -> None:
        self._queue(rel, self.run.write_bytes, self.run.json_bytes(data))

    def write_csv(self, rel: str, rows: Iterable[dict]) -> None:
        """The rows are taken now (a list of the dicts); formatting happens in the thread, so
        a caller must not change the row dicts afterwards (the writers make fresh ones)."""
        self._queue(rel, self.run.write_csv, list(rows))

    def _settled(self, rel: str) -> None:
        """Wait for a queued write of ``rel``, so a read sees the file as written (an error
        of that write is raised by ``drain``)."""
        pending = self.last.get(rel)
        if pending is not None:
            try:
                pending.result()
            except BaseException:
                pass

    def _queued(self, rel: str) -> bool:
        pending = self.last.get(rel)
        return pending is not None and not pending.done()

    def has_file(self, rel: str) -> bool:
        """A file whose write is still queued counts as there, without waiting for it: it is
        there when the run ends, or its error ends the run (``drain``)."""
        return self._queued(rel) or self.run.has_file(rel)

    def file_names(self, folder: str) -> frozenset:
        """The folder's files, those still queued counted (as ``has_file``); the queue is read
        before the folder, so a write that ends in between is in one or the other."""
        queued = frozenset(r.rpartition("/")[2] for r in list(self.last)
                           if r.rpartition("/")[0] == folder and self._queued(r))
        return queued | self.run.file_names(folder)

    def read_bytes(self, rel: str, *limit: int) -> Optional[bytes]:
        self._settled(rel)
        return self.run.read_bytes(rel, *limit)

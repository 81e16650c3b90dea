"""``batch_size: auto``: batches sized to a memory budget, and a second try at half the batch
when a batch runs out of memory.

The budget is the free memory of the CUDA device (``torch.cuda.mem_get_info``), or a share of
the memory the system has available on the CPU (``MemAvailable`` in /proc/meminfo). What one
image costs is measured on the first image: the bytes of every module's output in one forward
pass (twice that with gradients: the saved activations and their gradients; for the engine's
lean pass only from the first hooked layer on, see ``bytes_per_row``); the batch is the budget
over that, at most ``MAX_BATCH``. An out-of-memory error in a batch splits it in two
halves, each tried once; a second out-of-memory error is one line naming the setting.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, TypeVar

import torch
from torch import nn

from explain.config.sections import MAX_BATCH
from explain.enginedata import BatchResult, LayerPass, map_slots, watching
from explain.errors import ExplainError
from explain.models.guard import available

CPU_SHARE = 0.25  # of the available RAM, on the CPU
GPU_SHARE = 0.8  # of the free GPU memory
T = TypeVar("T")


def budget(device: torch.device) -> int:
    """Bytes a batch may use on ``device``."""
    return int(available(device) * (GPU_SHARE if device.type == "cuda" else CPU_SHARE))


def bytes_per_row(model: nn.Module, x: torch.Tensor, gradients: bool,
                  lean_at: Sequence[nn.Module] = ()) -> int:
    """What one image of ``x`` (a batch of one) costs in a forward pass: the bytes of every
    leaf module's output, twice that when gradients are taken, plus the input. ``lean_at``:
    the engine's lean pass hooked there (explain.engine), where autograd records only what
    follows the first of these layers: before it, an output lives only until the next module
    has used it (twice the largest counted); from it on, outputs and their gradients, twice;
    and all of that twice, for what the allocator holds beyond the live tensors. Measured on
    the demo at 224 x 448 (peak resident memory, 4 and 16 images): 31 MiB a row at its last
    block (estimated 44; 312 without ``lean_at``), 58 at block 5 (estimated 224)."""
    sizes: list[tuple[bool, int]] = []  # (at or after the first lean_at layer, bytes)
    reached = [False]

    def count(i: int, out) -> None:
        reached[0] = reached[0] or i >= len(leaves)
        if isinstance(out, torch.Tensor):
            sizes.append((reached[0], out.numel() * out.element_size()))

    marks = list(lean_at)
    leaves = [m for m in model.modules() if not list(m.children())
              and all(m is not h for h in marks)]
    with watching(leaves + marks, count), torch.no_grad():
        model(x[:1])
    plain = x.numel() * x.element_size() + sum(n for _, n in sizes)
    if not gradients:
        return plain
    if not marks:
        return 2 * plain
    before = [n for after, n in sizes if not after]
    lean = x.numel() * x.element_size() + 2 * max(before, default=0) + \
        2 * sum(n for after, n in sizes if after)
    return min(2 * lean, 2 * plain)  # never more than the plain pass records


def rows_that_fit(per_row: int, limit: int) -> int:
    """The largest batch of rows of ``per_row`` bytes within ``limit`` bytes (1..MAX_BATCH)."""
    return max(1, min(MAX_BATCH, limit // max(1, per_row)))


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (CUDA, or the CPU allocator's)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def halving(work: Callable[[int, int], T], rows: int, setting: str,
            merge: Callable[[list[T]], T]) -> T:
    """``work(start, stop)`` over rows 0..rows; on out-of-memory, once more as two halves
    (merged with ``merge``); out of memory again: one line naming ``setting``."""
    try:
        return work(0, rows)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = (rows + 1) // 2
    try:
        parts = [work(0, half)] + ([work(half, rows)] if half < rows else [])
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        raise ExplainError(f"{setting}: out of memory with a batch of {rows}, and again with "
                           f"{half}; set a smaller {setting}") from None
    return merge(parts)


def resolved(value, per_row: Callable[[], int], device: torch.device,
             limit: Optional[int] = None) -> Optional[int]:
    """A batch size: ``value`` when it is a number, the rows that fit the budget (``limit``
    bytes, else ``budget(device)``) for 'auto', None for None."""
    if value != "auto":
        return value
    return rows_that_fit(per_row(), budget(device) if limit is None else limit)


def merged(parts: list, names) -> BatchResult:
    """The engine's BatchResults of consecutive rows as one (maps, logits, classes, peaks,
    the channel layer's arrays, every image's MapSlots made anew over the joined maps)."""
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    classes = np.concatenate([p.classes for p in parts])
    maps = {k: np.concatenate([p.maps[k] for p in parts]) for k in first.maps}
    probe = None
    if first.probe is not None:
        slots = range(len(first.probe.gradients))
        probe = LayerPass(np.concatenate([p.probe.activations for p in parts]),
                          [np.concatenate([p.probe.gradients[s] for p in parts]) for s in slots])
    return BatchResult(np.concatenate([p.logits for p in parts]), classes, maps, probe,
                       raw_max={k: np.concatenate([p.raw_max[k] for p in parts])
                                for k in first.raw_max},
                       per_image=map_slots(classes, names, maps),
                       activations=[np.concatenate(layer) for layer in
                                    zip(*(p.activations for p in parts))])


def retrying(work: Callable[[int], T], size: int, setting: str) -> T:
    """``work(size)``; on out-of-memory once more with half the size; out of memory again:
    one line naming ``setting`` (an inner batch: ScoreCAM's, AblationCAM's)."""
    try:
        return work(size)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = max(1, size // 2)
    try:
        return work(half)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        raise ExplainError(f"{setting}: out of memory with a batch of {size}, and again with "
                           f"{half}; set a smaller {setting}") from None

"""ROAD (Rong et al. 2022, "A consistent and efficient evaluation strategy for attribution
methods") fast enough to leave on: the same numbers as pytorch_grad_cam.metrics.road.

ROAD removes the pixels of a map above (most relevant first) or below (least relevant first) a
percentile and fills them with its *noisy linear imputation*: each removed pixel becomes the
weighted mean of its 8 neighbours (1/6 for the four direct ones, 1/12 for the diagonals; a
neighbour outside the image does not count), which is one sparse linear system over the
removed pixels, plus Gaussian noise (sigma 0.01). The score is the change of the class score.

What is the same as the library (tested against it):

- the masks: ``np.percentile`` of the map, pixels ``< threshold`` kept (on ``1 - map`` for
  least relevant first), compared in float32 as torch does;
- the linear system (unknowns in row-major order) and so the imputed image, to 1e-6;
- the noise: drawn from torch's global generator with the library's call on a tensor of the
  same shape and strides, in the library's order (least relevant first, then most relevant
  first for the combined score; percentile by percentile; map by map), so a run seeded as the
  library is gets the library's numbers;
- the score: float32 differences, float32 means over the percentiles, (least - most) / 2.

What is faster:

- the system is solved by multigrid-preconditioned conjugate gradients (explain.imputation);
- the model runs once on the original image and then on the imputed images in batches across
  percentiles and maps, not twice per percentile, channels-last (see ``Forward``);
- a chunk of imputations is solved on threads, then the model runs on it: the solves and the
  passes never compete for the cores.

When every pixel is removed (a map whose percentile threshold is its minimum: many ReLU'd maps
at low percentiles) nothing is known: the imputation is 0 plus noise, as the library's solve
gives for every image size explain feeds (its LU gives NaN on some images under 5 x 5 pixels or
one pixel wide). The model should not draw random numbers in its forward pass (explain runs it
in eval mode): the library interleaves its passes with the noise draws, this batches them.
"""

from __future__ import annotations

from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Literal, Optional, Sequence

import numpy as np
import torch

from explain.imputation import solve

Order = Literal["combined", "most", "least"]
NOISE = 0.01  # the library's default
BATCH = 4  # imputed images per forward pass (more is slower on a CPU: the cache)
CHUNK = 8  # imputations solved before their forward passes


def keep_masks(cam: np.ndarray, percentiles: Sequence[float],
               most_first: bool) -> list[np.ndarray]:
    """The pixels ROAD keeps (True) for one map, per percentile: those below the percentile of
    the map (most relevant first) or of 1 - map (least relevant first), compared as torch
    compares a float32 tensor with the threshold."""
    values = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))
    if not most_first:
        values = 1 - values
    thresholds = np.percentile(values.numpy(), list(percentiles))
    return [(values < t).numpy() for t in thresholds]


def keep_mask(cam: np.ndarray, percentile: float, most_first: bool) -> np.ndarray:
    """``keep_masks`` for one percentile."""
    return keep_masks(cam, [percentile], most_first)[0]


def impute(img: torch.Tensor, keep: np.ndarray, noise: float = NOISE) -> torch.Tensor:
    """ROAD's noisy linear imputation of the pixels not in ``keep`` ((H, W) bool) in ``img``
    ((C, H, W) float32 on the CPU): the library's ``NoisyLinearImputer(noise)(img, mask)``,
    drawing its noise from torch's global generator the same way."""
    return with_noise(img, keep, solve(img.numpy(), keep), noise)


def with_noise(img: torch.Tensor, keep: np.ndarray, values: np.ndarray,
               noise: float = NOISE, generator: Optional[torch.Generator] = None
               ) -> torch.Tensor:
    """``img`` with the unknown pixels set to ``values`` ((N, C), see ``solve``) plus noise,
    drawn from ``generator`` (torch's global one when None: the same numbers either way
    for generators in the same state)."""
    unknown = torch.from_numpy(np.flatnonzero(~keep.reshape(-1)))
    if not len(unknown):
        return img.clone()
    # the library's res is torch.tensor(SuperLU's Fortran-ordered (N, C) solution), which keeps
    # those strides, so its res.t() is a contiguous (C, N) tensor: the noise is torch's draw
    # for such a tensor (randn_like follows the strides, and they decide the numbers drawn)
    res_t = torch.from_numpy(np.ascontiguousarray(values.T, dtype=np.float32))
    out = img.reshape(img.shape[0], -1).clone()
    draw = torch.randn_like(res_t) if generator is None else \
        torch.randn(res_t.shape, generator=generator, dtype=res_t.dtype)
    out[:, unknown] = res_t + noise * draw
    return out.reshape_as(img)


def solutions(tasks: Sequence[tuple[np.ndarray, np.ndarray]],
              pool: Optional[ThreadPoolExecutor]) -> list[np.ndarray]:
    """``solve(img, keep)`` of each task, in order, on the pool's threads when there is one
    (the solves run mostly outside the GIL: OpenCV, NumPy, SuperLU)."""
    if pool is None:
        return [solve(*task) for task in tasks]
    return list(pool.map(lambda task: solve(*task), tasks))


class ROAD:
    """A ROAD score per map, called as the library's metrics are: ``(input_tensor, cams,
    targets, model)`` -> (K,) float32, for K maps of the images in ``input_tensor``.

    ``order``: "combined" (the library's ROADCombined: (least - most) / 2), "most"
    (ROADMostRelevantFirstAverage) or "least" (ROADLeastRelevantFirstAverage); the mean over
    ``percentiles`` of the class score's change. ``batch``: imputed images per forward pass."""

    def __init__(self, order: Order = "combined", percentiles: Sequence[float] = (
            10, 20, 30, 40, 50, 60, 70, 80, 90), noise: float = NOISE, batch: int = BATCH,
                 workers: Optional[int] = None):
        if order not in ("combined", "most", "least"):
            raise ValueError(f"ROAD order: combined, most or least, not {order!r}")
        self.order, self.percentiles = order, list(percentiles)
        self.noise, self.batch = noise, max(1, int(batch))
        self.workers = torch.get_num_threads() if workers is None else workers

    def __call__(self, input_tensor: torch.Tensor, cams: np.ndarray,
                 targets: Sequence[Callable], model: torch.nn.Module,
                 seeds: Optional[Sequence[int]] = None) -> np.ndarray:
        """The scores; ``seeds`` (one per map): each map's noise from a generator of its
        own, so its score is the library's call on that map alone after
        ``torch.manual_seed(seed)``, whatever other maps share the call (without: torch's
        global generator, as one library call on all the maps draws it)."""
        firsts = {"combined": (False, True), "most": (True,), "least": (False,)}[self.order]
        own = None if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds]
        images = [input_tensor[i].cpu() for i in range(len(cams))]
        keeps = {(most, i): keep_masks(cams[i], self.percentiles, most)
                 for most in firsts for i in range(len(cams))}
        # the library's order of noise draws: least relevant first before most (combined),
        # percentile by percentile, map by map
        jobs = [(most, n, i) for most in firsts for n in range(len(self.percentiles))
                for i in range(len(cams))]
        after = np.empty(len(jobs), np.float32)
        forward = Forward(model, input_tensor.device)
        with torch.no_grad(), _pool(self.workers) as pool:
            before = _scores(forward(input_tensor), targets)
            # a chunk's solves, then its passes: never both at once, as torch's threads
            # wait on each other when other threads hold the cores
            for start in range(0, len(jobs), CHUNK):
                part = jobs[start:start + CHUNK]
                values = solutions([(images[i].numpy(), keeps[most, i][n])
                                    for most, n, i in part], pool)
                imputed = [with_noise(images[i], keeps[most, i][n], v, self.noise,
                                      None if own is None else own[i])
                           for (most, n, i), v in zip(part, values)]
                for first in range(0, len(part), self.batch):
                    rows = part[first:first + self.batch]
                    outputs = forward(torch.stack(imputed[first:first + len(rows)]))
                    after[start + first:start + first + len(rows)] = _scores(
                        outputs, [targets[i] for _, _, i in rows])
        change = after.reshape(len(firsts), len(self.percentiles), len(cams)) - before
        means = np.mean(change, axis=1)  # float32, as the library's averager
        return (means[0] - means[1]) / 2 if self.order == "combined" else means[0]


class Forward:
    """The model on a batch, channels-last where it takes it: the same numbers to float
    rounding, and on a CPU the depthwise convolutions of mobile networks run about 1.6x
    faster across threads. A model that cannot take it (a ``view`` of a channels-last
    activation) runs on contiguous batches from then on."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device, self.channels_last = model, device, True

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        if self.channels_last and batch.dim() == 4:
            try:
                return self.model(batch.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                self.channels_last = False
        return self.model(batch.contiguous())


@contextmanager
def _pool(workers: int) -> Iterator[Optional[ThreadPoolExecutor]]:
    """A thread pool for the solves, or None for one worker."""
    if workers <= 1:
        yield None
        return
    with ThreadPoolExecutor(workers) as pool:
        yield pool


def _scores(outputs: torch.Tensor, targets: Sequence[Callable]) -> np.ndarray:
    """Each output row's target score, float32 (as the library reads them)."""
    return np.float32([target(output).cpu().numpy() for target, output in zip(targets, outputs)])

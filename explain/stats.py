"""How sure a mean and a difference are: percentile bootstrap over images (pure numpy).

The report's methods table and its "Which map to trust" section rank methods only where the
numbers say so. The unit that is resampled is the IMAGE: a method's maps of one image (its
classes) are averaged into one number per image first, because maps of the same image are not
independent draws. Then:

- ``interval(values)``: the mean of the per-image numbers and its ``CONFIDENCE`` (95%)
  percentile bootstrap interval: ``RESAMPLES`` resamples of the images with replacement, the
  2.5th and 97.5th percentiles (numpy's linear ``quantile``) of their means;
- ``paired(a, b)``: the same on the per-image differences ``a - b`` of two methods measured on
  the same images (a paired bootstrap): the difference is significant when its interval
  excludes 0. Identical numbers give the interval [0, 0]: not different.

Every call draws from its own ``numpy.random.default_rng(seed)`` (the run's ``seed``), so the
numbers are the same on every run and every rebuild of the report. Below ``MIN_IMAGES``
images a ranking is not made at all ("not yet meaningful"): with 2 to 4 images a bootstrap
interval is mostly the spread of those few numbers, and a percentile interval of 3 resampled
images has at most 10 distinct means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

RESAMPLES = 2000  # bootstrap resamples per interval
CONFIDENCE = 0.95
MIN_IMAGES = 5  # fewer paired images: no ranking, no significance ("not yet meaningful")
_CHUNK = 1 << 20  # indices drawn at a time: bounded memory for large runs

Verdict = Literal["higher", "lower", "not different", "too few images"]


def resample_means(values: Sequence[float] | np.ndarray, *, seed: int,
                   resamples: int = RESAMPLES) -> np.ndarray:
    """The means of ``resamples`` bootstrap resamples of ``values`` (each: len(values) draws
    with replacement), drawn from ``default_rng(seed)`` row by row: the resamples of a loop
    of ``rng.integers(0, n, n)`` per resample. ``values`` may be (k, n): k vectors measured
    on the same n images share those resamples, as k calls with the same seed would; the
    result is then (k, resamples). Computed in chunks (bounded memory), each resample's
    mean as its draw counts times the values."""
    data = np.asarray(values, dtype=np.float64)
    rows2d = np.atleast_2d(data)
    k, n = rows2d.shape
    if n == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // n)
    out = np.empty((k, resamples), dtype=np.float64)
    for start in range(0, resamples, step):
        stop = min(resamples, start + step)
        draws = rng.integers(0, n, size=(stop - start, n))
        offsets = (np.arange(stop - start) * n)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=(stop - start) * n)
        out[:, start:stop] = rows2d @ counts.reshape(stop - start, n).T / n
    return out[0] if data.ndim == 1 else out


def intervals(vectors: Sequence[Sequence[float]], *, seed: int, resamples: int = RESAMPLES,
              confidence: float = CONFIDENCE) -> list[tuple[float, float]]:
    """``interval`` of each vector, computed together: vectors of one length share their
    resamples, so each result equals a call of its own with the same seed (and the work is
    one draw per length)."""
    tail = (1.0 - confidence) / 2.0
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(vectors)
    by_length: dict[int, list[int]] = {}
    for i, vector in enumerate(vectors):
        by_length.setdefault(len(vector), []).append(i)
    for members in by_length.values():
        means = resample_means(np.array([np.asarray(vectors[i], dtype=np.float64)
                                         for i in members]), seed=seed, resamples=resamples)
        bounds = np.quantile(means, [tail, 1.0 - tail], axis=1)
        for j, i in enumerate(members):
            out[i] = (float(bounds[0, j]), float(bounds[1, j]))
    return out


def interval(values: Sequence[float], *, seed: int, resamples: int = RESAMPLES,
             confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (low, high). One value:
    (it, it)."""
    return intervals([values], seed=seed, resamples=resamples, confidence=confidence)[0]


@dataclass(frozen=True)
class Difference:
    """A paired comparison of A and B over the images both were measured on: the mean of the
    per-image differences A - B, its bootstrap interval (None below ``MIN_IMAGES``), and how
    many images."""
    mean: float
    low: float | None
    high: float | None
    images: int

    @property
    def verdict(self) -> Verdict:
        """'higher' (A's numbers are higher: the interval lies above 0), 'lower', 'not
        different' (the interval holds 0), or 'too few images' (no interval)."""
        if self.low is None or self.high is None:
            return "too few images"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "not different"


def paired(a: Sequence[float], b: Sequence[float], *, seed: int,
           min_images: int = MIN_IMAGES, resamples: int = RESAMPLES,
           confidence: float = CONFIDENCE) -> Difference:
    """The paired bootstrap of A - B (``a[i]`` and ``b[i]``: the same image). Below
    ``min_images`` pairs, the mean difference alone."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise ValueError("paired: two equally long, non-empty lists of numbers")
    diff = x - y
    if len(diff) < min_images:
        return Difference(float(diff.mean()), None, None, len(diff))
    low, high = interval(diff, seed=seed, resamples=resamples, confidence=confidence)
    return Difference(float(diff.mean()), low, high, len(diff))

"""How sure a mean and a difference are: expanded percentile bootstrap over images.

The report's methods table and its "Which map to trust" section rank methods only where the
numbers say so. The unit that is resampled is the IMAGE: a method's maps of one image (its
classes) are averaged into one number per image first, because maps of the same image are not
independent draws. Then:

- ``interval(values)``: the mean of the per-image numbers and its ``CONFIDENCE`` (95%)
  bootstrap interval: ``RESAMPLES`` resamples of the images with replacement, and the
  percentiles (numpy's linear ``quantile``) of their means at the *expanded* tail of
  ``tail(n)``. The plain 2.5th / 97.5th percentiles are too narrow for a few images (they
  covered the true mean of normal samples 82% of the time at 5 images, 89% at 8, 93% at 20):
  the expanded percentile interval (Hesterberg, "What teachers should know about the
  bootstrap", 2015) takes the percentiles whose normal quantile is sqrt(n / (n - 1)) times
  Student's t quantile with n - 1 degrees of freedom, and each end is moved out to the
  t-interval's where that lies further (at 5 images the bootstrap means' tails are shorter
  than a normal's, and the expanded percentiles alone covered 92%). So the interval is at
  least as wide as Student's t-interval and keeps the bootstrap's asymmetry: normal samples
  are covered 94-96% of the time at 5 to 40 images (tests/test_stats.py); strongly skewed
  ones (lognormal, sigma 1) less (a 0 difference called significant 18% of the time at 5
  images, 10% at 40), as for any interval of a mean at these sizes;
- ``paired(a, b)``: the same on the per-image differences ``a - b`` of two methods measured on
  the same images (a paired bootstrap): the difference is significant when its interval
  excludes 0. Identical numbers give the interval [0, 0]: not different. For yes-or-no
  numbers the methods table also asks the exact sign test (``sign_checked``): the interval
  reaches 0 where that finds no difference (the bootstrap of 5 images that all differ one
  way is [1, 1], with p = 0.0625).

Every call draws from its own ``numpy.random.default_rng(seed)`` (the run's ``seed``), so the
numbers are the same on every run and every rebuild of the report. Below ``MIN_IMAGES``
images a ranking is not made at all ("not yet meaningful"): with 2 to 4 images a bootstrap
interval is mostly the spread of those few numbers, and a percentile interval of 3 resampled
images has at most 10 distinct means.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from statistics import NormalDist
from typing import Literal, Sequence

import numpy as np
from scipy.stats import binom, t as student_t

RESAMPLES = 2000  # bootstrap resamples per interval
CONFIDENCE = 0.95
MIN_IMAGES = 5  # fewer paired images: no ranking, no significance ("not yet meaningful")
_CHUNK = 1 << 20  # indices drawn at a time: bounded memory for large runs
MAX_LENGTHS = 64  # vector lengths drawn for at most: a run's methods share their images (a
# few lengths); a shared summary's numbers on made-up subsets of images made 650 of them,
# a draw each: 10 MB took 19 s of the report's and a notebook's table (honest: 2.7 s)

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


def tail(n: int, confidence: float = CONFIDENCE) -> float:
    """The lower percentile (0..0.5) the ``confidence`` interval of the mean of ``n`` values
    reads from the bootstrap means: the expanded percentile interval's, Phi(-sqrt(n / (n - 1))
    x t(1 - alpha / 2, n - 1)); about 0.001 at 5 images, 0.021 at 40, 0.025 in the limit."""
    if n < 2:
        return (1.0 - confidence) / 2.0
    z = math.sqrt(n / (n - 1)) * float(student_t.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def intervals(vectors: Sequence[Sequence[float]], *, seed: int, resamples: int = RESAMPLES,
              confidence: float | Sequence[float] = CONFIDENCE) -> list[tuple[float, float]]:
    """``interval`` of each vector, computed together: vectors of one length share their
    resamples, so each result equals a call of its own with the same seed (and the work is
    one draw per length). ``confidence``: one level, or one per vector. Past MAX_LENGTHS
    lengths, those of the fewest vectors (the longest first) get Student's t-interval alone
    (no draw)."""
    levels = [confidence] * len(vectors) if isinstance(confidence, (int, float)) \
        else list(confidence)
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(vectors)
    by_length: dict[int, list[int]] = {}
    for i, vector in enumerate(vectors):
        by_length.setdefault(len(vector), []).append(i)
    ordered = sorted(by_length.items(), key=lambda kv: (-len(kv[1]), kv[0]))  # cheapest next
    for n, members in ordered[MAX_LENGTHS:]:  # only a shared record's made-up subsets
        for i in members:
            half = _t_half_width(np.asarray(vectors[i], dtype=np.float64), levels[i])
            centre = float(np.mean(vectors[i]))
            out[i] = (centre - half, centre + half)
    for n, members in ordered[:MAX_LENGTHS]:
        means = resample_means(np.array([np.asarray(vectors[i], dtype=np.float64)
                                         for i in members]), seed=seed, resamples=resamples)
        for j, i in enumerate(members):
            low = tail(n, levels[i])
            bounds = np.quantile(means[j], [low, 1.0 - low])
            half = _t_half_width(np.asarray(vectors[i], dtype=np.float64), levels[i])
            centre = float(np.mean(vectors[i]))
            out[i] = (min(float(bounds[0]), centre - half), max(float(bounds[1]), centre + half))
    return out


def _t_half_width(values: np.ndarray, confidence: float) -> float:
    """Student's t-interval's half width for the mean of ``values`` (0 for one value)."""
    n = len(values)
    if n < 2:
        return 0.0
    quantile = float(student_t.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1))
    return quantile * float(np.std(values, ddof=1)) / math.sqrt(n)


def wilson(share: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a share of ``n`` yes-or-no outcomes. A mean of per-image
    shares of such outcomes varies at most as much, so this interval is never too narrow for
    it; the bootstrap of images that all hit says [100%, 100%] (no spread to resample)."""
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)  # 1.96 at 95%
    scale = 1.0 + z * z / n
    centre = (share + z * z / (2 * n)) / scale
    half = z * math.sqrt(share * (1.0 - share) / n + z * z / (4 * n * n)) / scale
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def widened(bounds: tuple[float, float], share: float, n: int,
            confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``bounds`` (an interval of a mean of yes-or-no shares over ``n`` images) taken
    together with their ``wilson`` interval: at least as wide as either."""
    low, high = wilson(share, n, confidence)
    return min(bounds[0], low), max(bounds[1], high)


def sign_p(differences: Sequence[float]) -> float:
    """The exact two-sided sign test's p of paired ``differences`` (zeros dropped; 1 for
    none): for yes-or-no numbers, McNemar's exact test on the images where the two differ."""
    up = sum(1 for d in differences if d > 0)
    down = sum(1 for d in differences if d < 0)
    if not up + down:
        return 1.0
    # binom.cdf: summing math.comb term by term took 5 s for 10,000 images that differ evenly,
    # 270 s for 40,000, per pair on each yes-or-no metric
    return min(1.0, 2.0 * float(binom.cdf(min(up, down), up + down, 0.5)))


def sign_checked(bounds: tuple[float, float], differences: Sequence[float],
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``bounds`` (an interval of a mean of paired differences of yes-or-no shares) reaching
    0 where the exact sign test at ``confidence`` does not find a difference: 5 images that
    all hit where the other map misses gave the bootstrap's [1, 1], and no paired test can
    find that at 95% (p = 2 / 2 ** 5 = 0.0625 at best)."""
    low, high = bounds
    if (low > 0 or high < 0) and sign_p(differences) > 1.0 - confidence:
        return (0.0, high) if low > 0 else (low, 0.0)
    return low, high


def interval(values: Sequence[float], *, seed: int, resamples: int = RESAMPLES,
             confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The expanded percentile bootstrap interval of the mean of ``values`` (low, high). One
    value: (it, it)."""
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


def cell(value: "float | bool | None", digits: int = 3) -> str:
    """A number in a table of the report or of a notebook's display: ``digits`` significant
    digits (``figure``), yes / no for a flag, a dash for none (both showed one, each its own)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return figure(value, digits)


def fixed(value: float, decimals: int = 1) -> str:
    """``value`` with ``decimals`` decimals, or at 3 significant digits (``figure``) when it
    is that large (a shared summary's 1e306, 5 characters, was 300 digits on the page)."""
    return f"{value:.{decimals}f}" if abs(value) < 1e9 else figure(value, 3)


def figure(value: float, digits: int = 3, sign: bool = False) -> str:
    """``value`` at ``digits`` significant digits as the report and the trust lines print it,
    trailing zeros kept (0.300 [0.250, 0.410], not 0.3 [0.25, 0.41]: a mean and its interval
    read at one precision), exponents short (1.20e-5); ``sign``: always a sign. Zero is "0",
    wherever it is printed."""
    if value == 0:
        return "0"
    text = f"{value:{'+' if sign else ''}#.{digits}g}"
    mantissa, _, exponent = text.partition("e")
    mantissa = mantissa.rstrip(".")  # 100. -> 100
    return mantissa + (f"e{int(exponent)}" if exponent else "")

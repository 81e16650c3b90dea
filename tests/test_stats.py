"""explain.stats: the percentile bootstrap over images and the paired comparison (issue 20,
item 4), checked against a direct computation and against a known coverage."""

from __future__ import annotations

import numpy as np
import pytest

from explain import stats


def direct_interval(values, seed, resamples, confidence=0.95):
    """The textbook loop: one resample of n indices at a time, then the percentiles."""
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=np.float64)
    means = [data[rng.integers(0, len(data), len(data))].mean() for _ in range(resamples)]
    tail = (1 - confidence) / 2
    return tuple(float(q) for q in np.quantile(means, [tail, 1 - tail]))


@pytest.mark.parametrize("n, resamples", [(7, 500), (1500, 2000)])  # 1500: drawn in chunks
def test_interval_equals_the_direct_computation_for_a_fixed_seed(n, resamples):
    values = np.random.default_rng(3).normal(2.0, 1.0, n)
    assert stats.interval(values, seed=11, resamples=resamples) == \
        pytest.approx(direct_interval(values, 11, resamples), abs=1e-12)
    # another seed, other resamples: the seed is used
    assert stats.interval(values, seed=12, resamples=resamples) != \
        pytest.approx(direct_interval(values, 11, resamples), abs=1e-12)
    # several vectors at once: each as its own call
    other = np.random.default_rng(4).uniform(0, 1, n)
    together = stats.intervals([values, other, values[:5]], seed=11, resamples=resamples)
    alone = [direct_interval(v, 11, resamples) for v in (values, other, values[:5])]
    assert np.allclose(together, alone, rtol=0, atol=1e-12)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    trials, n, hits = 300, 40, 0
    widths = []
    for t in range(trials):
        sample = rng.normal(5.0, 2.0, n)
        low, high = stats.interval(sample, seed=t, resamples=1000)
        hits += low <= 5.0 <= high
        widths.append(high - low)
    coverage = hits / trials
    # percentile bootstrap of a mean of 40 normal values: ~0.93-0.95; 300 trials: SE 0.013
    assert 0.89 <= coverage <= 0.98, coverage
    # and its width is the normal interval's, 2 x 1.96 x sigma / sqrt(n), within 10%
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(n), rel=0.1)


def test_identical_numbers_are_not_different_and_a_clear_gain_is_significant():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 12)
    same = stats.paired(a, a.copy(), seed=0)
    assert (same.mean, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "not different")
    better = stats.paired(a + 0.05 + rng.normal(0, 0.01, 12), a, seed=0)
    assert better.verdict == "higher" and 0 < better.low < 0.05 < better.high < 0.1
    worse = stats.paired(a, a + 0.05 + rng.normal(0, 0.01, 12), seed=0)
    assert worse.verdict == "lower" and worse.high < 0
    # noise around the same numbers: the interval holds 0
    noisy = stats.paired(a + rng.normal(0, 0.05, 12), a + rng.normal(0, 0.05, 12), seed=0)
    assert noisy.verdict == "not different" and noisy.low < 0 < noisy.high


def test_fewer_than_the_minimum_of_images_gives_no_interval():
    few = stats.paired([0.9, 0.8, 0.95, 0.9], [0.1, 0.2, 0.1, 0.0], seed=0)
    assert stats.MIN_IMAGES == 5
    assert (few.low, few.high, few.images, few.verdict) == (None, None, 4, "too few images")
    assert few.mean == pytest.approx(0.7875)
    assert stats.paired([1, 2, 3, 4, 5], [0, 0, 0, 0, 0], seed=0).verdict == "higher"
    with pytest.raises(ValueError):
        stats.paired([1.0, 2.0], [1.0], seed=0)
    with pytest.raises(ValueError):
        stats.interval([], seed=0)

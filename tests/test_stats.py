"""explain.stats: the percentile bootstrap over images and the paired comparison (issue 20,
item 4), checked against a direct computation and against a known coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm, t as student_t

from explain import stats


def direct_interval(values, seed, resamples, confidence=0.95):
    """The textbook loop: one resample of n indices at a time, then the expanded percentiles
    (the normal quantile sqrt(n / (n - 1)) x Student's t), each end moved out to Student's
    t-interval's where that lies further."""
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=np.float64)
    n = len(data)
    means = [data[rng.integers(0, n, n)].mean() for _ in range(resamples)]
    t_quantile = student_t.ppf(1 - (1 - confidence) / 2, n - 1)
    tail = norm.cdf(-np.sqrt(n / (n - 1)) * t_quantile)
    low, high = np.quantile(means, [tail, 1 - tail])
    half = t_quantile * data.std(ddof=1) / np.sqrt(n)
    return float(min(low, data.mean() - half)), float(max(high, data.mean() + half))


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
    # 300 trials: SE 0.013
    assert 0.90 <= coverage <= 0.99, coverage
    # and its width is the normal interval's, 2 x 1.96 x sigma / sqrt(n), within 10%
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(n), rel=0.1)


@pytest.mark.parametrize("n", [5, 8, 20])
def test_the_interval_holds_its_level_at_a_few_images(n):
    """The plain 2.5th / 97.5th percentiles covered 82% at 5 images and called a 0 difference
    significant 17% of the time; 1,500 normal samples (SE of a rate near 0.95: 0.006)."""
    rng = np.random.default_rng(n)
    samples = rng.normal(0.0, 1.0, (1500, n))
    bounds = np.array(stats.intervals(list(samples), seed=1))
    coverage = np.mean((bounds[:, 0] <= 0) & (bounds[:, 1] >= 0))
    assert 0.93 <= coverage <= 0.975, coverage
    plain = np.quantile(stats.resample_means(samples, seed=1), [0.025, 0.975], axis=1).T
    assert np.mean((plain[:, 0] <= 0) & (plain[:, 1] >= 0)) < coverage
    # paired: two methods of one distribution are "different" about 5% of the time
    diffs = [stats.paired(a, b, seed=i) for i, (a, b) in
             enumerate(zip(rng.normal(0, 1, (400, n)), rng.normal(0, 1, (400, n))))]
    assert np.mean([d.verdict != "not different" for d in diffs]) <= 0.085


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


def test_figures_keep_their_trailing_zeros_so_a_mean_and_its_interval_read_alike():
    """A reader's review: 3 significant digits dropped trailing zeros, "0.3 [0.25, 0.41]"."""
    from explain.stats import figure
    assert [figure(v) for v in (0.3, 0.25, -0.19, 12, 100, 1234, 1.2e-5, 0.99951)] == \
        ["0.300", "0.250", "-0.190", "12.0", "100", "1.23e3", "1.20e-5", "1.00"]
    assert figure(0.3, sign=True) == "+0.300" and figure(-3e-7, sign=True) == "-3.00e-7"
    assert figure(0.0) == figure(-0.0) == figure(0.0, sign=True) == "0"  # as the report says


def test_wilson_interval_of_a_share_and_the_yes_no_cells_of_the_methods_table():
    """A share of n yes-or-no outcomes: the Wilson score interval (textbook: 12 of 12 ->
    [0.7575, 1], 6 of 12 -> [0.2538, 0.7462]). A pointing game whose images all hit has no
    spread to bootstrap ([100%, 100%]): its cell in the methods table is the Wilson interval
    over the images; energy in box (not yes-or-no) keeps the bootstrap's."""
    from explain.evidence import judge
    from explain.methodtable import Column
    from explain.metrics import traits as metric_traits
    assert stats.wilson(1.0, 12) == pytest.approx((0.75751, 1.0), abs=1e-5)
    assert stats.wilson(0.5, 12) == pytest.approx((0.25378, 0.74622), abs=1e-5)
    assert stats.widened((0.2, 0.9), 0.5, 12) == pytest.approx((0.2, 0.9))
    found = {name: {("method", "gradcam"): {f"im{i}": [1.0] for i in range(8)}}
             for name in ("pointing_hit", "energy_in_box")}
    columns = [Column(metric=metric_traits(name), means={}) for name in found]
    judge(columns, found, ["gradcam"], baselines=[], seed=0)
    pointing, energy = (col.cells["gradcam"] for col in columns)
    assert (pointing.mean, pointing.low, pointing.high) == pytest.approx((1.0, 0.6756, 1.0),
                                                                         abs=1e-4)
    assert (energy.low, energy.high) == (1.0, 1.0)

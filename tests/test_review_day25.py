"""Day 25 statistics review: claims of the trust conclusion, the intervals and the comparisons
checked against what their tests support."""

from __future__ import annotations

import numpy as np

from test_trust_section import GOOD, METRIC, column, synthetic
from explain import trustlines
from explain.methodtable import method_table

SWING = [0.15, -0.15] * 4  # b's per-image noise: its mean is a's, its spread 7x a's


def _equal_pair():
    """a and b with the same mean over 8 images (0.1 above the centre baseline); a's numbers
    steady (it beats the centre baseline), b's spread (its interval against it holds 0)."""
    steady = [0.02, -0.02] * 4
    return synthetic({"a": [g + 0.1 + s for g, s in zip(GOOD, steady)],
                      "b": [g + 0.1 + s for g, s in zip(GOOD, SWING)]},
                     {"centre": list(GOOD), "random": [g - 0.3 for g in GOOD]})


def test_a_method_is_not_trusted_over_one_it_is_not_shown_better_than():
    summary = _equal_pair()
    table, col = column(summary, ["a", "b"])
    assert col.cells["a"].beats_baselines is True and col.cells["b"].beats_baselines is False
    (pair,) = [p for p in col.comparisons if p.b_kind == "method"]
    assert pair.verdict == "not different"  # a is not shown better than b
    evidence = trustlines.build(summary, table)
    assert evidence.trusted is None
    assert evidence.conclusion.startswith(
        "no method is clearly better: only a beats every baseline, but it is not "
        "significantly better than b on ROAD combined")


def _yes_no(method: list[float], centre: list[float]):
    """A run whose maps' increase in confidence (a yes or a no per map) is ``method[i]`` on
    image i, the centre baseline's ``centre[i]`` (one class)."""
    summary = synthetic({"a": method}, {"centre": centre}, classes=("cat",))
    for image in summary.images:
        for rec in image.cams:
            rec.faithfulness = {"increase_in_confidence": rec.faithfulness[METRIC]}
        for base in image.baselines:
            base.scores = {"increase_in_confidence": base.scores[METRIC]}
    table = method_table(summary, ["a"])
    return next(c for c in table.columns if c.key == "increase_in_confidence")


def test_a_yes_no_difference_needs_the_exact_sign_test_too():
    # 5 of 5 images where the map says yes and the baseline no: the paired bootstrap's
    # differences are all 1, its interval [1, 1]; McNemar's exact test (the sign test of
    # the 5 discordant images) gives p = 2 / 2**5 = 0.0625: no finding at 95%
    col = _yes_no([1.0] * 5, [0.0] * 5)
    (pair,) = col.comparisons
    assert (pair.low, pair.high) == (0.0, 1.0)
    assert pair.verdict == "not different" and "holds 0" in pair.text
    assert col.cells["a"].beats_baselines is False
    # 6 of 6: p = 0.03125, a finding; the interval is the bootstrap's (zero spread: [1, 1])
    col = _yes_no([1.0] * 6, [0.0] * 6)
    (pair,) = col.comparisons
    assert pair.verdict == "a better" and col.cells["a"].beats_baselines is True
    # 5 discordant images of 20, all one way: the t-interval excludes 0, the sign test
    # (p = 0.0625) does not
    col = _yes_no([1.0] * 5 + [1.0, 0.0] * 7 + [1.0], [0.0] * 5 + [1.0, 0.0] * 7 + [1.0])
    (pair,) = col.comparisons
    assert pair.low == 0.0 and pair.verdict == "not different"

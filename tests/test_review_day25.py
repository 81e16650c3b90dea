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

"""From an ``AtlasState`` (explain.channels.atlas) to the records of summary.json: class
fingerprints and their overlaps, the per-channel tables, the regions table, the ablation's
mean drops. Numbers in, records and CSV rows out (no file I/O).

- A class's fingerprint (per channel-sum method): the ``size`` channels with the largest mean
  share of the class's maps across the run (ties: the lower channel), each with the mean's
  95% bootstrap interval and how often the channel is among an image's top_k. On a labelled
  run, the same means over the images predicted as the class rightly and wrongly; the
  channels with the largest mean share over the wrong ones are what a wrong prediction
  leaned on.
- Overlap of two classes (one method): the channels in both fingerprints, and |both| /
  |either| (Jaccard).
- Ablation: per method and k, the mean drops (top, random, bottom) with the 95% interval of
  top - random; a method is ``marked`` when at some k its top channels lower the score no
  more than random ones do (top - random <= 0).
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional

import numpy as np

from explain.atlas_results import (AblationMethod, AblationPoint, Fingerprint,
                                   FingerprintChannel, Overlap)
from explain.channels.atlas import AtlasState, Heaps

DIGITS = 6
BOX_COLUMNS = ("x0", "y0", "x1", "y1", "cell_x0", "cell_y0", "cell_x1", "cell_y1")


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def _ordered(keys, classes: list[str], methods: list[str]) -> list:
    """(class, method, ...) keys in config order of classes, then methods (others after)."""
    rc = {c: i for i, c in enumerate(classes)}
    rm = {m: i for i, m in enumerate(methods)}
    return sorted(keys, key=lambda k: (rc.get(k[0], len(rc)), k[0], rm.get(k[1], len(rm)), k[1]))


def pairs(state: AtlasState, classes: list[str], methods: list[str]) -> list[tuple[str, str]]:
    """The (class, method) pairs with maps, in config order."""
    return _ordered({(c, m) for c, m, o in state.shares if o == "all"}, classes, methods)


def channel_rows(state: AtlasState, cls: str, method: str) -> list[dict]:
    """channels/atlas/<method>/<class>.csv: every channel, largest mean share first."""
    every = state.shares[(cls, method, "all")]
    mean, bounds = every.mean(), every.interval()
    low, high = bounds if bounds is not None else (None, None)
    split = {o: state.shares.get((cls, method, o)) for o in ("correct", "wrong")}
    rows = []
    for ch in np.lexsort((np.arange(state.channels), -mean)).tolist():
        row = {"channel": ch, "mean_share": _round(mean[ch]),
               "low": None if low is None else _round(low[ch]),
               "high": None if high is None else _round(high[ch]),
               "top_k": _round(every.hits[ch] / every.count),
               "maps": every.count}
        for outcome, sums in split.items():
            row[f"share_{outcome}"] = _round(sums.mean()[ch]) if sums else None
            row[f"maps_{outcome}"] = sums.count if sums else 0
        rows.append(row)
    return rows


def _channel(row: dict) -> FingerprintChannel:
    return FingerprintChannel(channel=row["channel"], share=row["mean_share"], low=row["low"],
                              high=row["high"], top_k=row["top_k"],
                              share_correct=row["share_correct"], share_wrong=row["share_wrong"])


def fingerprint(state: AtlasState, cls: str, method: str, *, size: int,
                table: str) -> Fingerprint:
    """The class's fingerprint for the method (``table``: where its CSV goes)."""
    rows = channel_rows(state, cls, method)
    wrong = [r for r in rows if r["maps_wrong"]]
    wrong.sort(key=lambda r: (-r["share_wrong"], r["channel"]))
    return Fingerprint(class_name=cls, method=method, maps=rows[0]["maps"] if rows else 0,
                       weak=state.weak.get((cls, method), 0),
                       correct=rows[0]["maps_correct"] if rows else 0,
                       wrong=rows[0]["maps_wrong"] if rows else 0,
                       channels=[_channel(r) for r in rows[:size]],
                       wrong_channels=[_channel(r) for r in wrong[:size]], table=table)


def overlaps(prints: list[Fingerprint]) -> list[Overlap]:
    """Every two classes' fingerprints of one method: shared channels (in the first class's
    fingerprint order) and the Jaccard index."""
    out = []
    for a, b in combinations(prints, 2):
        if a.method != b.method:
            continue
        first, second = [c.channel for c in a.channels], {c.channel for c in b.channels}
        shared = [c for c in first if c in second]
        union = len(set(first) | second)
        out.append(Overlap(method=a.method, classes=[a.class_name, b.class_name], shared=shared,
                           jaccard=_round(len(shared) / union) if union else 0.0))
    return out


def region_rows(state: AtlasState, classes: list[str], methods: list[str]) -> list[dict]:
    """channels/atlas/regions.csv: per channel and ranking (``activation`` or
    ``<method>:<class>``) its regions, best first: image, value, the region and its peak cell
    (x0, y0, x1, y1 in input pixels)."""
    rankings: list[tuple[str, Heaps]] = [("activation", state.activation)]
    rankings += [(f"{m}:{c}", state.contribution[(c, m)])
                 for c, m in _ordered(state.contribution, classes, methods)]
    rows = []
    for ch in range(state.channels):
        for name, heaps in rankings:
            for rank, (value, key, box) in enumerate(zip(heaps.values[ch].tolist(),
                                                         heaps.keys[ch].tolist(),
                                                         heaps.boxes[ch].tolist())):
                if key < 0:
                    break
                rows.append({"channel": ch, "ranking": name, "rank": rank + 1,
                             "image": state.names.get(key, ""), "value": _round(value),
                             **dict(zip(BOX_COLUMNS, box))})
    return rows


def ablation_methods(state: AtlasState, methods: list[str]) -> dict[str, AblationMethod]:
    """summary.json's ablation per method: the mean drops per k, and the mark."""
    out: dict[str, AblationMethod] = {}
    for method in methods:
        points = {}
        for k in state.ks:
            sums = state.ablation.get((method, k))
            if sums is None or not sums.count:
                continue
            mean, (low, high) = sums.mean(), sums.interval()
            points[str(k)] = AblationPoint(top=_round(mean[0]), random=_round(mean[1]),
                                           bottom=_round(mean[2]), maps=sums.count,
                                           gap=_round(mean[3]), gap_low=_round(low[3]),
                                           gap_high=_round(high[3]))
        if points:
            out[method] = AblationMethod(k=points, marked=any(p.gap <= 0 for p in points.values()))
    return out


def ablation_rows(found: dict[str, AblationMethod]) -> list[dict]:
    """channels/ablation/ablation.csv: one row per method and k."""
    return [{"method": m, "k": int(k), **p.dump(), "marked": a.marked}
            for m, a in found.items() for k, p in a.k.items()]


def drawn_channels(prints: list[Fingerprint], limit: Optional[int] = None) -> list[int]:
    """The channels that get a picture: every fingerprint's, in order of first appearance."""
    seen: dict[int, None] = {}
    for fp in prints:
        for c in fp.channels:
            seen.setdefault(c.channel, None)
    return list(seen)[:limit]

"""``explain diff RUN_A RUN_B``: the same images explained by two runs (two checkpoints, two
configs), compared map by map from the run folders alone, without the model.

Both folders are read the way ``explain report`` reads one (explain.reportload.load_run:
summary.json, or an unfinished run's item files; every file from inside the folder, no link
followed) and each record's saved map, ``MapRecord.files.array`` (``output.save_arrays``: an
overlay is a colour picture over the photo, not the map, so it is never decoded back).

Per image x class x method in both runs: the Pearson correlation of the two maps, their mean
and largest absolute difference, and every number of the two records side by side with its
change (B - A). Written into a new folder ``diff-<A>-<B>`` (claimed like a run folder: never
an existing one, safe names, every write inside it) in ``--out`` or else RUN_B's parent:
``diff.csv`` (a row per map), ``diff.html`` (the maps that changed most, A, B and the change
side by side, from ``pictures/``) and a console summary. Everything is read and checked
before the folder is made: bad input writes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from explain.diff.numbers import (DiffResult, MapDiff, compare_maps, config_changes,
                                  console_lines, measured_apart)
from explain.diff.page import render_page, write_pictures
from explain.diff.runs import DIFF_CSV, DIFF_PAGE, Side, match, open_side, parse_threshold
from explain.names import encoded, safe_slug
from explain.outputs import claim_run_dir

CASES = 12  # maps shown with pictures on diff.html, lowest correlation first

__all__ = ["CASES", "DIFF_CSV", "DIFF_PAGE", "DiffResult", "MapDiff", "compute", "diff_runs",
           "parse_threshold"]


def _rank(item: tuple) -> tuple[float, float]:
    """Which maps changed most: lowest correlation first, then the largest mean change."""
    return item[0].correlation, -item[0].mean_abs_diff


# ---- the run: read and check everything, then write ----------------------------------------

def compute(a: Side, b: Side, threshold: Optional[float]) -> tuple[DiffResult, list]:
    """Every shared map compared (reading only); with the CASES maps that changed most,
    lowest correlation first, for the pictures: (numbers, pair), the arrays read again one
    pair at a time when drawn (holding 2 x CASES pairs of 4096 x 4096 maps took gigabytes)."""
    pairs, left_out = match(a, b)
    maps: list[MapDiff] = []
    kept: list[tuple[MapDiff, Any]] = []
    for pair in pairs:
        one, _, _ = compare_maps(a, b, pair)
        maps.append(one)
        if one.correlation < 1.0 or one.max_abs_diff > 0:
            kept.append((one, pair))
            if len(kept) > 2 * CASES:
                kept = sorted(kept, key=_rank)[:CASES]
    shown, total = config_changes(a.summary, b.summary)
    result = DiffResult(a=a, b=b, maps=maps, left_out=left_out, threshold=threshold,
                        config_changes=shown, config_total=total,
                        measured_apart=measured_apart(a.summary, b.summary))
    if threshold is not None:
        result.below = sorted((m for m in maps if m.correlation < threshold),
                              key=lambda m: m.correlation)
    return result, sorted(kept, key=_rank)[:CASES]


def _slug(root: Path) -> str:
    """A run folder's name as a part of the diff folder's name (safe, at most 100 bytes)."""
    text = safe_slug(root.resolve().name, "run")
    while len(text.encode("utf-8")) > 100:
        text = text[:-1]
    return text.rstrip("._-") or "run"


def diff_runs(run_a: Path, run_b: Path, threshold: Optional[float] = None,
              out_root: Optional[Path] = None) -> DiffResult:
    """``explain diff``: compare the two run folders and write ``diff-<A>-<B>`` in
    ``out_root`` (default: RUN_B's parent). Nothing is written when an input is bad."""
    if threshold is not None:
        parse_threshold(str(threshold))
    a, b = open_side(run_a, "A"), open_side(run_b, "B")
    result, kept = compute(a, b, threshold)
    root = Path(out_root) if out_root is not None else b.root.resolve().parent
    folder = claim_run_dir(root, f"diff-{_slug(a.root)}-{_slug(b.root)}")
    try:
        folder.write_csv(DIFF_CSV, [m.row() for m in result.maps])
        cases = [write_pictures(folder, result, n, (one, *compare_maps(a, b, pair)[1:]))
                 for n, (one, pair) in enumerate(kept, 1)]
        result.out = folder.root
        folder.write_bytes(DIFF_PAGE, encoded(render_page(result, cases)))
    except BaseException:
        folder.release()
        shutil.rmtree(folder.root, ignore_errors=True)
        raise
    finally:
        folder.release()
    result.lines = console_lines(result)
    return result



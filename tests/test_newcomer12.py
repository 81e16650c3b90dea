"""Newcomer 12: a researcher explaining a random-weights timm ViT over a small labelled folder
of flips and crops, from the command line and a notebook, deciding which map to trust and
comparing two runs with ``explain diff``."""

from __future__ import annotations

import re
from types import SimpleNamespace

from test_trust_section import GOOD, column, synthetic

from explain.stats import cell as cell_


def _notebook_methods(summary, methods) -> tuple[str, dict[str, list[str]]]:
    """The notebook's Methods section of a run with ``summary``: its html and its rows."""
    from explain.api.runview import _methods
    html = _methods(SimpleNamespace(methods=methods, summary=summary, images=summary.images))
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html)[1:]:
        cells = re.findall(r"<td>(.*?)</td>", row)
        rows[cells[0]] = cells
    return html, rows


def test_the_notebook_table_gives_intervals_baselines_and_the_conclusion():
    """Both methods read '#1' and place 1 in the notebook, bare means, while the report said
    '✗ baseline: random' beside each interval and 'no method is clearly better'."""
    summary = synthetic({"gradcam": [v + 0.01 for v in GOOD], "layercam": GOOD},
                        {"random": [v + 0.2 for v in GOOD]})
    _, col = column(summary, ["gradcam", "layercam"])
    html, rows = _notebook_methods(summary, ["gradcam", "layercam"])
    for method in ("gradcam", "layercam"):
        cell = col.cells[method]
        shown = rows[method][3]
        assert shown.startswith(f"{cell_(cell.mean)} [{cell_(cell.low)}, {cell_(cell.high)}]")
        assert shown.endswith("✗ baseline: random"), shown
    base = col.baselines["random"]
    shown = rows["baseline: random"][3]
    assert shown == f"{cell_(base.mean)} [{cell_(base.low)}, {cell_(base.high)}]", shown
    assert "<b>Which map to trust:</b> no method is clearly better" in html

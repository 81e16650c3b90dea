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


def _tiny_vit():
    import timm
    import torch
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=2, img_size=16, patch_size=8,
                             embed_dim=16, depth=1, num_heads=2).eval()


def test_explain_cam_at_a_layer_the_class_score_never_reaches_warns():
    """In a notebook, explain.cam at a ViT's final 'norm' (read only through the class token)
    returned all-zero maps without a word, where a run notes it before it starts."""
    import warnings

    import numpy as np
    import pytest

    import explain
    photo = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    net = _tiny_vit()
    with pytest.warns(UserWarning, match=r"target_layers\[0\] 'norm': the top class score's "
                      r"gradient reaches fewer than 2 .* blank for every class") as caught:
        result = explain.cam(net, photo, "norm", "gradcam", preprocess={"size": [16, 16]})
    assert caught[0].filename == __file__  # points at the notebook's own line
    assert float(result.maps["gradcam"]["0"].max()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = explain.cam(net, photo, "auto", "gradcam", preprocess={"size": [16, 16]})
    assert result.layers == ("blocks.0.norm1",) and result.maps["gradcam"]["0"].max() > 0.99

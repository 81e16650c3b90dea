"""Newcomer 12: a researcher explaining a random-weights timm ViT over a small labelled folder
of flips and crops, from the command line and a notebook, deciding which map to trust and
comparing two runs with ``explain diff``."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np

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


PHOTOS = 6


def _diffed(tmp_path, capsys, separator):
    """Two runs of tiny nets of other seeds on 12 images (6 photos, each also flipped), maps
    saved, then ``explain diff``: (its console lines, run A's summary.json)."""
    import json

    import numpy as np
    from PIL import Image

    from explain.cli import main
    from helpers import two_tiny_runs
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for n in range(PHOTOS):
        pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{n}.png")
        Image.fromarray(pixels[:, ::-1]).save(photos / f"p{n}-flip.png")
    two_tiny_runs(tmp_path, photos, separator)
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "results" / "a"), str(tmp_path / "results" / "b")]) == 0
    summary = json.loads((tmp_path / "results" / "a" / "summary.json").read_text())
    return capsys.readouterr().out.splitlines(), summary


def _probability_changes(tmp_path, cls):
    """Each image's change of the probability of ``cls``, B - A, by image id."""
    import json
    read = [json.loads((tmp_path / "results" / r / "summary.json").read_text()) for r in "ab"]
    a, b = ({i["id"]: i["probabilities"][cls] for i in run["images"]} for run in read)
    return {image: b[image] - a[image] for image in a}


def _console_interval(values, seed, unit):
    from explain import stats
    from explain.stats import figure
    low, high = stats.interval(values, seed=seed)
    return (f"  gradcam / cat: mean change B - A [95% interval over {unit}]: probability "
            f"{np.mean(values):+.3g} [{figure(low, 3, sign=True)}, {figure(high, 3, sign=True)}]")


def test_diff_gives_each_mean_change_its_interval_over_photos(tmp_path, capsys):
    """'agreement +0.402' over 10 maps of 7 photos read as a finding, with nothing to say how
    sure: each mean change now carries its 95% interval over the photos
    (report.photo_separator: a photo's flip averaged in first), as the report's intervals."""
    lines, summary = _diffed(tmp_path, capsys, "-")
    changes = _probability_changes(tmp_path, "cat")
    photos = [np.mean([changes[f"p{n}"], changes[f"p{n}-flip"]]) for n in range(PHOTOS)]
    line = next(x for x in lines if x.startswith("  gradcam / cat: mean change"))
    assert line == _console_interval(photos, summary["config"]["seed"], "photos"), line


def test_diff_intervals_are_over_images_without_a_separator(tmp_path, capsys):
    lines, summary = _diffed(tmp_path, capsys, None)
    changes = _probability_changes(tmp_path, "cat")
    line = next(x for x in lines if x.startswith("  gradcam / cat: mean change"))
    assert line == _console_interval(list(changes.values()), summary["config"]["seed"],
                                     "images"), line
    page = (tmp_path / "results" / "diff-a-b" / "diff.html").read_text()
    assert "with its 95% bootstrap interval over images" in page

"""The twenty-seventh attack: what a shared run folder's records ask of ``explain diff``
past its maps (the image paths of run A's summary, read once per map and number), and what
a shared image asks of the terminal (docs/trust.md)."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from PIL import Image

from explain.cli import main
from helpers import tiny_config, tiny_net

PHOTOS = 6


def _runs(tmp_path, separator):
    """Two tiny runs (nets of other seeds) of PHOTOS photos, maps saved; run A's config sets
    ``report.photo_separator``."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for n in range(PHOTOS):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            photos / f"p{n}.png")
    for name, seed in (("a", 0), ("b", 3)):
        torch.save(tiny_net(seed), tmp_path / f"{name}.pth")
        path = tiny_config(tmp_path, {"file": str(tmp_path / f"{name}.pth")}, stem=name,
                           images=[str(photos)], classes={"cat": 0, "dog": 1},
                           target_layers=["0"], methods=["gradcam"], metrics=[],
                           report={"photo_separator": separator},
                           output={"dir": str(tmp_path / "results"), "save_arrays": True})
        assert main([str(path), "--quiet"]) == 0
    return tmp_path / "results" / "a", tmp_path / "results" / "b"


def test_diff_finds_each_images_photo_once(tmp_path, capsys, monkeypatch):
    """A shared run A's summary.json of 5 MB image paths (30 MB in all) took 46 s of
    ``explain diff`` (1.8 s honest): each image's photo, a slug of its path, was found again
    for every map and record number (12 maps x 11 numbers). Now once per image each
    time the changes are summed up (the console's lines, the page)."""
    from explain.diff import numbers
    a, b = _runs(tmp_path, "-")
    data = json.loads((a / "summary.json").read_text())
    for image in data["images"]:
        image["path"] = image["path"][:-4] + "-" + "x" * 1000 + ".png"
    (a / "summary.json").write_text(json.dumps(data))
    slugs = []
    real = numbers.photo_of

    def counted(image, separator, path=None):
        slugs.append(path)
        return real(image, separator, path)
    monkeypatch.setattr(numbers, "photo_of", counted)
    capsys.readouterr()
    assert main(["diff", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    paths = [p for p in slugs if p is not None]  # the console's and the page's changes
    assert len(paths) <= 2 * PHOTOS and len(set(paths)) == PHOTOS, len(paths)
    out = capsys.readouterr().out
    assert "[95% interval over photos]: probability" in out

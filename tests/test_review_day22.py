"""Review day 22: compare --resume coverage, Pillow's decompression-bomb bound beside
preprocess.max_pixels, ... (a helper's findings)."""

from __future__ import annotations

import shutil

import torch

import explain
from conftest import IMAGES
from explain.config import load_config
from explain.runner import RunOptions, run
from helpers import interrupted, tiny_config, tiny_net


def test_a_reference_added_before_resume_is_counted_missing_not_left_out(tmp_path):
    """A kept image's map without a row was compared by nobody: the interrupted run found no
    file for it. A file added before --resume made it count neither as compared nor as
    missing, so the verdict read 'agree over 3 maps' (of 4), as a full mark."""
    torch.save(tiny_net(), tmp_path / "net.pth")
    base = dict(classes={"a": 0, "b": 1}, metrics=[], channels={"enabled": False}, batch_size=1,
                images=[str(IMAGES / "cat.jpg"), str(IMAGES / "dog.jpg")])
    made = explain.run(tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")}, **base,
                                   output={"save_arrays": True}),
                       out=tmp_path / "arrays", progress=False, log=lambda _: None)
    refs = tmp_path / "refs"
    refs.mkdir()
    for npy in (made.folder / "cams" / "gradcam").glob("*.npy"):
        shutil.copy(npy, refs / f"{npy.stem}__gradcam.npy")
    (refs / "cat__b__gradcam.npy").rename(tmp_path / "held.npy")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")}, **base,
                      compare={"enabled": True, "reference_dir": str(refs)})
    folder = interrupted(cfg, tmp_path / "res", "item", 2)  # cat kept, dog not
    assert sorted(p.name for p in (folder / "items").iterdir()) == ["cat.json"]
    (tmp_path / "held.npy").rename(refs / "cat__b__gradcam.npy")  # the student adds it
    summary = run(load_config(cfg), RunOptions(out_root=tmp_path / "res", resume=True,
                                               progress=False, log=lambda _: None))
    assert summary.compare["missing"] == ["cat__b__gradcam"]
    assert summary.compare["per_method"]["gradcam"]["missing"] == 1
    assert "over 3 of 4 maps (1 without a reference file)" in summary.compare["verdicts"][0]

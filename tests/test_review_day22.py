"""Review day 22: compare --resume coverage, Pillow's decompression-bomb bound beside
preprocess.max_pixels, the report's verdict over part of the maps (a helper's findings)."""

from __future__ import annotations

import shutil

import pytest
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


def _png_header(path, width: int, height: int) -> None:
    """A PNG of ``width`` x ``height`` 1-bit pixels: its header and an empty image's data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    head = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # explain's filter
def test_an_image_over_pillows_bomb_bound_is_told_by_max_pixels(tmp_path):
    """Pillow refuses a header of over 2 x its MAX_IMAGE_PIXELS (179 M pixels) as a
    decompression bomb: a 180 M-pixel photo read as 'not a readable image', under the default
    preprocess.max_pixels (which should say so) and under a raised one (up to 250 M) alike."""
    from explain.config import Preprocess
    from explain.images import ImageError, ImageRef, precheck
    path = tmp_path / "scan.png"
    _png_header(path, 15_000, 12_000)
    ref = ImageRef("scan", path, from_folder=False)
    with pytest.raises(ImageError) as info:
        precheck(ref, Preprocess())
    assert "15000x12000 is over preprocess.max_pixels (40000000)" in str(info.value)
    assert precheck(ref, Preprocess(max_pixels=250_000_000)) == (12_000, 15_000)


def test_the_reports_verdict_cell_says_a_verdict_over_part_of_the_maps(tmp_path):
    """The console, summary.json and explain diff say 'agree over 1 of 2 maps (1 without a
    reference file)'; the report's methods table said 'agree, max |diff| 0' alone (a grader
    reading the page saw a full mark)."""
    import numpy as np
    torch.save(tiny_net(), tmp_path / "net.pth")
    base = dict(classes={"a": 0, "b": 1}, metrics=[], channels={"enabled": False})
    made = explain.run(tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")}, **base,
                                   output={"save_arrays": True}),
                       out=tmp_path / "arrays", progress=False, log=lambda _: None)
    refs = tmp_path / "refs"
    refs.mkdir()
    np.save(refs / "cat__a__gradcam.npy", np.load(made.folder / "cams/gradcam/cat__a.npy"))
    study = explain.run(tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")}, **base,
                                    compare={"enabled": True, "reference_dir": str(refs)}),
                        out=tmp_path / "res", progress=False, log=lambda _: None)
    assert study.summary.compare["per_method"]["gradcam"]["missing"] == 1
    page = (study.folder / "report.html").read_text(encoding="utf-8")
    assert '<span class="verdict agree">agree</span> <small>max |diff| 0, over 1 of 2 maps (1 ' \
           'without a reference file)</small>' in page

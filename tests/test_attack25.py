"""The twenty-fifth attack (a helper's findings): what the SVD behind Seg-Eigen-CAM, EigenCAM
and eigen_smooth asks of a run at a shared model's layer (explain.pace), and what a grey
network's settings say (docs/trust.md)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import explain
from explain.enginedata import LayerInfo
from explain.models.layouts import Layout
from explain.pace import check_sizes

FREE = 8 * 2**30


def _layer(channels: int, side: int) -> LayerInfo:
    return LayerInfo("target_layers[0] 'x'", nn.Identity(), (channels, side, side),
                     Layout("nchw"))


def _refusal(name: str, layer: LayerInfo, smooth: bool = False, **options) -> str:
    with pytest.raises(explain.ExplainError) as info:
        check_sizes([SimpleNamespace(name=name, options=options)], [layer], (256, 256), FREE,
                    smooth)
    return str(info.value)


def test_the_full_svd_of_a_wide_or_early_layer_is_sized_before_the_run():
    """The library's SVD (full_matrices=True) makes a positions x positions U and a channels
    x channels V, 16 bytes a cell as numpy holds them. Only U was sized, at 4 bytes, and only
    for eigen_smooth: Seg-Eigen-CAM (always a full SVD) on an 8-channel layer of 128 x 128
    took 114 s and 5.0 GB an image (Grad-CAM: 6 s, 0.9 GB); eigen_smooth at a 1 x 1 conv of
    16,384 channels on 256 positions 105 s and 5.3 GB, then a MemoryError said 'the forward
    pass failed'. Both are refused before the first batch, by memory or by the SVD's work;
    Seg-Eigen-CAM takes explain's thin SVD since (explain.eigen), which makes neither."""
    early = _layer(8, 256)  # 65,536 positions
    text = _refusal("gradcam", early, smooth=True)
    assert text.startswith("methods.gradcam: target_layers[0] 'x' has 65,536 positions "
                           "of 8 channels, and the method's 65,536 x 65,536 and 8 x 8 matrices "
                           "need 64.0 GiB, more than the 8.0 GiB free")
    check_sizes([SimpleNamespace(name="segeigencam", options={})], [early], (256, 256), FREE)
    wide = _layer(65536, 4)
    assert "16 x 16 and 65,536 x 65,536 matrices need 64.0 GiB" in \
        _refusal("gradcam", wide, smooth=True)
    assert "65,536 x 65,536 matrices" in _refusal("ablationcam", wide,
                                                  ratio_channels_to_ablate=0.5)
    slow = _refusal("gradcam", _layer(16384, 16), smooth=True)  # 4.3 GiB: fits, but slow
    assert "SVD of them takes 6.9e+10 steps an image and class, over 5e+10" in slow
    thin = _refusal("eigencam", _layer(8192, 128))  # explain's thin SVD: no matrix, work
    assert "has 16,384 positions of 8,192 channels" in thin and "1.1e+12 steps" in thin
    for name, layer, smooth in (  # what real networks' layers ask: all within bounds
            ("segeigencam", _layer(2048, 65), False),  # DeepLabV3's backbone at 520 px
            ("gradcam", _layer(2048, 7), True), ("gradcam", _layer(256, 56), True),
            ("eigencam", _layer(64, 224), False), ("eigencam", _layer(2048, 32), True),
            ("ablationcam", _layer(2048, 7), False), ("gradcam", _layer(65536, 4), False)):
        check_sizes([SimpleNamespace(name=name, options={})], [layer], (256, 256), FREE, smooth)


def test_eigen_smooth_at_a_layer_of_many_channels_is_one_line_before_any_map(tmp_path):
    """A shared model file of a 1 x 1 conv to 16,384 channels (a 1 MB pickle) and a config
    with eigen_smooth: the run took 105 s and 5.3 GB on the first image's SVD, and with less
    memory said 'the forward pass failed ... (MemoryError ...)'; now one line at once."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16384, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(16384, 2)).eval()
    torch.save(net, tmp_path / "net.pth")
    photo = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "a.png")
    config = {"name": "wide", "model": {"file": str(tmp_path / "net.pth")},
              "classes": {"a": 0, "b": 1}, "images": [str(tmp_path / "a.png")],
              "target_layers": ["0"], "methods": ["gradcam"], "metrics": [],
              "preprocess": {"size": [16, 16]}, "eigen_smooth": True, "device": "cpu"}
    start = time.process_time()
    with pytest.raises(explain.ExplainError) as info:
        explain.run(config, out=tmp_path / "results", progress=False, log=lambda _: None)
    assert time.process_time() - start < 30
    assert "methods.gradcam: target_layers[0] '0' has 256 positions of 16,384 channels" in \
        str(info.value)
    assert not list((tmp_path / "results").rglob("*.npy"))


def test_a_shared_grey_setting_on_an_rgb_network_says_to_remove_it(tmp_path):
    """A shared config's model.in_channels: 1 on a Conv2d(3, ...) network failed with 'explain
    feeds 3 (RGB), or 1 with model.in_channels: 1': the setting the config already had, as if
    it were the fix. The line now says the one channel is that setting's, to remove."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2)).eval()
    torch.save(net, tmp_path / "net.pth")
    photo = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "a.png")
    config = {"name": "rgb", "model": {"file": str(tmp_path / "net.pth"), "in_channels": 1},
              "classes": {"a": 0, "b": 1}, "images": [str(tmp_path / "a.png")],
              "target_layers": ["auto"], "methods": ["gradcam"], "metrics": [],
              "preprocess": {"size": 32}}
    with pytest.raises(explain.ExplainError) as info:
        explain.run(config, out=tmp_path / "results", progress=False, log=lambda _: None)
    text = str(info.value)
    assert "to have 3 channels, but got 1 channels" in text
    assert "remove model.in_channels (or set 3) for a network that takes RGB" in text
    assert "or 1 with model.in_channels: 1" not in text


def _bad_tags_tiff(count: int = 20000) -> bytes:
    """A TIFF whose one directory lists ``count`` tags, each saying its data lies past the
    file's end (12 bytes a tag)."""
    import struct
    tags = b"".join(struct.pack("<HHLL", 40000 + i, 4, 1000, 8) for i in range(count))
    return b"II*\x00" + struct.pack("<LH", 8, count) + tags + b"\x00" * 8


def test_pillow_says_nothing_on_the_terminal_about_a_shared_files_header(tmp_path):
    """Pillow warns once per bad tag of a TIFF's directory ('Tag data larger than file.
    Skipping tag 40197'), each warning two lines on stderr: a 790 KB TIFF in a shared folder
    printed 39,614 lines beside its one 'skipped' line, and a PNG header of 10000 x 10000 a
    DecompressionBombWarning beside 'over preprocess.max_pixels'. Both are quiet now."""
    import subprocess
    import sys
    import zlib
    from pathlib import Path
    (tmp_path / "tags.tif").write_bytes(_bad_tags_tiff())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + \
            zlib.crc32(kind + data).to_bytes(4, "big")
    header = (10000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                                        chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    code = ("import sys; from pathlib import Path\n"
            "from explain.config import Preprocess\n"
            "from explain.images.reading import ImageError, ImageRef, precheck, stored_size\n"
            "for name in ('tags.tif', 'huge.png'):\n"
            "    path = Path(sys.argv[1]) / name\n"
            "    stored_size(path.read_bytes())\n"
            "    try:\n"
            "        precheck(ImageRef('x', path, True), Preprocess())\n"
            "    except ImageError as exc:\n"
            "        print(exc)\n")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=root, env={"PYTHONPATH": root})
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        f"{tmp_path / 'tags.tif'}: not a readable image",
        f"{tmp_path / 'huge.png'}: 10000x10000 is over preprocess.max_pixels (40000000); "
        f"downscale it first or raise the limit"]

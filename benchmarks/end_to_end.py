"""Maps per second of a whole run against the engine alone, measured side by side in one process.

The demo network (EfficientNet-Lite0, cat/dog head), N images (default 192: the repository's
three photos, flipped and shifted into distinct files) x 2 classes x 2 methods (GradCAM,
LayerCAM). "engine" is CamEngine on the same prepared batches, nothing written; "full run" is
`explain` with every default output (overlays, panels, summary, report), with channel views
off and on, with 0 workers (everything in the main thread), 1 and N. Ratio = full-run rate / engine rate (target on a 2-core
machine: >= 0.5 with channel views off, >= 0.3 with them on). Prints one table; with
--device cuda (when a GPU is there) the same table with its device column.

Run: python benchmarks/end_to_end.py [--images N] [--workers N] [--format png|jpg]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explain.config import load_config  # noqa: E402
from explain.engine import CamEngine  # noqa: E402
from explain.models.heads import Classifier  # noqa: E402
from explain.images import find_images, group_by_shape, prepare  # noqa: E402
from explain.layers import find_layer  # noqa: E402
from explain.models.loading import load_model
from explain.models.guard import pick_device  # noqa: E402
from explain.pipeline import default_workers  # noqa: E402
from explain.runner import RunOptions, run  # noqa: E402

LAYER = "backbone._blocks.15"


def make_images(folder: Path, count: int) -> None:
    """``count`` distinct photos from the three in images/ (flips and small shifts)."""
    photos = [cv2.imread(str(ROOT / "images" / f)) for f in ("cat.jpg", "dog.jpg", "both.jpg")]
    for i in range(count):
        img = photos[i % 3]
        if (i // 3) % 2:
            img = img[:, ::-1]
        shift = (i // 6) % 8
        img = np.ascontiguousarray(img[shift:, shift:])
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def write_config(folder: Path, fmt: str) -> Path:
    path = folder / "bench.yaml"
    path.write_text(f"""
model: {{builder: "explain.demo:catdog_efficientnet_lite0"}}
classes: {{cat: 0, dog: 1}}
images: [photos/]
preprocess: {{size: 224, multiple_of: 32}}
target_layers: [{LAYER}]
methods: [gradcam, layercam]
output: {{dir: results{'' if fmt == 'auto' else ', image_format: ' + fmt}}}
""")
    return path


def engine_rate(cfg, device: torch.device) -> float:
    """Maps per second of the engine alone on the run's images (decoding not timed)."""
    net = load_model(cfg)
    refs, _ = find_images(cfg)
    prepared = [prepare(r, cfg.preprocess) for r in refs]
    layer = find_layer(net, LAYER)[1]
    maps = 0
    with CamEngine(Classifier(net), [layer], cfg.methods, device) as engine:
        engine.run(prepared[0].tensor[None], [0, 1], [0, 1])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(prepared), cfg.batch_size):
            for group in group_by_shape(prepared[i:i + cfg.batch_size]):
                engine.run(torch.stack([p.tensor for p in group]), [0, 1], [0, 1])
                maps += len(group) * 2 * len(cfg.methods)
        return maps / (time.perf_counter() - t0)


def full_rate(config: Path, overrides: dict) -> float:
    cfg = load_config(config, overrides)
    t0 = time.perf_counter()
    summary = run(cfg, RunOptions(progress=False, log=lambda line: None))
    return summary.counts["maps"] / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--format", default="auto", choices=["auto", "png", "jpg", "webp"],
                   help="output.image_format (auto: the default, JPEG above 50 images)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "photos").mkdir()
        make_images(folder / "photos", args.images)
        config = write_config(folder, args.format)
        cfg = load_config(config, {"device": args.device})
        device = pick_device(args.device)
        rate = engine_rate(cfg, device)
        print(f"{args.images} images x 2 classes x 2 methods, demo network, {args.format}, "
              f"device {device}, {torch.get_num_threads()} torch threads")
        print(f"{'device':<7} {'channel views':<14} {'workers':>7} {'full run maps/s':>16} "
              f"{'engine maps/s':>14} {'ratio':>6}")
        for channels in (False, True):
            for workers in sorted({0, 1, args.workers}):
                full = full_rate(config, {"channels.enabled": channels, "workers": workers,
                                          "device": args.device, "name": f"c{int(channels)}w{workers}"})
                print(f"{device.type:<7} {'on' if channels else 'off':<14} {workers:>7} "
                      f"{full:>16.1f} {rate:>14.1f} {full / rate:>6.2f}", flush=True)


if __name__ == "__main__":
    main()

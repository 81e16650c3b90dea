"""Maps per second of a whole run against the engine alone and the bare model, side by side in one process.

The demo network (EfficientNet-Lite0, cat/dog head), N images (default 192: the repository's
three photos, flipped and shifted into distinct files) x 2 classes x 2 methods (GradCAM,
LayerCAM). "limit" is the bare model on the same prepared batches: one forward pass and one
``torch.autograd.grad`` per class to the layer, no CAM math, nothing written; "engine" is
CamEngine on them, nothing written; "full run" is `explain` with every default output
(overlays, panels, summary, report), with channel views off and on, with 0 workers
(everything in the main thread), 1 and N. "limit/full" = limit time / full-run time for the
same maps (targets on the 2-core CPU: >= 0.75 with channel views off, >= 0.45 with them on);
"lean" is the same bare pass as the engine runs it (weights frozen, the layer's output a leaf:
nothing before the layer recorded for autograd), the stricter yardstick since the engine got it;
"cpu" is the same ratio in CPU seconds of the process (all its threads), steadier than the
clock when other work shares the machine. The limit is measured again before each full run;
each row is --repeats interleaved (limit, lean limit, full run) triples, printed as the median
ratio and its range, with the load average and the cost of creating a file in the folder the
runs write to ("create", microseconds of kernel time: a run creates about 1,200 files, and on
some disks this cost drifts by 10x or more within an hour). With --device cuda (when a GPU is there)
the same table with its device column.

Run: python benchmarks/end_to_end.py [--images N] [--workers N] [--format png|jpg]
     [--repeats N] [--scratch DIR] [--set FIELD=VALUE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explain.config import load_config  # noqa: E402
from explain.engine import CamEngine  # noqa: E402
from explain.models.heads import Classifier  # noqa: E402
from explain.images import find_images, group_by_shape, prepare  # noqa: E402
from explain.layers import find_layer  # noqa: E402
from explain.models.loading import load_model  # noqa: E402
from explain.models.guard import frozen, non_inplace, pick_device  # noqa: E402
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


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread, user and system."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


class Rate:
    """Maps per second by the clock and per CPU second, of one timed block."""

    def __init__(self) -> None:
        self.maps, self.wall, self.cpu = 0, 0.0, 0.0

    def __enter__(self) -> "Rate":
        self._t, self._c = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._t
        self.cpu += cpu_seconds() - self._c

    @property
    def per_s(self) -> float:
        return self.maps / self.wall

    @property
    def per_cpu_s(self) -> float:
        return self.maps / self.cpu


def batches(cfg, device: torch.device) -> list[torch.Tensor]:
    """The run's images, prepared and stacked as the run batches them (decoding not timed)."""
    refs, _ = find_images(cfg)
    prepared = [prepare(r, cfg.preprocess) for r in refs]
    return [torch.stack([p.tensor for p in group]).to(device)
            for i in range(0, len(prepared), cfg.batch_size)
            for group in group_by_shape(prepared[i:i + cfg.batch_size])]


def engine_rate(net, cfg, xs: list[torch.Tensor], device: torch.device) -> Rate:
    """The engine alone on the run's batches, nothing written."""
    layer, rate = find_layer(net, LAYER)[1], Rate()
    with CamEngine(Classifier(net), [layer], cfg.methods, device) as engine:
        engine.run(xs[0][:1], [0, 1], [0, 1])  # warm-up
        with rate:
            for x in xs:
                engine.run(x, [0, 1], [0, 1])
                rate.maps += len(x) * 2 * len(cfg.methods)
    return rate


def limit_rate(net, cfg, xs: list[torch.Tensor], device: torch.device, lean: bool = False) -> Rate:
    """The bare model on the run's batches: one forward pass, one autograd.grad per class to
    the layer's output; the maps it would give counted as the run counts them. ``lean``: with
    the weights frozen and the layer's output made a leaf, as the engine runs it."""
    layer, kept, rate = find_layer(net, LAYER)[1], {}, Rate()
    head = Classifier(net).to(device).eval()

    def hook(m, i, o):
        kept["a"] = o.detach().requires_grad_(True) if lean else o
        return kept["a"].clone() if lean else None
    handle = layer.register_forward_hook(hook)
    try:
        # inplace modules off, as the engine runs it: an inplace op cannot touch "a"
        with non_inplace(head), frozen(list(head.parameters()) if lean else []), rate:
            for x in xs:
                with torch.enable_grad():
                    logits = head(x)
                for c in (0, 1):
                    torch.autograd.grad(logits[:, c].sum(), kept["a"], retain_graph=c == 0)
                rate.maps += len(x) * 2 * len(cfg.methods)
    finally:
        handle.remove()
    return rate


def full_rate(config: Path, overrides: dict) -> Rate:
    cfg = load_config(config, overrides)
    with Rate() as rate:
        summary = run(cfg, RunOptions(progress=False, log=lambda line: None))
    rate.maps = summary.counts["maps"]
    return rate


def create_cost_us(folder: Path, count: int = 300) -> float:
    """Microseconds to create (and close) one empty file in ``folder``, over ``count`` files.
    The files are left for the temporary folder's removal at the end: ext4 scans the inodes
    freed in the last seconds each time it makes a new one (``recently_deleted``), so deleting
    them here would make the next full run's 1,200 creates slower than the run itself does."""
    probe = Path(tempfile.mkdtemp(dir=folder))
    start = time.perf_counter()
    for i in range(count):
        os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return (time.perf_counter() - start) / count * 1e6


def spread(values: list[float], digits: int = 2) -> str:
    """'median (min-max)' of a row's repeats; the value alone for one repeat."""
    med = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return med
    return f"{med} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--format", default="auto", choices=["auto", "png", "jpg", "webp"],
                   help="output.image_format (auto: the default, JPEG above 50 images)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=3, help="full runs per row (median shown)")
    p.add_argument("--scratch", type=Path, default=None,
                   help="folder for the photos and run folders (default: the system's temp)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=YAML",
                   help="a config field for the full runs, e.g. channels.contrast=false")
    args = p.parse_args()
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        folder = Path(tmp)
        (folder / "photos").mkdir()
        make_images(folder / "photos", args.images)
        config = write_config(folder, args.format)
        cfg = load_config(config, {"device": args.device})
        device = pick_device(args.device)
        net, xs = load_model(cfg), batches(cfg, device)
        limit_rate(net, cfg, xs[:1], device)  # warm-up
        engine = engine_rate(net, cfg, xs, device)
        print(f"{args.images} images x 2 classes x 2 methods, demo network, {args.format}, "
              f"device {device}, {torch.get_num_threads()} torch threads, "
              f"{extra or 'defaults'}, runs in {folder.parent}; engine alone "
              f"{engine.per_s:.1f} maps/s ({engine.per_cpu_s:.1f} per CPU s), load {load()}")
        lean = limit_rate(net, cfg, xs, device, lean=True)
        print(f"engine alone / limit {engine.per_s / limit_rate(net, cfg, xs, device).per_s:.2f}, "
              f"/ lean limit {engine.per_s / lean.per_s:.2f}")
        print(f"{'device':<7} {'views':<5} {'workers':>7} {'full maps/s':>17} {'limit maps/s':>17} "
              f"{'limit/full':>16} {'cpu':>16} {'lean/full':>16} {'create us':>9}  load")
        for channels in (False, True):
            for workers in sorted({0, 1, args.workers}):
                rows, before, create = [], load(), create_cost_us(folder)
                for r in range(args.repeats):
                    limit = limit_rate(net, cfg, xs, device)
                    lean = limit_rate(net, cfg, xs, device, lean=True)
                    full = full_rate(config, {"channels.enabled": channels, "workers": workers,
                                              "device": args.device, **extra,
                                              "name": f"c{int(channels)}w{workers}r{r}"})
                    rows.append((full.per_s, limit.per_s, full.per_s / limit.per_s,
                                 full.per_cpu_s / limit.per_cpu_s, full.per_s / lean.per_s))
                full_s, limit_s, ratio, cpu, lean_ratio = (list(c) for c in zip(*rows))
                print(f"{device.type:<7} {'on' if channels else 'off':<5} {workers:>7} "
                      f"{spread(full_s, 1):>17} {spread(limit_s, 1):>17} {spread(ratio):>16} "
                      f"{spread(cpu):>16} {spread(lean_ratio):>16} {create:>9.0f}  {before}",
                      flush=True)


if __name__ == "__main__":
    main()

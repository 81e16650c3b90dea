"""Images per second of four ways to make the same CAMs, measured side by side in one process.

(a) seed style: a new library CAM object per image x class x method, one image per call;
(b) the library called once per method x class on the whole batch, per-sample targets;
(c) this project's engine (one forward, one autograd.grad per class, library CAM math);
(d) the limit: the bare model, one forward and per class one autograd.grad to the layer;
(e) the alternative to (d): batch rows replicated per class, one backward (slower: kept out);
(f) the lean limit: (d) as the engine runs it, weights frozen and the layer's output a leaf, so
    nothing before the layer is recorded for autograd (the engine's own saving, on the bare model).
Interleaved repeats (each way called once untimed before its timed call), medians of the clock
and of the process's CPU seconds (all threads: steadier when other work shares the machine; the load average is printed beside each workload). Then
peak RSS while streaming images from disk through the engine.
With --device cuda (when a GPU is there) the same ways run on the card, the clock read after
torch.cuda.synchronize(), and a ResNet-50 workload (random weights, 224 x 224, layer4) is added
(--resnet50 adds it on the CPU too; slow there).
Run: python benchmarks/throughput.py [--repeats N] [--stream N] [--quick: (c), (d) and (f) only]
     [--device cpu|cuda] [--resnet50]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from pytorch_grad_cam import (GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain.config import MethodSpec, Preprocess
from explain.demo import catdog_efficientnet_lite0
from explain.engine import CamEngine
from explain.images import ImageRef, prepare
from explain.layers import find_layer
from explain.models.guard import frozen, non_inplace

DEVICE = torch.device("cpu")  # --device
LIB = {"gradcam": GradCAM, "layercam": LayerCAM, "gradcamplusplus": GradCAMPlusPlus,
       "xgradcam": XGradCAM, "hirescam": HiResCAM}
CLASSES = [0, 1]


def seed_style(model, layer, x, methods):
    for name in methods:
        for i in range(len(x)):
            for c in CLASSES:
                with LIB[name](model, [layer]) as cam:
                    cam(x[i:i + 1], [ClassifierOutputTarget(c)])


def library_batched(model, layer, x, methods):
    for name in methods:
        with LIB[name](model, [layer]) as cam:
            for c in CLASSES:
                cam(x, [ClassifierOutputTarget(c)] * len(x))


def engine(model, layer, x, methods):
    with CamEngine(model, [layer], [MethodSpec(name=n) for n in methods], DEVICE) as e:
        e.run(x, CLASSES, CLASSES)


def bare_limit(model, layer, x, methods):
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    with torch.enable_grad():
        logits = model(x)
    handle.remove()
    for k, c in enumerate(CLASSES):
        torch.autograd.grad(logits[:, c].sum(), kept["a"], retain_graph=k < len(CLASSES) - 1)


def bare_lean_limit(model, layer, x, methods):
    kept = {}

    def leaf(m, i, o):
        kept["a"] = o.detach().requires_grad_(True)
        return kept["a"].clone()
    handle = layer.register_forward_hook(leaf)
    with frozen(list(model.parameters())), torch.enable_grad():
        logits = model(x)
    handle.remove()
    for k, c in enumerate(CLASSES):
        torch.autograd.grad(logits[:, c].sum(), kept["a"], retain_graph=k < len(CLASSES) - 1)


def bare_replicated_rows(model, layer, x, methods):
    """The alternative to (d): each image repeated once per class, one backward for all rows."""
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.__setitem__("a", o))
    rows = x.repeat(len(CLASSES), 1, 1, 1)
    with torch.enable_grad():
        logits = model(rows)
    handle.remove()
    picked = torch.as_tensor(CLASSES).repeat_interleave(len(x))
    torch.autograd.grad(logits[torch.arange(len(rows)), picked].sum(), kept["a"])


def workload(title, model, layer, x, methods, repeats, quick=False):
    ways = {"a seed style": seed_style, "b library batched": library_batched,
            "c explain engine": engine, "d bare model limit": bare_limit,
            "e bare replicated rows": bare_replicated_rows, "f bare lean limit": bare_lean_limit}
    if quick:  # (c) against (d) and (f) only
        ways = {k: v for k, v in ways.items() if k[0] in "cdf"}
    times = {k: [] for k in ways}
    cpu = {k: [] for k in ways}
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    with non_inplace(model):  # (a), (b), (d) must be correct at an inplace-ReLU layer too
        for _ in range(repeats):
            for k, fn in ways.items():
                fn(model, layer, x, methods)  # untimed: what the way before it left (caches,
                sync()  # the allocator) is its own
                t0, c0 = time.perf_counter(), cpu_seconds()
                fn(model, layer, x, methods)
                sync()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(cpu_seconds() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\n{title}: {len(x)} images x {len(CLASSES)} classes x {methods}, median of {repeats}, "
          f"load {load}")
    for k, t in med.items():
        print(f"  {k:20s} {len(x) / t:8.1f} images/s   ({t * 1000:8.0f} ms, "
              f"{med_cpu[k] * 1000:8.0f} ms CPU)")
    c, d = med["c explain engine"], med["d bare model limit"]
    cpu_ratio = med_cpu["c explain engine"] / med_cpu["d bare model limit"]
    f = med["f bare lean limit"]
    line = (f"  c time / d time {c / d:5.2f} (CPU {cpu_ratio:5.2f})   c time / f time {c / f:5.2f} "
            f"(CPU {med_cpu['c explain engine'] / med_cpu['f bare lean limit']:5.2f})")
    if not quick:
        line += (f"   c/a speed-up {med['a seed style'] / c:5.1f}x   c/b speed-up "
                 f"{med['b library batched'] / c:5.1f}x   e time / d time "
                 f"{med['e bare replicated rows'] / d:5.2f}")
    print(line)


def sync() -> None:
    """Wait for the card's queued work, so the clock measures it (nothing on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread, user and system."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def peak_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    from the parent through fork and exec, so a child started by a large parent would report
    the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_stream(model, layer, count: int):
    rgb = cv2.imread(str(Path(__file__).resolve().parent.parent / "images" / "both.jpg"))
    spec = Preprocess(size=(224, 224))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(count):
            p = Path(tmp) / f"img{i:05d}.jpg"
            cv2.imwrite(str(p), np.roll(rgb, i, axis=1))
            paths.append(p)
        marks = {}
        with CamEngine(model, [layer], [MethodSpec(name="gradcam"), MethodSpec(name="layercam")],
                       torch.device("cpu")) as e:
            for start in range(0, count, 8):
                batch = [prepare(ImageRef(p.stem, p, True), spec) for p in paths[start:start + 8]]
                e.run(torch.stack([b.tensor for b in batch]), CLASSES, CLASSES)
                done = start + len(batch)
                if done in (count // 10, count) or done == 104:
                    marks[done] = peak_mib()
    print(f"\npeak RSS streaming {count} images from disk through the engine (batch 8):")
    for n, mb in sorted(marks.items()):
        print(f"  after {n:5d} images: {mb:7.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--stream", type=int, default=1000)
    parser.add_argument("--stream-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="only (c), (d) and (f): the engine and its limits")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--resnet50", action="store_true", help="the ResNet-50 workload on the CPU too")
    args = parser.parse_args()
    global DEVICE
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("throughput.py: --device cuda, but torch sees no CUDA device")
    DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    if args.stream_only:  # a fresh process, so its peak RSS is the engine's alone
        alex = torchvision.models.alexnet(num_classes=2).eval()
        peak_rss_stream(alex, find_layer(alex, "features.10")[1], args.stream)
        return
    card = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {card}")
    alex = torchvision.models.alexnet(num_classes=2).eval().to(DEVICE)
    x = torch.randn(args.images, 3, 224, 224).to(DEVICE)
    workload("AlexNet(2) @ features.10", alex, find_layer(alex, "features.10")[1], x,
             ["gradcam", "layercam"], args.repeats, args.quick)
    demo = catdog_efficientnet_lite0().to(DEVICE)
    workload("demo EfficientNet-Lite0 @ backbone._blocks.15", demo, find_layer(demo, "backbone._blocks.15")[1],
             x, ["gradcam", "layercam"], args.repeats, args.quick)
    workload("AlexNet(2) @ features.10, 5 gradient methods", alex, find_layer(alex, "features.10")[1], x,
             list(LIB), args.repeats, args.quick)
    if DEVICE.type == "cuda" or args.resnet50:
        resnet = torchvision.models.resnet50(weights=None).eval().to(DEVICE)
        workload("ResNet-50 @ layer4", resnet, find_layer(resnet, "layer4")[1], x,
                 ["gradcam", "layercam"], args.repeats, args.quick)
    if args.stream:
        subprocess.run([sys.executable, __file__, "--stream-only", "--stream", str(args.stream)], check=True)


if __name__ == "__main__":
    main()

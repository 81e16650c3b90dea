"""Maps at precision bf16 (or fp16 on CUDA) against fp32 on the demo network.

The demo network at backbone._blocks.15, the demo's photos (cat, dog, both) and both.jpg
mirrored, classes cat and dog, GradCAM, LayerCAM and GradCAM++ (ScoreCAM with --methods):
per method, the max and mean |bf16 - fp32| over all maps (maps in 0..1), the share of maps
whose peak falls in the same 32-pixel cell, and the pointing game on both.jpg and its mirror
(the peak inside the class's half, images/both_boxes.csv): hits at each precision and the
share of verdicts that agree. Also the engine's time at each precision.
Run: python benchmarks/precision.py [--precision bf16] [--methods gradcam,layercam] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from explain.config import MethodSpec, Preprocess  # noqa: E402
from explain.demo import catdog_efficientnet_lite0  # noqa: E402
from explain.engine import CamEngine, EngineOptions  # noqa: E402
from explain.images import ImageRef, prepare  # noqa: E402
from explain.layers import find_layer  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "images"
CLASSES = [0, 1]  # cat, dog
CELL = 32


def inputs() -> list[tuple[str, torch.Tensor]]:
    spec = Preprocess(size=224, multiple_of=32)
    out = [(n, prepare(ImageRef(n, IMAGES / f"{n}.jpg", True), spec).tensor)
           for n in ("cat", "dog", "both")]
    out.append(("both mirrored", torch.flip(out[2][1], dims=[-1])))
    return out


def maps_at(precision: str, model, layer, methods, xs, device) -> tuple[dict, float]:
    specs = [MethodSpec(name=m) for m in methods]
    found: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    with CamEngine(model, [layer], specs, device, EngineOptions(precision=precision)) as e:
        e.run(xs[0][1][None], CLASSES, CLASSES)  # warm-up
        t0 = time.perf_counter()
        for _, x in xs:
            result = e.run(x[None], CLASSES, CLASSES)
            for m in methods:
                found[m].append(result.maps[m][0])  # (K, H, W)
        seconds = time.perf_counter() - t0
    return found, seconds


def hit(cam: np.ndarray, name: str, cls: int) -> bool:
    """Pointing game on both.jpg (cat left half, dog right half) or its mirror."""
    x = int(np.unravel_index(np.argmax(cam), cam.shape)[1])
    left = (cls == 0) != (name == "both mirrored")
    return x < cam.shape[1] // 2 if left else x >= cam.shape[1] // 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--methods", default="gradcam,layercam,gradcamplusplus")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = catdog_efficientnet_lite0().eval()
    layer = find_layer(model, "backbone._blocks.15")[1]
    methods = args.methods.split(",")
    xs = inputs()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; load "
          f"average {os.getloadavg()[0]:.1f}")
    ref, t_ref = maps_at("fp32", model, layer, methods, xs, device)
    low, t_low = maps_at(args.precision, model, layer, methods, xs, device)
    print(f"engine time: fp32 {t_ref:.2f} s, {args.precision} {t_low:.2f} s ({len(xs)} images)")
    print(f"| method | max abs diff | mean abs diff | same peak cell | pointing fp32 | "
          f"pointing {args.precision} | pointing agreement |")
    for m in methods:
        diffs = [np.abs(a - b) for a, b in zip(ref[m], low[m])]
        same = [np.unravel_index(np.argmax(a[k]), a[k].shape)[0] // CELL ==
                np.unravel_index(np.argmax(b[k]), b[k].shape)[0] // CELL and
                np.unravel_index(np.argmax(a[k]), a[k].shape)[1] // CELL ==
                np.unravel_index(np.argmax(b[k]), b[k].shape)[1] // CELL
                for a, b in zip(ref[m], low[m]) for k in range(len(CLASSES))]
        games = [(hit(ref[m][i][k], n, c), hit(low[m][i][k], n, c))
                 for i, (n, _) in enumerate(xs) if n.startswith("both")
                 for k, c in enumerate(CLASSES)]
        print(f"| {m} | {max(d.max() for d in diffs):.4f} | "
              f"{np.mean([d.mean() for d in diffs]):.4f} | {sum(same)}/{len(same)} | "
              f"{sum(a for a, _ in games)}/{len(games)} | {sum(b for _, b in games)}/"
              f"{len(games)} | {sum(a == b for a, b in games)}/{len(games)} |")


if __name__ == "__main__":
    main()

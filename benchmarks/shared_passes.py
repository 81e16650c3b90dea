"""ScoreCAM and AblationCAM with passes shared across classes, against the library's per-class
calls, and the run's estimate against the measured time, side by side in one process.

For the demo network at backbone._blocks.15 (320 channels) on the demo's three photos (224 x 224,
224 x 224 and 224 x 448), 2 classes, each image alone (batch 1, as the demo's shapes differ):
  shared   : explain's engine (explain.sharedpasses: one set of passes per image)
  library  : the library's own call once per class
  estimate : explain.pace (passes x the measured time of one no-grad pass of the first image)
AblationCAM runs at backbone._blocks.15._bn2 (also 320 channels): the library cannot ablate the
block itself (EfficientNet calls its blocks with a drop_connect_rate keyword, which the
library's AblationLayer does not take; the library's own call fails the same way).
Prints the times, library / shared, estimate / measured (shared), the largest |difference|
between the maps, and the load average (the 2-core machine is shared: numbers are noisy).
Run: python benchmarks/shared_passes.py [--methods scorecam,ablationcam] [--images N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import AblationCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from explain.config import MethodSpec, Preprocess  # noqa: E402
from explain.demo import catdog_efficientnet_lite0  # noqa: E402
from explain.engine import CamEngine, quiet_library_bars  # noqa: E402
from explain.images import ImageRef, prepare  # noqa: E402
from explain.layers import find_layer  # noqa: E402
from explain.pace import inner_batch, seconds_per_pass, TIMED_ROWS  # noqa: E402

LIBRARY = {"scorecam": ScoreCAM, "ablationcam": AblationCAM}
CLASSES = [0, 1]
IMAGES = Path(__file__).resolve().parent.parent / "images"


def library_maps(name: str, model, layer, x: torch.Tensor) -> np.ndarray:
    """(1, K, H, W): the library's call once per class."""
    out = []
    for c in CLASSES:
        cam = LIBRARY[name](model, [layer])
        try:
            with quiet_library_bars():
                out.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x)))
        finally:
            cam.activations_and_grads.release()
    return np.stack(out, 1)


def one_method(name: str, model, layer, xs: list[torch.Tensor]) -> None:
    if name == "ablationcam":
        layer = find_layer(model, "backbone._blocks.15._bn2")[1]
    spec = MethodSpec(name=name)
    with CamEngine(model, [layer], [spec], torch.device("cpu")) as engine:
        engine.run(xs[0][None], CLASSES, CLASSES)  # warm-up (one image)
        engine.seconds.clear()
        per_pass = seconds_per_pass(model, xs[0], min(inner_batch(spec), TIMED_ROWS))
        t0 = time.perf_counter()
        ours = [engine.run(x[None], CLASSES, CLASSES).maps[name] for x in xs]
        shared = time.perf_counter() - t0
    channels = 320
    # per pass, scaled by each image's pixels against the first's (the run's estimate assumes
    # every image is the first one's size: both are shown)
    first = xs[0].shape[-1] * xs[0].shape[-2]
    estimate = len(xs) * channels * per_pass
    scaled = sum(channels * per_pass * x.shape[-1] * x.shape[-2] / first for x in xs)
    t0 = time.perf_counter()
    theirs = [library_maps(name, model, layer, x[None]) for x in xs]
    library = time.perf_counter() - t0
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    print(f"{name:12s} shared {shared:7.1f} s   library per class {library:7.1f} s   "
          f"library/shared {library / shared:4.2f}   estimate {estimate:6.1f} s "
          f"(pixel-scaled {scaled:6.1f} s)   estimate/measured {estimate / shared:4.2f} "
          f"({scaled / shared:4.2f})   max |shared - library| {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="scorecam,ablationcam")
    parser.add_argument("--images", type=int, default=3, help="first N of cat, dog, both")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = catdog_efficientnet_lite0().eval()
    layer = find_layer(model, "backbone._blocks.15")[1]
    spec = Preprocess(size=224, multiple_of=32)
    paths = [IMAGES / n for n in ("cat.jpg", "dog.jpg", "both.jpg")][:args.images]
    xs = [prepare(ImageRef(p.stem, p, True), spec).tensor for p in paths]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; images "
          f"{[tuple(x.shape[-2:]) for x in xs]}; {len(CLASSES)} classes; load average before "
          f"{os.getloadavg()[0]:.1f}")
    for name in args.methods.split(","):
        one_method(name, model, layer, xs)
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

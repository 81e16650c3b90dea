"""ROAD per map: pytorch-grad-cam's ROADCombined against explain.road.ROAD, side by side in one
process, on the demo network (EfficientNet-Lite0, cat/dog head) and real maps.

Images: images/both.jpg at 224 x 448 (the demo's input) and its left half, 224 x 224. Maps:
the library's GradCAM and LayerCAM on backbone._blocks.15 for cat and dog (4 per image, the
demo's 2 classes x 2 methods). Each side is called as explain calls a metric: once per image
with the image repeated once per map, seeded as explain seeds it; the scores must agree
(printed: the largest difference). Times are per map (the call's time / maps), wall clock and
process CPU time (CPU time is less disturbed by other work on a shared machine). Also: the
noisy linear imputation alone (the library's NoisyLinearImputer against explain.road.impute)
for the same 2 x 9 masks per map, to separate the solve from the forward passes. Printed at
the end: a table with the sizes side by side, and the load average before and after.

Run: python benchmarks/road.py [--maps K] [--percentiles 10,20,...,90] [--sizes 448,224]
     [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, LayerCAM
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain import road
from explain.config.sections import Preprocess
from explain.demo import catdog_efficientnet_lite0
from explain.engine import seeded
from explain.images import ImageRef, prepare

REPO = Path(__file__).resolve().parents[1]


def demo_maps(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """GradCAM and LayerCAM maps for cat (0) and dog (1): (4, H, W) in 0..1, and classes."""
    maps, classes = [], []
    layer = model.backbone._blocks[15]
    for method in (GradCAM, LayerCAM):
        with method(model=model, target_layers=[layer]) as cam:
            for cls in (0, 1):
                maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0])
                classes.append(cls)
    return np.stack(maps).astype(np.float32), classes


def timed(call):
    """(result, wall seconds, CPU seconds) of call()."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def imputation_only(x: torch.Tensor, cams: np.ndarray, percentiles: list[int]) -> tuple:
    """Seconds (wall, CPU) per map for the 2 x len(percentiles) imputations: library, ours."""
    masks = [road.keep_mask(cam, p, most) for cam in cams for most in (False, True)
             for p in percentiles]
    library = NoisyLinearImputer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's singular solves (every pixel removed)
        _, lw, lc = timed(lambda: [library(x, torch.from_numpy(np.float32(k))) for k in masks])
    _, ow, oc = timed(lambda: [road.impute(x, k) for k in masks])
    n = len(cams)
    return (lw / n, lc / n), (ow / n, oc / n)


def compare(model, x: torch.Tensor, cams: np.ndarray, classes: list[int],
            percentiles: list[int]) -> dict[str, float]:
    """One size: the full metric both ways, then the imputation alone. Returns seconds per
    map (wall and CPU, library and ours, metric and imputation) and the largest score
    difference."""
    k = len(cams)
    inputs = x.expand(k, *x.shape[1:]).contiguous()
    targets = [ClassifierOutputTarget(c) for c in classes]
    with torch.no_grad():
        model(inputs)  # warm-up at this size
    with seeded(0), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib, lw, lc = timed(lambda: ROADCombined(percentiles)(inputs, cams, targets, model))
    with seeded(0):
        ours, ow, oc = timed(lambda: road.ROAD("combined", percentiles)(inputs, cams, targets,
                                                                       model))
    (ilw, ilc), (iow, ioc) = imputation_only(x[0], cams, percentiles)
    return {"lib wall": lw / k, "lib cpu": lc / k, "ours wall": ow / k, "ours cpu": oc / k,
            "imp lib wall": ilw, "imp lib cpu": ilc, "imp ours wall": iow, "imp ours cpu": ioc,
            "difference": float(np.abs(lib - ours).max())}


def table(results: dict[str, dict[str, float]], maps: int, percentiles: list[int]) -> None:
    """The sizes side by side: per map, library and explain, wall and CPU seconds, ratios."""
    sizes = list(results)
    rows = [("ROAD combined, library", "lib wall", "lib cpu"),
            ("ROAD combined, explain", "ours wall", "ours cpu"),
            (f"imputation alone ({2 * len(percentiles)}), library", "imp lib wall",
             "imp lib cpu"),
            (f"imputation alone ({2 * len(percentiles)}), explain", "imp ours wall",
             "imp ours cpu")]
    print(f"\nseconds per map ({maps} maps per call, {len(percentiles)} percentiles), "
          f"wall / CPU:")
    print(f"{'':36}" + "".join(f"{size:>22}" for size in sizes))
    for label, wall, cpu in rows:
        print(f"{label:36}" + "".join(f"{r[wall]:11.2f} /{r[cpu]:8.2f}" for r in
                                      results.values()))
    for label, a, b in (("ratio ROAD combined", "lib", "ours"),
                        ("ratio imputation alone", "imp lib", "imp ours")):
        print(f"{label:36}" + "".join(
            f"{r[a + ' wall'] / r[b + ' wall']:10.1f}x /{r[a + ' cpu'] / r[b + ' cpu']:7.1f}x"
            for r in results.values()))
    print(f"{'largest score difference':36}" + "".join(f"{r['difference']:22.1e}"
                                                       for r in results.values()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", type=int, default=4, help="maps per call (1..4)")
    parser.add_argument("--percentiles", default="10,20,30,40,50,60,70,80,90")
    parser.add_argument("--sizes", default="448,224", help="input widths: 448 and/or 224")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for both sides (0: torch's default); on a machine "
                             "shared with other work, 1 avoids torch's threads waiting on each "
                             "other")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    percentiles = [int(p) for p in args.percentiles.split(",")]
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"torch threads {torch.get_num_threads()}")
    model = catdog_efficientnet_lite0().eval()
    both = prepare(ImageRef("both", REPO / "images" / "both.jpg", False),
                   Preprocess(size=224, multiple_of=32)).tensor[None]
    results = {}
    for width in (int(w) for w in args.sizes.split(",")):
        x = both[..., :width].contiguous()
        cams, classes = demo_maps(model, x)
        results[f"{x.shape[2]} x {x.shape[3]}"] = compare(model, x, cams[:args.maps],
                                                          classes[:args.maps], percentiles)
    table(results, min(args.maps, 4), percentiles)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

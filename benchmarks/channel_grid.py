"""Render a 256-channel grid several ways in one process and print the times and ratios.

(a) the activation view without channel numbers (``labels=False``: tiles, title, colour bar)
    + PNG encode (OpenCV);
(b) the labelled views: activation_view and contribution_view (channel numbers on every tile,
    title, shared colour scale, colour bar with ticks and units; text by Pillow) + PNG encode;
(c) the seed reports' approach: matplotlib, 16 x 16 subplots, one imshow per channel, savefig
    (no labels, no colour bar).
Same arrays (AlexNet features.10 shape: 256 x 13 x 13), interleaved repeats, medians.
Run: python benchmarks/channel_grid.py [--repeats N]
"""

import argparse
import io
import statistics
import time

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from explain.channels import ViewOptions, activation_view, contribution_view  # noqa: E402


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()


def ours(acts: np.ndarray) -> bytes:
    return png(activation_view(acts, "image | layer features.10",
                               options=ViewOptions(labels=False)).image)


def activations(acts: np.ndarray) -> bytes:
    return png(activation_view(acts, "image | layer features.10").image)


def contributions(contrib: np.ndarray) -> bytes:
    return png(contribution_view(contrib, "image | class dog | gradcam | layer features.10",
                                 method="gradcam").image)


def seed_style(acts: np.ndarray) -> bytes:
    fig, axes = plt.subplots(16, 16, figsize=(32, 32), dpi=100)
    for k, ax in enumerate(axes.flat):
        ax.imshow(acts[k], cmap="viridis")
        ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(256, 13, 13)), 0).astype(np.float32)
    contrib = (acts * rng.normal(size=(256, 1, 1)) * 1e-3).astype(np.float32)
    runs = (("ours", ours, acts), ("activations", activations, acts),
            ("contributions", contributions, contrib), ("seed", seed_style, acts))
    times = {name: [] for name, _, _ in runs}
    for _ in range(args.repeats):
        for name, fn, data in runs:
            t0 = time.perf_counter()
            fn(data)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    seed = med["seed"]
    print(f"256-channel grid, median of {args.repeats}:")
    print(f"  activation_view + PNG (no channel numbers)  : {med['ours'] * 1000:9.1f} ms"
          f"  ratio {seed / med['ours']:5.0f}x")
    print(f"  activation_view + PNG (labels, colour bar)  : {med['activations'] * 1000:9.1f} ms"
          f"  ratio {seed / med['activations']:5.0f}x")
    print(f"  contribution_view + PNG (labels, colour bar): {med['contributions'] * 1000:9.1f} ms"
          f"  ratio {seed / med['contributions']:5.0f}x")
    print(f"  matplotlib 16x16 subplots                   : {seed * 1000:9.1f} ms")


if __name__ == "__main__":
    main()

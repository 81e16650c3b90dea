"""Render a 256-channel grid two ways in one process and print both times and the ratio.

(a) this project's mosaic: explain.channels.channel_grid + PNG encode (OpenCV);
(b) the seed reports' approach: matplotlib, 16 x 16 subplots, one imshow per channel, savefig.
Same activations (AlexNet features.10 shape: 256 x 13 x 13), interleaved repeats, medians.
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

from explain.channels import channel_grid  # noqa: E402


def ours(acts: np.ndarray) -> bytes:
    grid = channel_grid(acts, tile_size=48, colormap=cv2.COLORMAP_VIRIDIS)
    return cv2.imencode(".png", grid[..., ::-1])[1].tobytes()


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
    acts = np.maximum(np.random.default_rng(0).normal(size=(256, 13, 13)), 0).astype(np.float32)
    times = {"ours": [], "seed": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("seed", seed_style)):
            t0 = time.perf_counter()
            fn(acts)
            times[name].append(time.perf_counter() - t0)
    a, b = statistics.median(times["ours"]), statistics.median(times["seed"])
    print(f"256-channel grid, median of {args.repeats}:")
    print(f"  explain channel_grid + PNG : {a * 1000:9.1f} ms")
    print(f"  matplotlib 16x16 subplots  : {b * 1000:9.1f} ms")
    print(f"  ratio (matplotlib / ours)  : {b / a:9.0f}x")


if __name__ == "__main__":
    main()

"""What channels.atlas (and channels.ablation) cost: time and peak memory against the number of
images, at the demo's settings.

For each count, the demo config (EfficientNet-Lite0 at backbone._blocks.15, GradCAM + LayerCAM
for cat and dog, channel views on, arrays saved; ROAD and the boxes off, as benchmarks/soak.py
runs it) explains that many images made from the sample photos (mirrored and cut: a few input
sizes), three ways, each in a fresh child process: without the atlas, with the atlas, with the
atlas and the ablation. It prints the run's seconds, the child's peak RSS and the atlas's time
against the run without it, in wall-clock and in CPU seconds (user + system of the child: on a
machine other jobs share, the steadier of the two), and the load average. Peak RSS flat in the
count is what "bounded memory" means: the atlas keeps heaps and sums, never the activations.

Run: python benchmarks/atlas.py [--counts 100 400] [--threads 1] [--ways off atlas ...]
(one torch thread by default: on a machine other jobs share, two threads that wait on each
other make the times meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WAYS = {"off": {}, "atlas": {"channels.atlas.enabled": True},
        "atlas+ablation": {"channels.atlas.enabled": True, "channels.ablation.enabled": True}}


def make_images(folder: Path, count: int) -> None:
    """``count`` photos from images/: cat, dog, both, each as it is, mirrored or cut."""
    import cv2
    photos = [cv2.imread(str(REPO / "images" / n)) for n in ("cat.jpg", "dog.jpg", "both.jpg")]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = photos[i % 3]
        img = (img, img[:, ::-1], img[:, img.shape[1] // 8:])[(i // 3) % 3]
        cv2.imwrite(str(folder / f"img{i:05d}.jpg"), img)


def child(pics: Path, out: Path, way: str, threads: int) -> dict:
    """One run in this process: its seconds and this process's peak RSS."""
    import torch
    torch.set_num_threads(threads)
    from explain.config import load_config
    from explain.runner import RunOptions, run
    overrides = {"images": [str(pics)], "metrics": [], "annotations.file": None, **WAYS[way]}
    cfg = load_config(REPO / "configs" / "demo_catdog.yaml", overrides)
    t0 = time.perf_counter()
    summary = run(cfg, RunOptions(out_root=out, progress=False, log=lambda _: None))
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024,
            "cpu": usage.ru_utime + usage.ru_stime,
            "images": summary.counts["images"], "durations": summary.durations_s,
            "forward": summary.ablation.forward if summary.ablation else None}


def measure(pics: Path, out: Path, way: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--child", str(pics), str(out), way,
                           str(threads)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
                        help="which runs (the first is the one the others are compared to)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        pics, out, way, threads = args.child
        print(json.dumps(child(Path(pics), Path(out), way, int(threads))))
        return
    print(f"channels.atlas cost, demo settings, {args.threads} torch thread(s); load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print(f"{'images':>7} {'way':>15} {'seconds':>8} {'s/image':>8} {'CPU s':>8} "
          f"{'peak RSS MB':>12} {'wall vs off':>12} {'CPU vs off':>11} {'load':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            pics = Path(tmp) / f"pics{count}"
            make_images(pics, count)
            base = None
            for way in args.ways:
                found = measure(pics, Path(tmp) / f"out-{count}-{way}", way, args.threads)
                base = base or found
                print(f"{count:>7} {way:>15} {found['seconds']:>8.1f} "
                      f"{found['seconds'] / count:>8.3f} {found['cpu']:>8.1f} "
                      f"{found['rss_mb']:>12.0f} {found['seconds'] / base['seconds'] - 1:>+12.1%} "
                      f"{found['cpu'] / base['cpu'] - 1:>+11.1%} {os.getloadavg()[0]:>5.1f}"
                      + (f"  (ablation passes: {found['forward']})" if found["forward"] else ""),
                      flush=True)


if __name__ == "__main__":
    main()

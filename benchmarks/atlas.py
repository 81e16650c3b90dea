"""What channels.atlas (and channels.ablation) cost: time and peak memory against the number of
images, at the demo's settings.

For each count, the demo config (EfficientNet-Lite0 at backbone._blocks.15, GradCAM + LayerCAM
for cat and dog, channel views on, arrays saved; ROAD and the boxes off, as benchmarks/soak.py
runs it) explains that many images made from the sample photos (mirrored and cut: a few input
sizes), three ways, each in a fresh child process: without the atlas, with the atlas, with the
atlas and the ablation. It prints the run's seconds, the child's peak RSS and the atlas's time
against the run without it. Peak RSS flat in the count is what "bounded memory" means: the
atlas keeps heaps and sums, never the activations.

Run: python benchmarks/atlas.py [--counts 100 400] [--threads 1]
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
    return {"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        pics, out, way, threads = args.child
        print(json.dumps(child(Path(pics), Path(out), way, int(threads))))
        return
    print(f"channels.atlas cost, demo settings, {args.threads} torch thread(s)")
    print(f"{'images':>7} {'way':>15} {'seconds':>8} {'s/image':>8} {'peak RSS MB':>12} "
          f"{'vs off':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            pics = Path(tmp) / f"pics{count}"
            make_images(pics, count)
            base = None
            for way in WAYS:
                found = measure(pics, Path(tmp) / f"out-{count}-{way}", way, args.threads)
                base = base or found["seconds"]
                print(f"{count:>7} {way:>15} {found['seconds']:>8.1f} "
                      f"{found['seconds'] / count:>8.3f} {found['rss_mb']:>12.0f} "
                      f"{found['seconds'] / base - 1:>+7.1%}"
                      + (f"  (ablation passes: {found['forward']})" if found["forward"] else ""),
                      flush=True)


if __name__ == "__main__":
    main()

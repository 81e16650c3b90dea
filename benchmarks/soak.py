"""Soak run: many images of many sizes and formats (a few corrupt) through the demo config.

Writes N images made from the sample photos (JPEG/PNG/WebP/BMP, grayscale, RGBA, 16-bit, random
sizes and crops) plus a few broken files into a temporary folder, runs the demo network with
GradCAM + LayerCAM and channel grids over it, then reports maps per second, peak memory, and
checks that every good image has all its outputs and every bad one is listed as skipped.
Run: python benchmarks/soak.py [--count 2000]
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from explain.config import load_config
from explain.runner import RunOptions, run

REPO = Path(__file__).resolve().parent.parent
FORMATS = (".jpg", ".png", ".webp", ".bmp")


def make_images(folder: Path, count: int, broken: int, rng) -> set[str]:
    photos = [cv2.imread(str(REPO / "images" / n)) for n in ("cat.jpg", "dog.jpg", "both.jpg")]
    bad = set()
    for i in range(count):
        name = f"img{i:05d}"
        if i % max(1, count // broken) == 7 and len(bad) < broken:
            data = (REPO / "images" / "dog.jpg").read_bytes()
            (folder / f"{name}.jpg").write_bytes(data[: rng.integers(100, len(data) // 2)])
            bad.add(name)
            continue
        img = photos[i % 3]
        scale = rng.uniform(0.3, 2.0)
        img = cv2.resize(img, (max(16, int(img.shape[1] * scale)), max(16, int(img.shape[0] * scale))))
        kind = i % 7
        if kind == 1:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif kind == 2:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        suffix = FORMATS[i % len(FORMATS)]
        if kind == 3:
            img, suffix = img.astype(np.uint16) * 257, ".png"
        if kind == 2 and suffix in (".jpg", ".bmp"):
            suffix = ".png"
        cv2.imwrite(str(folder / f"{name}{suffix}"), img)
    return bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--broken", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pics").mkdir()
        bad = make_images(tmp / "pics", args.count, args.broken, rng)
        cfg = load_config(REPO / "configs" / "demo_catdog.yaml",
                          {"images": [str(tmp / "pics")], "output.save_arrays": False,
                           "metrics": []})
        t0 = time.perf_counter()
        summary = run(cfg, RunOptions(out_root=tmp / "results", progress=True,
                                      log=lambda _: None)).dump()
        seconds = time.perf_counter() - t0
        run_dir = Path(summary["output_dir"])
        missing = [f"{i['id']}: {c['file']}" for i in summary["images"] for c in i["cams"]
                   if not (run_dir / c["file"]).is_file()]
        missing += [i["id"] for i in summary["images"]
                    if not (run_dir / "channels" / f"{i['id']}__activations.png").is_file()]
        skipped = {Path(s["path"]).stem for s in summary["skipped_images"]}
        maps = summary["counts"]["maps"]
        print(f"\nsoak: {args.count} files ({len(bad)} broken) through the demo, GradCAM + LayerCAM, channel grids")
        print(f"  good images explained : {summary['counts']['images']} ({maps} maps)")
        print(f"  time                  : {seconds:.1f} s, {maps / seconds:.1f} maps/s, "
              f"{summary['counts']['images'] / seconds:.2f} images/s")
        print(f"  peak RSS              : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        print(f"  outputs missing       : {len(missing)}")
        print(f"  broken files listed   : {len(skipped & bad)} of {len(bad)} "
              f"({'all' if skipped == bad else 'MISMATCH: ' + json.dumps(sorted(skipped ^ bad))})")


if __name__ == "__main__":
    main()

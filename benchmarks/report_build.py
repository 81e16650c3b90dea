"""How long report.html takes for a big run, against how long its maps took.

One real run of the demo network (GradCAM + LayerCAM, both classes, no channel views or metrics:
the cheapest maps, so the ratio is the strictest) over ``--real`` copies of the sample photos
gives the time per image; a results folder of ``--images`` images is then synthesised from that
run (its records repeated under new ids, its pictures hard-linked under the new names) and the
report is rebuilt from it with ``explain report``'s code. Prints both times and the ratio
(target: the report in under 10% of the maps' time).

    .venv/bin/python benchmarks/report_build.py [--images 2000] [--real 24]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from explain.config import load_config  # noqa: E402
from explain.outputs import RunFolder  # noqa: E402
from explain.results import RunSummary  # noqa: E402
from explain.runner import RunOptions, run  # noqa: E402
from explain.writers.report import photo_path, rebuild  # noqa: E402


def real_run(tmp: Path, count: int) -> tuple[RunSummary, Path, float]:
    """The demo over ``count`` photos; returns the summary, its folder and seconds per image
    (CAMs, overlays, panels, summary and report: the whole run less the model load)."""
    pics = tmp / "pics"
    pics.mkdir()
    sources = sorted((REPO / "images").glob("*.jpg"))
    for i in range(count):
        shutil.copy(sources[i % len(sources)], pics / f"p{i:03d}.jpg")
    cfg = load_config(REPO / "configs" / "demo_catdog.yaml", {
        "images": [str(pics)], "channels.enabled": False, "metrics": [],
        "output.save_arrays": False})
    t0 = time.perf_counter()
    summary = run(cfg, RunOptions(out_root=tmp / "results", progress=False, log=lambda _: None))
    seconds = time.perf_counter() - t0 - summary.durations_s["model_load"]
    return summary, Path(summary.output_dir), seconds / count


def synthesise(summary: RunSummary, source: Path, target: Path, images: int) -> int:
    """A results folder of ``images`` images made of the real run's records and pictures."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("cams", "report", "items"))
    folder = RunFolder(target)
    entries = []
    for i in range(images):
        real = summary.images[i % len(summary.images)]
        entry = real.model_copy(deep=True)
        entry.id = f"img{i:05d}"
        for rec in entry.cams:
            rec.file = f"cams/{rec.method}/{entry.id}__{rec.class_name}.png"
            folder.folder(f"cams/{rec.method}")
            os.link(source / real.record(rec.class_name, rec.method).file, folder.path(rec.file))
        folder.folder("report/photos")
        os.link(source / photo_path(real.id), folder.path(photo_path(entry.id)))
        entry.files.photo = photo_path(entry.id)
        entries.append(entry)
    big = summary.model_copy(deep=True)
    big.images = entries
    big.counts = {"images": images, "maps": sum(len(e.cams) for e in entries)}
    folder.write_json("summary.json", big.dump())
    return big.counts["maps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--real", type=int, default=24, help="photos in the real run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary, run_dir, per_image = real_run(tmp, args.real)
        maps_seconds = per_image * args.images
        big = tmp / "big"
        maps = synthesise(summary, run_dir, big, args.images)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            rebuild(big)
            times.append(time.perf_counter() - t0)
        report_seconds = sorted(times)[1]
        pages = len(list((big / "report").glob("page-*.html")))
        size = sum(p.stat().st_size for p in [big / "report.html", *(big / "report").glob("page-*.html")])
        print(f"report build: {args.images} images x 2 classes x 2 methods = {maps} maps "
              f"(demo network, GradCAM + LayerCAM, {torch.get_num_threads()} CPU threads)")
        print(f"  maps: {per_image:.3f} s per image in a real run of {args.real} photos "
              f"-> {maps_seconds:.1f} s for {args.images} images")
        print(f"  report: {report_seconds:.2f} s (median of 3; report.html + {pages} pages, "
              f"{size / 1e6:.1f} MB of HTML)")
        print(f"  ratio report / maps: {report_seconds / maps_seconds:.2%} (target < 10%)")


if __name__ == "__main__":
    main()

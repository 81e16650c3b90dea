"""One experiment, start to finish: config -> model -> images -> engine -> pictures -> summary."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

from explain import channels, outputs, reference, render, report
from explain.compare import Comparison
from explain.config import Config
from explain.engine import BatchResult, CamEngine
from explain.errors import ExplainError
from explain.images import (ImageError, Prepared, batches, find_images, group_by_shape, prepare,
                            preprocess, read_rgb)
from explain.model import find_layer, load_model, pick_device

PANEL_MAX_ROWS = 24  # a panel with more rows is unreadable; the rest are in cams/
THUMB = 224


@dataclass
class RunOptions:
    out_root: Optional[Path] = None  # overrides output.dir
    overwrite: bool = False
    resume: bool = False  # keep the finished images of results/<name>, compute the rest
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))


def class_names(cfg: Config) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, idx in cfg.classes.items():
        names.setdefault(idx, name)
    return names


def run(cfg: Config, opts: Optional[RunOptions] = None) -> dict:
    """Run the experiment and write the results folder; returns the summary it wrote."""
    opts = opts or RunOptions()
    started = time.perf_counter()
    refs, notes = find_images(cfg)
    model = load_model(cfg)
    layers = [find_layer(model, name, f"target_layers[{i}]") for i, name in enumerate(cfg.target_layers)]
    device = pick_device(cfg.device)
    loaded = time.perf_counter()

    root = opts.out_root or cfg.resolve(cfg.output.dir)
    root_existed = root.exists()
    run_dir = outputs.choose_run_dir(root, cfg.run_name, opts.overwrite, opts.resume)
    try:
        summary = _explain_all(cfg, model, layers, device, refs, notes, run_dir, opts)
    except ExplainError:
        # A user error: leave nothing half-done behind. (An interrupted run is kept for --resume.)
        if not opts.resume:
            shutil.rmtree(run_dir, ignore_errors=True)  # leave nothing half-done behind
            if not root_existed and not any(root.iterdir()):
                root.rmdir()
        raise
    summary["durations_s"]["model_load"] = round(loaded - started, 3)
    summary["durations_s"]["total"] = round(time.perf_counter() - started, 3)
    outputs.write_json(run_dir / "summary.json", summary)
    outputs.write_csv(run_dir / "summary.csv", report.csv_rows(summary))
    for line in report.console_lines(summary):
        opts.log(line)
    return summary


def _explain_all(cfg, model, layers, device, refs, notes, run_dir: Path, opts: RunOptions) -> dict:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    names = class_names(cfg)
    named = sorted(names)
    targets = cfg.target_classes()
    target_ids = None if targets is None else [cfg.classes[t] for t in targets]
    slots = 1 if target_ids is None else len(target_ids)
    methods = [m.name for m in cfg.methods]

    summary = {
        "name": cfg.run_name, "config_file": str(cfg.source), "output_dir": str(run_dir),
        "device": str(device), "config": cfg.model_dump(mode="json"), "versions": report.versions(),
        "images": [], "skipped_images": [], "notes": list(notes),
        "counts": {"images": 0, "maps": 0}, "durations_s": {"cams": 0.0, "figures": 0.0},
    }
    comparison = _comparison(cfg, run_dir, summary)
    entries = _finished_items(run_dir, comparison) if opts.resume else {}
    todo = [r for r in refs if r.id not in entries]
    if opts.resume:
        summary["notes"].append(f"resumed: {len(entries)} image(s) kept from the interrupted run, "
                                f"{len(todo)} computed now")
    probe = None
    if cfg.channels.enabled:
        probe = find_layer(model, cfg.channels.layer or cfg.target_layers[0], "channels.layer")
        no_grid = [m for m in methods if m not in reference.METHODS]
        if no_grid:
            summary["notes"].append(f"channels: no contribution grids for {', '.join(no_grid)} "
                                    f"(only {', '.join(reference.METHODS)} are channel sums)")
    engine = CamEngine(model, layers, cfg.methods, device, layer_names=list(cfg.target_layers),
                       probe_layer=probe, check_outputs=lambda n: _check_classes(cfg, n),
                       aug_smooth=cfg.aug_smooth, eigen_smooth=cfg.eigen_smooth,
                       guard_inplace=cfg.model.fix_inplace, seed=cfg.seed)
    bar = tqdm(total=len(todo) * slots * len(methods), unit="map", desc="CAMs",
               disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)
    with engine, bar:
        if cfg.model.fix_inplace:
            summary["notes"].append(
                f"inplace guard on: {engine.inplace_switched} inplace module(s) made non-inplace "
                f"for the run and hooked activations copied, so CAMs use the layer's true output")
        else:
            summary["notes"].append("inplace guard OFF (model.fix_inplace: false): an inplace op "
                                    "after a target layer can corrupt its stored activations")
        for chunk in batches(todo, cfg.batch_size):
            for group in group_by_shape(_prepare_chunk(chunk, cfg, summary, opts)):
                t0 = time.perf_counter()
                x = torch.stack([item.tensor for item in group])
                result = engine.run(x, target_ids, named)
                t1 = time.perf_counter()
                done = [_write_image(cfg, names, methods, item, b, result, run_dir)
                        for b, item in enumerate(group)]
                if comparison is not None:
                    _compare_group(comparison, cfg, model, layers, names, x, group, result)
                for entry in done:  # last: an item file means all of that image's files are there
                    entries[entry["id"]] = entry
                    rows = [r for r in comparison.rows if r["image"] == entry["id"]] if comparison else []
                    outputs.write_json(run_dir / "items" / f"{entry['id']}.json",
                                       {"entry": entry, "compare": rows})
                summary["durations_s"]["cams"] += t1 - t0
                summary["durations_s"]["figures"] += time.perf_counter() - t1
                bar.update(len(group) * slots * len(methods))
    summary["images"] = [entries[r.id] for r in refs if r.id in entries]
    t0 = time.perf_counter()
    _write_panels(cfg, summary["images"], methods, run_dir)
    summary["durations_s"]["figures"] += time.perf_counter() - t0
    if comparison is not None:
        summary["compare"] = comparison.finish()
    summary["counts"] = {"images": len(summary["images"]),
                         "maps": sum(len(i["cams"]) for i in summary["images"])}
    for key in ("cams", "figures"):
        summary["durations_s"][key] = round(summary["durations_s"][key], 3)
    return summary


def _comparison(cfg: Config, run_dir: Path, summary: dict) -> Optional[Comparison]:
    if not cfg.compare.enabled:
        return None
    ref_dir = cfg.resolve(cfg.compare.reference_dir) if cfg.compare.reference_dir else None
    if ref_dir is None:
        if len(cfg.target_layers) > 1:
            raise ExplainError("compare: hand-written references cover one target layer; "
                               "list one in target_layers or set compare.reference_dir")
        skipped = [m.name for m in cfg.methods if m.name not in reference.METHODS]
        if skipped:
            summary["notes"].append(f"compare: no hand-written reference for {', '.join(skipped)}")
    return Comparison(run_dir, cfg.compare.tolerance, ref_dir)


def _compare_group(comparison: Comparison, cfg, model, layers, names, x, group, result) -> None:
    size = (x.shape[-2], x.shape[-1])
    for s in range(result.classes.shape[1]):
        classes = [int(c) for c in result.classes[:, s]]
        handwritten = {}
        if comparison.reference_dir is None:
            wanted = [m for m in result.maps if m in reference.METHODS]
            if wanted:
                acts, grads = reference.capture(model, layers[0], x, classes)
                handwritten = {m: reference.reference_cam(m, acts, grads, size) for m in wanted}
        for b, item in enumerate(group):
            for method, maps in result.maps.items():
                ref = comparison.reference_for(item.ref.id, names[classes[b]], method, size,
                                               {m: v[b] for m, v in handwritten.items()})
                if ref is not None:
                    comparison.add(item.ref.id, names[classes[b]], method, maps[b, s], ref)


def _prepare_chunk(chunk, cfg: Config, summary: dict, opts: RunOptions) -> list[Prepared]:
    ready = []
    for ref in chunk:
        try:
            ready.append(prepare(ref, cfg.preprocess))
        except ImageError as exc:
            if not ref.from_folder:
                raise
            opts.log(f"warning: skipped {exc}")
            summary["skipped_images"].append({"path": str(ref.path), "reason": str(exc)})
    return ready


def _check_classes(cfg: Config, outputs_n: int) -> None:
    for name, idx in cfg.classes.items():
        if idx >= outputs_n:
            raise ExplainError(f"classes.{name}: index {idx}, but the model has only "
                               f"{outputs_n} outputs (0..{outputs_n - 1})")


def _write_image(cfg, names, methods, item: Prepared, b: int, result: BatchResult,
                 run_dir: Path) -> dict:
    probs = report.softmax(result.logits[b])
    named = {names[i]: round(float(probs[i]), 6) for i in sorted(names)}
    entry = {"id": item.ref.id, "path": str(item.ref.path),
             "input_size": [int(item.rgb.shape[0]), int(item.rgb.shape[1])],
             "probabilities": named, "predicted": max(named, key=named.get), "cams": []}
    if result.probe is not None:
        acts = result.probe.activations[b]
        outputs.write_png(run_dir / "channels" / f"{item.ref.id}__activations.png",
                          _grid(cfg, acts, item.rgb))
        if cfg.output.save_arrays:
            outputs.write_npy(run_dir / "channels" / f"{item.ref.id}__activations.npy", acts)
    for s, cls in enumerate(result.classes[b]):
        cls_name = names[int(cls)]
        for method in methods:
            cam = result.maps[method][b, s].astype(np.float32)
            stem = f"{item.ref.id}__{cls_name}"
            picture = render.overlay(item.rgb, cam, cfg.output.colormap, cfg.output.image_weight)
            outputs.write_png(run_dir / "cams" / method / f"{stem}.png", picture)
            if cfg.output.save_arrays:
                outputs.write_npy(run_dir / "cams" / method / f"{stem}.npy", cam)
            entry["cams"].append({"class": cls_name, "method": method, **report.map_stats(cam),
                                  "file": f"cams/{method}/{stem}.png"})
        if result.probe is not None:
            _write_channels(cfg, item.ref.id, cls_name, s, b, result, run_dir, entry)
    return entry


def _finished_items(run_dir: Path, comparison: Optional[Comparison]) -> dict[str, dict]:
    """Entries of the images an interrupted run finished (their item file was written last)."""
    import json
    entries = {}
    for path in sorted((run_dir / "items").glob("*.json")):
        item = json.loads(path.read_text())
        entries[item["entry"]["id"]] = item["entry"]
        if comparison is not None:
            comparison.rows += item["compare"]
    return entries


def _write_panels(cfg: Config, images: list[dict], methods: list[str], run_dir: Path) -> None:
    """Per class, the first PANEL_MAX_ROWS images: photo and each method's overlay, read back
    from the files this run wrote (so a resumed run's panels match an uninterrupted one's)."""
    rows: dict[str, list] = {}
    for entry in images:
        wanted = [c for c in dict.fromkeys(c["class"] for c in entry["cams"])
                  if len(rows.setdefault(c, [])) < PANEL_MAX_ROWS]
        if not wanted:
            continue
        rgb = preprocess(read_rgb(Path(entry["path"]), cfg.preprocess.max_pixels), cfg.preprocess)[1]
        photo = _thumb(np.uint8(np.round(rgb * 255)))  # decoded once for all its classes
        for cls_name in wanted:
            overlays = [cv2.cvtColor(cv2.imread(str(run_dir / "cams" / m / f"{entry['id']}__{cls_name}.png")),
                                     cv2.COLOR_BGR2RGB) for m in methods]
            rows[cls_name].append((entry["id"], photo, [_thumb(o) for o in overlays]))
    for cls_name, class_rows in rows.items():
        fig = render.panel(class_rows, methods, f"class '{cls_name}' — {', '.join(methods)} at "
                                                f"{', '.join(cfg.target_layers)}")
        outputs.write_figure(run_dir / "panels" / f"{cls_name}.png", fig)


def _grid(cfg: Config, stack: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    spec = cfg.channels
    return channels.channel_grid(
        stack, shared_scale=spec.shared_scale, tile_size=spec.tile_size,
        colormap=render.colormap_code(spec.colormap) if spec.colormap else None,
        photo=rgb if spec.overlay else None, image_weight=cfg.output.image_weight,
        labels=spec.labels)


def _write_channels(cfg: Config, image: str, cls_name: str, s: int, b: int,
                    result: BatchResult, run_dir: Path, entry: dict) -> None:
    """Contribution grid, per-channel CSV and stats for each method that is a channel sum."""
    acts, grads = result.probe.activations[b], result.probe.gradients[s][b]
    for item in entry["cams"]:
        method = item["method"]
        if item["class"] != cls_name or method not in reference.METHODS:
            continue
        stem = run_dir / "channels" / method / f"{image}__{cls_name}"
        contrib = channels.channel_contributions(method, acts, grads)
        outputs.write_png(stem.with_name(stem.name + "__contributions.png"), _grid(cfg, contrib, None))
        rows, stats = channels.channel_stats(method, acts, grads)
        outputs.write_csv(stem.with_name(stem.name + "__channels.csv"), rows)
        if cfg.output.save_arrays:
            outputs.write_npy(stem.with_name(stem.name + "__contributions.npy"), contrib)
        item["channels"] = stats


def _thumb(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    scale = THUMB / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)

"""One experiment, start to finish: config -> model -> images -> engine -> writers -> summary.

Everything that can fail early is checked before the results folder is touched: the config,
the images, the model file, the layers, and one forward pass (outputs vs class indices,
layers used and shaped as feature maps). Only then is a folder claimed, or, with
``--overwrite``, an earlier run replaced.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tqdm import tqdm

from explain import measures
from explain.config import Config
from explain.engine import CamEngine, EngineOptions
from explain.errors import ExplainError
from explain.images import (ImageError, ImageRef, Prepared, batches, find_images, group_by_shape,
                            precheck, prepare)
from explain.model import find_layer, load_model, pick_device
from explain.outputs import RunFolder, claim_run_dir, open_run_dir
from explain.results import ImageEntry, MapRecord, RunSummary, Skipped, console_lines, read_item, versions
from explain.writers import BatchContext, ImageView, RunContext, default_writers

SETTINGS_FILE = "config.json"  # what the outputs depend on; --resume must match it


@dataclass
class RunOptions:
    out_root: Optional[Path] = None  # overrides output.dir
    overwrite: bool = False
    resume: bool = False  # keep the finished images of results/<name>, compute the rest
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))


def class_names(cfg: Config) -> dict[int, str]:
    """Output index -> class name (names are unique, and so are indices)."""
    return {idx: name for name, idx in cfg.classes.items()}


def settings(cfg: Config) -> dict[str, Any]:
    """The config as it shapes the outputs: everything but the run's name and folder."""
    data = cfg.model_dump(mode="json")
    data.pop("name", None)
    data["output"].pop("dir", None)
    return data


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def check_resumable(run: RunFolder, cfg: Config) -> None:
    """--resume continues only a run of the same settings that has not finished."""
    if (run.root / "summary.json").exists():
        raise ExplainError(f"--resume: {run.root} is already finished (summary.json is there); "
                           f"run without --resume for a new run")
    import json
    try:
        before = _flat(json.loads((run.root / SETTINGS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        raise ExplainError(f"--resume: {run.root / SETTINGS_FILE} is missing or unreadable; "
                           f"cannot tell which settings made that run") from None
    now = _flat(settings(cfg))
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differ:
        shown = ", ".join(differ[:8]) + (f" (+{len(differ) - 8} more)" if len(differ) > 8 else "")
        raise ExplainError(f"--resume: the config differs from the interrupted run's in {shown}; "
                           f"resume with the same config, or start a new run")


def run(cfg: Config, opts: Optional[RunOptions] = None) -> RunSummary:
    """Run the experiment and write the results folder; returns the summary it wrote."""
    opts = opts or RunOptions()
    started = time.perf_counter()
    refs, notes = find_images(cfg)
    model = load_model(cfg)
    layers = [find_layer(model, name, f"target_layers[{i}]") for i, name in enumerate(cfg.target_layers)]
    probe = find_layer(model, cfg.channels.layer or cfg.target_layers[0], "channels.layer") \
        if cfg.channels.enabled else None
    device = pick_device(cfg.device)
    engine = CamEngine(model, layers, cfg.methods, device, EngineOptions(
        layer_names=list(cfg.target_layers), probe_layer=probe, aug_smooth=cfg.aug_smooth,
        eigen_smooth=cfg.eigen_smooth, guard_inplace=cfg.model.fix_inplace, seed=cfg.seed))
    root = opts.out_root or cfg.resolve(cfg.output.dir)
    root_existed = root.exists()
    with engine:
        _preflight(cfg, engine, refs)
        if opts.resume:
            run_dir = open_run_dir(root, cfg.run_name)
            check_resumable(run_dir, cfg)
        else:
            run_dir = claim_run_dir(root, cfg.run_name, opts.overwrite)
            run_dir.write_json(SETTINGS_FILE, settings(cfg))
        summary = RunSummary(name=cfg.run_name, config_file=str(cfg.source), output_dir=str(run_dir.root),
                             device=str(device), config=cfg.model_dump(mode="json"),
                             versions=versions(), notes=list(notes))
        summary.durations_s["model_load"] = round(time.perf_counter() - started, 3)
        ctx = RunContext(cfg=cfg, run=run_dir, classes=class_names(cfg),
                         methods=[m.name for m in cfg.methods], summary=summary, model=model,
                         layers=layers, image_order=[r.id for r in refs], started=started,
                         log=opts.log)
        try:
            _explain_all(ctx, engine, refs, opts)
        except (ExplainError, OSError):
            if not opts.resume:  # a user error or a full disk: leave nothing half-done behind
                shutil.rmtree(run_dir.root, ignore_errors=True)
                if not root_existed and not any(root.iterdir()):
                    root.rmdir()
            raise
    for line in console_lines(summary):
        opts.log(line)
    return summary


def _preflight(cfg: Config, engine: CamEngine, refs: list[ImageRef]) -> None:
    """Every image the user named passes the checks that need no decoding; then one forward
    pass on the first usable image: layers used and shaped right, outputs vs class indices."""
    for ref in refs:
        if not ref.from_folder:
            precheck(ref, cfg.preprocess)
    for ref in refs:
        try:
            first = prepare(ref, cfg.preprocess)
        except ImageError:
            if not ref.from_folder:
                raise
            continue  # reported when the batch loop meets it
        try:
            outputs = engine.outputs(first.tensor[None])
        except ExplainError:
            raise
        except Exception as exc:  # the model's own code failed: say where, in one line
            text = str(exc).strip().splitlines()
            raise ExplainError(f"model: the forward pass failed on {ref.id} "
                               f"({type(exc).__name__}: {text[0][:150] if text else ''})") from None
        for name, idx in cfg.classes.items():
            if idx >= outputs:
                raise ExplainError(f"classes.{name}: index {idx}, but the model has only "
                                   f"{outputs} outputs (0..{outputs - 1})")
        return


def _explain_all(ctx: RunContext, engine: CamEngine, refs: list[ImageRef],
                 opts: RunOptions) -> None:
    cfg, summary = ctx.cfg, ctx.summary
    writers = default_writers(cfg)
    entries = _kept_items(ctx) if opts.resume else {}
    todo = [r for r in refs if r.id not in entries]
    if opts.resume:
        summary.notes.append(f"resumed: {len(entries)} image(s) kept from the interrupted run, "
                             f"{len(todo)} computed now")
    summary.notes.append(
        f"inplace guard on: {engine.inplace_switched} inplace module(s) made non-inplace for the "
        f"run and hooked activations copied, so CAMs use the layer's true output"
        if cfg.model.fix_inplace else
        "inplace guard OFF (model.fix_inplace: false): an inplace op after a target layer can "
        "corrupt its stored activations")
    for writer in writers:
        writer.start(ctx)
    targets = cfg.target_classes()
    target_ids = None if targets is None else [cfg.classes[t] for t in targets]
    slots = 1 if target_ids is None else len(target_ids)
    bar = tqdm(total=len(todo) * slots * len(ctx.methods), unit="map", desc="CAMs",
               disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)
    with bar:
        for chunk in batches(todo, cfg.batch_size):
            for group in group_by_shape(_prepare_chunk(chunk, ctx, opts)):
                batch = _explain_batch(ctx, engine, group, target_ids)
                t0 = time.perf_counter()
                for writer in writers:
                    writer.write(ctx, batch)
                for view in batch.images:  # last: an item file means all the image's files exist
                    entries[view.entry.id] = view.entry
                    ctx.run.write_json(f"items/{view.entry.id}.json", {
                        "entry": view.entry.dump(),
                        "compare": [r.dump() for r in ctx.compare_rows.get(view.entry.id, [])]})
                summary.durations_s["figures"] += time.perf_counter() - t0
                bar.update(len(group) * slots * len(ctx.methods))
    summary.images = [entries[r.id] for r in refs if r.id in entries]
    for writer in writers:
        writer.finish(ctx)


def _explain_batch(ctx: RunContext, engine: CamEngine, group: list[Prepared],
                   target_ids: Optional[list[int]]) -> BatchContext:
    """Run the engine on images of one shape and make each image's entry and map records."""
    import torch
    t0 = time.perf_counter()
    x = torch.stack([item.tensor for item in group])
    result = engine.run(x, target_ids, sorted(ctx.classes))
    ctx.summary.durations_s["cams"] += time.perf_counter() - t0
    views = []
    for b, item in enumerate(group):
        probs = measures.softmax(result.logits[b])
        named = {ctx.classes[i]: round(float(probs[i]), 6) for i in sorted(ctx.classes)}
        entry = ImageEntry(id=item.ref.id, path=str(item.ref.path),
                           input_size=[int(item.rgb.shape[0]), int(item.rgb.shape[1])],
                           probabilities=named, predicted=max(named, key=named.get))
        for s, cls_index in enumerate(result.classes[b]):
            cls = ctx.classes[int(cls_index)]
            for method in ctx.methods:
                cam = result.maps[method][b, s]
                entry.cams.append(MapRecord(class_name=cls, method=method,
                                            file=f"cams/{method}/{item.ref.id}__{cls}.png",
                                            **measures.map_stats(cam)))
        views.append(ImageView(item, entry, b))
    return BatchContext(x, result, views)


def _kept_items(ctx: RunContext) -> dict[str, ImageEntry]:
    """Entries of the images an interrupted run finished (their item file was written last)."""
    kept = {}
    for path in sorted((ctx.run.root / "items").glob("*.json")):
        item = read_item(path)
        kept[item.entry.id] = item.entry
        if item.compare:
            ctx.compare_rows[item.entry.id] = list(item.compare)
    return kept


def _prepare_chunk(chunk: list[ImageRef], ctx: RunContext, opts: RunOptions) -> list[Prepared]:
    ready = []
    for ref in chunk:
        try:
            ready.append(prepare(ref, ctx.cfg.preprocess))
        except ImageError as exc:
            if not ref.from_folder:
                raise
            opts.log(f"warning: skipped {exc}")
            ctx.summary.skipped_images.append(Skipped(path=str(ref.path), reason=str(exc)))
    return ready

"""One experiment, start to finish: config -> model -> images -> engine -> writers -> summary.

Everything that can fail early is checked before the results folder is touched: the config,
the images, the model file, the layers, one forward pass (outputs vs class indices, layers
used and shaped as feature maps) and the writers' own inputs (annotation boxes against their
images, reference maps: ``Writer.prepare``). Only then is a folder claimed and locked, or,
with ``--overwrite``, an earlier run replaced (never one a live run holds). Under torchrun every rank runs these checks, a failure
on one stops them all, rank 0 claims the folder, each rank explains its share of the images and
rank 0 finishes the run from every rank's item files (explain.distributed).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import ValidationError
from tqdm import tqdm

from explain import distributed, measures
from explain.config import (LAYER, MAX_CLASSES, TARGET_WORDS, Config, Reshape,
                            explain_validation)
from explain.engine import CamEngine, EngineOptions
from explain.errors import ExplainError, first_line
from explain.heads import Classifier, Head
from explain.images import (ImageError, ImageRef, Prepared, batches, find_images, group_by_shape,
                            precheck, prepare)
from explain.layers import auto_layer, find_layer, survey
from explain.layouts import LayoutError, TokenSpec, infer_layout
from explain.model import class_names_from_model, load_model, pick_device
from explain.names import quote
from explain.outputs import RunFolder, claim_run_dir, open_run_dir, same_settings
from explain.pipeline import FilePool, QueuedWrites, default_workers, prefetch
from explain.results import (ImageEntry, MapRecord, RunSummary, Skipped, console_lines,
                             kept_entries, versions)
from explain.writers import BatchContext, ImageView, RunContext, default_writers

SETTINGS_FILE = "config.json"  # what the outputs depend on; --resume must match it
MANY_CLASSES = 20  # more named classes than this: an image lists only its top probabilities
TOP_PROBABILITIES = 5


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
    data.pop("workers", None)  # how fast, not what
    data["output"].pop("dir", None)
    return data


def check_resumable(run: RunFolder, cfg: Config) -> None:
    """--resume continues only a run of the same settings that has not finished."""
    same_settings(run, SETTINGS_FILE, settings(cfg))


def reshape_mode(cfg: Config, net: Any = None):
    """The config's reshape setting as explain.layouts takes it; 'auto' on a model whose maps
    are all channels-last (a Keras model: its ``explain_reshape``) becomes 'nhwc'."""
    spec = cfg.reshape
    if spec == "auto":
        return getattr(net, "explain_reshape", "auto")
    return TokenSpec(spec.prefix, spec.grid) if isinstance(spec, Reshape) else spec


def run(cfg: Config, opts: Optional[RunOptions] = None) -> RunSummary:
    """Run the experiment and write the results folder; returns the summary it wrote. Under
    torchrun each process explains its share of the images and rank 0 finishes the run
    (explain.distributed); the other ranks return their unfinished part of the summary."""
    ranks = distributed.join(cfg.device)
    try:
        return _run(cfg, opts or RunOptions(), ranks)
    finally:
        ranks.close()


def _run(cfg: Config, opts: RunOptions, ranks: distributed.Ranks) -> RunSummary:
    """``run`` on one rank (the only one without torchrun)."""
    started = time.perf_counter()
    cfg = cfg.model_copy(deep=True)  # layer and class names get resolved into it
    if not ranks.lead:  # logs and the progress bar are rank 0's
        opts = replace(opts, log=_silent, progress=False)
    with ranks.together():  # every rank checks everything before anything is written
        refs, notes = find_images(cfg)
        slot_targets(cfg, refs)  # every image has what its targets need (a label)
        net = load_model(cfg)
        notes.extend(getattr(net, "explain_notes", ()))  # a Keras model: softmax taken off
        model, head = Classifier(net, cfg.model.output), Head(cfg.model.head, cfg.model.target)
        first = first_image(cfg, refs)
        layers = _target_layers(cfg, (net, model, head), first, notes)
        probe = find_layer(net, cfg.channels.layer or cfg.target_layers[0], "channels.layer")[1] \
            if cfg.channels.enabled else None
        concept = find_layer(net, cfg.concepts.layer or cfg.target_layers[0], "concepts.layer")[1] \
            if cfg.concepts.enabled else None
        device = ranks.device(pick_device(cfg.device))
        engine = CamEngine(model, layers, cfg.methods, device, EngineOptions(
            layer_names=list(cfg.target_layers), probe_layer=probe, aug_smooth=cfg.aug_smooth,
            eigen_smooth=cfg.eigen_smooth, guard_inplace=cfg.model.fix_inplace, seed=cfg.seed,
            head=head, reshape=reshape_mode(cfg, net)))
    ranks.same("images", [r.id for r in refs])  # so that the ranks' shares fit together
    root = opts.out_root or cfg.resolve(cfg.output.dir)
    root_existed = root.exists()
    with engine:
        with ranks.together():
            outputs = _preflight(cfg, engine, first)
            _classes(cfg, net, head.classes(outputs), notes)
            writers = default_writers(cfg)
            for writer in writers:  # annotations, reference maps: read and checked before
                writer.prepare(cfg, refs)  # --overwrite deletes anything
        run_dir = ranks.share_folder(lambda: _claim(cfg, root, opts))
        try:
            summary = RunSummary(name=cfg.run_name, config_file=str(cfg.source),
                                 output_dir=str(run_dir.root), device=str(device),
                                 config=cfg.model_dump(mode="json"), versions=versions(),
                                 notes=list(notes))
            summary.durations_s["model_load"] = round(time.perf_counter() - started, 3)
            ctx = RunContext(cfg=cfg, run=run_dir, classes=class_names(cfg),
                             methods=[m.name for m in cfg.methods], summary=summary, model=model,
                             layers=layers, image_order=[r.id for r in refs], started=started,
                             log=opts.log, head=head, layouts=engine.layouts[:len(layers)],
                             net=net, sources={r.id: r for r in refs})
            if concept is not None:
                ctx.concept_layer = (concept, _layout_of(engine, concept, first, cfg))
            _explain_all(ctx, engine, refs, opts, ranks, writers=writers)
        except Exception:  # anything but an interrupt: a half-done folder is not kept
            _failed(run_dir, root if not root_existed else None, opts, ranks)
            raise
        finally:
            run_dir.release()
    if ranks.lead:
        for line in console_lines(summary):
            opts.log(line)
    return summary


def _failed(run_dir: RunFolder, new_root: Optional[Path], opts: RunOptions,
            ranks: distributed.Ranks) -> None:
    """A failed run's folder: other ranks' finished images are kept (for --resume); else,
    unless resumed, the half-done folder goes (and the results folder the run made)."""
    kept = ranks.world > 1 and any((run_dir.root / "items").glob("*.json"))
    if kept and ranks.lead:  # other ranks' finished images: too much work to throw away
        opts.log(f"explain: the finished images are kept in {run_dir.root}; add --resume "
                 f"to complete the run")
    elif not opts.resume and ranks.lead:  # a user error or a full disk: leave nothing
        shutil.rmtree(run_dir.root, ignore_errors=True)  # half-done behind
        if new_root is not None and new_root.is_dir() and not any(new_root.iterdir()):
            new_root.rmdir()


def _silent(line: str) -> None:
    """The log of ranks other than 0."""


def _claim(cfg: Config, root: Path, opts: RunOptions) -> RunFolder:
    """The run folder: claimed (config.json written first) or, with --resume, reopened."""
    if opts.resume:
        run_dir = open_run_dir(root, cfg.run_name)
    else:
        run_dir = claim_run_dir(root, cfg.run_name, opts.overwrite)
    try:
        if opts.resume:
            check_resumable(run_dir, cfg)
        else:
            run_dir.write_json(SETTINGS_FILE, settings(cfg))
    except BaseException:
        run_dir.release()
        raise
    return run_dir


def first_image(cfg: Config, refs: list[ImageRef]) -> Optional[Prepared]:
    """Every image the user named passes the checks that need no decoding; returns the first
    image that decodes (for the dry forward passes), None when none does."""
    for ref in refs:
        if not ref.from_folder:
            precheck(ref, cfg.preprocess)
    for ref in refs:
        try:
            return prepare(ref, cfg.preprocess)
        except ImageError:
            if not ref.from_folder:
                raise
    return None  # every listed file is broken: each is reported when the batch loop meets it


def _model_failed(exc: Exception, image: str) -> ExplainError:
    return ExplainError(f"model: the forward pass failed on {image} "
                        f"({type(exc).__name__}: {first_line(exc)})")


def _target_layers(cfg: Config, parts: tuple, first: Optional[Prepared],
                   notes: list[str]) -> list:
    """The target layer modules; names are recorded as resolved ('auto' and negative indexes
    become the module's dotted name)."""
    net, model, head = parts

    def looked_at() -> list:
        if first is None:
            raise ExplainError("target_layers: auto needs one readable image to look at the "
                               "layers' outputs")
        try:
            return survey(net, model, first.tensor[None], head, mode=reshape_mode(cfg, net))
        except ExplainError:
            raise
        except Exception as exc:  # the model's own code failed
            raise _model_failed(exc, first.ref.id) from None

    if cfg.target_layers == ["auto"]:
        chosen = auto_layer(looked_at())
        _set_layers(cfg, [chosen.name], "auto chose")
        notes.append(f"target_layers: auto chose '{chosen.name}' ({chosen.type}, output "
                     f"{chosen.output}), the last layer before the head a CAM can use")
    try:
        found = [find_layer(net, name, f"target_layers[{i}]")
                 for i, name in enumerate(cfg.target_layers)]
    except ExplainError:  # a name that is not there: look at the layers for a better hint
        rows = looked_at() if first is not None else None
        found = [find_layer(net, name, f"target_layers[{i}]", rows)
                 for i, name in enumerate(cfg.target_layers)]
    for given, (name, _) in zip(list(cfg.target_layers), found):
        if given != name:
            notes.append(f"target_layers: '{given}' is '{name}'")
    _set_layers(cfg, [name for name, _ in found], "resolves to")
    return [module for _, module in found]


def _set_layers(cfg: Config, names: list[str], how: str) -> None:
    """Record the resolved layer names in the config; a module name that is not a layer name
    explain can record (letters, digits, '_', '.', '-') is one line."""
    try:
        cfg.target_layers = names
    except ValidationError:
        bad = next((n for n in names if not LAYER.fullmatch(n) or len(n) > 200), names[0])
        raise ExplainError(f"target_layers: {how} the layer {quote(bad, 80)}, whose name explain "
                           f"cannot record (letters, digits, '_', '.' and '-' only, at most 200); "
                           f"rename that module in the model or pick another layer") from None


def _layout_of(engine: CamEngine, module, first: Optional[Prepared], cfg: Config):
    """The layout of a layer that is not hooked by the engine (the concepts layer)."""
    for layer, layout in zip(engine.hooked, engine.layouts):
        if layer is module:
            return layout
    import torch
    seen: dict[str, tuple] = {}

    def keep_shape(module, inputs, output) -> None:  # returns nothing: the output stays as is
        if isinstance(output, torch.Tensor):
            seen.setdefault("shape", tuple(output.shape))
    handle = module.register_forward_hook(keep_shape)
    try:
        with torch.no_grad():
            engine.model(first.tensor[None].to(engine.device))
    finally:
        handle.remove()
    if "shape" not in seen:
        raise ExplainError("concepts.layer: the layer gives no tensor in the forward pass; "
                           "pick one with a feature map (explain layers CONFIG)")
    try:
        return infer_layout(seen["shape"], first.tensor.shape[-2:], engine.options.reshape)
    except LayoutError as exc:
        raise ExplainError(f"concepts.layer: {exc}") from None


def _preflight(cfg: Config, engine: CamEngine, first: Optional[Prepared]) -> int:
    """One forward pass on the first usable image: layers used and shaped right, outputs vs
    head and class indices. Returns the number of logits (0 when no image is readable)."""
    if first is None:
        return 0
    try:
        outputs = engine.outputs(first.tensor[None])
    except ExplainError:
        raise
    except Exception as exc:  # the model's own code failed: say where, in one line
        raise _model_failed(exc, first.ref.id) from None
    count = engine.head.classes(outputs)
    for name, idx in cfg.classes.items():
        if idx >= count:
            raise ExplainError(f"classes.{name}: index {idx}, but the model has only "
                               f"{count} outputs (0..{count - 1})")
    return outputs


def _classes(cfg: Config, net, count: int, notes: list[str]) -> None:
    """Without ``classes`` in the config, the names the model carries."""
    if cfg.classes:
        return
    found = class_names_from_model(net, cfg.model, count) if count else None
    if found is None:
        raise ExplainError("classes: not given and the model carries no class names; name "
                           "them, e.g. classes: {cat: 0, dog: 1}")
    names, source = found
    if cfg.targets == "all" and len(names) > MANY_CLASSES:
        raise ExplainError(f"targets: 'all' would explain all {len(names)} classes of the model "
                           f"for every image; use targets: predicted, top3, or name the classes")
    if len(names) > MAX_CLASSES:
        raise ExplainError(f"classes: the model names {len(names)} classes, more than "
                           f"{MAX_CLASSES}; name the ones to explain in the config")
    try:
        cfg.classes = names
    except ValidationError as err:
        raise explain_validation(err, "classes from the model") from None
    notes.append(f"classes: {len(names)} names from {source}")


def _explain_all(ctx: RunContext, engine: CamEngine, refs: list[ImageRef],
                 opts: RunOptions, ranks: distributed.Ranks, *, writers: list) -> None:
    cfg, summary = ctx.cfg, ctx.summary
    with ranks.together():  # every rank reads the kept items before any rank writes new ones
        entries = _kept_items(ctx) if opts.resume else {}
    todo = [r for r in refs if r.id not in entries]
    if opts.resume:
        summary.notes.append(f"resumed: {len(entries)} image(s) kept from the interrupted run, "
                             f"{len(todo)} computed now")
    todo, targets = ranks.shard(todo), cfg.target_classes()  # under torchrun: this rank's share
    summary.notes.append(
        f"inplace guard on: {engine.inplace_switched} inplace module(s) made non-inplace for the "
        f"run and hooked activations copied, so CAMs use the layer's true output"
        if cfg.model.fix_inplace else
        "inplace guard OFF (model.fix_inplace: false): an inplace op after a target layer can "
        "corrupt its stored activations")
    with ranks.together():  # e.g. a box file that one node cannot read stops every rank
        for writer in writers:
            writer.start(ctx)
    distributed.drop_kept(ranks, writers)
    slots = min(cfg.top_k(), len(cfg.classes)) if targets is None else len(targets)
    bar = tqdm(total=len(todo) * slots * len(ctx.methods), unit="map",
               desc="CAMs" if ranks.world == 1 else f"CAMs (rank 0 of {ranks.world})",
               disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)
    workers = default_workers() if cfg.workers is None else cfg.workers
    pool, folder = FilePool(workers), ctx.run
    if workers:
        ctx.run = QueuedWrites(folder, pool)  # pictures are encoded and written behind the model
    chunks = batches(todo, cfg.batch_size)
    try:
        with bar, ranks.together(patient=True):  # every rank's share done, or every rank stops
            for chunk in prefetch(chunks, lambda ref: _read(ref, cfg), workers):
                for group in group_by_shape(_usable(chunk, ctx, opts)):
                    batch = _explain_batch(ctx, engine, group)
                    t0 = time.perf_counter()
                    for writer in writers:
                        writer.write(ctx, batch)
                    for view in batch.images:
                        entries[view.entry.id] = view.entry
                        # last: an item file means all the image's files are on disk
                        pool.then(folder.write_bytes, f"items/{view.entry.id}.json",
                                  folder.json_bytes({"entry": view.entry.dump(), "compare": [
                                      r.dump() for r in ctx.compare_rows.get(view.entry.id, [])]}))
                    summary.durations_s["figures"] += time.perf_counter() - t0
                    bar.update(len(group) * slots * len(ctx.methods))
                    ranks.crash_point(settle=pool.drain)
            pool.drain()
    except BaseException:
        pool.close(cancel=True)  # files not started are dropped, so are their item files
        raise
    finally:
        ctx.run = folder
    pool.close()
    if ranks.world > 1:  # rank 0 finishes the run, from every rank's item files and notes
        if not distributed.hand_in(ranks, ctx, writers, [str(r.path) for r in refs]):
            return
        entries = _kept_items(ctx)
    summary.images = [entries[r.id] for r in refs if r.id in entries]
    for writer in writers:
        writer.finish(ctx)


def slot_targets(cfg: Config, refs: list[ImageRef]):
    """What the engine explains for these images: None (each image's top_k classes), a list
    of class indices (the same for every image), or a (B, S) array when a slot depends on the
    image (its label; -1 = its prediction)."""
    import numpy as np
    targets = cfg.target_classes()
    if targets is None:
        return None
    if not any(t in TARGET_WORDS for t in targets):
        return [cfg.classes[t] for t in targets]
    rows = []
    for ref in refs:
        if "label" in targets and ref.label is None:
            raise ExplainError(f"targets: 'label' needs a label for every image; {ref.path} has "
                               f"none (list images as a labelled dataset)")
        rows.append([-1 if t == "predicted" else cfg.classes[ref.label if t == "label" else t]
                     for t in targets])
    return np.asarray(rows, dtype=np.int64)


def _explain_batch(ctx: RunContext, engine: CamEngine, group: list[Prepared]) -> BatchContext:
    """Run the engine on images of one shape and make each image's entry and map records
    (one per class: a class two slots name, as label and prediction, is recorded once)."""
    import torch
    t0 = time.perf_counter()
    x = torch.stack([item.tensor for item in group])
    try:
        result = engine.run(x, slot_targets(ctx.cfg, [item.ref for item in group]),
                            sorted(ctx.classes), ctx.cfg.top_k())
    except ExplainError:
        raise
    except Exception as exc:  # the model's own code failed on this batch: one line
        raise _model_failed(exc, ", ".join(item.ref.id for item in group[:3])) from None
    ctx.summary.durations_s["cams"] += time.perf_counter() - t0
    views = []
    all_probs = ctx.head.probabilities(result.logits)
    for b, item in enumerate(group):
        named = _listed_probabilities(ctx.classes, all_probs[b], result.classes[b])
        best = max(sorted(ctx.classes), key=lambda i: all_probs[b][i])
        entry = ImageEntry(id=item.ref.id, path=str(item.ref.path),
                           input_size=[int(item.rgb.shape[0]), int(item.rgb.shape[1])],
                           probabilities=named, predicted=ctx.classes[best],
                           label=item.ref.label)
        for s, cls_index in enumerate(result.classes[b]):
            cls = ctx.classes[int(cls_index)]
            if cls_index in result.classes[b][:s]:
                continue
            for method in ctx.methods:
                cam = result.maps[method][b, s]
                entry.cams.append(MapRecord(class_name=cls, method=method,
                                            file=f"cams/{method}/{item.ref.id}__{cls}{ctx.ext}",
                                            **measures.map_stats(cam)))
        views.append(ImageView(item, entry, b))
    return BatchContext(x, result, views)


def _listed_probabilities(classes: dict[int, str], probs, explained) -> dict[str, float]:
    """The named classes' probabilities; with many classes, the most likely ones and the
    explained ones only, in class order."""
    keep = sorted(classes)
    if len(keep) > MANY_CLASSES:
        top = sorted(keep, key=lambda i: -probs[i])[:TOP_PROBABILITIES]
        keep = sorted(set(top) | {int(c) for c in explained})
    return {classes[i]: round(float(probs[i]), 6) for i in keep}


def _kept_items(ctx: RunContext) -> dict[str, ImageEntry]:
    """Entries of the images an interrupted run finished, checked against this run (see
    explain.results.kept_entries); their compare rows go to ``ctx.compare_rows``."""
    kept, rows = kept_entries(ctx.run, ctx.sources, (ctx.methods, set(ctx.classes.values())),
                              ctx.ext)
    ctx.compare_rows.update(rows)
    return kept


def _read(ref: ImageRef, cfg: Config) -> tuple[ImageRef, Any]:
    """The image ready for the model, or the ImageError that says why not (in a reader
    thread: the error is handled in order, in the main thread, by _usable)."""
    try:
        return ref, prepare(ref, cfg.preprocess)
    except ImageError as exc:
        return ref, exc


def _usable(chunk: list, ctx: RunContext, opts: RunOptions) -> list[Prepared]:
    """The chunk's decoded images; an unreadable one found in a folder is skipped and listed,
    an unreadable one named in the config stops the run."""
    ready = []
    for ref, item in chunk:
        if isinstance(item, ImageError):
            if not ref.from_folder:
                raise item
            opts.log(f"warning: skipped {item}")
            ctx.summary.skipped_images.append(Skipped(path=str(ref.path), reason=str(item)))
        else:
            ready.append(item)
    return ready

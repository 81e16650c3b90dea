"""One experiment, start to finish: config -> plan -> engine -> writers -> summary.

Everything that can fail early is checked before the results folder is touched: the plan
(explain.plan: config, images, model, layers, one preflight pass) and the writers' own inputs
(annotation boxes against their images, reference maps: ``Writer.prepare``). Only then is a
folder claimed and locked, or, with ``--overwrite``, an earlier run replaced (never one a live
run holds). Then the runner only loops over batches and hands each to the writers. Under
torchrun every rank runs these checks, a failure on one stops them all, rank 0 claims the
folder, each rank explains its share of the images and rank 0 finishes the run from every
rank's item files (explain.distributed).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if importlib.util.find_spec("ipywidgets"):
    from tqdm.auto import tqdm  # a widget in a notebook, text elsewhere
else:  # tqdm.auto in a notebook without ipywidgets warns at every bar, then draws text
    from tqdm import tqdm

from explain import distributed, measures, pace
from explain.config import MANY_CLASSES, Config
from explain.errors import ExplainError, RunInterrupted, model_failed
from explain.images import ImageError, ImageRef, Prepared, batches, group_by_shape, prepare
from explain.images import looks
from explain.names import printable
from explain.outputs import (RunFolder, claim_run_dir, open_run_dir, resume_flags,
                             same_settings)
from explain.pipeline import (FilePool, QueuedWrites, default_workers, finish_workers,
                              prefetch)
from explain.plan import LargerBatches, RunPlan, naming_the_file, planned
from explain.recordfiles import kept_entries
from explain.results import ImageEntry, ItemFile, MapRecord, RunSummary, Skipped, versions
from explain.batches import BatchContext, ImageView
from explain.writers import RunContext
from explain.writers.lineup import default_writers
from explain.writers.summary import console_lines

if TYPE_CHECKING:  # imported with the plan's engine, after torchrun's ranks have joined
    from explain.engine import CamEngine

SETTINGS_FILE = "config.json"  # what the outputs depend on; --resume must match it
TOP_PROBABILITIES = 5  # likeliest classes an image lists in a run of over MANY_CLASSES


def _print(line: str) -> None:
    print(printable(line), file=sys.stderr)


@dataclass
class RunOptions:
    out_root: Optional[Path] = None  # overrides output.dir
    overwrite: bool = False
    resume: bool = False  # keep the finished images of results/<name>, compute the rest
    progress: bool = True
    log: Callable[[str], None] = _print


def settings(cfg: Config) -> dict[str, Any]:
    """The config as it shapes the outputs: everything but the run's name, its folder and
    ``workers`` (how fast, not what)."""
    data = cfg.model_dump(mode="json")
    data.pop("name", None)
    data.pop("workers", None)  # how fast, not what
    data["output"].pop("dir", None)
    return data


def check_resumable(run: RunFolder, cfg: Config) -> None:
    """--resume continues only a run of the same settings that has not finished."""
    same_settings(run, SETTINGS_FILE, settings(cfg))


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
    if not ranks.lead:  # logs and the progress bar are rank 0's
        opts = replace(opts, log=_silent, progress=False)
    root = opts.out_root or cfg.resolve(cfg.output.dir)
    root_existed = root.exists()
    with planned(cfg, ranks) as (plan, engine):
        writers = default_writers(plan.cfg)
        with ranks.together(), naming_the_file(plan.cfg):
            for writer in writers:  # annotations, reference maps: read and checked before
                writer.prepare(plan)  # --overwrite deletes anything
        replaced = opts.overwrite and (root / plan.cfg.run_name).exists()
        run_dir = ranks.share_folder(lambda: _claim(plan.cfg, root, opts))
        try:
            summary = RunSummary(name=plan.cfg.run_name, config_file=str(plan.cfg.source),
                                 output_dir=str(run_dir.root), device=str(plan.device),
                                 config=plan.cfg, versions=versions(),
                                 notes=list(plan.notes), skipped_files=list(plan.skipped))
            summary.durations_s["model_load"] = round(time.perf_counter() - started, 3)
            ctx = RunContext(plan=plan, run=run_dir, summary=summary, started=started,
                             log=opts.log)
            with naming_the_file(plan.cfg):  # 'model: the forward pass failed ...' too
                _explain_all(ctx, engine, opts, ranks, writers=writers)
        except KeyboardInterrupt:  # the folder is kept for --resume
            go_on = _go_on(plan.cfg.run_name, run_dir.root.name, opts.overwrite)
            raise RunInterrupted(_interrupted_line(run_dir, len(plan.images), go_on,
                                                   replaced)) from None
        except Exception:  # anything but an interrupt: a half-done folder is not kept
            _failed(run_dir, root if not root_existed else None, opts, ranks,
                    plan.cfg.run_name)
            raise
        finally:
            run_dir.release()
    try:
        if ranks.lead:
            for line in console_lines(summary):
                opts.log(line)
    except KeyboardInterrupt:
        raise RunInterrupted(f"explain: interrupted; the run is complete in {run_dir.root}") \
            from None
    return summary


def _failed(run_dir: RunFolder, new_root: Optional[Path], opts: RunOptions,
            ranks: distributed.Ranks, name: str) -> None:
    """A failed run's folder: other ranks' finished images are kept (for --resume); else,
    unless resumed, the half-done folder goes (and the results folder the run made).
    ``name``: the config's run name (the folder may be <name>-2)."""
    kept = ranks.world > 1 and any((run_dir.root / "items").glob("*.json"))
    if kept and ranks.lead:  # other ranks' finished images: too much work to throw away
        opts.log(f"explain: the finished images are kept in {run_dir.root}; "
                 f"{_go_on(name, run_dir.root.name, opts.overwrite)} to complete the run")
    elif not opts.resume and ranks.lead:  # a user error or a full disk: leave nothing
        shutil.rmtree(run_dir.root, ignore_errors=True)  # half-done behind
        if new_root is not None and new_root.is_dir() and not any(new_root.iterdir()):
            new_root.rmdir()


def _go_on(name: str, folder: str, overwrite: bool) -> str:
    """How to go on with the run in ``folder`` (the config's run name is ``name``): "run the
    same command with --resume added" (with ``--set name=<folder>`` for <name>-2; a newcomer
    read a bare "add --resume" as "run --resume alone"), or, after --overwrite, which
    --resume excludes, "run it again with --resume instead of --overwrite"."""
    flags = resume_flags(name, folder)
    if overwrite:
        return f"run it again with {flags} instead of --overwrite"
    return GO_ON.format(flags)


GO_ON = "run the same command with {} added"


def _interrupted_line(run_dir: RunFolder, total: int, go_on: str = GO_ON.format("--resume"),
                      replaced: bool = False) -> str:
    """What an interrupted run leaves: its finished images (item files) and how to go on
    (``go_on``, see _go_on); with summary.json written, only the report was left to make
    (``explain report``). ``replaced``: --overwrite deleted an earlier run of that name
    (said when nothing is done)."""
    root = run_dir.root
    if run_dir.has_file("summary.json"):
        return (f"explain: interrupted while the report was written; the results are complete "
                f"in {root}: 'explain report {root}' writes the report again")
    done = sum(f.endswith(".json") for f in run_dir.file_names("items"))
    if not done:
        gone = " (--overwrite had deleted the earlier run)" if replaced else ""
        other = ", or --overwrite" if go_on == GO_ON.format("--resume") else ""
        return (f"explain: interrupted before the first image was finished{gone}; {go_on} "
                f"to start again in {root}{other}")
    return (f"explain: interrupted; {done} of {total} images are finished in {root}: "
            f"{go_on} to complete the run")


def _silent(line: str) -> None:
    """The log of ranks other than 0."""


def _claim(cfg: Config, root: Path, opts: RunOptions) -> RunFolder:
    """The run folder: claimed (config.json written first) or, with --resume, reopened. After
    Ctrl-C meanwhile no new folder is left, and the line says if --overwrite had already
    deleted the earlier run."""
    had_earlier = opts.overwrite and (root / cfg.run_name).exists()
    try:
        return _claimed(cfg, root, opts)
    except RunInterrupted:  # while --overwrite deleted the earlier run: its own line
        raise
    except KeyboardInterrupt:
        gone = had_earlier and not (root / cfg.run_name).exists()
        raise RunInterrupted("explain: interrupted before the run started; nothing was written"
                             + (", and --overwrite had deleted the earlier run" if gone else "")
                             ) from None


def _claimed(cfg: Config, root: Path, opts: RunOptions) -> RunFolder:
    if opts.resume:
        run_dir = open_run_dir(root, cfg.run_name)
    else:
        run_dir = claim_run_dir(root, cfg.run_name, opts.overwrite)
    try:
        if opts.resume:
            check_resumable(run_dir, cfg)
        else:
            run_dir.write_json(SETTINGS_FILE, settings(cfg))
    except BaseException:  # a new folder that holds no settings yet is not left behind
        run_dir.release()
        if not opts.resume:
            shutil.rmtree(run_dir.root, ignore_errors=True)
        raise
    return run_dir


def _explain_all(ctx: RunContext, engine: CamEngine, opts: RunOptions,
                 ranks: distributed.Ranks, *, writers: list) -> None:
    plan, summary = ctx.plan, ctx.summary
    with ranks.together():  # every rank reads the kept items before any rank writes new ones
        entries = _kept_items(ctx) if opts.resume else {}
    todo = [r for r in plan.images if r.id not in entries]
    if opts.resume:
        summary.notes.append(f"resumed: {len(entries)} image(s) kept from the interrupted run, "
                             f"{len(todo)} computed now")
    ctx.todo = len(todo)  # what the estimates count: the run's images (every rank's)
    chunks = rank_batches(list(plan.images), set(entries), plan.cfg.batch_size, ranks)
    todo = [ref for chunk in chunks for ref in chunk]  # under torchrun: this rank's share
    _starting(ctx, engine, ranks)
    with ranks.together():  # e.g. a box file that one node cannot read stops every rank
        for writer in writers:
            writer.start(ctx)
    distributed.drop_kept(ranks, writers)
    bar = _progress(len(todo), ctx, ranks, opts)
    workers = default_workers() if plan.cfg.workers is None else plan.cfg.workers
    bound = LargerBatches(plan)  # a later photo larger than the first: bounded before its pass
    pool, folder = FilePool(workers), ctx.run
    if workers:
        ctx.run = QueuedWrites(folder, pool)  # pictures are encoded and written behind the model
    try:
        with bar, ranks.together(patient=True):  # every rank's share done, or every rank stops
            for chunk in prefetch(chunks, lambda ref: _read(ref, plan), workers):
                for group in group_by_shape(_usable(chunk, ctx, opts)):
                    bound.check(group)
                    batch = (plan.task.explain_batch if plan.task else _explain_batch)(
                        ctx, engine, group)
                    t0 = time.perf_counter()
                    for writer in writers:
                        writer.write(ctx, batch)
                    for view in batch.images:
                        entries[view.entry.id] = view.entry
                        # last: an item file means all the image's files are on disk
                        pool.then(folder.write_bytes, f"items/{view.entry.id}.json",
                                  _item_bytes(ctx, folder, view.entry))
                    summary.durations_s["figures"] += time.perf_counter() - t0
                    bar.set_postfix_str("", refresh=False)
                    _advance(bar, batch.images, plan.task is None)
                    ranks.crash_point(settle=pool.drain)
            pool.drain()
            if bar.n < bar.total:  # images skipped (unreadable), fewer boxes than max_boxes
                bar.total = bar.n
                bar.refresh()
        for method, seconds in engine.seconds.items():  # beside the estimate (estimates_s)
            summary.durations_s[f"method_{method}"] = round(seconds, 3)
    except BaseException:
        pool.close()  # the few queued files still land (a bounded queue): --resume keeps them
        raise
    finally:
        ctx.run = folder
    pool.close()
    if ranks.world > 1:  # rank 0 finishes the run, from every rank's item files and notes
        if not distributed.hand_in(ranks, ctx, writers, [str(r.path) for r in plan.images]):
            return
        entries = _kept_items(ctx)
    summary.images = [entries[r.id] for r in plan.images if r.id in entries]
    _finish(ctx, writers, finish_workers(workers))


def rank_batches(images: list[ImageRef], kept: set[str], size: int,
                 ranks: distributed.Ranks) -> list[list[ImageRef]]:
    """This rank's batches: the run's batches of ``size`` in config order, as one process
    makes them, less the images ``kept`` (ids) by --resume, dealt out like cards. Batches,
    not images, are dealt and cut: a map's last float bits can depend on the other images
    of its pass, so each image keeps the batch an uninterrupted one-process run gives it."""
    left = [[r for r in chunk if r.id not in kept] for chunk in batches(images, size)]
    return ranks.shard([chunk for chunk in left if chunk])


def _progress(images: int, ctx: RunContext, ranks: Any, opts: RunOptions) -> tqdm:
    """The bar over image x class x method: a classifier's every slot counts at first, and
    a batch lowers the total by the slots its images left empty (an image's label is its
    prediction: one map serves both), so the bar ends at the maps made; a task's over
    images (its maps per image vary with the detections or the classes present: a bar of
    image x class x method overran its total). The rate counts the pictures and numbers
    made beside the maps. ``ctx.stage`` shows the step under way beside it."""
    plan = ctx.plan
    per_image = 1 if plan.task else plan.slots * len(plan.methods)
    bar = tqdm(total=images * per_image, unit="image" if plan.task else "map",
               desc="CAMs" if ranks.world == 1 else f"CAMs (rank 0 of {ranks.world})",
               disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)
    bar.per_image = per_image
    ctx.stage = lambda text: bar.set_postfix_str(printable(text))
    return bar


def _advance(bar: tqdm, views: list, maps: bool) -> None:
    """The bar moved by a batch: a classifier's by the maps its images got, its total lowered
    by the slots they left empty (an image whose label is its prediction has one map for
    both: a labelled run of 36 maps ended its bar at '72/72 map' above '36 maps in ...')."""
    slots = len(views) * bar.per_image
    made = min(slots, sum(len(view.entry.cams) for view in views)) if maps else slots
    if made < slots:
        bar.total -= slots - made
    bar.update(made)


def _finish(ctx: RunContext, writers: list, workers: int) -> None:
    """Every writer's last step (panels, tables, summary, report), their files encoded and
    written on ``workers`` threads beside the next step."""
    pool, folder = FilePool(workers), ctx.run
    if workers:
        ctx.run = QueuedWrites(folder, pool)
    try:
        for writer in writers:
            writer.finish(ctx)
        pool.drain()
    except BaseException:
        pool.close(cancel=True)
        raise
    finally:
        ctx.run = folder
    pool.close()


def _starting(ctx: RunContext, engine: CamEngine, ranks: distributed.Ranks) -> None:
    """The batch loop's start: the inplace guard's note; on a busy CPU, the line that says
    so (said, not recorded: the same config gives the same records on any machine)."""
    ctx.summary.notes.append(_guard_note(ctx.plan, engine))
    if ranks.lead and (busy := pace.busy_machine(ctx.plan.device)):
        ctx.log(busy)


def _guard_note(plan: RunPlan, engine: CamEngine) -> str:
    """What the inplace guard did (explain.models.guard)."""
    if not plan.cfg.model.fix_inplace:
        return ("inplace guard OFF (model.fix_inplace: false): an inplace op after a target "
                "layer can corrupt its stored activations")
    switched = (f"{engine.inplace_switched} inplace module(s) made non-inplace for the run"
                if engine.inplace_switched else "no inplace module in the model")
    return (f"inplace guard on: {switched}, hooked activations copied, so CAMs use the layer's "
            f"true output")


def _item_bytes(ctx: RunContext, folder: RunFolder, entry: ImageEntry) -> bytes:
    """items/<image>.json: the image's entry (naming all its files) and its compare rows."""
    item = ItemFile(entry=entry, compare=ctx.compare_rows.get(entry.id, []))
    return folder.json_bytes(item.dump())


def _explain_batch(ctx: RunContext, engine: CamEngine, group: list[Prepared]) -> BatchContext:
    """Run the engine on images of one shape and make each image's entry, and each of its
    maps' record (once per class: a class two slots name, as label and prediction, is
    recorded once). The records are the maps' own (``MapSlot.record``)."""
    import torch
    plan = ctx.plan
    ctx.stage(f"maps of {len(group)} image(s)")
    t0 = time.perf_counter()
    x = torch.stack([item.tensor for item in group])
    try:
        result = engine.run(x, plan.targets([item.ref for item in group]), dict(plan.classes),
                            plan.cfg.top_k())
    except ExplainError:
        raise
    except Exception as exc:  # the model's own code failed on this batch: one line
        raise model_failed(exc, ", ".join(item.ref.id for item in group[:3]),
                           size=x.shape[-2:]) from None
    ctx.summary.durations_s["cams"] += time.perf_counter() - t0
    views = []
    all_probs = plan.head.probabilities(result.logits)
    for b, item in enumerate(group):
        named = _listed_probabilities(plan.classes, all_probs[b], result.classes[b])
        best = max(sorted(plan.classes), key=lambda i: all_probs[b][i])
        entry = ImageEntry(id=item.ref.id, path=str(item.ref.path),
                           input_size=[int(item.rgb.shape[0]), int(item.rgb.shape[1])],
                           probabilities=named, predicted=plan.classes[best],
                           label=item.ref.label, look=looks.look(item.rgb))
        for one in result.per_image[b]:
            one.record = MapRecord(class_name=one.class_name, method=one.method,
                                   file=f"cams/{one.method}/{item.ref.id}__{one.class_name}"
                                        f"{plan.ext}", **measures.map_stats(one.cam))
            entry.cams.append(one.record)
        views.append(ImageView(item, entry, b, result.per_image[b]))
    return BatchContext(x, result, views)


def _listed_probabilities(classes: dict[int, str], probs, explained) -> dict[str, float]:
    """The named classes' probabilities; with more than MANY_CLASSES, the most likely ones and
    the explained ones only, in class order."""
    keep = sorted(classes)
    if len(keep) > MANY_CLASSES:
        top = sorted(keep, key=lambda i: -probs[i])[:TOP_PROBABILITIES]
        keep = sorted(set(top) | {int(c) for c in explained})
    return {classes[i]: round(float(probs[i]), 6) for i in keep}


def _kept_items(ctx: RunContext) -> dict[str, ImageEntry]:
    """Entries of the images an interrupted run finished, checked against this run (see
    explain.recordfiles.kept_entries); their compare rows go to ``ctx.compare_rows``."""
    plan = ctx.plan
    classes = plan.task.record_names(plan) if plan.task else set(ctx.classes.values())
    kept, rows = kept_entries(ctx.run, ctx.sources, cfg=ctx.cfg, classes=classes, ext=ctx.ext)
    ctx.compare_rows.update(rows)
    return kept


def _read(ref: ImageRef, plan: RunPlan) -> tuple[ImageRef, Any]:
    """The image ready for the model, or the ImageError that says why not (in a reader
    thread: the error is handled in order, in the main thread, by _usable). The plan's first
    image was decoded for the preflight pass: it is not decoded again."""
    if ref is plan.first.ref:
        return ref, plan.first
    try:
        return ref, prepare(ref, plan.cfg.preprocess)
    except ImageError as exc:
        return ref, exc


def _usable(chunk: list, ctx: RunContext, opts: RunOptions) -> list[Prepared]:
    """The chunk's decoded images; an unreadable one found in a folder is skipped and listed,
    an unreadable one named in the config stops the run."""
    ready = []
    for ref, item in chunk:
        if isinstance(item, ImageError):
            if not ref.from_folder:  # named in the config: the run stops, naming the field
                raise ExplainError(f"{ctx.cfg.source or 'config dict'}: images: {item}")
            opts.log(f"warning: skipped {item}")
            reason = str(item).removeprefix(f"{ref.path}: ")  # the record has the path
            ctx.summary.skipped_images.append(Skipped(path=str(ref.path), reason=reason))
        else:
            ready.append(item)
    return ready

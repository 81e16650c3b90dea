"""sanity/: the sanity checks of the methods (sanity.enabled; the numbers: explain.sanity).

Runs after the last batch, on the run's first ``sanity.images`` images and the classes the
run explained for them (as recorded, so a resumed or distributed run checks the same maps),
with the run's own engine on a copy of the network. Writes ``sanity/cascading.png`` (mean
similarity with the trained model's maps vs layers re-initialised from the output, a curve
per method, one chart per measure), ``sanity/independent.png`` (each layer alone, with
sanity.independent), ``sanity/strip.<ext>`` (the first image's maps as the layers are
re-initialised, a row per method) and ``sanity/sanity.csv`` (every mean), and the records in
summary.json's ``sanity`` (explain.sanity_records): all drawn with arrays and the one text
path of explain.render.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import cv2
import numpy as np
from tqdm import tqdm

from explain import pace, render, sanity
from explain.errors import ExplainError
from explain.images import ImageError, prepare
from explain.plan import RunPlan
from explain.sanity_records import (MEASURES, SanityFiles, SanityMap, SanityMethod, SanityStep,
                                    SanitySummary, Similarity)
from explain.writers import RunContext, Writer

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
THUMB = 96  # strip picture height, pixels


class SanityWriter(Writer):
    """The checks once every image is explained. Its ``finish`` runs before the metrics
    writer's (default_writers' order), whose "Which map to trust" lines (explain.evidence)
    read the verdicts from ``summary.sanity``."""

    def prepare(self, plan: RunPlan) -> None:
        sanity.check_randomisable(plan.net)

    def start(self, ctx: RunContext) -> None:
        line, seconds = estimate(ctx.plan)
        ctx.log(line)
        ctx.summary.notes.append(line)
        ctx.summary.estimates_s["sanity"] = round(seconds, 3)  # beside its time at the end

    def finish(self, ctx: RunContext) -> None:
        t0 = time.perf_counter()
        cfg, plan = ctx.cfg, ctx.plan
        subjects, photos = _subjects(ctx)
        if not subjects:
            return
        checks = cfg.sanity
        steps = len(sanity.randomisable(plan.net)[:_layer_count(cfg)])
        steps *= 2 if checks.independent else 1
        # shown on a terminal only: RunContext does not say whether --quiet was given
        with tqdm(total=steps, unit="step", desc="sanity", file=sys.stderr,
                  dynamic_ncols=True, disable=None) as bar:
            outcome = sanity.run_checks(plan, subjects, layers=_layer_count(cfg),
                                        independent=checks.independent,
                                        guided=cfg.guided.enabled,
                                        tick=_ticker(ctx, bar, steps))
        record = summary_record(outcome, subjects, ctx)
        record.files = _figures(ctx, outcome, record, photos[0])
        ctx.summary.sanity = record
        ctx.summary.notes.append(_note(record, len(subjects)))
        ctx.summary.durations_s["sanity"] = time.perf_counter() - t0


def _note(record: SanitySummary, images: int) -> str:
    """The run's note: the methods whose maps barely changed, which a partial cascade
    (sanity.layers) leaves inconclusive, as "Which map to trust" says, not failed."""
    failed = [m.method for m in record.methods if m.verdict == "fail"]
    said = f"maps that barely change: {', '.join(failed)}" if failed else \
        "every method's maps changed"
    if failed and record.partial:
        said = (f"maps that barely change so far: {', '.join(failed)} (inconclusive: "
                f"{len(record.layers)} of {record.randomisable} layers; raise sanity.layers)")
    return (f"sanity: {len(record.layers)} layer(s) re-initialised from the output on {images} "
            f"image(s); {said}")


def _ticker(ctx: RunContext, bar: tqdm, steps: int) -> Callable[[], None]:
    """After each randomisation step: the bar moves; after the second, one line with the
    measured time of a step and what is left (the estimate before the run is on the high
    side, and the bar is off when stderr is not a terminal)."""
    times: list[float] = []

    def tick() -> None:
        bar.update(1)
        times.append(time.perf_counter())
        if len(times) == 2 and steps > 2:
            took = times[1] - times[0]
            left = took * (steps - 2)
            step = f"{took:.1f}" if took >= 0.1 else f"{took:.2g}"  # 0.025 s, not "0.0 s"
            ctx.log(f"sanity: one layer's step takes {step} s: {pace.about(left)} more "
                    f"for the other {steps - 2} layer step(s)")
    return tick


def _layer_count(cfg) -> Optional[int]:
    return None if cfg.sanity.layers == "all" else int(cfg.sanity.layers)


def estimate(plan: RunPlan) -> tuple[str, float]:
    """('estimate: sanity: ...', its seconds) from the plan: layers, images, classes and a
    timed pass of the first image (the checks pass one image at a time)."""
    cfg = plan.cfg
    layers = len(sanity.randomisable(plan.net)[:_layer_count(cfg)])
    images = min(cfg.sanity.images, len(plan.images))
    steps = 2 + layers * (2 if cfg.sanity.independent else 1)  # + trained + random logit
    passes = steps * sanity.passes_per_step(plan, images, plan.slots, cfg.guided.enabled)
    # the first image alone, as the checks pass their images, timed after a warm-up, the
    # fastest of two to five (pace.timed_pass; the preflight pass, the model's first, said
    # 72 s for 5 s on the demo; one timed pass was at times 1 s where the next took 0.05 s;
    # a batch of sanity.images copies took 70 s and 3 GB for 300 images)
    per_pass = pace.timed_pass(plan, 1)
    channels = pace.per_channel_costs(plan, images=images)  # shared by classes, batched
    seconds = passes * per_pass + steps * sum(cost.seconds for cost in channels)
    passes += steps * sum(cost.passes for cost in channels)
    took = pace.duration(seconds) if seconds >= 0.5 else "under a second"
    return (f"estimate: sanity: {layers} layer(s) re-initialised one by one from the output"
            f"{' (and each alone)' if cfg.sanity.independent else ''}, every method's maps "
            f"of {images} image(s) x {plan.slots} class(es) made again at each step (and for "
            f"the trained model and a random logit): about {passes:,} passes, {took} (fewer: "
            f"sanity.layers, sanity.images)"), seconds


def _subjects(ctx: RunContext) -> tuple[list[sanity.Subject], list[np.ndarray]]:
    """The first sanity.images explained images with their recorded classes and random
    other classes, and their photos at input size."""
    cfg, plan = ctx.cfg, ctx.plan
    index = {name: idx for idx, name in plan.classes.items()}
    subjects, photos = [], []
    for entry in ctx.summary.images[:cfg.sanity.images]:
        try:
            item = prepare(ctx.sources[entry.id], cfg.preprocess)
        except ImageError as exc:
            raise ExplainError(f"sanity: {exc}") from None
        classes = [index[c] for c in entry.explained_classes()]
        subjects.append(sanity.Subject(entry.id, item.tensor, classes))
        photos.append(item.rgb)
    outputs = plan.head.classes(int(plan.probe.logits.shape[1]))
    if outputs >= 2 and subjects:
        flat = [c for s in subjects for c in s.classes]
        drawn = iter(sanity.other_classes(flat, outputs, cfg.seed).tolist())
        for s in subjects:
            s.others = [next(drawn) for _ in s.classes]
    return subjects, photos


def _similarity(values: np.ndarray) -> Similarity:
    return Similarity(**{k: round(float(v), 6) for k, v in zip(sanity.MEASURES, values)})


def _steps(table: np.ndarray, layers: list[str]) -> list[SanityStep]:
    return [SanityStep(layer=name, similarity=_similarity(table[k].mean(axis=0)))
            for k, name in enumerate(layers)]


def _interval(values: np.ndarray, images: list[str],
              seed: int) -> tuple[Optional[float], Optional[float]]:
    """The 95% bootstrap interval of the verdict's mean over the maps, resampling images (an
    image's maps, one per class, are alike), as the trust intervals do; within [-1, 1], where
    every measure lies (2 images' expanded interval reached -1.57). Images with as many maps
    each: the interval of their maps' means (that mean is the maps' mean); otherwise (label
    and prediction one class on some) each resample's maps' mean, so the verdict's number
    stays inside its interval. (None, None) for one image."""
    from explain import stats
    per_image: dict[str, list[float]] = {}
    for image, value in zip(images, values):
        per_image.setdefault(image, []).append(float(value))
    if len(per_image) < 2:
        return None, None
    counts = [len(v) for v in per_image.values()]
    if len(set(counts)) == 1:
        low, high = stats.interval([float(np.mean(v)) for v in per_image.values()], seed=seed)
    else:  # a resample's maps: its images' sums over their counts
        drawn = stats.resample_means(np.array([[sum(v) for v in per_image.values()], counts],
                                              dtype=np.float64), seed=seed)
        tail = stats.tail(len(counts))
        low, high = (float(b) for b in np.quantile(drawn[0] / drawn[1], [tail, 1 - tail]))
    return round(max(low, -1.0), 6), round(min(high, 1.0), 6)


def summary_record(outcome: sanity.Outcome, subjects: list[sanity.Subject],
                   ctx: RunContext) -> SanitySummary:
    """summary.json's ``sanity`` from what the checks measured (files added by the caller)."""
    checks, names = ctx.cfg.sanity, ctx.plan.classes
    at = sanity.MEASURES.index(checks.measure)
    images = [s.image for s in subjects for _ in s.classes]  # each map's, in the maps' order
    methods = []
    for row in outcome.methods:
        steps = outcome.cascading[row]
        final = round(float(steps[-1].mean(axis=0)[at]), 6)
        low, high = _interval(steps[-1][:, at], images, ctx.cfg.seed)
        one = SanityMethod(method=row, verdict=sanity.verdict(final, checks.threshold),
                           final=final, final_low=low, final_high=high,
                           cascading=_steps(steps, outcome.layers),
                           final_per_map=[_similarity(v) for v in steps[-1]])
        if row in outcome.independent:
            one.independent = _steps(outcome.independent[row], outcome.layers)
        if row in outcome.logit:
            one.random_logit = _similarity(outcome.logit[row].mean(axis=0))
            one.logit_verdict = sanity.verdict(getattr(one.random_logit, checks.measure),
                                               checks.logit_threshold)
            one.logit_per_map = [_similarity(v) for v in outcome.logit[row]]
            one.logit_blank = outcome.logit_blank.get(row, 0)
        methods.append(one)
    maps = [SanityMap(image=s.image, class_name=names.get(c, str(c)),
                      random_class=names.get(o, str(o)) if s.others else None)
            for s in subjects for c, o in zip(s.classes, s.others or s.classes)]
    return SanitySummary(measure=checks.measure, threshold=checks.threshold,
                         logit_threshold=checks.logit_threshold, seed=ctx.cfg.seed,
                         layers=outcome.layers, not_randomised=sanity.not_randomised(ctx.plan.net),
                         randomisable=len(sanity.randomisable(ctx.plan.net)),
                         maps=maps, methods=methods,
                         strip_steps=[k for k, _ in outcome.strip[outcome.methods[0]]])


# ---- files ---------------------------------------------------------------------------------

def _figures(ctx: RunContext, outcome: sanity.Outcome, record: SanitySummary,
             photo: np.ndarray) -> SanityFiles:
    files = SanityFiles(cascading="sanity/cascading.png", csv="sanity/sanity.csv",
                        strip=f"sanity/strip{ctx.ext}")
    depth = len(outcome.layers)
    curves = {m: (np.arange(depth + 1), np.vstack([np.ones(4), outcome.mean(outcome.cascading, m)]))
              for m in outcome.methods}
    ctx.run.write_image(files.cascading, charts(
        curves, record, "layers re-initialised, from the output (0: the trained model)"))
    if outcome.independent:
        files.independent = "sanity/independent.png"
        alone = {m: (np.arange(1, depth + 1), outcome.mean(outcome.independent, m))
                 for m in outcome.methods}
        ctx.run.write_image(files.independent, charts(
            alone, record, "the one layer re-initialised (1: the output layer)"))
    ctx.run.write_image(files.strip, strip(outcome, photo, ctx.cfg.output.colormap,
                                           f"{record.maps[0].image}, class "
                                           f"{record.maps[0].class_name}"))
    ctx.run.write_csv(files.csv, csv_rows(record))
    return files


def csv_rows(record: SanitySummary) -> list[dict]:
    """sanity/sanity.csv: a row per method x variant x step (random logit: one row)."""
    rows = []
    for m in record.methods:
        for variant, steps in (("cascading", m.cascading), ("independent", m.independent)):
            rows += [{"method": m.method, "variant": variant, "step": k, "layer": s.layer,
                      **s.similarity.model_dump()} for k, s in enumerate(steps, 1)]
        if m.random_logit is not None:
            rows.append({"method": m.method, "variant": "random_logit", "step": "", "layer": "",
                         **m.random_logit.model_dump()})
    return rows


def charts(curves: dict[str, tuple[np.ndarray, np.ndarray]], record: SanitySummary,
           xlabel: str) -> np.ndarray:
    """The four measures' charts in a 2 x 2 grid; ``curves``: method -> (x, (n, 4) values)."""
    pictures = []
    for at, measure in enumerate(sanity.MEASURES):
        limit = record.threshold if measure == record.measure else None
        pictures.append(chart({m: (x, y[:, at]) for m, (x, y) in curves.items()},
                              title=MEASURES[measure][1], threshold=limit, xlabel=xlabel))
    return np.vstack([np.hstack(pictures[:2]), np.hstack(pictures[2:])])


def chart(curves: dict[str, tuple[np.ndarray, np.ndarray]], *, title: str,
          threshold: Optional[float], xlabel: str) -> np.ndarray:
    """One line chart, y from -1 to 1, a curve per entry (x, y), a legend, and the threshold
    dashed when given: uint8 RGB, drawn with OpenCV lines and explain.render's text."""
    width, height, left, right, top, bottom = 560, 300, 44, 160, 30, 44
    canvas = np.full((height, width, 3), 255, np.uint8)
    x_max = max(max(int(x.max()) for x, _ in curves.values()), 1)
    px = lambda v: int(round(left + v / x_max * (width - left - right)))  # noqa: E731
    py = lambda v: int(round(height - bottom - (v + 1) / 2 * (height - top - bottom)))  # noqa: E731
    texts = [render.Text(title, left, 6, 14)]
    for v in (-1, -0.5, 0, 0.5, 1):
        cv2.line(canvas, (left, py(v)), (width - right, py(v)), (225, 225, 225), 1)
        texts.append(render.Text(f"{v:g}", 6, py(v) - 8, 12))
    for k in sorted({int(round(v)) for v in np.linspace(0, x_max, min(x_max, 6) + 1)}):
        cv2.line(canvas, (px(k), height - bottom), (px(k), height - bottom + 4), (90, 90, 90), 1)
        label = str(k)
        texts.append(render.Text(label, px(k) - render.text_width(label, 12) // 2,
                                 height - bottom + 5, 12))
    texts.append(render.Text(xlabel, left, height - 20, 12))
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (120, 120, 120), 1)
    if threshold is not None:
        for x0 in range(left, width - right, 10):
            cv2.line(canvas, (x0, py(threshold)), (min(x0 + 5, width - right), py(threshold)),
                     (200, 40, 40), 1, cv2.LINE_AA)
        texts.append(render.Text(f"threshold {threshold:g}", left + 4, py(threshold) - 15, 11,
                                 (200, 40, 40)))
    for n, (name, (x, y)) in enumerate(curves.items()):
        colour = PALETTE[n % len(PALETTE)]
        points = np.array([[px(a), py(float(np.clip(b, -1, 1)))] for a, b in zip(x, y)], np.int32)
        cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
        if len(points) <= 30:
            for p in points:
                cv2.circle(canvas, (int(p[0]), int(p[1])), 3, colour, -1, cv2.LINE_AA)
        y_row = top + 6 + 18 * n
        cv2.line(canvas, (width - right + 8, y_row + 8), (width - right + 26, y_row + 8), colour, 3)
        texts.append(render.Text(_cut(name, right - 40), width - right + 32, y_row, 12))
    return render.draw_text(canvas, texts)


def _cut(text: str, width: int, size: int = 12) -> str:
    if render.text_width(text, size) <= width:
        return text
    while text and render.text_width(text + "…", size) > width:
        text = text[:-1]
    return text + "…"


def strip(outcome: sanity.Outcome, photo: np.ndarray, colormap: str, title: str) -> np.ndarray:
    """A row per method: the photo, then its map of the first image x class at each shown
    step (the trained model, then after k layers), over the photo; signed maps (guided
    backpropagation, Guided Grad-CAM) as |map| over its 99th percentile, clipped at 1."""
    h, w = photo.shape[:2]
    size = (max(1, round(w * THUMB / h)), THUMB)
    small = cv2.resize(np.float32(photo), size, interpolation=cv2.INTER_AREA)
    first = outcome.strip[outcome.methods[0]]
    columns = ["trained" if k == 0 else f"{k} layer{'s' if k > 1 else ''}" for k, _ in first]
    rows = []
    for m in outcome.methods:
        pictures = []
        for _, cam in outcome.strip[m]:
            shown = np.abs(np.asarray(cam, np.float64))
            # a signed gradient map: a few pixels would otherwise take the whole scale
            top = np.percentile(shown, 99) if cam.min() < 0 else shown.max()
            shown = np.clip(shown / top if top > 0 else shown, 0, 1).astype(np.float32)
            shown = cv2.resize(shown, size, interpolation=cv2.INTER_AREA)
            pictures.append(render.overlay(small, shown, colormap))
        rows.append((m, render.as_uint8(small), pictures))
    title = f"maps of {title} as layers are re-initialised from the output"
    return render.panel(rows, columns, title).image

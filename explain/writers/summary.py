"""summary.json, summary.csv and the console summary, made from the typed run summary
(explain.results)."""

from __future__ import annotations

import re
import time

from explain import swapped
from explain.evidence import baseline_columns, method_columns
from explain.results import NONE_PREDICTED, RunSummary
from explain.writers import RunContext, Writer


class SummaryWriter(Writer):
    """Runs last: the summary holds what every other writer added."""

    def finish(self, ctx: RunContext) -> None:
        summary = ctx.summary
        summary.counts = {"images": len(summary.images),
                          "maps": sum(len(i.cams) for i in summary.images)}
        durations = summary.durations_s
        durations["total"] = time.perf_counter() - ctx.started
        summary.durations_s = {k: round(v, 3) for k, v in durations.items()}
        ctx.run.write_csv("summary.csv", csv_rows(summary))
        ctx.run.write_json("summary.json", summary.dump())


def csv_rows(summary: RunSummary) -> list[dict]:
    """summary.csv: one row per image x class x method, the image's prediction (and label, in
    a labelled run) alongside, channel numbers as flat columns, then the baselines' scores for
    the image and class and the method's numbers over the run (explain.evidence:
    method_columns, baseline_columns). An image without a map (a detection run's image
    without a detection, a segmentation run's without a target region) has one row of the
    same columns: its prediction and probabilities, class "(none)", the map's cells empty
    (without it, it was not told from an image the run never read)."""
    rows, per_method = [], method_columns(summary.trust)
    for image in summary.images:
        told = {"image": image.id, "predicted": image.predicted,
                **({"label": image.label} if image.label is not None else {}),
                **{f"p_{k}": v for k, v in image.probabilities.items()}}
        if not image.cams:
            rows.append({**told, "class": NONE_PREDICTED, "method": None})
        for record in image.cams:
            row = {**told, **record.dump()}
            row.pop("files", None)  # the manifest is summary.json's
            channels = row.pop("channels", None)
            if channels is not None:
                row.update(channels)
            for group in ("faithfulness", "localisation", "segment", "detection"):
                row.update(row.pop(group, None) or {})
            row.update(summary.sanity.columns(record.method) if summary.sanity else {})
            row.update(baseline_columns(image.baselines, record.class_name))
            rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))  # the maps' own first
    return [{**{k: row.get(k) for k in columns}, **per_method.get(row.get("method"), {})}
            for row in rows]


CONSOLE_ROWS = 20  # images and skipped files listed at the end of a run; the rest are counted
# estimates_s keys timed under their own name in durations_s (the others are methods:
# method_<name>), and how the console names them
ESTIMATED = {"metrics": "faithfulness", "sanity": "sanity checks", "cams": "the maps"}


def _more(count: int, what: str, where: str) -> list[str]:
    """The line that counts what the console left out, if anything was."""
    if count <= CONSOLE_ROWS:
        return []
    return [f"  ... and {count - CONSOLE_ROWS} more {what}, all in {where}"]


def _methods(summary: RunSummary) -> list[str]:
    return [m.name for m in summary.config.methods]


def _meant(name: str, missing: list[str], methods: list[str],
           classes: dict[str, int] | None = None) -> str:
    """Why a reference file matched no map, as a hint: a class written as its output index
    ('both__0__gradcam.npy', by ``classes``), a method the run does not make
    ('both__cat__gradcam.npy' in a gradcamplusplus run), a missing map's parts in another
    order ('gradcam__both__cat.npy'), or the missing map its name is closest to
    ('both_cat_gradcam.npy', single underscores, for 'both__cat__gradcam'); nothing when none."""
    from explain.names import close_match, quote  # difflib's answer in bounded time
    stem = name.rsplit(".", 1)[0]
    parts = stem.split("__")
    by_index = _class_by_index(parts, classes or {})
    if by_index:
        return (f", whose class is written as its output index {parts[1]}: files name the "
                f"class, {parts[0]}__{by_index}__{parts[2]}{name[len(stem):]} (classes: "
                + ", ".join(f"{c} = {i}" for c, i in list((classes or {}).items())[:10]) + ")")
    if len(parts) == 3 and parts[2].lower() in methods and parts[2] not in methods:
        return (f", whose method is written {quote(parts[2][:80])}: method names are "
                f"lower-case, {quote(parts[2].lower())}")
    moved = _reordered(stem, missing)
    if moved:
        return f", which looks meant for {moved}{name[len(stem):]} (its parts in another order)"
    if len(parts) == 3 and parts[2] not in methods:
        return (f", a map of method {quote(parts[2][:80])}, which this run does not make "
                f"(its methods: {', '.join(methods)})")
    close = close_match(stem, missing[:1000], cutoff=0.8) if len(stem) <= 200 else []
    return f", which looks meant for {close[0]}{name[len(stem):]}" if close else ""


def _class_by_index(parts: list[str], classes: dict[str, int]) -> str | None:
    """The class whose output index a reference name's class part is ('0' for cat in
    'both__0__gradcam'), when that part is no class name of the run; None otherwise (the
    closest name by letters pointed '0' at 'dog')."""
    if len(parts) != 3 or parts[1] in classes or not parts[1].isdigit():
        return None
    return next((c for c, i in classes.items() if i == int(parts[1][:9])), None)


def _reordered(stem: str, missing: list[str]) -> str | None:
    """The first missing map (of 1,000) whose name's words are the stem's in another order,
    words split at any run of '_', '-' or spaces on both sides (an image id 'img_01' is two
    words in 'gradcam_img_01_cat' as in 'img_01__cat__gradcam')."""
    def words(text: str) -> list[str]:
        return [w for w in re.split(r"[_\-\s]+", text.lower()) if w]
    own = words(stem)
    return next((m for m in missing[:1000]
                 if words(m) != own and sorted(words(m)) == sorted(own)), None)


def compare_file_lines(summary: RunSummary) -> list[str]:
    """The reference files a compare missed or could not match, as the console and the
    report's warnings say them (a verdict is over the maps that had a file only)."""
    compare = summary.compare or {}
    missing, unmatched = compare.get("missing") or [], compare.get("unmatched") or []
    from explain.names import short  # a shared summary's name may be a megabyte long
    lines = []
    if missing:
        lines.append(f"compare: {len(missing)} map(s) had no reference file (first: "
                     f"{short(missing[0])}); all are listed in summary.json")
    if unmatched:
        hint = _meant(unmatched[0], missing, _methods(summary),
                      dict(getattr(summary.config, "classes", None) or {}))
        count = compare.get("unmatched_count") or len(unmatched)
        listed = "" if count == len(unmatched) else f"; the first {len(unmatched)} are listed"
        lines.append(f"compare: {count} file(s) in the reference folder matched no "
                     f"map (first: {short(unmatched[0])}{hint}{listed}); names are "
                     f"<image>__<class>__<method>.npy or .png")
    return lines


OTHER = "reading images, panels and tables"  # the rest of a run's time, named by its parts
TIMED = ("model_load", "cams", "figures", "sanity")  # the parts of the total that are timed


def duration_parts(durations: dict[str, float], processes: int = 1) -> list[tuple[str, float]]:
    """summary.json's ``durations_s`` as the console and the page name them: ``figures`` (every
    writer's per-batch time, the metrics' model passes included) split into the metrics and
    'pictures and files', so a slow metric does not read as slow drawing; before the total,
    the time no part holds (OTHER: reading images between batches, the panels, tables and
    trust numbers at the end), so the parts add up to it (a method's own passes,
    ``method_<name>``, are said to be in the cams). Not for a torchrun run's ``processes``,
    whose parts are sums."""
    metrics = durations.get("metrics", 0.0)
    parts = []
    first = ["model_load", "cams", *(k for k in durations if k.startswith("method_")),
             "metrics", "figures", "sanity"]  # the console's order, a method's in the cams
    listed = set(first)  # a shared summary's 30,000 method_ keys: 9 s in a list, quadratic
    order = [k for k in first if k in durations] + [k for k in durations if k not in listed]
    for key, seconds in ((k, durations[k]) for k in order):
        if key == "total" and processes <= 1:
            rest = seconds - sum(durations.get(k, 0.0) for k in TIMED)
            parts += [(OTHER, rest)] if rest >= 0.05 else []
        if key == "figures":
            parts.append(("pictures and files", max(seconds - metrics, 0.0)))
        elif key.startswith("method_"):  # a method's own passes: part of the CAMs' time
            parts.append((f"{key.replace('_', ' ')} (in cams)", seconds))
        elif key != "metrics" or seconds >= 0.05:
            parts.append((key.replace("_", " "), seconds))
    return parts


# durations_s parts timed once, not summed over a torchrun run's processes: the model load is
# process 0's (explain.distributed.hand_in), the sanity checks run at the end, on process 0
ONCE = {"model_load": "model load", "sanity": "sanity checks"}


def summed_over(summary: RunSummary) -> str:
    """What the parts of a torchrun run's durations are: each process's time added up but
    the parts timed once (ONCE) and the total (the run's own), so 'CAMs 12 s' in a 7 s run is
    no contradiction, nor is 'model load 2 s' a sum."""
    if summary.processes <= 1:
        return ""
    once = [name for key, name in ONCE.items() if key in summary.durations_s] + ["the total"]
    but = f"{', '.join(once[:-1])} and {once[-1]}" if len(once) > 1 else once[0]
    return f"; the parts but {but} summed over {summary.processes} processes"


def _outputs(summary: RunSummary) -> str:
    """The console's part of the per-batch outputs' time, the sanity checks' and the rest
    (duration_parts)."""
    parts = dict(duration_parts(summary.durations_s, summary.processes))
    named = [f"{name} {parts[name]:.1f}s" for name in ("metrics", "pictures and files")
             if name in parts]
    named += [f"sanity checks {parts['sanity']:.1f}s"] if "sanity" in parts else []
    return ", ".join(named + ([f"{OTHER} {parts[OTHER]:.1f}s"] if OTHER in parts else []))


def console_lines(summary: RunSummary) -> list[str]:
    """The lines the CLI prints at the end of a run."""
    lines = [f"explain: {summary.name} -> {summary.output_dir}"]
    folder = summary.output_dir.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if folder != summary.name:  # run twice: the first run's folder was kept
        lines.append(f"  ({summary.name} holds an earlier run, kept: this one is {folder}; "
                     f"--overwrite replaces {summary.name})")
    lines += [f"  note: {note}" for note in summary.notes if not note.startswith("estimate:")]
    from explain.pace import about  # not at import: reading a run back needs no torch
    for key, estimate in summary.estimates_s.items():  # printed as they were made: the times
        took = summary.durations_s.get(key if key in ESTIMATED else f"method_{key}")
        if took is not None:
            what = ESTIMATED.get(key, key)
            lines.append(f"  time: {what} took {took:.1f} s ({about(estimate)} estimated)")
    said = {"segmentation": "share of the pixels: ", "detection": "best box score: "}.get(
        summary.config.task, "")  # what the numbers are where they are no probabilities
    for image in summary.images[:CONSOLE_ROWS]:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in image.probabilities.items())
        lines.append(f"  {image.id}: predicted {image.predicted} ({said}{probs})")
    lines += _more(len(summary.images), "image(s)", "summary.csv")
    lines += [f"  warning: {line}" for line in swapped.warnings(summary)]
    skipped = summary.skipped_files + summary.skipped_images
    lines += [f"  skipped {s.path}: {s.reason}" for s in skipped[:CONSOLE_ROWS]]
    lines += _more(len(skipped), "file(s) skipped", "summary.json (skipped_files, skipped_images)")
    compare = summary.compare or {}
    lines += [f"  compare {v}" for v in compare.get("verdicts", [])]
    lines += [f"  {line}" for line in compare_file_lines(summary)]
    if summary.dataset is not None and summary.dataset.accuracy is not None:
        d = summary.dataset
        lines.append(f"  dataset: accuracy {d.accuracy:.1%} ({d.correct} of {d.labelled} labelled "
                     f"images); see dataset/ and the report's Dataset section")
    trust = summary.trust
    if trust is not None and trust.primary is not None:  # ranked: the report's first line
        lines.append(f"  which map to trust: {trust.conclusion} (the report's first section)")
    d = summary.durations_s
    lines.append(f"  {summary.counts['maps']} maps in {d['total']:.1f}s (model load "
                 f"{d['model_load']:.1f}s, CAMs {d['cams']:.1f}s, {_outputs(summary)}"
                 + summed_over(summary) + ")")
    return lines

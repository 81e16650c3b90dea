"""How a Run shows itself in Jupyter (``Run._repr_html_``): its header, images, methods table
and class panels, each picture a data URI read from inside the run folder, so a saved
notebook shows them without the folder."""

from __future__ import annotations

from typing import Any

from explain.api import display

Run = Any  # an explain.api.runs.Run (not imported: runs.py imports this module to show one)

NOTES_SHOWN = 12
IMAGES_SHOWN = 50
CLASSES_SHOWN = 20  # probability columns of the images table
PANELS_SHOWN, PANELS_BYTES = 12, 16 * 1024 * 1024  # class panels looked at, bytes read of them


def run_html(run: Run) -> str:
    """The inline display of a Run (inside display.block)."""
    summary = run.summary
    maps = sum(len(e.cams) for e in summary.images)
    parts = [f"<h3>CAM study <code>{display.esc(run.name)}</code></h3>",
             f"<p>{len(summary.images)} image(s) · {maps} map(s) · "
             f"{display.esc(', '.join(run.methods))} at {display.esc(', '.join(run.layers))} · "
             f"device {display.esc(summary.device)}<br>folder <code>{display.esc(run.folder)}"
             f"</code>" + (f" · report <code>{display.esc(run.report_path)}</code>"
                           if run.report_path else "") + "</p>"]
    if not run.finished:
        parts.append("<p><b>unfinished run</b>: the images it finished; complete it with "
                     "explain.run(..., resume=True)</p>")
    parts += [_warnings(run), _images(run), _methods(run), _panels(run), _notes(run)]
    return "".join(parts)


def _images(run: Run) -> str:
    classes = run.classes[:CLASSES_SHOWN]
    rows = [[e.id, e.predicted] + [display.number(e.probabilities.get(c)) for c in classes]
            + ([e.label or ""] if any(i.label for i in run.images) else [])
            for e in run.images[:IMAGES_SHOWN]]
    header = ["image", "predicted"] + [f"p({c})" for c in classes] + \
        (["label"] if any(i.label for i in run.images) else [])
    more = f"<p>... and {len(run.images) - IMAGES_SHOWN} more</p>" \
        if len(run.images) > IMAGES_SHOWN else ""
    if len(run.classes) > CLASSES_SHOWN:
        more += f"<p>p of the first {CLASSES_SHOWN} of {len(run.classes)} classes</p>"
    return "<h4>Images</h4>" + display.table_html(header, rows) + more


def _methods(run: Run) -> str:
    """Per method: its maps, mean raw maximum, the report's metric columns (mean and 95%
    interval, its place where a difference is significant, a star where it leads, the
    baselines it does not beat), overall place and, when the run ran the sanity checks, the
    verdict the report's trust line gives (the conclusion says "without failing sanity";
    which method failed was not on show), then the baselines' rows, under the
    conclusion of "which map to trust", as the report has them: never an order of the means
    (which ranked identical maps by rounding noise)."""
    from explain import stats, trustlines
    from explain.methodtable import method_table
    methods = run.methods
    table = method_table(run.summary, methods)
    evidence = run.summary.trust or trustlines.build(run.summary, table)  # an unfinished run's
    sanity = {line.method: line.sanity for line in evidence.lines}  # the report's trust lines
    checked = any(verdict != "not run" for verdict in sanity.values())
    header = ["method", "maps", "mean raw max"] + [c.label for c in table.columns] + ["place"] \
        + (["sanity"] if checked else [])
    rows = []
    for m in methods:
        recs = [r for e in run.images for r in e.cams if r.method == m]
        raw = [r.raw_max for r in recs if r.raw_max is not None]
        cells = [m, len(recs), display.number(sum(raw) / len(raw) if raw else None)]
        for col in table.columns:
            cell = col.cells.get(m)
            cells.append("-" if cell is None else _stat(cell, col.metric.percent)
                         + (f" #{cell.place}" if cell.place else "")
                         + (" *" if m in col.leads and not cell.not_beaten else "")
                         + _not_beaten(cell, bool(col.baselines)))
        cells.append(table.place.get(m, "-") if table.meaningful else "-")
        rows.append(cells + ([sanity.get(m, "-")] if checked else []))
    for name in table.baselines:  # maps that know nothing: what a method must beat
        rows.append([f"baseline: {name}", "", ""] + [
            "-" if col.baselines.get(name) is None
            else _stat(col.baselines[name], col.metric.percent) for col in table.columns]
            + [""] * (2 if checked else 1))
    note = "" if table.meaningful or not table.rank else (
        f"<p>no place yet: no metric is measured on at least {stats.MIN_IMAGES} {table.unit}s "
        f"(the report says the same)</p>")
    stars = "<p>* significantly better than every other method, and not beaten by a " \
        "baseline</p>" \
        if any(c.leads for c in table.columns) else ""
    conclusion = evidence.conclusion  # as the report: a task run's 'not ranked' too
    verdict = f"<p><b>Which map to trust:</b> {display.esc(conclusion)}</p>" if conclusion \
        else ""
    return "<h4>Methods</h4>" + verdict + display.table_html(header, rows) + stars + note + \
        _task_means(run)


def _task_means(run: Run) -> str:
    """A segmentation or detection run's mean numbers per method, as the report's Methods
    table has them (summary.json's ``task``; "k of n maps" where a mean holds fewer)."""
    from explain.tasks.records import PERCENT, number_name
    task = run.summary.task
    if task is None:
        return ""
    rows = []
    for m in run.methods:
        means, held = task.means.get(m, {}), task.counted.get(m, {})
        rows.append([m] + ["-" if key not in means else (
            f"{100 * means[key]:.1f}%" if key in PERCENT else display.number(means[key]))
            + (f" ({held[key]} of {task.maps.get(m, 0)} maps)" if key in held else "")
            for key in task.numbers] + [task.maps.get(m, 0)])
    header = ["method"] + [number_name(key) + (" (median)" if key in task.medians else "")
                           for key in task.numbers] + ["maps"]
    return f"<p>{display.esc(task.task)}: means over each method's maps</p>" + \
        display.table_html(header, rows)


def _not_beaten(cell: Any, baselines: bool = True) -> str:
    """The baselines a method does not beat, as the report's cell marks them: with too few
    units for a test, those whose mean is as good; 'baselines?' where too few units tell
    and its mean is better (``baselines``: the column has any)."""
    if not cell.not_beaten:
        return " baselines?" if baselines and cell.beats_baselines is None else ""
    names = ", ".join(cell.not_beaten)
    return f" ✗ baseline: {names}" if cell.beats_baselines is False \
        else f" mean not better than {names}"


def _stat(cell: Any, percent: bool) -> str:
    """A mean and its 95% interval as the report's cell shows them (in % for a share)."""
    def shown(value: float) -> str:
        return f"{100 * value:.1f}%" if percent else display.number(value)
    if cell.mean is None:
        return display.number(None)
    return shown(cell.mean) + ("" if cell.low is None or cell.high is None
                               else f" [{shown(cell.low)}, {shown(cell.high)}]")


def _panels(run: Run) -> str:
    """The class panels the records name (``RunSummary.files.panels``: class ->
    panels/<class>.png, as the report links them) embedded, in class order; a segmentation or
    detection run's per-image pictures instead (``ImageFiles.task``: the predicted mask, the
    boxes), which it has in place of class panels."""
    task = run.summary.config.task
    if task != "classification":
        title = "Detections" if task == "detection" else "Predicted masks"
        items = [(f"{e.id}", e.files.task) for e in run.images if e.files.task]
        return _figures(run, title, items, "image(s)")
    recorded = run.summary.files.panels
    return _figures(run, "Classes", [(f"class {cls}", recorded.get(cls)) for cls in run.classes],
                    "class(es)")


def _figures(run: Run, title: str, items: list, kind: str) -> str:
    """``items`` (caption, file in the run folder or None) embedded, at most PANELS_SHOWN of
    them and PANELS_BYTES read, each file once (hard links too)."""
    from explain.errors import ExplainError
    figures, budget, seen = [], PANELS_BYTES, set()
    for n, (caption, rel) in enumerate(items):
        if n == PANELS_SHOWN or budget <= 0:  # a shared folder's 1,000 classes
            figures.append(f"<p>... and {len(items) - n} more {kind} in the run folder</p>")
            break
        try:  # a name from a summary.json changed by hand may be no file name
            read = run._files.read_stat(rel, budget) if rel else None
        except ExplainError:
            read = None
        if read is None or read[1] is None or (read[0].st_dev, read[0].st_ino) in seen:
            continue  # none, larger than what is left, or one read already (a hard link)
        seen.add((read[0].st_dev, read[0].st_ino))
        budget -= len(read[1])
        uri = display.file_uri(read[1], rel)
        if uri is not None:
            figures.append(display.figure_html(uri, caption))
    if not figures:
        return f"<h4>{title}</h4><p>no pictures of them in the folder</p>"
    return f"<h4>{title}</h4>" + "".join(figures)


def _warnings(run: Run) -> str:
    """The model's warnings the report's box and the console carry (explain.swapped)."""
    from explain import swapped
    lines = swapped.warnings(run.summary)
    return "" if not lines else "<p><b>warning</b>: " + "<br><b>warning</b>: ".join(
        display.esc(line) for line in lines) + "</p>"


def _notes(run: Run) -> str:
    notes = list(run.summary.notes)
    skipped = [f"skipped {s.path}: {s.reason}" for s in run.summary.skipped_images]
    lines = notes + skipped
    if not lines:
        return ""
    shown = "".join(f"<li>{display.esc(line)}</li>" for line in lines[:NOTES_SHOWN])
    more = f"<li>... {len(lines) - NOTES_SHOWN} more in summary.json</li>" \
        if len(lines) > NOTES_SHOWN else ""
    return f"<details><summary>{len(lines)} note(s)</summary><ul>{shown}{more}</ul></details>"

"""How a Run shows itself in Jupyter: the run's header, its images, the methods table of the
report (explain.methodtable.method_table) and the class panels, every picture embedded as a data
URI read from inside the run folder (so a saved notebook shows them without the folder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from explain.api import display

if TYPE_CHECKING:
    from explain.api.runs import Run

NOTES_SHOWN = 12
IMAGES_SHOWN = 50


def run_html(run: "Run") -> str:
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
    parts += [_images(run), _methods(run), _panels(run), _notes(run)]
    return "".join(parts)


def _images(run: "Run") -> str:
    classes = run.classes
    rows = [[e.id, e.predicted] + [display.number(e.probabilities.get(c)) for c in classes]
            + ([e.label or ""] if any(i.label for i in run.images) else [])
            for e in run.images[:IMAGES_SHOWN]]
    header = ["image", "predicted"] + [f"p({c})" for c in classes] + \
        (["label"] if any(i.label for i in run.images) else [])
    more = f"<p>... and {len(run.images) - IMAGES_SHOWN} more</p>" \
        if len(run.images) > IMAGES_SHOWN else ""
    return "<h4>Images</h4>" + display.table_html(header, rows) + more


def _methods(run: "Run") -> str:
    """Per method: its maps, mean raw maximum, and the report's metric columns and rank."""
    from explain.methodtable import method_table
    methods = run.methods
    table = method_table(run.summary, methods)
    header = ["method", "maps", "mean raw max"] + [c.label for c in table.columns] + \
        (["rank"] if table.rank else [])
    rows = []
    for m in methods:
        recs = [r for e in run.images for r in e.cams if r.method == m]
        raw = [r.raw_max for r in recs if r.raw_max is not None]
        cells = [m, len(recs), display.number(sum(raw) / len(raw) if raw else None)]
        cells += [display.number(c.means.get(m)) + (" *" if m in c.best else "")
                  for c in table.columns]
        if table.rank:
            cells.append(table.rank.get(m, "-"))
        rows.append(cells)
    return "<h4>Methods</h4>" + display.table_html(header, rows) + \
        ("<p>* best in its column</p>" if any(c.best for c in table.columns) else "")


def _panels(run: "Run") -> str:
    """The class panels (panels/<class>.png) embedded."""
    from explain.errors import ExplainError
    figures = []
    for cls in run.classes:
        rel = f"panels/{cls}.png"
        try:  # a class name from a summary.json changed by hand may be no file name
            data = run._files.read_bytes(rel)
        except ExplainError:
            data = None
        uri = None if data is None else display.file_uri(data, rel)
        if uri is not None:
            figures.append(display.figure_html(uri, f"class {cls}"))
    if not figures:
        return "<h4>Classes</h4><p>no class panels in the folder</p>"
    return "<h4>Classes</h4>" + "".join(figures)


def _notes(run: "Run") -> str:
    notes = list(run.summary.notes)
    skipped = [f"skipped {s.path}: {s.reason}" for s in run.summary.skipped_images]
    lines = notes + skipped
    if not lines:
        return ""
    shown = "".join(f"<li>{display.esc(line)}</li>" for line in lines[:NOTES_SHOWN])
    more = f"<li>... {len(lines) - NOTES_SHOWN} more in summary.json</li>" \
        if len(lines) > NOTES_SHOWN else ""
    return f"<details><summary>{len(lines)} note(s)</summary><ul>{shown}{more}</ul></details>"

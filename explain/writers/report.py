"""report.html: the whole study on one page, made from the run's records with Jinja2 templates
(explain/templates/), and rebuilt from a results folder by ``explain report RUN_DIR``.

The page opens from the file system, offline: no script, no external style or font, every
picture linked relatively (the folder can be zipped and mailed), pictures loaded lazily.
Up to ``report.page_size`` images get their cards on report.html itself; a larger run gets
an index there and the cards on report/page-1.html, page-2.html, ... Every text from the
user (paths, notes, names) is HTML-escaped by the templates' autoescaping.

It reads only the run's records (explain.results): the typed config, the files each writer
recorded (a file the records do not name is never linked, nor looked for), the skipped files.
Files: ``report.html``, ``report/page-N.html`` (not recorded: made from the records),
``report/photos/<image>.jpg`` (the photo at model input size, written while the run explains
the image; ``ImageEntry.files.photo``), ``report/colorbar-<map>.png`` (``RunSummary.files``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional
from urllib.parse import quote

import cv2
import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from explain import metrics, render, stats, swapped, trustlines
from explain.baselines import BASELINES
from explain.compare import maps_words
from explain.config import GREY_WORDS, MANY_CLASSES, ModelSpec
from explain.errors import ExplainError
from explain.tasks.records import PERCENT, number_name
from explain.methods import method_note, traits
from explain.names import encoded, without_bidi
from explain.metrics import LABELS, traits as metric_traits
from explain.methodtable import MethodTable, method_table
from explain.outputs import Listing, RunFolder, plain_relative, resume_flags
from explain.reportlinks import ATLAS_PAGE
from explain.reportload import ReportData, load_run  # explain.writers.report's, as before
from explain.shownpaths import shown_path, shown_text  # the page's paths
from explain.writers.cards import Card, image_cards, in_folder
from explain.writers.pageformat import card_classes, correlation
from explain.writers.summary import compare_file_lines, duration_parts, summed_over
from explain.results import DatasetSummary, Disagreement, MeanMap, RunSummary
from explain.writers import RunContext, Writer

if TYPE_CHECKING:
    from explain.batches import BatchContext
from explain.writers.panels import PANEL_MAX_ROWS

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PHOTO_QUALITY = 85


def photo_path(image_id: str) -> str:
    return f"report/photos/{image_id}.jpg"


def write_photo(run: RunFolder, image_id: str, rgb: np.ndarray) -> str:
    """The photo at model input size (RGB float 0..1 or uint8) as a JPEG for the cards;
    returns its path."""
    img = render.as_uint8(rgb)
    run.write_image(photo_path(image_id), img, PHOTO_QUALITY)  # encoded behind the model
    return photo_path(image_id)


def colorbar(colormap: str, width: int = 256, height: int = 10) -> np.ndarray:
    """The overlay colour scale, 0 (left) to the map's maximum (right), as uint8 RGB."""
    ramp = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
    return cv2.cvtColor(cv2.applyColorMap(ramp, render.colormap_code(colormap)), cv2.COLOR_BGR2RGB)


def write_colorbar(run: RunFolder, colormap: str) -> str:
    """The colour bar of ``colormap`` under the report's folder; returns its path."""
    rel = f"report/colorbar-{colormap}.png"
    run.write_image(rel, colorbar(colormap))
    return rel


@dataclass
class Case:
    """One of the most disagreeing image x class pairs, with its card link and overlays."""
    row: Disagreement
    page: str  # the page the image's card is on; "" for this page
    overlays: list[tuple[str, str]]  # (method, overlay file) present in the folder


@dataclass
class DatasetView:
    """The report's dataset section: the numbers, the mean-map pictures per class and
    method (correct, wrong), the top disagreement cases, the most frequent confusions."""
    numbers: DatasetSummary
    means: list[tuple[str, list[tuple[str, Optional[MeanMap], Optional[MeanMap]]]]]
    cases: list[Case]
    confusions: list[tuple[str, str, int]]  # (label, predicted, count), off the diagonal
    full_table: bool  # small enough to show the whole confusion table
    files: list[str]  # the dataset CSV files in the folder
    ranking: Optional[str]  # dataset/disagreement.csv, when it is in the folder


CONFUSION_TABLE_MAX = 25  # more classes: the most frequent confusions instead of the table
REPORT_CASES = 10  # disagreement cases shown with thumbnails


def _dataset_view(run: RunFolder, data: ReportData, cards: list[Card], *, classes: list[str],
                  methods: list[str]) -> Optional[DatasetView]:
    """The dataset section, or None when no image has a label. A run without a finished
    summary (interrupted) gets the numbers from its records, without mean maps."""
    from explain import datasets
    summary = data.summary
    if not any(e.label is not None for e in summary.images):
        return None
    numbers = summary.dataset or datasets.summarise(
        summary.images, classes, methods, summary.config.seed,
        summary.config.report.photo_separator)
    found = {(m.class_name, m.method, m.outcome): m for m in numbers.mean_maps
             if in_folder(run, m.file)}
    means = []
    for cls in classes:
        row = [(m, found.get((cls, m, "correct")), found.get((cls, m, "wrong"))) for m in methods]
        if any(c or w for _, c, w in row):
            means.append((cls, row))
    where = {card.entry.id: card for card in cards}
    cases = []
    for row in numbers.disagreement[:REPORT_CASES]:
        card = where.get(row.image)
        if card is None:
            continue
        cells = [card.cells.get((row.class_name, m)) for m in methods]
        overlays = [(m, c.overlay) for m, c in zip(methods, cells) if c and c.overlay]
        cases.append(Case(row, "" if card.page == "report.html" else card.page, overlays))
    axis, table = numbers.classes, numbers.confusion
    confusions = [(axis[i], axis[j], n) for _, i, j, n in heapq.nsmallest(  # the 20 most
        20, ((-n, i, j, n) for i, r in enumerate(table) for j, n in enumerate(r)  # frequent
             if i != j and n))]
    recorded = summary.files
    files = [f for f in (recorded.confusion_csv, recorded.per_class_csv,
                         recorded.disagreement_csv) if in_folder(run, f)]
    return DatasetView(numbers, means, cases, confusions, len(axis) <= CONFUSION_TABLE_MAX,
                       files, in_folder(run, recorded.disagreement_csv))


def _model_source(model: ModelSpec, config_file: str) -> str:
    """Where the model came from, its file as the page shows paths (``shown_path``), and a
    grey network's one channel (``model.in_channels: 1``)."""
    grey = f" (given 1 grey channel: {GREY_WORDS})" if model.in_channels == 1 else ""
    return _model_file(model, config_file) + grey


def _model_file(model: ModelSpec, config_file: str) -> str:
    if model.keras:
        return f"Keras model file {shown_path(str(model.keras), config_file)}"
    if model.builder:
        return f"builder {model.builder}"
    if model.arch:
        return f"state_dict {shown_path(str(model.file), config_file)} into {model.arch}"
    return f"whole model file {shown_path(str(model.file), config_file)}"


def _warnings(data: ReportData, cards: list[Card], weak: int) -> list[str]:
    """What a reader must not miss, for the box at the top of the page (``weak``: the maps
    flagged weak)."""
    summary = data.summary
    out = []
    if not data.finished:
        flags = resume_flags(summary.config.name, Path(summary.output_dir).name)
        out.append(f"unfinished run: {len(summary.images)} image(s) finished; complete it with "
                   f"explain CONFIG.yaml {flags} (the report is rebuilt at the end)")
    if summary.skipped_images:
        out.append(f"{len(summary.skipped_images)} image(s) could not be read and were skipped "
                   f"(see Skipped files)")
    out += swapped.warnings(summary)
    if weak:
        limit = summary.config.report.weak_below
        out.append(f"{weak} map(s) are of classes the model gives less than {limit:.0%}: "
                   f"they are drawn on the same 0..1 scale as the others, so they look as "
                   f"strong; see each card's raw maximum and probability")
    missing = sum(1 for card in cards for c in card.cells.values() if c.overlay is None)
    if missing:
        out.append(f"{missing} map picture(s) listed in the summary are missing from the folder")
    for method, info in ((summary.compare or {}).get("per_method") or {}).items():
        if info.get("verdict") == "differ":
            out.append(f"compare: {method} differs from its reference (max |diff| "
                       f"{info.get('max_abs', 0):.2e})"
                       + (f": {info['note']}" if info.get("note") else ""))
    out += compare_file_lines(summary)
    if not summary.config.model.fix_inplace:
        out.append("inplace guard off: CAMs may use activations an inplace op overwrote")
    if data.regrouped is not None:
        out.append(f"\"Which map to trust\" is worked out with report.photo_separator "
                   f"'{data.regrouped}' (explain report --photo-separator), which the run did "
                   f"not use: summary.json and the console's verdict are the run's own")
        out += [n for n in [trustlines.separator_note(summary)] if n]  # in no image's name
    if summary.trust is not None and summary.trust.look_alike_images:
        out.append(trustlines.look_alike_note(summary.trust,
                                              summary.config.report.photo_separator))
    return out


def _shown(value: Any) -> Any:
    """Every value a page prints: its text's bidirectional controls shown escaped (HTML is
    escaped by the template; a file name's U+202E turned its line around). The page's own
    markup (Markup) is left as it is."""
    return value if isinstance(value, Markup) else without_bidi(value)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The report's Jinja2 environment: HTML autoescaping on, undefined names are errors.
    Made once per process, so the templates are compiled once."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, finalize=_shown)
    env.filters["num"] = stats.cell
    env.filters["r"] = correlation
    env.filters["pct"] = lambda v: "–" if v is None else f"{stats.fixed(100 * v, 1)}%"
    env.filters["fixed"] = stats.fixed
    env.filters["bar"] = lambda p: f"{min(max(100 * p, 0.0), 100.0):.2f}" if p == p else "0.00"
    env.filters["href"] = href
    env.filters["maps"] = maps_words  # a compare verdict's maps: "3 of 6 maps (3 without ...)"
    env.globals["method_note"] = method_note
    env.globals["task_percent"] = PERCENT
    env.globals["number_name"] = number_name
    env.globals["duration_parts"] = duration_parts
    env.globals["summed_over"] = summed_over
    env.globals["card_classes"] = card_classes
    env.globals["metric_names"] = LABELS
    env.globals["auto_metrics"] = ", ".join(metrics.AUTO_METRICS)  # what turns metrics on
    env.globals["metrics_off"] = (  # the Run section's faithfulness row of a run without any
        f"off: <code>metrics: [{', '.join(metrics.AUTO_METRICS)}]</code> turns it on (a config "
        f"without a <code>metrics:</code> line has it for runs of up to {metrics.AUTO_MAPS} "
        f"maps only)")
    env.globals["metric_percent"] = lambda name: metric_traits(name).percent
    return env


def href(rel: str, prefix: str = "") -> str:
    """A page's link to a file of its folder, percent-encoded. ``rel`` comes from records that
    ``explain report`` reads back and someone may have edited: only a plain relative path is
    linked (``//host/x`` would load from another machine, ``../x`` from beside the folder)."""
    if not plain_relative(rel):
        raise LinkOutside(f"'{str(rel)[:120]}' is not a plain relative path inside the run "
                          f"folder; the run folder is damaged")
    return quote(prefix + rel)


class LinkOutside(ExplainError):
    """A record names a file outside its folder (``href``); ``rebuild`` names summary.json."""


def index_classes(cards: list[Card], classes: list[str]) -> list[str]:
    """The classes of the paged index's p(class) columns: every class, or the MANY_CLASSES
    that the most images list a probability of, in class order (an image of a run naming more
    lists only its likeliest; a shared 1.6 MB summary.json of 20,000 images x 1,000 named
    classes wrote a 232 MB index)."""
    if len(classes) <= MANY_CLASSES:
        return classes
    listed = Counter(c for card in cards for c in card.entry.probabilities)
    shown = set(sorted(classes, key=lambda c: -listed[c])[:MANY_CLASSES])  # ties: class order
    return [c for c in classes if c in shown]


MAX_PAGES = 200  # a larger run gets more cards per page (page_size: 1 over 20,000 images in a
# shared summary.json wrote 20,002 pages, 236 MB)


def render_pages(run: RunFolder, data: ReportData) -> dict[str, str]:
    """Relative path -> HTML of every page of the report (nothing is written)."""
    return dict(iter_pages(run, data))


def iter_pages(run: RunFolder, data: ReportData) -> Iterator[tuple[str, str]]:
    """(relative path, HTML) of each page of the report, one at a time: report.html first,
    then the card pages, so a writer holds one page besides report.html."""
    run = Listing(run)  # which files are there: a listing per folder, not a check per file
    summary, config = data.summary, data.summary.config
    methods = [m.name for m in config.methods]
    classes = summary.class_names()
    cards = image_cards(run, data, classes)
    size = max(config.report.page_size, -(-len(cards) // MAX_PAGES))
    chunks = [cards[i:i + size] for i in range(0, len(cards), size)] or [[]]
    paged = len(chunks) > 1
    pages = [f"report/page-{n}.html" for n in range(1, len(chunks) + 1)] if paged else ["report.html"]
    for n, (page, chunk) in enumerate(zip(pages, chunks), 1):
        for card in chunk:
            card.page, card.page_number = page, n
    table: MethodTable = method_table(summary, methods)
    trust = summary.trust or trustlines.build(summary, table)  # an unfinished run: its records
    common = dict(summary=summary, config=config, methods=methods, classes=classes,
                  colorbar=summary.files.colorbar, compare=summary.compare,
                  finished=data.finished, where=lambda p: shown_path(p, summary.config_file),
                  told=lambda t: shown_text(t, summary.config_file),
                  card_notes={m: method_note(m) for m in methods if traits(m).class_agnostic})
    env = environment()
    order = {c: i for i, c in enumerate(classes)}
    panels = sorted(((c, f) for c, f in summary.files.panels.items() if in_folder(run, f)),
                    key=lambda panel: order.get(panel[0], len(order)))
    shown = index_classes(cards, classes) if paged else classes
    weak = sum(1 for i in summary.images for r in i.cams if r.weak)  # counted once, here
    yield "report.html", env.get_template("report.html.j2").render(
        **common, prefix="", cards=[] if paged else cards, index=cards if paged else [],
        index_classes=shown, index_more=len(classes) - len(shown),
        pages=pages if paged else [], table=table, panels=panels, panel_rows=PANEL_MAX_ROWS,
        notes=summary.notes, skipped=summary.skipped_images + summary.skipped_files,
        warnings=_warnings(data, cards, weak), weak_maps=weak,
        model_source=_model_source(config.model, summary.config_file),
        dataset=_dataset_view(run, data, cards, classes=classes, methods=methods),
        trust=trust, unit=trust.unit, cost_per_map=trustlines.cost_per_map(summary),
        comparisons=[p for c in table.columns for p in c.comparisons],
        baseline_notes={b: BASELINES[b].description for b in table.baselines if b in BASELINES},
        min_images=stats.MIN_IMAGES, resamples=stats.RESAMPLES,
        unranked=[c.label for c in table.columns if c.direction and not c.meaningful],
        maps=sum(len(i.cams) for i in summary.images))
    if paged:
        for n, (page, chunk) in enumerate(zip(pages, chunks), 1):
            yield page, env.get_template("page.html.j2").render(
                **common, prefix="../", cards=chunk, number=n, pages=pages)


def build_report(run: RunFolder, data: ReportData) -> list[str]:
    """Write report.html and its pages; returns the pages written. The colour bar the run
    recorded is written again only when it is missing (or, for an interrupted run or one
    without a report, not recorded); a missing photo is left out (the card says so), never
    made from a path the records hold."""
    files = data.summary.files
    if not in_folder(run, files.colorbar):
        files.colorbar = write_colorbar(run, data.summary.config.output.colormap)
    written = []
    for rel, html in iter_pages(run, data):
        run.write_bytes(rel, encoded(html))
        written.append(rel)
    return written


# ---- rebuilding from a results folder -----------------------------------------------------

def atlas_page(summary: RunSummary) -> str:
    """The HTML of report/atlas.html, from the records only (the atlas writer's page, and
    ``explain report`` makes it again)."""
    return environment().get_template("atlas.html.j2").render(
        summary=summary, atlas=summary.atlas, ablation=summary.ablation, prefix="../",
        layer=summary.config.channel_layer)


def rebuild(root: Path, photo_separator: Optional[str] = None) -> Path:
    """``explain report RUN_DIR``: write the folder's report again from its records, without
    the model. With ``photo_separator``, "Which map to trust" is worked out again with images
    whose ids agree up to it as one photo (``--photo-separator``; summary.json is left as the
    run wrote it, and the page says so). Returns the path of report.html."""
    root = Path(root)
    folder = RunFolder(root)
    try:
        folder.pin()  # the pages go where the records are read from, whatever is renamed
    except ExplainError:
        pass  # not a folder: load_run says what it is
    try:
        data = load_run(root)
        if photo_separator is not None:
            data = _regrouped(data, photo_separator)
        if data.summary.files.atlas_page == ATLAS_PAGE:  # its names checked: made again
            folder.write_bytes(ATLAS_PAGE, encoded(atlas_page(data.summary)))
        build_report(folder, data)
    except LinkOutside as exc:
        raise ExplainError(f"{root / 'summary.json'}: {exc}") from None
    except RecursionError:
        raise ExplainError(f"{root}: the run's records are nested too deeply; the run folder "
                           f"is damaged") from None
    finally:
        folder.release()
    return root / "report.html"


def _regrouped(data: ReportData, separator: str) -> ReportData:
    """The records as ``report.photo_separator: separator`` would have made the trust record
    (the report's methods table reads the separator from the config, the verdict from
    ``trust``): copies, summary.json untouched. The run's own separator: its own records."""
    from explain.datasets import regrouped
    summary = data.summary
    if separator == summary.config.report.photo_separator:  # (no 'the run did not use' it)
        return data
    try:
        evidence = trustlines.regrouped(summary, [m.name for m in summary.config.methods],
                                        separator)
    except ValueError as exc:
        raise ExplainError(f"--photo-separator {exc}") from None
    report = summary.config.report.model_copy(update={"photo_separator": separator})
    config = summary.config.model_copy(update={"report": report})
    summary = summary.model_copy(update={"config": config, "trust": evidence,
                                         "dataset": regrouped(summary, separator)})
    return replace(data, summary=summary, regrouped=separator)


class ReportWriter(Writer):
    """The colour bar first, photos while the run goes (both recorded, so summary.json names
    them); the pages once the summary is complete (runs last)."""

    def start(self, ctx: RunContext) -> None:
        ctx.summary.files.colorbar = write_colorbar(ctx.run, ctx.cfg.output.colormap)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        for view in batch.images:
            view.entry.files.photo = write_photo(ctx.run, view.entry.id, view.item.rgb)

    def finish(self, ctx: RunContext) -> None:
        build_report(ctx.run, ReportData(ctx.summary, dict(ctx.compare_rows)))

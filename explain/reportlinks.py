"""The file names a run's records may give the files its report links, read back from a
shared folder: each is linked only when it is the name explain gives that file (as --resume
checks a kept map's file name, explain.recordfiles.kept_problem), in its own folder, with
the extension explain writes there. A map's ``file`` or ``files.atlas_page`` naming any
other file of the folder (``evil.html``, a page with a script) made the rebuilt report link
it; such a name is dropped, and the report's notes say so. A path that leaves the folder is
left as it is: the report refuses it (explain.writers.report.href, RunFolder.path)."""

from __future__ import annotations

from typing import Any, Optional

from explain.names import listed, quote
from explain.outputs import plain_relative
from explain.results import PICTURE_SUFFIXES, ImageEntry, RunSummary

ATLAS_PAGE = "report/atlas.html"  # explain.writers.atlaspages.PAGE
DATASET_CSV = ("dataset/confusion.csv", "dataset/per_class.csv", "dataset/disagreement.csv")
TASK_FOLDER = {"segmentation": "segmentation", "detection": "detections"}
OUTCOMES = ("correct", "wrong")  # of a mean map


class Names:
    """Checks file names against the names explain gives them; keeps the others' list."""

    def __init__(self) -> None:
        self.foreign: list[str] = []

    def given(self, rel: Optional[str], names: list[str], what: str) -> Optional[str]:
        """``rel`` when it is one of ``names`` (or None, or a path the report refuses);
        else None, and ``rel`` is noted with ``what`` (the record it is of)."""
        if rel is None or not plain_relative(rel) or rel in names:
            return rel
        self.foreign.append(f"{quote(rel, 60)} ({what})")
        return None

    def picture(self, rel: Optional[str], stem: str, what: str) -> Optional[str]:
        """``given`` for a picture named ``stem`` plus a picture extension explain writes."""
        return self.given(rel, [stem + suffix for suffix in PICTURE_SUFFIXES], what)

    def note(self) -> list[str]:
        """The report's note on the names dropped (none: no note)."""
        if not self.foreign:
            return []
        return [f"{len(self.foreign)} file name(s) in the records are not the names explain "
                f"gives those files, so the report does not link them: {listed(self.foreign)}; "
                f"the run folder was edited after the run"]


def _entry(names: Names, entry: ImageEntry, task: str) -> None:
    """Drop the names of one image's files (and its maps') that are not their own."""
    image = entry.id
    for rec in entry.cams:
        m, c = rec.method, rec.class_name
        what = f"map of {quote(c, 40)} by {m} on {quote(image, 40)}"
        rec.file = names.picture(rec.file, f"cams/{m}/{image}__{c}", what) or ""
        rec.guided_file = names.picture(rec.guided_file, f"guided_cam/{m}/{image}__{c}", what)
        files = rec.files
        files.top = names.picture(files.top, f"channels/{m}/{image}__{c}__top", what)
        files.contributions = names.picture(files.contributions,
                                            f"channels/{m}/{image}__{c}__contributions", what)
        files.compare = names.given(files.compare, [f"compare/{m}/{image}__{c}.png"], what)
    what = f"image {quote(image, 40)}"
    files = entry.files
    files.photo = names.given(files.photo, [f"report/photos/{image}.jpg"], what)
    files.activations = names.picture(files.activations, f"channels/{image}__activations", what)
    files.concepts_figure = names.given(files.concepts_figure, [f"concepts/{image}.png"], what)
    files.task = names.picture(files.task, f"{TASK_FOLDER.get(task, '?')}/{image}", what)
    files.contrast = {m: rel for m, rel in files.contrast.items()
                      if names.picture(rel, f"channels/{m}/{image}__contrast", what)}


def _atlas_names(summary: RunSummary) -> list[str]:
    """The names the atlas page links (its records') that are not the ones explain gives."""
    wanted: list[tuple[Optional[str], list[str]]] = []
    pictures = [f"channel_{{}}{suffix}" for suffix in PICTURE_SUFFIXES]
    if summary.atlas:
        atlas = summary.atlas
        wanted.append((atlas.files.regions_csv, ["channels/atlas/regions.csv"]))
        for fp in atlas.fingerprints:
            wanted.append((fp.table, [f"channels/atlas/{fp.method}/{fp.class_name}.csv"]))
            wanted += [(c.picture, [f"channels/atlas/{p.format(c.channel)}" for p in pictures])
                       for c in [*fp.channels, *fp.wrong_channels]]
    if summary.ablation:
        wanted.append((summary.ablation.files.table, ["channels/ablation/ablation.csv"]))
        wanted += [(a.curve, [f"channels/ablation/{m}{suffix}" for suffix in PICTURE_SUFFIXES])
                   for m, a in summary.ablation.methods.items()]
    return [rel for rel, own in wanted if rel is not None and rel not in own]


def _atlas_page(names: Names, summary: RunSummary) -> Optional[str]:
    """report/atlas.html when the run made one (``explain report`` writes it again from the
    records) and every name it links is the run's own; else None, noted."""
    page = names.given(summary.files.atlas_page, [ATLAS_PAGE], "files.atlas_page")
    if page is None or not plain_relative(page):
        return page  # none, or a path the report refuses
    foreign = _atlas_names(summary) if summary.atlas or summary.ablation else [page]
    for rel in foreign:
        names.given(rel, [], "the channel atlas page, not linked")
    return None if foreign else page


def foreign_links(summary: RunSummary) -> list[str]:
    """Drop every file name of ``summary``'s records that the report links and that is not
    the name explain gives that file (a map's overlay becomes '', as a missing file); returns
    the report's note on them (none when every name is the run's own)."""
    names = Names()
    config: Any = summary.config
    methods = {m.name for m in config.methods}
    for entry in summary.images:
        _entry(names, entry, config.task)
    files = summary.files
    files.colorbar = names.given(files.colorbar,
                                 [f"report/colorbar-{config.output.colormap}.png"], "colour bar")
    files.atlas_page = _atlas_page(names, summary)
    files.panels = {c: rel for c, rel in files.panels.items()
                    if names.given(rel, [f"panels/{c}.png"], f"panel of {quote(c, 40)}")}
    files.confusion_csv, files.per_class_csv, files.disagreement_csv = (
        names.given(rel, [own], "dataset file") for rel, own in
        zip((files.confusion_csv, files.per_class_csv, files.disagreement_csv), DATASET_CSV))
    if summary.sanity:
        checks = summary.sanity.files
        checks.cascading = names.given(checks.cascading, ["sanity/cascading.png"], "sanity")
        checks.independent = names.given(checks.independent, ["sanity/independent.png"],
                                         "sanity")
        checks.strip = names.picture(checks.strip, "sanity/strip", "sanity")
        checks.csv = names.given(checks.csv, ["sanity/sanity.csv"], "sanity")
    for mean in summary.dataset.mean_maps if summary.dataset else []:
        own = f"dataset/mean/{mean.method}/{mean.class_name}__{mean.outcome}.png"
        mean.file = names.given(mean.file, [own] if mean.method in methods and
                                mean.outcome in OUTCOMES else [], "mean map") or ""
    return names.note()

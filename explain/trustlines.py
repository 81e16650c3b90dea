"""Which map to trust, worked out once per run (the metrics writer's ``finish``): the trust
line of each method and the conclusion (explain.evidence's records, by its ``RULE``), built
from the run's methods table (explain.methodtable) and its sanity records. The report and
summary.csv read the result (summary.json's ``trust``), never compute it again."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from explain import stats
from explain.baselines import BASELINES
from explain.evidence import Evidence, Row, Stat, TrustLine, below_note, rule
from explain.methodtable import MethodTable, method_table
from explain.metrics import AUTO_METRICS
from explain.names import check_photo_separator, photo_of
from explain.sanity_records import CLASS_BLIND

# ---- sanity records (written by the sanity check, when it ran) ---------------------------

def sanity_verdicts(summary: Any) -> Optional[dict[str, tuple[str, Optional[str]]]]:
    """Method -> (verdict, detail) from the run's sanity record (``summary.sanity``, an
    explain.sanity_records.SanitySummary: its ``verdicts()``, the randomisation check's
    verdict and the numbers in words), or None when no sanity check ran."""
    record = getattr(summary, "sanity", None)
    return None if record is None else dict(record.verdicts())


# ---- building ---------------------------------------------------------------------------

def build(summary: Any, table: MethodTable) -> Evidence:
    """The run's evidence from its records and its methods table."""
    rows = [Row(name=m, kind="method", metrics={c.key: c.cells[m] for c in table.columns
                                                if m in c.cells}, unscored=_unscored(table, m))
            for m in table.methods]
    rows += [Row(name=b, kind="baseline", metrics={c.key: c.baselines[b] for c in table.columns
                                                   if b in c.baselines},
                 unscored=_unscored(table, b)) for b in table.baselines]
    evidence = Evidence(images=table.images, min_images=stats.MIN_IMAGES, unit=table.unit,
                        photos=table.photos,
                        meaningful=table.meaningful, resamples=stats.RESAMPLES,
                        confidence=stats.CONFIDENCE, seed=table.seed,
                        baselines={b: BASELINES[b].description for b in table.baselines
                                   if b in BASELINES},
                        rows=rows, comparisons=[p for c in table.columns for p in c.comparisons],
                        conclusion="", rule=rule(table.unit))
    sanity = sanity_verdicts(summary)
    evidence.lines = [_line(m, table, sanity) for m in table.methods]
    evidence.primary = _primary(summary, table)
    evidence.trusted, evidence.conclusion = _conclude(evidence, table, sanity)
    if any(c.direction for c in table.columns):  # ranked numbers: their units' independence
        _look_alike(summary, evidence)
    task = getattr(getattr(summary, "task", None), "task", None)
    if task and not any(c.direction for c in table.columns):  # metrics: is refused there
        evidence.conclusion = (f"no conclusion: a {task} run is not ranked (its maps' numbers "
                               f"are in the Methods table, as means)")
    return evidence


def _look_alike(summary: Any, evidence: Evidence) -> None:
    """The images that look alike (explain.images.looks) and yet count as different units
    of the intervals: the evidence's ``look_alike`` groups and their images."""
    from explain.evidence import LOOK_GROUPS, LOOK_SHOWN
    from explain.images.looks import alike
    separator = summary.config.report.photo_separator
    paths = {image.id: image.path for image in summary.images}
    groups = alike({image.id: image.look for image in summary.images},
                   lambda i: photo_of(i, separator, paths[i]))
    evidence.look_alike = [g[:LOOK_SHOWN] for g in groups[:LOOK_GROUPS]]
    evidence.look_alike_images = sum(len(g) for g in groups)
    evidence.look_alike_separator, evidence.look_alike_united = shared_separator(
        groups, paths, separator)


SEPARATORS = ("-", "_", ".")  # the ones file names of variants use (cat01-flip, cat_flip)


def shared_separator(groups: list[list[str]], paths: dict[str, str],
                     current: Optional[str]) -> tuple[Optional[str], int]:
    """The separator (of SEPARATORS, not ``current``) that makes the most look-alike
    ``groups`` one photo each, and how many it makes so; (None, 0) when none makes one.
    ``paths``: image id -> file, as photo_of reads them (an id explain made, 'dog_0', is not
    cut by a separator its file's name lacks). A group is one photo only when that photo is
    no other image's too: '_' made img_003 and img_004 photo 'img', with all img_*.jpg."""
    best: tuple[Optional[str], int] = (None, 0)
    for sep in SEPARATORS:
        if sep == current:
            continue
        photos = Counter(photo_of(i, sep, p) for i, p in paths.items())  # images per photo
        united = 0
        for g in groups:
            made = {photo_of(i, sep, paths.get(i)) for i in g}
            united += len(made) == 1 and photos[next(iter(made))] <= len(g)
        if united > best[1]:
            best = (sep, united)
    return best


def look_alike_note(evidence: Evidence, separator: Optional[str] = None) -> str:
    """The run's note on its look-alike images ('' for none); ``separator``: the
    report.photo_separator the evidence was worked out with."""
    if not evidence.look_alike_images:
        return ""
    shown = "; ".join(", ".join(g) for g in evidence.look_alike[:3])
    more = ", ..." if len(evidence.look_alike) > 3 else ""
    sep = evidence.look_alike_separator
    if sep is not None:
        groups = evidence.look_alike_united
        fix = (f"their names share the separator '{sep}' ({groups} group(s) become one photo "
               f"each): set report.photo_separator: '{sep}', or see the verdict so without "
               f"running again: explain report RUN_DIR --photo-separator '{sep}'")
    elif evidence.photos is not None:
        sep = separator or "-"
        fix = (f"name a photo's variants alike up to the separator '{sep}' (cat01{sep}flip.jpg, "
               f"cat01{sep}crop.jpg: one photo, cat01)")
    else:
        fix = "name them after their photo (cat01-flip.jpg) and set report.photo_separator: '-'"
    return (f"look-alike images: {evidence.look_alike_images} image(s) look like flips, "
            f"shifts or copies of another ({shown}{more}); the trust intervals count them as "
            f"independent {evidence.unit}s, which makes them too narrow: {fix}")


def separator_note(summary: Any) -> str:
    """A note when ``report.photo_separator`` cuts no image's id ('' otherwise): every image
    is then a photo of its own, as without it, and the setting was likely mistyped."""
    separator = summary.config.report.photo_separator
    if not separator or not summary.images or any(
            photo_of(image.id, separator, image.path) != image.id for image in summary.images):
        return ""
    return (f"report.photo_separator {separator!r} is in no image id (such as "
            f"{summary.images[0].id!r}): every image counts as a photo of its own")


def regrouped(summary: Any, methods: list[str], separator: Optional[str]) -> Evidence:
    """The run's evidence (summary.json's ``trust``; an unfinished run's from its records,
    with its config's separator, as its report has it), or with ``separator`` worked out
    again from its records as ``report.photo_separator: separator`` would have made it
    (checked as the config checks it: ValueError)."""
    if separator is None:  # the run's own grouping (an unfinished run's verdict was per image)
        return summary.trust or build(summary, method_table(summary, methods))
    report = summary.config.report.model_copy(update={
        "photo_separator": check_photo_separator(separator)})
    again = summary.model_copy(update={"config": summary.config.model_copy(
        update={"report": report})})
    return build(again, method_table(again, methods))


def cost_per_map(summary: Any) -> Optional[float]:
    """The run's CAM seconds over its maps (``durations_s['cams']`` / the maps: all methods
    together, as the engine times a batch, not a method), or None without timings. Not part
    of ``Evidence``: a timing differs from run to run, the evidence does not. Not rounded:
    the page shows 3 significant digits (rounded to 4 decimals, 0.000708 s read "0.000700"
    and a GPU's 0.00003 s "0")."""
    seconds = (getattr(summary, "durations_s", None) or {}).get("cams")
    maps = sum(len(image.cams) for image in summary.images)
    return seconds / maps if seconds and maps else None


def _unscored(table: MethodTable, name: str) -> dict[str, int]:
    """Metric -> maps of ``name`` (a method or baseline) there, where none had a finite number."""
    return {c.key: c.unscored[name] for c in table.columns if name in c.unscored}


def _line(method: str, table: MethodTable, sanity: Optional[dict]) -> TrustLine:
    verdict, detail = ("not run", "sanity.enabled") if sanity is None else \
        sanity.get(method, ("not checked", None))
    ranked = [c for c in table.columns if c.direction and method in c.cells]
    faith = {c.key: c.cells[method] for c in ranked if c.metric.kind == "faithfulness"}
    local = {c.key: c.cells[method] for c in ranked if c.metric.kind == "localisation"}
    cells = [c.cells[method] for c in ranked if c.baselines]
    # the metrics ranked on enough images, and any test that found a baseline as good (a
    # method with enough images of its own in a column that has too few for a ranking)
    beats = [c.cells[method].beats_baselines for c in ranked if c.baselines and (
        c.meaningful or c.cells[method].beats_baselines is False)]
    overall = None if not beats else (False if False in beats else
                                      (None if None in beats else True))
    below = list(dict.fromkeys(  # on too few images for a test: a warning
        b for cell in cells if cell.beats_baselines is None for b in cell.not_beaten))
    parts = [f"sanity: {verdict}" + (f" ({detail})" if detail else "")]
    parts += [f"{c.label} {_shown(c.cells[method], c.metric.percent, table.unit)}"
              for c in ranked]
    parts += [f"{c.label}: no finite number in its {c.unscored[method]} map(s)"
              for c in table.columns if c.direction and method in c.unscored]
    if any(c.baselines for c in ranked):  # as the report's line: yes, no, too few images
        parts.append("beats every baseline: " + {True: "yes", False: "no", None:
                                                  f"too few {table.unit}s to tell"}[overall]
                     + (f" ({below_note(below, table.unit)})" if below else ""))
    return TrustLine(method=method, sanity=verdict, sanity_detail=detail, faithfulness=faith,
                     localisation=local, beats_baselines=overall, below=below,
                     text=f"{method}: " + " · ".join(parts))


def _shown(stat: Stat, percent: bool, unit: str = "image") -> str:
    """A mean and its interval, as the report prints them (``unit``: what ``images``
    counts)."""
    def fmt(v: float) -> str:
        return f"{100 * v:.1f}%" if percent else stats.figure(v)
    if stat.low is None or stat.high is None:
        return f"{fmt(stat.mean)} (n = {stat.images} {unit}{'s' if stat.images != 1 else ''})"
    return f"{fmt(stat.mean)} [{fmt(stat.low)}, {fmt(stat.high)}]"


def _primary(summary: Any, table: MethodTable) -> Optional[str]:
    """The first faithfulness metric of the config that the table ranks on enough images,
    else the first such localisation metric."""
    ranked = {c.key: c for c in table.columns if c.direction and c.meaningful}
    configured = [m.name for m in getattr(summary.config, "metrics", None) or []]
    first = next((k for k in configured if k in ranked), None)
    return first or next((k for k, c in ranked.items() if c.metric.kind == "localisation"),
                         next(iter(ranked), None))


NO_SANITY = (" (no sanity check ran: sanity.enabled: true checks that the maps change when "
             "the model's weights are randomised)")


def _conclude(evidence: Evidence, table: MethodTable, sanity: Optional[dict]
              ) -> tuple[Optional[str], str]:
    """(trusted method or None, the conclusion's sentence), by RULE."""
    note = "" if sanity is not None else NO_SANITY
    if not any(c.direction for c in table.columns):
        return None, (f"no conclusion: no faithfulness or localisation numbers; add metrics: "
                      f"[{', '.join(AUTO_METRICS)}] or annotations: boxes to the config to get "
                      f"them")
    if evidence.primary is None:
        what = "images" if evidence.photos is None else "different photos"
        return None, (f"no conclusion yet: {_counted(evidence)}, no metric measured on at "
                      f"least {stats.MIN_IMAGES} (the minimum for a ranking): explain at "
                      f"least {stats.MIN_IMAGES} {what}, each with a faithfulness metric "
                      f"(metrics:) or a box (annotations:)")
    fine = [line.method for line in evidence.lines
            if line.sanity != "fails" and line.beats_baselines is True]
    if not fine:
        return None, "no method is clearly better: none beats every baseline on every " \
                     f"metric measured on enough {evidence.unit}s" + \
                     (" without failing sanity" if sanity is not None else "") + note
    column = next(c for c in table.columns if c.key == evidence.primary)
    # every method that does not fail sanity is a rival: one that is not shown to beat a
    # baseline is not shown to be worse (a trusted "only" method was a coin toss between
    # two equal methods, 1 run in 3)
    rivals = [x.method for x in evidence.lines if x.sanity != "fails" and x.method in column.cells]
    lead = [m for m in fine if all(_better(column, m, o) for o in rivals if o != m)]
    if lead:
        others = [o for o in rivals if o != lead[0]]
        beaten = f", and significantly better than {', '.join(others)} on {column.label}" \
            if others else ""
        said = (f"trust {lead[0]}: the only method that beats every baseline on every ranked "
                f"metric and does not fail sanity{beaten}") if len(fine) == 1 else \
            (f"trust {lead[0]}: it beats every baseline and is significantly better than "
             f"{', '.join(others)} on {column.label}")
        return lead[0], said + _class_blind(evidence, lead[0]) + note
    if len(fine) == 1:
        level = [o for o in rivals if o != fine[0] and not _better(column, fine[0], o)]
        return None, (f"no method is clearly better: only {fine[0]} beats every baseline, but "
                      f"it is not significantly better than {', '.join(level)} on "
                      f"{column.label} (not beating a baseline significantly is no evidence "
                      f"of doing worse)" + note)
    found = [f"{a} better than {b}" for a in fine for b in rivals if a != b
             and _better(column, a, b)]
    if found:
        return None, (f"no method is clearly better: {', '.join(fine)} beat every baseline, "
                      f"but none is significantly better than every other on {column.label} "
                      f"(significant: {'; '.join(found)})" + note)
    return None, (f"no method is clearly better: {', '.join(fine)} beat every baseline, but "
                  f"do not differ significantly on {column.label}" + note)


def _counted(evidence: Evidence) -> str:
    """'3 image(s)', or '12 image(s) of 3 photo(s)' where the intervals resample photos."""
    images = f"{evidence.images} image(s)"
    return images if evidence.photos is None else f"{images} of {evidence.photos} photo(s)"


def _class_blind(evidence: Evidence, method: str) -> str:
    """The caveat of a trusted method whose random-logit check failed."""
    line = next((x for x in evidence.lines if x.method == method), None)
    return "; but its random-logit check fails: its map barely depends on the class " \
           "explained" if line is not None and line.sanity in CLASS_BLIND else ""


def _better(column: Any, a: str, b: str) -> bool:
    """Whether the column's paired comparison finds ``a`` better than ``b``."""
    for p in column.comparisons:
        if p.b_kind == "method" and {p.a, p.b} == {a, b}:
            return p.verdict == f"{a} better"
    return False

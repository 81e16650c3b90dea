"""Which map to trust, as records: summary.json's ``trust`` (``Evidence``), the baseline maps'
numbers (``BaselineMap``, on each image entry), and the rule that turns them into one line per
method and a conclusion.

``Evidence`` is made once per run, at the end (the metrics writer's ``finish``), from the map
records, the baseline records, the sanity records (``RunSummary.sanity`` when a sanity check
ran); summary.csv, the report's "Which map to trust" section and its
methods table all read these numbers, never compute others.

The rule (``RULE``, also shown in the report) counts only the ranked metrics measured on at
least ``explain.stats.MIN_IMAGES`` images (a metric below that, e.g. boxes on 2 images, is
shown, not used). A method is *trusted* when

1. its parameter-randomisation check does not fail (a check that did not run is said, not
   held against it; a random-logit failure is named in its line and the conclusion);
2. it beats every baseline on every such metric: the paired 95% bootstrap interval of its
   per-image difference to the baseline lies on the better side of 0;
3. it is significantly better (paired interval) on the primary metric than every other
   method whose sanity check does not fail, those that do not beat every baseline included
   (not beating a baseline significantly is no evidence of doing worse: with "the only such
   method" enough, two equal methods got one trusted in 1 run of 3); the primary metric:
   the first faithfulness metric of the config, else the first localisation metric.

Otherwise "no method is clearly better", with the reason. Without a metric on enough images
nothing is ranked and no conclusion is drawn ("no conclusion yet").

The records import nothing else of explain (explain.results holds them); the statistics of
the methods table (``judge``) import explain.stats when called. explain.trustlines builds the
trust lines and the conclusion from them.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from explain.names import check_photo_separator, quote

LOOK_GROUPS, LOOK_SHOWN = 10, 4  # look-alike groups kept in the record, ids kept of each

RULE = ("only metrics measured on at least the minimum of images count; a method is trusted "
        "when its parameter-randomisation check does not fail (a random-logit failure is "
        "named), it beats every baseline on every such metric "
        "(paired 95% bootstrap interval of the per-image difference on the better side of 0), "
        "and it is significantly better than every other method that does not fail sanity "
        "(one that does not beat every baseline included) on the primary metric "
        "(each pair's interval at 1 - 0.05 / the method pairs "
        "compared; the primary metric: the first faithfulness metric, else the first "
        "localisation metric); otherwise no method is clearly better")


def rule(unit: str = "image") -> str:
    """``RULE`` in the words of what the intervals resample ('image', or 'photo' with
    report.photo_separator: the minimum and the paired differences are of photos)."""
    return RULE.replace("minimum of images", f"minimum of {unit}s").replace(
        "per-image difference", f"per-{unit} difference")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class BaselineMap(_Record):
    """One baseline map (explain.baselines) of an image x class: metric name -> its score,
    computed as a map's are (pointing_hit as 1 or 0). A yardstick, not a method: no file."""
    class_name: str = Field(alias="class")
    baseline: str
    scores: dict[str, float] = Field(default_factory=dict)


class Stat(_Record):
    """One method (or baseline) on one metric: the mean over images of its per-image mean
    (a method's maps of an image averaged first), the 95% bootstrap interval over images
    (low, high; none for a single image), images and maps counted. Methods only: ``place``
    (1 + the methods significantly better; none below the minimum of images or for a
    metric that is not ranked), ``beats_baselines`` (True: significantly better than every
    baseline; False: not better than ``not_beaten``; None: too few images to tell, where
    ``not_beaten`` names the baselines whose mean is as good)."""
    mean: float
    low: Optional[float] = None
    high: Optional[float] = None
    images: int
    maps: int
    place: Optional[int] = None
    beats_baselines: Optional[bool] = None
    not_beaten: list[str] = Field(default_factory=list)
    left_out: Optional[int] = None  # maps whose number was NaN or infinite: not counted


class Row(_Record):
    """A row of the methods table: a method or a baseline, metric name -> its numbers;
    ``unscored``: metric name -> its maps there, none of which had a finite number."""
    name: str
    kind: Literal["method", "baseline"]
    metrics: dict[str, Stat] = Field(default_factory=dict)
    unscored: dict[str, int] = Field(default_factory=dict)


class Comparison(_Record):
    """A paired comparison on one metric over the images both have: A - B (mean of the
    per-image differences) and its 95% bootstrap interval; ``verdict``: 'A better', 'B better'
    (in the metric's direction), 'not different', or 'too few images'."""
    metric: str
    a: str
    b: str  # a method, or a baseline (``b_kind``)
    b_kind: Literal["method", "baseline"] = "method"
    difference: float
    low: Optional[float] = None
    high: Optional[float] = None
    confidence: Optional[float] = None  # the interval's level (method pairs: Bonferroni)
    images: int
    verdict: str
    text: str


class TrustLine(_Record):
    """One method's line at the top of the report."""
    method: str
    sanity: str  # passes | fails | not run | what the sanity record says
    sanity_detail: Optional[str] = None
    faithfulness: dict[str, Stat] = Field(default_factory=dict)
    localisation: dict[str, Stat] = Field(default_factory=dict)
    beats_baselines: Optional[bool] = None  # on every ranked metric; None: too few images
    # on the metrics with too few images for a test: the baselines whose mean is better than
    # the method's (a warning, not a finding; the table's cells say the same)
    below: list[str] = Field(default_factory=list)
    text: str  # the line in words (the cost per map is not in it: see ``cost_per_map``)

    def below_note(self, unit: str = "image") -> str:
        """``below`` in words, for the line and the report."""
        return below_note(self.below, unit)


def below_note(below: list[str], unit: str = "image") -> str:
    """'on the metrics with too few images for a test, the centre baseline did as well or
    better on average' ('' for none): the baselines whose mean matched the method's;
    ``unit``: 'image', or 'photo' where the intervals resample photos."""
    if not below:
        return ""
    names = below[0] if len(below) == 1 else f"{', '.join(below[:-1])} and {below[-1]}"
    return (f"on the metrics with too few {unit}s for a test, the {names} baseline"
            f"{'s' if len(below) > 1 else ''} did as well or better on average")


class Evidence(_Record):
    """summary.json's ``trust``: the methods table with baselines, intervals and comparisons,
    one line per method and the conclusion (see the module docstring for the rule)."""
    images: int  # images with a ranked number
    min_images: int  # of units (images, or photos)
    meaningful: bool  # a ranked metric on >= min_images units: places, a conclusion
    # what the intervals resample: the image, or the photo (report.photo_separator: a photo's
    # variants averaged first, ``photos`` of them); every Stat's and Comparison's ``images``
    # then counts photos
    unit: Literal["image", "photo"] = "image"
    photos: Optional[int] = None
    # images that look alike (flips, shifts, copies: explain.images.looks) and yet count as
    # different units: the first LOOK_GROUPS groups, LOOK_SHOWN ids each; how many images
    look_alike: list[list[str]] = Field(default_factory=list)
    look_alike_images: int = 0
    # a separator the look-alike images' file names already share ('_' for cat, cat_flip),
    # which would make groups of them one photo each, and how many groups
    look_alike_separator: Optional[str] = None
    look_alike_united: int = 0
    resamples: int
    confidence: float
    seed: int
    baselines: dict[str, str] = Field(default_factory=dict)  # name -> what it is
    rows: list[Row] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)
    lines: list[TrustLine] = Field(default_factory=list)
    primary: Optional[str] = None  # the metric the conclusion compares on
    trusted: Optional[str] = None
    conclusion: str
    rule: str = RULE

    def row(self, name: str, kind: str = "method") -> Optional[Row]:
        return next((r for r in self.rows if r.name == name and r.kind == kind), None)

    @model_validator(mode="after")
    def _untested(self) -> "Evidence":
        """A summary written before the rule in ``_beats``: False on too few units meant the
        warning that is None with ``not_beaten`` now."""
        for row in self.rows:
            for s in row.metrics.values():
                if s.beats_baselines is False and s.images < self.min_images:
                    s.beats_baselines = None
        return self


def evidence_problem(evidence: Evidence, methods: list[str], metrics: set[str],
                     baselines: set[str]) -> Optional[str]:
    """Why a ``trust`` record read back cannot be its run's, or None: rows and lines of its
    ``methods`` (each once) and of explain's ``baselines`` (their names), numbers of
    ``metrics`` only (the table's and the records' own). A shared summary.json's 8,000
    made-up metric names on one row, 1.8 MB with 3,000 maps, made a notebook's
    ``Run.table()`` of 3,000 x 24,000 cells: 2.9 GB (each map's row gets its method's
    columns)."""
    seen: set[tuple[str, str]] = set()
    for row in evidence.rows:
        known = methods if row.kind == "method" else baselines
        if row.name not in known or (row.kind, row.name) in seen:
            return f"a row {quote(row.name)} its run does not have (or has once)"
        seen.add((row.kind, row.name))
        other = next((k for k in (*row.metrics, *row.unscored) if k not in metrics), None)
        if other is not None:
            return f"a row's metric {quote(other)} its run did not compute"
    for line in evidence.lines:
        other = next((k for k in (*line.faithfulness, *line.localisation) if k not in metrics),
                     None)
        if line.method not in methods or other is not None:
            return f"the line of {quote(line.method)}: not of its run's methods and metrics"
    other = next((b for b in evidence.baselines if b not in baselines), None)
    if other is not None:
        return f"a baseline {quote(other)} that explain does not have"
    if len(evidence.look_alike) > LOOK_GROUPS or any(len(g) > LOOK_SHOWN
                                                     for g in evidence.look_alike):
        return f"more look-alike images than its run lists ({LOOK_GROUPS} x {LOOK_SHOWN})"
    if evidence.look_alike_separator is not None:
        try:
            check_photo_separator(evidence.look_alike_separator)
        except ValueError as exc:
            return f"look_alike_separator {exc}"
    return None


# ---- the statistics of the methods table (explain.methodtable) -----------------------------

PerImage = dict[str, list[float]]  # image id -> the numbers of its maps
Who = tuple[str, str]  # ("method" | "baseline", name)


def _r(value: Optional[float]) -> Optional[float]:
    """7 significant digits (6 decimals made scores of 3e-7 a 0 [0, 0] beside a verdict
    taken on the unrounded numbers)."""
    from explain.measures import significant
    return None if value is None else significant(float(value))


def judge(columns: list, found: dict[str, dict[Who, PerImage]], methods: list[str], *,
          baselines: list[str], seed: int, unit: str = "image") -> None:
    """Fill each column of the methods table (explain.methodtable.Column): its methods' cells
    and, for a ranked metric, its baselines' cells, its comparisons (methods with each other,
    then each method with each baseline), places, leads and beats-baselines. ``found``:
    metric -> who -> unit (an image, or a photo: ``unit``) -> numbers. Every interval of
    the table is drawn in one explain.stats.intervals call (vectors of one length share
    their resamples)."""
    from explain import stats
    drafts = [_Draft(col, found.get(col.key, {}), methods, baselines, unit=unit)
              for col in columns]
    asked = [v for d in drafts for v in d.asked()]
    bounds = iter(stats.intervals([v for v, _ in asked], seed=seed,
                                  confidence=[c for _, c in asked]) if asked else [])
    for draft in drafts:
        draft.fill(bounds)


class _Draft:
    """One column between its numbers and its statistics: per-image means (a map's numbers
    of one image averaged first) and the pairs to compare on their shared images."""

    def __init__(self, column: Any, found: dict[Who, PerImage], methods: list[str],
                 baselines: list[str], *, unit: str = "image") -> None:
        self.col = column
        self.unit = unit  # what the numbers are per: 'image', or 'photo'
        ranked = bool(column.direction)
        who = [("method", m) for m in methods] + \
              ([("baseline", b) for b in baselines] if ranked else [])
        finite = {w: {i: [x for x in v if math.isfinite(x)] for i, v in found[w].items()}
                  for w in who if w in found}
        self.left_out = {w: sum(len(v) for v in found[w].values()) -
                         sum(len(v) for v in finite[w].values()) for w in finite}
        self.means = {w: {i: sum(v) / len(v) for i, v in per.items() if v}
                      for w, per in finite.items()}
        self.means = {w: per for w, per in self.means.items() if per}
        self.maps = {w: sum(len(v) for v in finite[w].values()) for w in self.means}
        mine = [w for w in self.means if w[0] == "method"]
        pairs = [(a, b) for i, a in enumerate(mine) for b in mine[i + 1:]]
        pairs += [(a, b) for a in mine for b in self.means if b[0] == "baseline"]
        self.pairs = [(a, b, [i for i in self.means[a] if i in self.means[b]])
                      for a, b in (pairs if ranked else [])]

    def family(self) -> int:
        """How many method pairs this column tests: each pair's interval is drawn at
        1 - 0.05 / that many (Bonferroni), so places and stars hold at 95% together."""
        from explain import stats
        return max(1, sum(1 for a, b, shared in self.pairs
                          if b[0] == "method" and len(shared) >= stats.MIN_IMAGES))

    def level(self, b: Who) -> float:
        from explain import stats
        return stats.CONFIDENCE if b[0] == "baseline" else \
            1.0 - (1.0 - stats.CONFIDENCE) / self.family()

    def asked(self) -> list[tuple[list[float], float]]:
        """The vectors that need an interval and the level of each, in the order ``fill``
        takes the answers. A method against the baselines is at 95% each: "beats every
        baseline" needs every one of them (an intersection-union test, no correction)."""
        from explain import stats
        out = [(list(m.values()), stats.CONFIDENCE) for m in self.means.values() if len(m) > 1]
        return out + [([self.means[a][i] - self.means[b][i] for i in shared], self.level(b))
                      for a, b, shared in self.pairs if len(shared) >= stats.MIN_IMAGES]

    def fill(self, bounds: Iterator[tuple[float, float]]) -> None:
        from explain import stats
        col = self.col
        for w, per in self.means.items():
            mean = sum(per.values()) / len(per)
            low, high = _within(next(bounds), col.metric.bounds) if len(per) > 1 \
                else (None, None)
            if col.metric.yes_no and low is not None:
                low, high = stats.widened((low, high), mean, len(per))
            cell = Stat(mean=_r(mean), low=_r(low), high=_r(high),
                        images=len(per), maps=self.maps[w], left_out=self.left_out[w] or None)
            (col.cells if w[0] == "method" else col.baselines)[w[1]] = cell
        col.unscored = {w[1]: n for w, n in self.left_out.items() if w not in self.means}
        for a, b, shared in self.pairs:
            diff = sum(self.means[a][i] - self.means[b][i] for i in shared) / len(shared) \
                if shared else 0.0
            span = col.metric.bounds and (col.metric.bounds[0] - col.metric.bounds[1],
                                          col.metric.bounds[1] - col.metric.bounds[0])
            low, high = _within(next(bounds), span) if len(shared) >= stats.MIN_IMAGES \
                else (None, None)
            if col.metric.yes_no and low is not None:  # no finding the exact test lacks
                low, high = stats.sign_checked((low, high), [
                    self.means[a][i] - self.means[b][i] for i in shared], self.level(b))
            col.comparisons.append(_comparison(col.metric, (a[1], b), stats.Difference(
                diff, low, high, len(shared)), (self.level(b), self.family(), self.unit)))
        if col.direction:
            _places(col)


def _within(interval: tuple[float, float], bounds: Optional[tuple[float, float]]
            ) -> tuple[float, float]:
    """An interval cut to the values its quantity can take (none: as it is). The true mean
    lies inside them, so the cut interval holds it whenever the whole one does."""
    if not bounds:
        return interval
    low, high = interval
    return max(low, bounds[0]), min(high, bounds[1])


def _comparison(metric: Any, pair: tuple[str, Who], diff: Any,
                level: tuple[float, int, str]) -> Comparison:
    """The record of a paired comparison (``diff``: an explain.stats.Difference of A - B;
    ``level``: its interval's confidence, the method pairs it is corrected for, and what it
    counts: 'image' or 'photo')."""
    from explain.stats import figure
    name_a, (kind, name_b) = pair
    confidence, family, unit = level
    sign = {"higher": metric.direction, "lower": -metric.direction}.get(diff.verdict, 0)
    verdict = {1: f"{name_a} better", -1: f"{name_b} better"}.get(sign, diff.verdict)
    ci = f"{100 * confidence:.3g}% CI" + (f" (95% for the {family} method pairs together)"
                                          if kind == "method" and family > 1 else "")
    if sign:  # the difference from the winner's side: "better" beside its own sign
        winner, loser = (name_a, name_b) if sign > 0 else (name_b, name_a)
        mean, low, high = (diff.mean, diff.low, diff.high) if sign > 0 else \
            (-diff.mean, -diff.high, -diff.low)
        lower = " (lower is better)" if metric.direction < 0 else ""
        text = (f"{winner} better than {loser} on {metric.label}: {winner} − {loser} "
                f"{figure(mean, sign=True)}{lower}, {ci} [{figure(low)}, {figure(high)}] "
                f"over {diff.images} {unit}s")
    elif diff.verdict == "not different":
        text = (f"no significant difference between {name_a} and {name_b} on "
                f"{metric.label}: {ci} of the difference [{figure(diff.low)}, "
                f"{figure(diff.high)}] over {diff.images} {unit}s holds 0")
    else:
        text = (f"{name_a} vs {name_b} on {metric.label}: {diff.images} shared {unit}(s), "
                f"too few to tell")
    return Comparison(metric=metric.name, a=name_a, b=name_b, b_kind=kind,
                      difference=_r(diff.mean), low=_r(diff.low), high=_r(diff.high),
                      confidence=round(confidence, 6) if diff.low is not None else None,
                      images=diff.images, verdict=verdict, text=text)


def _places(col: Any) -> None:
    """Places (1 + the methods significantly better; with the minimum of images for every
    method), leads (significantly better than every other method), beats-baselines."""
    from explain import stats
    methods = list(col.cells)
    won = {(p.a, p.b) if p.verdict == f"{p.a} better" else (p.b, p.a)
           for p in col.comparisons if p.b_kind == "method" and p.verdict.endswith(" better")}
    col.meaningful = all(c.images >= stats.MIN_IMAGES for c in col.cells.values())
    for m, cell in col.cells.items():
        if col.meaningful:
            cell.place = 1 + sum(1 for o in methods if (o, m) in won)
        _beats(col, m, cell)
    col.leads = [m for m in methods if len(methods) > 1 and
                 all((m, o) in won for o in methods if o != m)]


def _beats(col: Any, method: str, cell: Stat) -> None:
    """Whether the method beats every baseline: significantly (True), not (False: a test
    found it no better than the baselines in ``not_beaten``), or None when too few images
    tell (``not_beaten`` then lists the baselines whose mean is as good: a warning). The
    one rule for summary.json, summary.csv, the report and the notebook."""
    if not col.baselines:
        return
    unknown = missed = False
    for p in col.comparisons:
        if p.a != method or p.b_kind != "baseline" or p.verdict == f"{method} better":
            continue
        few = p.verdict == "too few images"
        if few and col.direction * p.difference > 0:
            unknown = True
        else:  # not better: a finding when tested, a warning on too few images
            cell.not_beaten.append(p.b)
            missed = missed or not few
    cell.beats_baselines = False if missed else \
        (None if unknown or cell.not_beaten else True)


# ---- summary.csv ------------------------------------------------------------------------

def method_columns(evidence: Optional[Evidence]) -> dict[str, dict[str, Any]]:
    """Method -> the columns summary.csv adds to each of its maps' rows: per metric
    ``<metric>.mean``, ``.ci_low``, ``.ci_high`` and, for a ranked one, ``.place`` and
    ``.beats_baselines`` (empty below the minimum of images for a test: a mean that is not
    better is a warning, not a finding); then ``sanity`` and ``trusted``. Timings are not
    among them (summary.csv holds none, so two runs give the same bytes)."""
    if evidence is None:
        return {}
    from explain.metrics import traits
    out: dict[str, dict[str, Any]] = {}
    for row in evidence.rows:
        if row.kind != "method":
            continue
        cols: dict[str, Any] = {}
        for key, s in row.metrics.items():
            cols.update({f"{key}.mean": s.mean, f"{key}.ci_low": s.low, f"{key}.ci_high": s.high})
            if traits(key).direction:  # ranked: its place and the baselines
                cols.update({f"{key}.place": s.place,
                             f"{key}.beats_baselines": s.beats_baselines})
        line = next((x for x in evidence.lines if x.method == row.name), None)
        cols["sanity"] = line.sanity if line else None
        cols["trusted"] = evidence.trusted == row.name
        out[row.name] = cols
    return out


def baseline_columns(baselines: list[BaselineMap], class_name: str) -> dict[str, float]:
    """``baseline.<name>.<metric>``: the baselines' scores for the image and class of a row."""
    return {f"baseline.{b.baseline}.{key}": value for b in baselines
            if b.class_name == class_name for key, value in b.scores.items()}

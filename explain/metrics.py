"""The metrics that say which explanation to trust, as one table of their traits (``TABLE``):
faithfulness (pytorch_grad_cam.metrics), localisation against ground-truth boxes, agreement.

Faithfulness: per image, each metric is one call of its metric object on all of the image's
maps (its classes x methods, in config order: a batch of copies of the image):
explain.writers.metrics.faithfulness. ROAD's imputation adds random noise: each map draws
it from a generator of its own, seeded by ``map_seed`` (the run's ``seed``, the map's image,
class and method), so a score does not depend on how images were batched, on ``--resume``
or on the other maps of the image, and equals a direct library call on that map alone after
``torch.manual_seed`` of its seed. The metric objects are the library's, except ROAD's:
explain.road computes the library's numbers (same masks, linear system, noise draws) with a
faster solve and batched forward passes.

Which metrics run: the config's list; unset, ``AUTO_METRICS`` (ROAD combined at its 9
percentiles) for runs of up to ``AUTO_MAPS`` maps and none above (explain.plan's
``default_metrics``, once per run). Localisation is explain.annotations.localisation; the
report's methods table is explain.methodtable.

What the scores mean (the model's score is the class score the run explains: the head's
logit or probability, from ``explain.models.heads.ScoreModel``, picked per class by the
library's ``ClassifierOutputTarget``):

- ``road_most_relevant_first``: change of the score when the map's top pixels (above each
  percentile) are replaced by ROAD's noisy linear imputation, mean over the percentiles;
  lower (a larger drop) is better.
- ``road_least_relevant_first``: the same, removing the least relevant pixels; higher is better.
- ``road_combined``: (least - most) / 2 over the percentiles; higher is better.
- ``drop_in_confidence``: how much the score drops when the input is multiplied by the map;
  lower is better.
- ``increase_in_confidence``: 1 when that product raises the score, else 0; higher is better.

Localisation, per map and the class's boxes (in input pixels):

- ``pointing_hit``: the map's peak lies in a box (a peak shared by several pixels: at least
  half of them, explain.measures.peak_inside); an all-zero map has no peak and misses;
- ``energy_in_box``: the share of the map's sum inside the boxes (energy-based pointing game);
- ``box_iou``: IoU of the boxes with the pixels at or above ``threshold`` x the map's maximum.

Agreement (with two or more methods): each map's mean Pearson correlation with the other
methods' maps of the same image and class (``explain.compare.pearson``). Shown, not ranked:
agreeing with the others does not make a map right.

Each metric is ONE entry of ``TABLE`` (``MetricTraits``: name, label, direction, glossary
text, percent display, kind, factory, passes, ROAD imputations); the config, the estimate,
summary.csv and the report read it there. Adding a faithfulness metric is one call,
``register(MetricTraits(...))``. The table imports nothing of explain, torch or the library
(the config checks names with it before torch is loaded): the factories import the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Optional, Protocol


class MetricSpec(Protocol):
    """A metric entry as the config gives it (explain.config.MetricSpec, which checks its name
    against this table: the table knows no config type)."""
    name: str
    percentiles: Optional[list[int]]

Kind = Literal["faithfulness", "localisation", "agreement"]
KINDS: tuple[Kind, ...] = ("faithfulness", "localisation", "agreement")  # column order
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the library's own default


@dataclass(frozen=True)
class MetricTraits:
    """Everything explain knows of one metric: its config and column name, its label in the
    report, its direction (+1: higher is better, -1: lower is better, 0: not a quality, shown
    but not ranked), its glossary text, whether the report shows its mean as a percentage, and
    where its numbers come from (``kind``).

    Faithfulness metrics (the config's ``metrics:``) also have a ``factory``: config entry ->
    an object called as the library's metrics are, ``(inputs, cams, targets, model)`` -> K
    scores; ``passes``: forward passes per image (per percentile when it takes percentiles),
    for the run's estimate; ``imputations``: ROAD imputations per map and percentile;
    ``percentiles``: the default percentiles of a metric that takes them (None: takes none);
    ``aliases``: other names a config may use; ``bounds``: the values a number can take (a
    share: 0 to 1), which the intervals of its means and differences are cut to (a t-interval
    on few images reached 105.8%). Localisation numbers are made by ``localisation`` (fields
    of results.Localisation), agreement by the metrics writer."""
    name: str
    label: str
    direction: int
    glossary: str
    kind: Kind = "faithfulness"
    percent: bool = False
    factory: Optional[Callable[[MetricSpec], Callable]] = None
    passes: int = 0
    imputations: int = 0
    percentiles: Optional[tuple[int, ...]] = None
    aliases: tuple[str, ...] = ()
    bounds: Optional[tuple[float, float]] = None
    # each map's number is a yes or a no (its image means are shares): the intervals of its
    # means are at least their Wilson score interval (explain.stats.widened), which images
    # that all hit need (their bootstrap has no spread: [100%, 100%])
    yes_no: bool = False

    def __post_init__(self) -> None:
        if self.direction not in (-1, 0, 1) or self.kind not in KINDS:
            raise ValueError(f"metric '{self.name}': direction -1, 0 or 1; kind one of "
                             f"{', '.join(KINDS)}")


def _road(order: str) -> Callable[[MetricSpec], Callable]:
    """explain.road's ROAD: the library's numbers (same masks, system, noise draws, scores),
    with a multigrid solve and batched forward passes."""
    def make(spec: MetricSpec) -> Callable:
        from explain.road import ROAD
        return ROAD(order, percentiles=list(spec.percentiles))
    return make


def _cam_mult(cls_name: str) -> Callable[[MetricSpec], Callable]:
    def make(spec: MetricSpec) -> Callable:
        from pytorch_grad_cam.metrics import cam_mult_image
        return getattr(cam_mult_image, cls_name)()
    return make


_IMPUTED = "replaced by ROAD's noisy linear imputation"
SHARE = (0.0, 1.0)  # the bounds of a share or an IoU
TABLE: dict[str, MetricTraits] = {t.name: t for t in (
    MetricTraits("road_combined", "ROAD combined", 1,
                 "ROAD (Rong et al. 2022): (score change when the least relevant pixels are "
                 "imputed − change when the most relevant are) / 2, mean over the percentiles. "
                 "A faithful map keeps the score when its unimportant pixels go and loses it "
                 "when its important ones go; below 0, the score fell more without the "
                 "pixels the map calls unimportant: the evidence lies outside its peak.",
                 factory=_road("combined"), passes=4, imputations=2,
                 percentiles=ROAD_PERCENTILES),
    MetricTraits("road_most_relevant_first", "ROAD most relevant first", -1,
                 f"score change when the map's most relevant pixels are {_IMPUTED}; a "
                 f"faithful map makes it drop.",
                 factory=_road("most"), passes=2, imputations=1,
                 percentiles=ROAD_PERCENTILES, aliases=("road_morf",)),
    MetricTraits("road_least_relevant_first", "ROAD least relevant first", 1,
                 "score change when the least relevant pixels are imputed; a faithful map "
                 "keeps the score.",
                 factory=_road("least"), passes=2, imputations=1,
                 percentiles=ROAD_PERCENTILES, aliases=("road_lerf",)),
    MetricTraits("drop_in_confidence", "drop in confidence", -1,
                 "how much the explained score drops when the input is multiplied by the "
                 "map (0 = no drop); the library's name: the score is the one model.target "
                 "says, the logit by default, not a probability.",
                 factory=_cam_mult("DropInConfidence"), passes=2),
    MetricTraits("increase_in_confidence", "increase in confidence", 1,
                 "mean over images of the share of the image's maps whose input × map raises "
                 "the explained score (the logit by default, as model.target says).",
                 percent=True, bounds=SHARE, yes_no=True,
                 factory=_cam_mult("IncreaseInConfidence"), passes=2),
    MetricTraits("pointing_hit", "pointing game", 1,
                 "pointing game: mean over images of the share of the image's maps whose "
                 "peak lies inside the class's box (a peak shared by several pixels: when at "
                 "least half of them lie inside).",
                 kind="localisation", percent=True, bounds=SHARE, yes_no=True),
    MetricTraits("energy_in_box", "energy in box", 1,
                 "energy-based pointing game: mean over images of the share of the map's "
                 "sum inside the box.",
                 kind="localisation", percent=True, bounds=SHARE),
    MetricTraits("box_iou", "box IoU", 1,
                 "IoU of the box with the map above annotations.threshold × its maximum.",
                 kind="localisation", bounds=SHARE),
    MetricTraits("agreement", "agreement", 0,
                 "mean Pearson correlation of a map with the other methods' maps of the same "
                 "image and class: do the methods agree? Not ranked: agreeing with the others "
                 "does not make a map right.", kind="agreement", bounds=(-1.0, 1.0)),
)}


def traits(name: str) -> MetricTraits:
    """The metric's table entry; for a name the table does not know (a run folder written
    with a metric registered then), a faithfulness column shown by name and not ranked."""
    return TABLE.get(name) or MetricTraits(name, name, 0, "a metric this version of explain "
                                           "does not know (shown, not ranked).")


def metric_names() -> list[str]:
    """The names a config's ``metrics:`` may use (faithfulness metrics), in table order."""
    return [name for name, t in TABLE.items() if t.kind == "faithfulness"]


def canonical(name: str) -> str:
    """A config's metric name, lower-cased, with an alias replaced by the metric's name."""
    low = name.lower()
    return next((t.name for t in TABLE.values() if low in t.aliases), low)


def register(entry: MetricTraits) -> None:
    """Add a faithfulness metric: from then on, in this process, configs accept its name (and
    aliases), runs compute it with its factory, and summary.csv, the report's methods table
    and its glossary show it. ``unregister`` undoes it."""
    taken = {n for t in TABLE.values() for n in (t.name, *t.aliases)}
    if entry.kind != "faithfulness" or entry.factory is None:
        raise ValueError("only faithfulness metrics (with a factory) can be added")
    if {entry.name, *entry.aliases} & taken:
        raise ValueError(f"metric '{entry.name}' (or an alias) exists already")
    TABLE[entry.name] = entry


def unregister(name: str) -> None:
    """Remove a metric ``register`` added."""
    TABLE.pop(name)


class Labels(Mapping):
    """Metric name -> its label, read from the table at each look-up (the report's templates
    hold one, so a metric registered later is labelled too)."""

    def __getitem__(self, name: str) -> str:
        return TABLE[name].label

    def __iter__(self) -> Iterator[str]:
        return iter(list(TABLE))

    def __len__(self) -> int:
        return len(TABLE)


LABELS = Labels()


def map_seed(seed: int, *names: str) -> int:
    """A map's own seed for the noise its metrics draw (ROAD's imputations): the run's
    ``seed`` and the map's names (image, class, method or baseline) hashed, so that its
    score does not depend on which other maps the image has (adding a method moved the
    others' ROAD scores by up to 4e-4)."""
    import hashlib
    text = "\0".join([str(seed), *names]).encode("utf-8", "backslashreplace")
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "big")  # < 2**32


def library_metric(spec: MetricSpec) -> Callable:
    """The metric object for a config entry (explain.road's for ROAD, else the library's, for
    the built-in ones)."""
    return TABLE[spec.name].factory(spec)


def forward_passes(spec: MetricSpec) -> int:
    """Forward passes the metric costs per map (one batch per image holds the image once per
    map), for the run's estimate."""
    entry = TABLE[spec.name]
    return entry.passes * (len(spec.percentiles) if entry.percentiles else 1)


def imputations(spec: MetricSpec) -> int:
    """ROAD imputations (a sparse solve each) the metric makes per map."""
    entry = TABLE[spec.name]
    return entry.imputations * (len(spec.percentiles) if entry.percentiles else 1)


AUTO_MAPS = 64  # maps (images x classes x methods): up to this many, metrics default to ROAD
AUTO_METRICS = ("road_combined",)  # what "on by default" computes (at its default percentiles)
# seconds of solving per ROAD imputation and input pixel (explain.road on one CPU core,
# benchmarks/road.py's "imputation alone" on the idle 2-core machine: 4.4e-7 at 224 x 448,
# 5.5e-7 at 224 x 224; a run solves on 2 threads, so this errs long): for the run's estimate
ROAD_SECONDS_PER_PIXEL = 5e-7
ROAD_SOLVE_THREADS = 2  # the solver threads behind that figure: one thread takes twice as long
# (torchrun's processes run one each; a ResNet-18 at 64 x 64 solved 1.4 us a pixel alone)


def road_seconds_per_pixel(threads: int) -> float:
    """ROAD_SECONDS_PER_PIXEL for a run whose solves have ``threads`` threads (explain.road
    solves on as many as torch has)."""
    return ROAD_SECONDS_PER_PIXEL * ROAD_SOLVE_THREADS / max(1, min(threads, ROAD_SOLVE_THREADS))

"""The sanity checks' records (summary.json's ``sanity``; explain.sanity measures them,
explain.writers.sanity writes them): per method its verdicts, the mean similarity after each
randomisation step and per map, and the files drawn from them. Kept apart from
explain.results (which holds ``RunSummary.sanity``) so that module stays small; like its
records, these refuse unknown keys."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


# The similarity measures of two maps (explain.sanity.similarity works them out in this order;
# Similarity's fields and config's sanity.measure name them): name -> (its words in a verdict
# line, its chart's title)
MEASURES = {"spearman": ("rank correlation", "Spearman rank correlation"),
            "spearman_abs": ("rank correlation of |map|", "Spearman, absolute values"),
            "ssim": ("SSIM", "SSIM"),
            "ssim_abs": ("SSIM of |map|", "SSIM, absolute values")}


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Similarity(_Record):
    """One map pair, or a mean over pairs (explain.sanity.similarity): Spearman's rank
    correlation and SSIM, on the maps and on their absolute values."""
    spearman: float
    spearman_abs: float
    ssim: float
    ssim_abs: float


class SanityStep(_Record):
    """One randomisation step: the layer re-initialised (cascading: it and every layer
    before it, from the output) and the mean similarity of the maps with the trained
    model's."""
    layer: str
    similarity: Similarity


class SanityMethod(_Record):
    """One method's checks (``guided_backprop`` and ``guided_<method>``, Guided Grad-CAM, too
    with guided.enabled). The per-map lists follow ``SanitySummary.maps``."""
    method: str
    verdict: str  # pass | fail: ``final`` below sanity.threshold
    final: float  # sanity.measure after the last cascading step, mean over the maps
    # its 95% bootstrap interval over the maps, images resampled (none for one image, or a run
    # before it was kept)
    final_low: Optional[float] = None
    final_high: Optional[float] = None
    cascading: list[SanityStep]
    independent: list[SanityStep] = Field(default_factory=list)  # sanity.independent
    final_per_map: list[Similarity] = Field(default_factory=list)
    random_logit: Optional[Similarity] = None  # mean over the maps
    logit_verdict: Optional[str] = None  # pass: random_logit's measure below logit_threshold
    logit_per_map: list[Similarity] = Field(default_factory=list)
    # random-class maps of one value (all zero): any map differs from one, whatever the method
    logit_blank: int = Field(0, ge=0)


class SanityMap(_Record):
    """One image x class the checks explained, and its random other class."""
    image: str
    class_name: str = Field(alias="class")
    random_class: Optional[str] = None


class SanityFiles(_Record):
    """The checks' files, under sanity/."""
    cascading: Optional[str] = None  # similarity vs layers re-initialised, a curve per method
    independent: Optional[str] = None  # the same, each layer alone (sanity.independent)
    strip: Optional[str] = None  # the first image's maps as the layers are re-initialised
    csv: Optional[str] = None  # every mean, a row per method x variant x step

    def paths(self) -> list[str]:
        return [p for p in (self.cascading, self.independent, self.strip, self.csv) if p]


PARTLY = "passes randomisation, fails random logit"
PARTIAL = "inconclusive (partial cascade)"
PARTIAL_LOGIT = PARTIAL + ", fails random logit"  # the random-logit failure in the badge too
CLASS_BLIND = (PARTLY, PARTIAL_LOGIT)  # verdicts whose maps barely depend on the class
INVERTED = -0.3  # a signed similarity this low: the randomised maps turned against the trained


class SanitySummary(_Record):
    """summary.json's ``sanity``."""
    measure: str  # what the verdicts compare: spearman, spearman_abs, ssim, ssim_abs
    threshold: float
    logit_threshold: float
    seed: int
    layers: list[str]  # re-initialised, in this order (output first)
    randomisable: Optional[int] = None  # the model's layers the whole cascade would take
    not_randomised: int  # parameter tensors in modules without reset_parameters()
    maps: list[SanityMap]
    methods: list[SanityMethod]
    strip_steps: list[int] = Field(default_factory=list)  # cascading steps the strip shows
    files: SanityFiles = Field(default_factory=SanityFiles)

    @field_validator("measure")
    @classmethod
    def _measure(cls, v: str) -> str:
        """One of MEASURES (a shared summary's other name stopped Run.table() and explain
        report in a traceback: KeyError, AttributeError, jinja's UndefinedError)."""
        if v not in MEASURES:
            raise ValueError(f"the measure is one of {', '.join(MEASURES)}")
        return v

    def method(self, name: str) -> Optional[SanityMethod]:
        """The method's checks (the first of that name), found in a table made once: a
        shared summary's 10,000 entries were scanned once per summary.csv row."""
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, SanityMethod]:
        found: dict[str, SanityMethod] = {}
        for m in self.methods:
            found.setdefault(m.method, m)
        return found

    @cached_property
    def images(self) -> int:
        """The images the checks explained (each with a map per class), counted once: the
        verdict line and the table ask for it per method (a shared summary's 10,000 methods
        and maps took 20 s of CPU)."""
        return len({m.image for m in self.maps})

    @property
    def partial(self) -> bool:
        """Whether the cascade stopped before the model's last layer (``sanity.layers``)."""
        return bool(self.randomisable) and len(self.layers) < self.randomisable

    def unsettled(self, method: SanityMethod) -> bool:
        """Whether the method's interval of the mean reaches across the threshold where the
        mean decides the verdict: these maps do not settle which side it is on. Not for a
        partial cascade's verdict other than a pass: inconclusive whatever the images (more
        images there settled nothing; sanity.layers does)."""
        low, high = method.final_low, method.final_high
        if low is None or high is None or (self.partial and method.verdict != "pass"):
            return False
        return low < self.threshold <= high

    def inverted(self, method: SanityMethod) -> bool:
        """Whether a passing method's maps turned clearly against the trained ones (a signed
        measure at or below INVERTED): high where they were low, a change by the rule, which a
        reader may take for a failure (or, with ``_abs``, for a likeness)."""
        return method.verdict == "pass" and not self.measure.endswith("_abs") and \
            method.final <= INVERTED

    def verdicts(self) -> dict[str, tuple[str, str]]:
        """Method -> ('passes' | 'fails' | ``PARTLY`` | ``PARTIAL`` | ``PARTIAL_LOGIT``, its
        numbers in words), for "Which map to trust" (explain.evidence): the randomisation
        check decides whether the method can be trusted; a random-logit failure beside a
        pass is ``PARTLY`` (the word says it: a plain "passes" there read as both checks
        passed), beside a partial cascade ``PARTIAL_LOGIT``. A map still like the trained
        one after a partial cascade is ``PARTIAL``, not a failure: the threshold is for the
        whole cascade (a ResNet's skip connections bring the map back after a few of its 60
        layers)."""
        label = MEASURES[self.measure][0]
        out = {}
        depth = f"{len(self.layers)} of {self.randomisable}" if self.partial \
            else str(len(self.layers))
        for m in self.methods:
            spread = _spread(m, self.threshold, self.images)
            text = (f"{label} {_beside(m.final, self.threshold)}{spread} with the trained "
                    f"model's maps after {depth} layer(s) re-initialised; passes below "
                    f"{self.threshold:g}" + (UNSETTLED if self.unsettled(m) else ""))
            if m.verdict != "pass" and self.partial:
                text += "; a partial cascade fails nothing: raise sanity.layers to decide"
            if m.random_logit is not None:
                logit = getattr(m.random_logit, self.measure)
                text += (f"; {_beside(logit, self.logit_threshold)} with a random class's map"
                         + (" (random logit fails: the map barely depends on the class)"
                            if m.logit_verdict == "fail" else "") + _blank(m))
            word = "passes" if m.verdict == "pass" else PARTIAL if self.partial else "fails"
            if m.logit_verdict == "fail" and word in ("passes", PARTIAL):
                word = PARTLY if word == "passes" else PARTIAL_LOGIT
            out[m.method] = (word, text)
        return out

    def columns(self, name: str) -> dict[str, Any]:
        """summary.csv's sanity columns for the rows of method ``name``: its mean similarities
        and the random-logit verdict (none for a method the checks did not cover). The
        randomisation verdict is the ``sanity`` column of the trust lines, not repeated here."""
        checked = self.method(name)
        if checked is None:
            return {}
        row: dict[str, Any] = {f"sanity_{self.measure}": checked.final}
        if checked.final_low is not None:  # its interval over the maps (two or more)
            row[f"sanity_{self.measure}_low"] = checked.final_low
            row[f"sanity_{self.measure}_high"] = checked.final_high
        if checked.random_logit is not None:
            row["sanity_logit_verdict"] = checked.logit_verdict
            row[f"sanity_logit_{self.measure}"] = getattr(checked.random_logit, self.measure)
        return row


def _beside(value: float, threshold: float) -> str:
    """``value`` with 2 decimals, or as many more (up to 6) as it takes to read on the right
    side of ``threshold``: 0.4996 (a pass below 0.5) was "0.50", as a fail of 0.5 was."""
    digits = 2
    while digits < 6 and (float(f"{value:.{digits}f}") < threshold) != (value < threshold):
        digits += 1
    return f"{value:.{digits}f}"


def _spread(method: SanityMethod, threshold: float, images: int) -> str:
    """' [low, high] over N images': the interval of the mean the verdict reads, when kept."""
    if method.final_low is None or method.final_high is None:
        return ""
    return (f" [{_beside(method.final_low, threshold)}, {_beside(method.final_high, threshold)}]"
            f" over {images} images")


# the verdict line's words when SanitySummary.unsettled: the verdict is the literature's rule
# on the mean, and more images narrow the mean's interval (they may not settle it: a mean at
# the threshold stays there)
UNSETTLED = ("; its interval reaches across the threshold: more images (sanity.images) may "
             "settle the verdict")


def _blank(method: SanityMethod) -> str:
    """The random-logit line's caveat when random-class maps were blank (one value, all
    zero: a class the model rejects, through a ReLU): a blank map is unlike any map, so a
    pass on them says little about the method."""
    if not method.logit_blank:
        return ""
    return (f" ({method.logit_blank} of {len(method.logit_per_map)} random-class map(s) all "
            f"blank: a blank map is unlike any map, so this says little)")

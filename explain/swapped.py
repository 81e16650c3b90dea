"""The warning that a classifier's class indices may be swapped in the config: every image
named after a class (``cat.jpg``, ``dog_02.png``; or labelled) is predicted as another named
class, one for one (cat -> dog, dog -> cat), as when ``classes: {cat: 1, dog: 0}`` is written
for a model trained with 0 = cat; and the warning that it says one class to every image of
several (``one_class``: an untrained model, or a trained one fed inputs unlike its training).
Read from the summary only, like explain.chance; ``warnings`` is the list both the console and
the report show."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from explain.chance import classifies, near_chance
from explain.names import listed

SHOWN = 3  # examples in the warning
SURE = 2.0  # each image's prediction at least twice as likely as the class it is named after
ONE_CLASS_MIN = 4  # images of a known class (label or name) before one_class speaks


def _named(image: Any, classes: dict[str, str]) -> Optional[str]:
    """The class an image is of by its label, or by the one class name among the words of its
    file's name (None for none or several). ``classes``: lower-case name -> name (looked up
    per word of the file's name: a dataset of 50,000 images of 1,000 classes is not 50 million
    comparisons)."""
    label = getattr(image, "label", None)
    if label is not None and classes.get(str(label).lower()) == label:
        return label
    words = set(re.split(r"[^a-z0-9]+", Path(image.path).stem.lower()))
    hits = {classes[w] for w in words if w in classes}
    return hits.pop() if len(hits) == 1 else None


def swapped_classes(summary: Any) -> Optional[str]:
    """The warning, or None: at least two images of at least two classes by name, every one
    predicted as another named class (SURE times as likely), each name always as the same
    other one, no two names as the same one (all 'fox': a model saying one class to everything,
    not a swap). Not for a model at chance (explain.chance: its predictions are noise)."""
    if not classifies(summary) or near_chance(summary):
        return None
    classes = {c.lower(): c for image in summary.images for c in image.probabilities}
    pairs = [(image, _named(image, classes)) for image in summary.images]
    pairs = [(image, named) for image, named in pairs if named is not None]
    seen: dict[str, str] = {}
    for image, named in pairs:
        probs = image.probabilities
        if image.predicted == named or image.predicted not in probs \
                or not probs[image.predicted] >= SURE * probs.get(named, 0.0) \
                or seen.setdefault(named, image.predicted) != image.predicted:
            return None
    if len(pairs) < 2 or len(seen) < 2 or len(set(seen.values())) < len(seen):
        return None
    shown = ", ".join(f"{Path(image.path).name} -> {image.predicted}"
                      for image, _ in pairs[:SHOWN]) + (", ..." if len(pairs) > SHOWN else "")
    indices = getattr(getattr(summary, "config", None), "classes", None) or {}
    swapped = set(seen) | set(seen.values())  # their indices only (not 1,000 of ImageNet's)
    named = [f"{c}: {i}" for c, i in indices.items() if c in swapped]
    said = f" ({listed(named)})" if named else ""
    return (f"every one of the {len(pairs)} image(s) named after a class is predicted as "
            f"another ({shown}): are the config's class indices{said} the model's own order?")


def one_class(summary: Any) -> Optional[str]:
    """The warning, or None: every image predicted as one class, at least ONE_CLASS_MIN of
    them of a known class (label or name, as ``_named``) and of at least two classes. Not for
    a model at chance (explain.chance says that) nor a swap of two (``swapped_classes``)."""
    if not classifies(summary) or near_chance(summary) or not summary.images:
        return None
    predicted = {image.predicted for image in summary.images}
    classes = {c.lower(): c for image in summary.images for c in image.probabilities}
    known = [n for n in (_named(image, classes) for image in summary.images) if n is not None]
    if len(predicted) != 1 or len(known) < ONE_CLASS_MIN or len(set(known)) < 2:
        return None
    said = predicted.pop()
    others = sum(1 for n in known if n != said)
    return (f"the model predicts {said} for every one of the {len(summary.images)} image(s), "
            f"though {others} of them are of another class by their labels or names: its maps "
            f"explain a choice it makes for any input (an untrained model, or inputs unlike "
            f"its training: check preprocess.size, mean and std)")


def warnings(summary: Any) -> list[str]:
    """The model's warnings a reader must not miss, for the console and the report alike."""
    found = (near_chance(summary), swapped_classes(summary), one_class(summary))
    return [line for line in found if line]

"""The warning that a classifier's class indices may be swapped in the config: every image
named after a class (``cat.jpg``, ``dog_02.png``; or labelled) is predicted as another named
class, one for one (cat -> dog, dog -> cat), as when ``classes: {cat: 1, dog: 0}`` is written
for a model trained with 0 = cat. Read from the summary only, like explain.chance."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from explain.chance import classifies, near_chance
from explain.names import listed

SHOWN = 3  # examples in the warning
SURE = 2.0  # each image's prediction at least twice as likely as the class it is named after


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

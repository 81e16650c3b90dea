"""The warning that a classifier is at chance on every image of a run: its probabilities all
within a few points of 1/k (an untrained stand-in model, or inputs preprocessed unlike its
training). Its maps then show nothing about the classes, which a reader must not miss: the
report's warnings and the console's last lines carry it. Read from the summary only (no torch),
so a rebuilt report says it too."""

from __future__ import annotations

from typing import Any

NEAR = 0.02  # every class's probability within 2 points of 1/k on every image


def classifies(summary: Any) -> bool:
    """Whether the run is a classification (a summary without a config counts as one): the
    warnings read probabilities of whole images, which a segmentation or detection lacks."""
    config = getattr(summary, "config", None)
    return config is None or getattr(config, "task", "classification") == "classification"


def near_chance(summary: Any) -> str | None:
    """The warning for a classification run whose every image is at chance, else None. Only
    when the probabilities cover all the model's outputs (they sum to 1): with a few classes
    named out of many, 1/k is not chance."""
    if not classifies(summary):
        return None
    rows = [image.probabilities for image in summary.images if image.probabilities]
    if not rows or any(len(p) < 2 or not abs(sum(p.values()) - 1.0) <= 0.01 for p in rows):
        return None  # (NaN too, a shared summary's: not a sum of 1)
    off = max(abs(v - 1.0 / len(p)) for p in rows for v in p.values())
    if off > NEAR:
        return None
    k = {len(p) for p in rows}
    chance = " or ".join(f"{1.0 / n:.3f}" for n in sorted(k))
    return (f"the model is at chance on every image: each class's probability is within "
            f"{off:.3f} of {chance} on all {len(rows)} image(s), so its maps say nothing about "
            f"the classes (an untrained model, or inputs unlike its training: check "
            f"preprocess.size, mean and std)")

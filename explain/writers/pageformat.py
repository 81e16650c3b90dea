"""Numbers and lists as the report's pages show them, bounded whatever a shared summary.json
holds (the Jinja2 environment's filters and globals, explain.writers.report.environment)."""

from __future__ import annotations

import heapq
import math
from typing import Optional

from explain import stats
from explain.results import ImageEntry


def correlation(value: Optional[float]) -> str:
    """A correlation for a page: 3 significant digits, more when those would round a value
    of magnitude under 1 to '1.00' or '-1.00' (0.9996 read as identical maps on the diff
    page)."""
    if value is None or value != value:  # (NaN: no correlation to show)
        return "–"
    for digits in range(3, 8):
        text = stats.figure(value, digits)
        if abs(value) >= 1 or abs(float(text)) < 1:
            return text
    return f"{math.copysign(math.floor(abs(value) * 1e7) / 1e7, value):.7f}"


CARD_CLASSES = 30  # probability bars on a card: a run lists at most 25 a classification image
# (explain.runner), a segmentation every class's share; a shared summary.json listing 1,000
# classes per image made each card 1,000 bars (a 738 KB summary, a 9 MB page)


def card_classes(entry: ImageEntry) -> list[str]:
    """The classes a card draws a probability bar for: every one its record lists, or the
    CARD_CLASSES likeliest of them, in the record's order."""
    probs = entry.probabilities
    if len(probs) <= CARD_CLASSES:
        return list(probs)
    top = set(heapq.nlargest(CARD_CLASSES, probs, key=lambda c: _sortable(probs[c])))
    return [c for c in probs if c in top]


def _sortable(value: float) -> float:
    return value if value == value else float("-inf")  # NaN (a shared summary's) last

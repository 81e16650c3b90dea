"""The twenty-first attack: what today's hints and statistics ask of a shared dataset or run
folder: the box-key hint's comparisons of long look-alike names (docs/trust.md)."""

from __future__ import annotations

import difflib
from types import SimpleNamespace

import pytest

from explain import names
from explain.writers.metrics import _unused_boxes


@pytest.fixture
def ratios(monkeypatch) -> list[int]:
    """How many full comparisons difflib makes (SequenceMatcher.ratio calls)."""
    calls = [0]
    real = difflib.SequenceMatcher.ratio

    def counted(self):
        calls[0] += 1
        return real(self)
    monkeypatch.setattr(difflib.SequenceMatcher, "ratio", counted)
    return calls


def test_box_key_hint_compares_long_lookalike_names_a_bounded_number_of_times(ratios):
    """A shared image folder of names of 245 'a's and a box file of 5 keys of 196 'a's: the
    hint compared each key in full with every image without a box (id and stem: 3,000
    comparisons of 2 to 6 ms, +6 s on a 300-image run of 4 s); now at most MAX_RATIOS a
    key, and the likely typo is still named."""
    images = [SimpleNamespace(id=f"{'a' * 240}{i:05d}", path=f"/d/{'a' * 240}{i:05d}.jpg",
                              boxes=None) for i in range(300)]
    unused = [f"{'a' * 195}{j}.jpg" for j in range(5)]
    note = _unused_boxes(unused, images)
    assert ratios[0] <= 5 * names.MAX_RATIOS
    assert note.count("which has no box?") == 5


def test_box_key_hint_still_names_an_honest_typo(ratios):
    images = [SimpleNamespace(id=i, path=f"/d/{i}.jpg", boxes=None)
              for i in ("cat-1", "dog-2", "cow-3")]
    note = _unused_boxes(["cat_1.jpg", "zebra.jpg"], images)
    assert "cat_1.jpg (the image 'cat-1', which has no box?)" in note
    assert "zebra.jpg," not in note and note.endswith("zebra.jpg")


@pytest.mark.parametrize("word,choices,cutoff", [
    ("features.1O", ["features.10", "features.1", "classifier.6"], 0.5),
    ("backbonee", ["backbone", "backbone.layer4", "head"], 0.5),
    ("cat_1", ["cat-1", "cat-2", "cat-11", "dog"], 0.75),
    ("zzz", ["cat", "dog"], 0.6),
    ("ab", ["ba", "ab_", "a_b"], 0.6),
])
def test_close_match_is_difflibs_answer(word, choices, cutoff):
    assert names.close_match(word, choices, cutoff) == \
        difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)


def test_intervals_draw_for_a_bounded_number_of_lengths(monkeypatch):
    """A shared summary's numbers on made-up subsets of images (each method and metric on
    other images) gave the methods table's vectors 650 lengths, a bootstrap draw each: a
    10 MB summary.json took 19 s of `explain report`'s table and a notebook's display (2.7 s
    for the same maps on every image), 20 MB 29 s. The MAX_LENGTHS lengths of the most
    vectors are drawn for; the rest get Student's t-interval alone."""
    from explain import stats
    drawn: list[int] = []
    real = stats.resample_means

    def counted(values, **kwargs):
        drawn.append(len(values[0]))
        return real(values, **kwargs)
    monkeypatch.setattr(stats, "resample_means", counted)
    vectors = [[float((i * j) % 7) for j in range(n)] for i, n in
               enumerate([30] * 3 + list(range(5, 5 + 200)))]
    out = stats.intervals(vectors, seed=0)
    assert len(drawn) == stats.MAX_LENGTHS and drawn[0] == 30
    assert out[0] == stats.interval(vectors[0], seed=0)  # the shared length: as alone
    last = vectors[-1]
    half = stats._t_half_width(__import__("numpy").asarray(last), stats.CONFIDENCE)
    centre = sum(last) / len(last)
    assert out[-1] == pytest.approx((centre - half, centre + half))


def test_intervals_of_a_run_are_as_each_alone():
    """Honest vectors (a few lengths) keep the bootstrap interval each call alone draws."""
    from explain import stats
    vectors = [[float((i + j) % 5) for j in range(n)] for i, n in enumerate([12, 12, 9, 40])]
    assert stats.intervals(vectors, seed=3) == [stats.interval(v, seed=3) for v in vectors]

"""Day 19's review: the fixes of today's changes, each shown by a test that failed before."""

from __future__ import annotations

from types import SimpleNamespace

from explain.swapped import swapped_classes


def _summary(*images: tuple, classes: dict | None = None):
    """(path, predicted, {class: probability}) per image, a classification run."""
    entries = [SimpleNamespace(path=p, predicted=pred, probabilities=probs, label=None)
               for p, pred, probs in images]
    return SimpleNamespace(images=entries, config=SimpleNamespace(
        task="classification", classes=classes or {"cat": 0, "dog": 1, "fox": 2}))


def test_every_image_predicted_as_one_third_class_is_no_swap():
    """cat.jpg and dog.jpg both predicted fox: a model that says fox to everything (many to
    one), not class indices the wrong way round (one for one, as the module says)."""
    one_class = _summary(("cat.jpg", "fox", {"cat": 0.05, "dog": 0.05, "fox": 0.9}),
                         ("dog.jpg", "fox", {"cat": 0.05, "dog": 0.05, "fox": 0.9}))
    assert swapped_classes(one_class) is None
    swapped = _summary(("cat.jpg", "dog", {"cat": 0.05, "dog": 0.9, "fox": 0.05}),
                       ("dog.jpg", "cat", {"cat": 0.9, "dog": 0.05, "fox": 0.05}))
    assert "cat.jpg -> dog, dog.jpg -> cat" in swapped_classes(swapped)

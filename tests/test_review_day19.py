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


def test_a_rebuild_with_the_runs_own_photo_separator_says_nothing_it_did_not_do(tmp_path):
    """``explain report RUN --photo-separator -`` of a run made with ``-``: its verdict is the
    run's own, so no warning that the run 'did not use' that separator."""
    from test_photos import summary_of, variants
    from explain import trustlines
    from explain.methodtable import method_table
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, _regrouped, render_pages
    summary = summary_of(variants(), "-")
    summary.trust = trustlines.build(summary, method_table(summary, ["gradcam"]))
    said = "which the run did not use"
    for separator, run_used_it in (("-", True), ("_", False)):
        (tmp_path / separator).mkdir()
        data = _regrouped(ReportData(summary), separator)
        page = dict(render_pages(RunFolder(tmp_path / separator), data))["report.html"]
        assert (said in page) is not run_used_it, separator


def test_the_look_alike_note_offers_no_separator_that_makes_other_images_one_photo():
    """img_003 and img_004 look alike; '_' makes them one photo, 'img', but every img_*.jpg
    with them: a run of one photo. The note offers no such separator."""
    from explain import trustlines
    paths = {f"img_{k:03d}": f"d/img_{k:03d}.jpg" for k in range(1, 11)}
    assert trustlines.shared_separator([["img_003", "img_004"]], paths, None) == (None, 0)
    paths.update({"cat": "d/cat.jpg", "cat_flip": "d/cat_flip.jpg"})
    groups = [["cat", "cat_flip"], ["img_003", "img_004"]]
    assert trustlines.shared_separator(groups, paths, None) == ("_", 1)

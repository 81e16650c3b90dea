"""A config whose class indices are the wrong way round (``classes: {cat: 1, dog: 0}`` for a
model trained with 0 = cat) is spotted when every image named after a class is predicted,
confidently, as another one, one for one: a warning on the console and in the report."""

from __future__ import annotations

from types import SimpleNamespace

from explain.swapped import swapped_classes


def _summary(*images: tuple, classes: dict | None = None, task: str = "classification"):
    """(path, predicted, {class: probability}[, label]) per image."""
    entries = [SimpleNamespace(path=i[0], predicted=i[1], probabilities=i[2],
                               label=i[3] if len(i) > 3 else None) for i in images]
    return SimpleNamespace(images=entries, config=SimpleNamespace(
        task=task, classes=classes if classes is not None else {"cat": 1, "dog": 0}))


SWAPPED = (("pics/cat.jpg", "dog", {"cat": 0.03, "dog": 0.97}),
           ("pics/dog.jpg", "cat", {"cat": 0.95, "dog": 0.05}),
           ("pics/both.jpg", "dog", {"cat": 0.4, "dog": 0.6}))


def test_images_named_after_classes_and_predicted_the_other_way_round_are_a_warning():
    assert swapped_classes(_summary(*SWAPPED)) == (
        "every one of the 2 image(s) named after a class is predicted as another (cat.jpg -> "
        "dog, dog.jpg -> cat): are the config's class indices (cat: 1, dog: 0) the model's "
        "own order?")
    labelled = _summary(("d/a/0.jpg", "dog", {"cat": 0.1, "dog": 0.9}, "cat"),
                        ("d/b/1.jpg", "cat", {"cat": 0.8, "dog": 0.2}, "dog"),
                        ("d/c/dog_cat.jpg", "cat", {"cat": 0.8, "dog": 0.2}))  # two names: no
    assert "every one of the 2 image(s)" in swapped_classes(labelled)


def test_no_warning_for_a_right_guess_a_many_to_one_mistake_a_doubt_or_chance():
    right = (("cat_01.jpg", "cat", {"cat": 0.9, "dog": 0.1}),) + SWAPPED[1:]
    assert swapped_classes(_summary(*right)) is None  # one image right: not a swap
    one_way = (SWAPPED[0], ("dog.jpg", "dog", {"cat": 0.1, "dog": 0.9}))
    assert swapped_classes(_summary(*one_way)) is None  # everything 'dog': a bad model
    unsure = (SWAPPED[0], ("dog.jpg", "cat", {"cat": 0.6, "dog": 0.4}))
    assert swapped_classes(_summary(*unsure)) is None  # 0.6 is not twice 0.4
    chance = (("cat.jpg", "dog", {"cat": 0.499, "dog": 0.501}),
              ("dog.jpg", "cat", {"cat": 0.501, "dog": 0.499}))
    assert swapped_classes(_summary(*chance)) is None  # explain.chance's warning instead
    assert swapped_classes(_summary(SWAPPED[0])) is None  # one image: nothing to go on
    nan = (SWAPPED[0], ("dog.jpg", "cat", {"cat": 0.95, "dog": float("nan")}))
    assert swapped_classes(_summary(*nan)) is None  # a shared summary's NaN: no number to go on
    assert swapped_classes(_summary(*SWAPPED, task="segmentation")) is None
    three = _summary(("cat.jpg", "dog", {"cat": 0.1, "dog": 0.8, "fox": 0.1}),
                     ("dog.jpg", "fox", {"cat": 0.1, "dog": 0.1, "fox": 0.8}),
                     ("fox.jpg", "cat", {"cat": 0.8, "dog": 0.1, "fox": 0.1}), classes={})
    assert swapped_classes(three).endswith("fox.jpg -> cat): are the config's class indices "
                                           "the model's own order?")


def shown(summary, folder) -> tuple[list[str], str]:
    """(the console's last lines, the report's box of warnings) of ``summary``."""
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    from explain.writers.summary import console_lines
    summary.counts = {"maps": sum(len(image.cams) for image in summary.images)}
    summary.durations_s.update(total=1.0, model_load=0.1, figures=0.2)
    folder.mkdir()
    page = dict(render_pages(RunFolder(folder), ReportData(summary)))["report.html"]
    return console_lines(summary), page[page.index("Warnings"):page.index('<section id="trust">')]


def test_the_console_and_the_report_carry_it(tmp_path):
    from test_photos import summary_of
    summary = summary_of({"cat": {"gradcam": 0.2}, "dog": {"gradcam": 0.3}}, None)
    for image, (predicted, p_cat) in zip(summary.images, (("dog", 0.1), ("cat", 0.9))):
        image.predicted, image.probabilities = predicted, {"cat": p_cat, "dog": 1 - p_cat}
    line = swapped_classes(summary)
    console, warnings = shown(summary, tmp_path / "run")
    assert line and f"  warning: {line}" in console
    assert "cat.jpg -&gt; dog, dog.jpg -&gt; cat" in warnings

"""A classifier that says one class to every image of several (a random stand-in, or a trained
network fed inputs unlike its training: the wrong mean, BGR for RGB) is a warning on the
console and in the report, read from the summary (explain.swapped.one_class)."""

from __future__ import annotations

from test_swapped import _summary

from explain.swapped import ONE_CLASS_MIN, one_class, swapped_classes, warnings

ALL_DOG = [(f"data/{c}/{c}{i}.jpg", "dog", {"cat": 0.38, "dog": 0.62}, c)
           for c in ("cat", "dog") for i in range(3)]


def test_one_prediction_for_images_of_two_classes_is_said():
    line = one_class(_summary(*ALL_DOG))
    assert line.startswith("the model predicts dog for every one of the 6 image(s), though 3 "
                           "of them are of another class by their labels or names")
    assert swapped_classes(_summary(*ALL_DOG)) is None  # not a swap: one warning, this one
    assert warnings(_summary(*ALL_DOG)) == [line]
    named = [(f"pics/{c}_{i}.jpg", "cat", {"cat": 0.9, "dog": 0.1}) for c in ("cat", "dog")
             for i in range(2)]  # by the words of the names, no labels
    assert "predicts cat for every one of the 4 image(s), though 2 of them" in \
        one_class(_summary(*named))


def test_no_warning_for_one_class_shown_a_mixed_guess_few_images_or_chance():
    dogs = [i for i in ALL_DOG if i[3] == "dog"] * 2
    assert one_class(_summary(*dogs)) is None  # a folder of dogs called dogs: right
    mixed = ALL_DOG[:-1] + [("data/dog/x.jpg", "cat", {"cat": 0.7, "dog": 0.3}, "dog")]
    assert one_class(_summary(*mixed)) is None
    few = ALL_DOG[:2] + ALL_DOG[3:4]
    assert len(few) < ONE_CLASS_MIN and one_class(_summary(*few)) is None
    unknown = [(f"x/{i}.jpg", "dog", {"cat": 0.3, "dog": 0.7}) for i in range(8)]
    assert one_class(_summary(*unknown)) is None  # no label, no class in the names
    chance = [(p, "dog", {"cat": 0.495, "dog": 0.505}, c) for p, _, _, c in ALL_DOG]
    assert one_class(_summary(*chance)) is None and len(warnings(_summary(*chance))) == 1
    assert one_class(_summary(*ALL_DOG, task="detection")) is None


def test_the_console_and_the_report_carry_it(tmp_path):
    from test_photos import summary_of
    from test_swapped import shown
    summary = summary_of({"cat": {"gradcam": 0.2}, "dog": {"gradcam": 0.3}}, None)
    extra = [image.model_copy(deep=True) for image in summary.images]
    for k, image in enumerate(extra):
        image.id, image.path = f"{image.id}{k}", image.path.replace(".jpg", f"_{k}.jpg")
    summary.images += extra
    for image in summary.images:
        image.predicted, image.probabilities = "dog", {"cat": 0.2, "dog": 0.8}
    line = one_class(summary)
    console, box = shown(summary, tmp_path / "run")
    assert line and f"  warning: {line}" in console
    assert "the model predicts dog for every one of the 4 image(s), though 2 of them" in box

"""Review 26's findings in the commits of newcomer 22, attack 36 and the session that
answered them: each test fails on the code before its fix."""

from __future__ import annotations

from types import SimpleNamespace as NS



def _dogs_only(dog: float):
    """A detection config with targets: [dog] and an image whose cat box scores 0.9 and whose
    best dog box ``dog``, nothing explained."""
    cfg = NS(task="detection", targets=["dog"],
             detection=NS(score_threshold=0.5, max_boxes=3))
    return cfg, [NS(id="park", detections=NS(explained=[], above_threshold=0),
                    probabilities={"cat": 0.9, "dog": dog})]

def test_the_best_box_note_names_a_box_of_a_targeted_class_only():
    """A detection run with targets: [dog] explains dogs only: an image whose cat scores 0.9
    and whose dog 0.2 has nothing explained. The note said 'the best box scores 0.9 (class
    cat ...): a score_threshold at or below it explains it', a box above the threshold
    already that no threshold explains; it names the best dog box."""
    from explain.tasks.records import task_notes
    cfg, images = _dogs_only(dog=0.2)
    [note] = task_notes(cfg, images)
    assert note.endswith("the best box scores 0.2 (class dog on image park): a "
                         "score_threshold at or below it explains it"), note
    images[0].probabilities["dog"] = 0.0  # no dog box at all: no score to name
    [note] = task_notes(cfg, images)
    assert note.endswith("nothing to explain there"), note


def test_a_shared_summarys_task_means_of_nan_or_7_leave_the_task_table_out():
    """attack 36 bounded each map's shares; a shared summary.json's run means (``task``) of
    NaN or 7 still read 'nan%' and '700.0%' in the report's Methods table and the
    notebook's, and an inside / outside median of Infinity 'inf'. Now the table is left out
    with the note a summary's other impossible task numbers get."""
    from explain.tasks.records import TaskSummary, task_problem
    for number, value in (("energy_in_region", float("nan")), ("energy_in_region", 7.0),
                          ("mask_iou", -0.5)):
        task = TaskSummary(task="segmentation", numbers=[number], means={
            "gradcam": {number: value}}, maps={"gradcam": 3})
        assert task_problem(task, "segmentation", ["gradcam"]) == \
            "means that are no shares (0 to 1) or no finite number", (number, value)
    ratio = TaskSummary(task="detection", numbers=["inside_outside"], medians=[
        "inside_outside"], means={"gradcam": {"inside_outside": float("inf")}})
    assert task_problem(ratio, "detection", ["gradcam"]) == \
        "means that are no shares (0 to 1) or no finite number"
    ratio.means["gradcam"]["inside_outside"] = 62.0  # a ratio above 1 is one
    assert task_problem(ratio, "detection", ["gradcam"]) is None


def test_a_shared_summarys_dataset_correct_no_more_than_its_labelled_images():
    """Each class's counts hold together since e4329c2 ('(5 / 3)'); the dataset's own line
    read 'accuracy 100.0% · 7 of 5 labelled image(s) predicted as their label' (page and
    console) from a shared summary.json. Now a damaged summary, as the class's is."""
    import pytest
    from pydantic import ValidationError
    from explain.results import DatasetSummary
    assert DatasetSummary(labelled=5, unlabelled=0, correct=5).correct == 5
    with pytest.raises(ValidationError, match="correct above labelled"):
        DatasetSummary(labelled=5, unlabelled=0, correct=7, accuracy=1.0)


def _box_map(image: str, name: str, label: str):
    from explain.diff.numbers import MapDiff
    return MapDiff(image=image, class_name=name, method="eigencam", correlation=0.5,
                   mean_abs_diff=0.1, max_abs_diff=0.2, peak_shift=0.0, resized=False,
                   predicted=(label, label), numbers=({}, {}), class_b=name, label=label)


def test_a_detection_diffs_first_line_counts_classes_not_boxes():
    """explain diff of two detection runs groups a class's boxes since 29dbd27 ('eigencam /
    dog ... over 3 maps'), but its first line still counted each box name as a class: '3
    shared maps (of 2 images, 2 classes, 1 method: not every class of every image)' for one
    class, dog, with two boxes on one image. Now it counts the classes and says why the
    maps are more than images x classes x methods."""
    from explain.diff.numbers import DiffResult, console_lines
    side = NS(root="A", label="A", finished=True, summary=None)
    maps = [_box_map("cat", "dog-1", "dog"), _box_map("both", "dog-1", "dog"),
            _box_map("both", "dog-2", "dog")]
    result = DiffResult(a=side, b=NS(**{**vars(side), "root": "B", "label": "B"}), maps=maps,
                        left_out=[], config_changes=[], threshold=None)
    lines = console_lines(result)
    assert lines[0] == "explain diff: A A vs B B: 3 shared maps (of 2 images, 1 class, 1 " \
        "method: a map per detected box)", lines[0]
    assert lines[1].startswith("  eigencam / dog: map r min 0.500 on cat (dog-1), "), lines


def test_a_shared_summarys_task_counts_hold_together():
    """A mean 'k of n maps' in the Methods table (report and notebook): a shared summary's
    counted 5 beside maps 3 read '(5 of 3 maps)', and maps -3 'maps -3', as a class's '(5 /
    3)' did before e4329c2. Now the task table is left out with its note."""
    from explain.tasks.records import TaskSummary, task_problem
    ok = dict(task="segmentation", numbers=["energy_in_mask"],
              means={"gradcam": {"energy_in_mask": 0.5}})
    good = TaskSummary(**ok, maps={"gradcam": 3}, counted={"gradcam": {"energy_in_mask": 2}})
    assert task_problem(good, "segmentation", ["gradcam"]) is None
    for maps, held in ((3, 5), (-3, 0), (3, -1)):
        bad = TaskSummary(**ok, maps={"gradcam": maps},
                          counted={"gradcam": {"energy_in_mask": held}})
        assert task_problem(bad, "segmentation", ["gradcam"]) == \
            "map counts below 0, or a mean over more maps than its method's", (maps, held)


def test_a_few_unnamed_ground_truth_pixels_are_not_0_percent():
    """A label map with one pixel of 255 in 250,000 got the note '... no class's ground
    truth (photo 0.0% of the pixels)': a share the note itself says is there. Under 0.05%
    it reads 'under 0.1%'."""
    import numpy as np
    from explain.tasks.records import task_notes
    from explain.tasks.segmentation import unnamed_pixels
    truth = np.zeros((500, 500), np.int32)
    truth[0, 0] = 255
    cfg = NS(task="segmentation", segmentation=NS(masks=None, region="predicted"))
    images = [NS(id="photo", segmentation=unnamed_pixels(truth, 21))]
    [note] = task_notes(cfg, images)
    assert note.endswith("(photo under 0.1% of the pixels)"), note
    truth[:10] = 255  # 2%
    images = [NS(id="photo", segmentation=unnamed_pixels(truth, 21))]
    assert task_notes(cfg, images)[0].endswith("(photo 2.0% of the pixels)")


def test_the_no_detection_note_of_a_targets_list_names_those_classes():
    """With targets: [dog] an image whose cat scores 0.9 has nothing explained; the note
    said 'no detection of a named class scores at least score_threshold 0.5', and the cat
    is a named class that does. It now names the classes the targets list."""
    from explain.tasks.records import task_notes
    cfg, images = _dogs_only(dog=0.0)
    [note] = task_notes(cfg, images)
    assert note.startswith("detection: no detection of a class in targets (dog) scores at "
                           "least score_threshold 0.5 on 1 image(s): park;"), note
    cfg.targets = "all"
    assert task_notes(cfg, images)[0].startswith("detection: no detection of a named class ")


def test_a_shared_items_task_score_or_ratio_of_nan_or_inf_is_a_damaged_record():
    """attack 36 bounded the map shares; a shared item's detection score, segmentation score
    or inside / outside ratio of NaN or Infinity still read 'score +nan' in explain diff, '(score
    nan)' in Run.show and 'nan' as an unfinished run's inside / outside median in the Methods
    table. Now each is a damaged record, as the shares are."""
    import pytest
    from pydantic import ValidationError
    from explain.tasks.records import Detected, DetectionNumbers, RegionNumbers
    box = dict(label="dog", box=[0, 0, 4, 4], energy_in_box=0.5)
    assert DetectionNumbers(**box, score=0.3, inside_outside=62.0).inside_outside == 62.0
    region = dict(region="predicted", region_pixels=4, predicted_share=0.5,
                  energy_in_region=0.5)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="score"):
            DetectionNumbers(**box, score=bad)
        with pytest.raises(ValidationError, match="inside_outside"):
            DetectionNumbers(**box, score=0.3, inside_outside=bad)
        with pytest.raises(ValidationError, match="score"):
            RegionNumbers(**region, score=bad)
        with pytest.raises(ValidationError, match="score"):
            Detected(name="dog-1", label="dog", score=bad, box=[0, 0, 4, 4])

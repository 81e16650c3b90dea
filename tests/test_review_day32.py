"""Review 26's findings in the commits of newcomer 22, attack 36 and the session that
answered them: each test fails on the code before its fix."""

from __future__ import annotations

from types import SimpleNamespace as NS


def test_the_best_box_note_names_a_box_of_a_targeted_class_only():
    """A detection run with targets: [dog] explains dogs only: an image whose cat scores 0.9
    and whose dog 0.2 has nothing explained. The note said 'the best box scores 0.9 (class
    cat ...): a score_threshold at or below it explains it', a box above the threshold
    already that no threshold explains; it names the best dog box."""
    from explain.tasks.records import task_notes
    cfg = NS(task="detection", targets=["dog"],
             detection=NS(score_threshold=0.5, max_boxes=3))
    images = [NS(id="park", detections=NS(explained=[], above_threshold=0),
                 probabilities={"cat": 0.9, "dog": 0.2})]
    [note] = task_notes(cfg, images)
    assert note.endswith("the best box scores 0.2 (class dog on image park): a "
                         "score_threshold at or below it explains it"), note
    images[0].probabilities["dog"] = 0.0  # no dog box at all: no score to name
    [note] = task_notes(cfg, images)
    assert note.endswith("nothing to explain there"), note

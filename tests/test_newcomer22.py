"""Newcomer 22: a researcher's detection (Faster R-CNN) and segmentation (DeepLabV3) studies
with random weights; what they read on the console, the pages and the pictures."""

from pathlib import Path
from types import SimpleNamespace as NS

from explain.diff.runs import Side, match


def _side(label: str, classes: list[str]) -> Side:
    """A run of one image, 'both', with a gradcam map per class (no arrays read)."""
    cams = [NS(class_name=c, method="gradcam", detection=None, files=NS(array=None))
            for c in classes]
    summary = NS(config=NS(task="segmentation"), images=[NS(id="both", cams=cams)])
    return Side(label, Path(label), None, summary, True)


def test_diff_lists_classes_only_in_one_run_spelled_right():
    _, left_out = match(_side("A", ["dog"]), _side("B", ["dog", "background", "cat"]))
    assert "classes only in B: background, cat" in left_out
    assert not [line for line in left_out if "classs" in line]

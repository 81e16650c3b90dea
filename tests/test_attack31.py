"""The thirty-first attack (a helper's findings): what a shared run folder's records, label
maps, lists and box files ask of explain (docs/trust.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import explain
from explain.errors import ExplainError
from explain.writers.report import rebuild
from helpers import finished_tiny_run, one_line, tampered


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (the cat photo, two classes), copied by each test to tamper."""
    return finished_tiny_run(tmp_path_factory.mktemp("base"))


def _with_entry(finished: Path, where: Path, **changes) -> Path:
    """A copy of the finished run whose one image entry has ``changes``."""
    return tampered(finished, where, lambda summary: summary["images"][0].update(changes))


@pytest.mark.parametrize("box", [[-1e306, -1e306, 1e306, 1e306], [0, 0, float("nan"), 4],
                                 [0, 0, 40, 4]])
def test_a_box_outside_its_input_is_a_damaged_folder(finished, tmp_path, box):
    """The report drew each ground-truth box in every map of its class from its numbers in
    fixed decimals: a shared summary's boxes of -1e306 and 1e306 (6 characters in JSON) were
    310 digits each in the page (100 images of 100 such boxes, a 658 KB summary.json, made
    29 MB of HTML; the same boxes inside the image 4 MB), and explain diff paired NaN boxes.
    A run writes four finite numbers inside the input (32 x 32 here): anything else is one
    line naming the file."""
    folder = _with_entry(finished, tmp_path / "run", boxes={"cat": [box] * 50})
    with pytest.raises(ExplainError) as info:
        rebuild(folder)
    one_line(info, "summary.json", "a box", "inside its 32x32 input", "damaged")
    with pytest.raises(ExplainError) as info:
        explain.load(folder)
    one_line(info, "summary.json", "a box")


def test_a_detection_box_is_four_numbers_inside_its_input(finished, tmp_path):
    """A detection's box (any length, any number) was shown whole on the card."""
    summary = json.loads((finished / "summary.json").read_text())
    cams = summary["images"][0]["cams"]
    cams[0]["detection"] = {"label": "cat", "score": 0.5, "box": [1e300] * 5000,
                            "energy_in_box": 0.5}
    folder = _with_entry(finished, tmp_path / "run", cams=cams)
    with pytest.raises(ExplainError) as info:
        rebuild(folder)
    one_line(info, "summary.json", "a box [1e+300, 1e+300", "damaged")


def test_a_box_a_run_writes_is_read_back(finished, tmp_path):
    """Boxes on the input's edges (a run clips them there) are a run's own."""
    folder = _with_entry(finished, tmp_path / "run", boxes={"cat": [[0, 0, 32, 32], [3, 4, 5, 6]]})
    page = rebuild(folder).read_text()
    assert "left:0.000%;top:0.000%;width:100.000%;height:100.000%" in page


def test_a_sanity_record_of_an_unknown_measure_is_a_damaged_folder(finished, tmp_path):
    """summary.json's ``sanity.measure`` names the similarity its verdicts compare; a shared
    summary's other name stopped ``Run.table()`` (AttributeError) and ``explain report``
    (jinja's UndefinedError, the whole 100 KB name in the traceback) instead of one line."""
    sim = {"spearman": 0.1, "spearman_abs": 0.1, "ssim": 0.1, "ssim_abs": 0.1}
    shutil.copytree(finished, tmp_path / "run")
    folder = tmp_path / "run"
    summary = json.loads((folder / "summary.json").read_text())
    summary["sanity"] = {"measure": "spearman" + "x" * 1000, "threshold": 0.5,
                         "logit_threshold": 0.5, "seed": 0, "layers": ["0"],
                         "not_randomised": 0, "maps": [],
                         "methods": [{"method": "gradcam", "verdict": "pass", "final": 0.1,
                                      "cascading": [], "random_logit": sim,
                                      "logit_verdict": "pass"}]}
    (folder / "summary.json").write_text(json.dumps(summary))
    for call in (rebuild, lambda f: explain.load(f).table()):
        with pytest.raises(ExplainError) as info:
            call(folder)
        one_line(info, "summary.json", "sanity.measure", "damaged")

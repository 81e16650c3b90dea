"""The thirty-sixth attack (a helper's findings): shared run folders whose new record fields
(detection's best box, segmentation and detection numbers in explain diff) stopped a reader
in a traceback or held it long."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import cli, finished_tiny_run


def _unfinished_detection(finished: Path, where: Path, score: str) -> Path:
    """A copy of ``finished`` as an interrupted detection run: no summary.json, config.json's
    task: detection, and an item whose image has no explained detection and best box
    scores ``score`` (JSON text: 'Infinity', '5e-324') for every class."""
    shutil.copytree(finished, where)
    (where / "summary.json").unlink()
    config = json.loads((where / "config.json").read_text())
    config["task"] = "detection"
    (where / "config.json").write_text(json.dumps(config))
    for path in (where / "items").glob("*.json"):
        item = json.loads(path.read_text())
        item["entry"].update(cams=[], detections={"above_threshold": 0, "explained": []},
                             probabilities={"cat": "SCORE", "dog": "SCORE"})
        path.write_text(json.dumps(item).replace('"SCORE"', score))
    return where


def test_a_best_box_score_of_inf_or_a_subnormal_does_not_stop_the_report(tmp_path, capsys):
    """An interrupted detection run's note names the best box's score, rounded down to 3
    digits with log10: a shared item's score Infinity (or NaN) stopped ``explain report`` in
    OverflowError, and 5e-324 in ZeroDivisionError. Now the page is written; a score that
    is no number is not named as the best."""
    finished = finished_tiny_run(tmp_path)
    for name, score in (("inf", "Infinity"), ("nan", "NaN"), ("tiny", "5e-324")):
        run = _unfinished_detection(finished, tmp_path / name, score)
        code, err, _ = cli(capsys, "report", run)
        assert code == 0, err
        page = (run / "report.html").read_text()
        assert "nothing to explain there" in page
        assert ("the best box scores 4.94e-324" in page) == (name == "tiny")

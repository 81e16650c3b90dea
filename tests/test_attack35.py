"""The thirty-fifth attack (a helper's findings): a shared run folder's per-class pointing
interval and yes-or-no numbers stopped explain report (and the notebook's display) in a
traceback, its durations held the report quadratically long, and a shared config's named
pipe as model or box file was said to be missing."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import (CAT, IMAGES, cli, finished_tiny_run, labelled_cat, one_line, tampered,
                     tiny_config, tiny_net)


def _pointing(summary: dict, interval: list) -> None:
    """A labelled image and a dataset record whose cat row has ``interval``."""
    labelled_cat(summary, pointing_interval=interval, pointing_units=5)


def test_a_pointing_interval_of_one_number_is_a_damaged_folder(tmp_path, capsys):
    """summary.json's per-class ``pointing_interval`` as one number: the page reads its low
    and its high, and ``explain report`` stopped in jinja's UndefinedError traceback (list
    object has no element 1). Now the summary's one line, exit 2."""
    finished = finished_tiny_run(tmp_path)
    run = tampered(finished, tmp_path / "shared", lambda s: _pointing(s, [0.5]))
    code, err, _ = cli(capsys, "report", run)
    assert code == 2
    one_line(err, "summary.json", "pointing_interval", "expected [low, high]",
             "the run folder is damaged")
    honest = tampered(finished, tmp_path / "honest", lambda s: _pointing(s, [0.4, 0.9]))
    code, err, _ = cli(capsys, "report", honest)
    assert code == 0, err
    assert "95% interval 40.0%–90.0% over 5 images" in (honest / "report.html").read_text()


def test_many_method_durations_are_ordered_in_linear_time(tmp_path, capsys):
    """summary.json's ``durations_s`` named in the console's order: each key was looked up
    in the list of the ``method_`` keys, so a shared summary's 40,000 of them (900 KB) held
    ``explain report`` for about 16 s of CPU (quadratic); now a set, well under a second."""
    run = tampered(finished_tiny_run(tmp_path), tmp_path / "shared",
                   lambda s: s["durations_s"].update({f"method_m{i}": 0.1 for i in range(40_000)}))
    start = time.process_time()
    code, err, _ = cli(capsys, "report", run)
    spent = time.process_time() - start
    assert code == 0, err
    assert "method m39999 (in cams) 0.1" in (run / "report.html").read_text()
    assert spent < 6.0, spent


def _two_images(folder):
    """A finished run of the tiny net on the cat and dog photos: its run folder."""
    from explain.config import load_config
    from explain.runner import RunOptions, run
    torch.save(tiny_net(), folder / "m.pth")
    path = tiny_config(folder, {"file": "m.pth"}, name="a", classes={"cat": 0, "dog": 1},
                       images=[str(CAT), str(IMAGES / "dog.jpg")])
    run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    return folder / "results" / "a"


def _yes_no(summary: dict, where: str) -> None:
    """increase_in_confidence (a yes or a no a map) recorded as 2 on every map, or on a
    random baseline of every image."""
    summary["config"]["metrics"] = [{"name": "increase_in_confidence"}]
    for image in summary["images"]:
        for rec in image["cams"]:
            rec["faithfulness"] = {"increase_in_confidence": 2.0 if where == "maps" else 1.0}
        if where == "baseline":
            image["baselines"] = [{"class": "cat", "baseline": "random",
                                   "scores": {"increase_in_confidence": 2.0}}]


@pytest.mark.parametrize("where", ["maps", "baseline"])
def test_a_yes_or_no_number_other_than_0_or_1_is_a_damaged_folder(tmp_path, capsys, where):
    """A map's (or baseline's) increase_in_confidence or pointing_hit is a yes or a no; the
    intervals of their means are widened by the Wilson interval, and a shared summary's 2.0
    made its square root negative: ``explain report`` and ``explain.load(...)``'s display
    stopped in a traceback (ValueError: math domain error). Now one line naming the number."""
    import explain
    run = tampered(_two_images(tmp_path), tmp_path / "shared", lambda s: _yes_no(s, where))
    code, err, _ = cli(capsys, "report", run)
    assert code == 2
    one_line(err, "summary.json", "a number 2 of 'increase_in_confidence', not 0 or 1",
             "the run folder is damaged")
    with pytest.raises(explain.ExplainError, match="not 0 or 1"):
        explain.load(run)._repr_html_()


def test_a_named_pipe_as_model_or_box_file_is_called_what_it_is(tmp_path, capsys):
    """A shared config's ``model.file`` or ``annotations.file`` naming a named pipe: the model
    said 'model file not found — did you mean <that very path>?', the boxes 'file not found',
    as images did before they were told apart (attack 35: the same for these two files). Now
    the line says it is a named pipe; nothing opens it (no run waits on a writer)."""
    import os
    torch.save(tiny_net(), tmp_path / "m.pth")
    os.mkfifo(tmp_path / "pipe.pth")
    os.mkfifo(tmp_path / "boxes.csv")
    model = tiny_config(tmp_path, {"file": "pipe.pth"}, stem="model")
    boxes = tiny_config(tmp_path, {"file": "m.pth"}, stem="boxes",
                        classes={"cat": 0, "dog": 1}, annotations={"file": "boxes.csv"})
    for path, needle in ((model, "model.file: "), (boxes, "annotations.file: file ")):
        start = time.monotonic()
        code, err, _ = cli(capsys, path)
        assert code == 2 and time.monotonic() - start < 60
        line = one_line(err, needle, "is a named pipe (FIFO)")
        assert "not found" not in line and "did you mean" not in line

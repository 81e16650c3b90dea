"""The thirty-sixth attack (a helper's findings): shared run folders whose new record fields
(detection's best box, segmentation and detection numbers in explain diff) stopped a reader
in a traceback or held it long."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli, finished_tiny_run, labelled_cat


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


def _segmentation_images(summary: dict, images: int, index: int) -> None:
    """summary.json of a segmentation run whose class dog is output ``index``, of ``images``
    images (cat's copies) each predicting some dog pixels, without maps."""
    import copy
    summary["config"].update(task="segmentation", classes={"cat": 0, "dog": index})
    entry = summary["images"][0]
    entry.update(cams=[], segmentation={"truth": False}, files={},
                 probabilities={"cat": 0.5, "dog": 0.5})
    summary["images"] = [dict(copy.deepcopy(entry), id=f"im{i}") for i in range(images)]
    summary["task"] = {"task": "segmentation", "numbers": [], "means": {}, "maps": {}}
    summary["counts"] = {"images": images, "maps": 0}
    summary.pop("evidence", None)


def test_a_class_index_of_a_million_does_not_slow_every_mask_card(tmp_path, capsys):
    """A segmentation card's caption names each predicted class's colour from the palette up
    to its index: a shared summary's class at output 1,000,000 drew a million colours for
    every card, with its mask picture or not (20 ms each: 1,000 images took 20 s, 20,000
    images minutes). The run's palette is made once a report."""
    import time
    from helpers import tampered
    run = tampered(finished_tiny_run(tmp_path), tmp_path / "shared",
                   lambda s: _segmentation_images(s, 1000, 1_000_000))
    start = time.process_time()
    code, err, _ = cli(capsys, "report", run)
    spent = time.process_time() - start
    assert code == 0, err
    page = (run / "report.html").read_text() + "".join(
        p.read_text() for p in (run / "report").glob("*.html"))
    assert "im999" in page
    assert spent < 10.0, spent


def test_an_unfinished_shared_folders_name_is_no_command_line_to_paste(tmp_path, capsys):
    """An interrupted run's report says how to resume it, with the folder's name as the run
    name: a shared folder named 'x;touch pwned;-2' read 'complete it with explain
    CONFIG.yaml --resume --set name=x;touch pwned;-2', a line that runs 'touch pwned' when
    pasted into a shell (and a name the config refuses). Now NAME stands for a run name."""
    run = tmp_path / "x;touch pwned;-2"
    shutil.copytree(finished_tiny_run(tmp_path), run)
    (run / "summary.json").unlink()
    code, err, _ = cli(capsys, "report", run)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert "--set name=x;touch" not in page
    assert "--resume --set name=NAME with the folder renamed NAME (&#39;x;touch pwned;-2&#39; " \
           "is no run name)" in page
    from explain.outputs import resume_flags
    assert resume_flags(None, "exp-2") == "--resume --set name=exp-2"  # an honest folder's
    assert "is no run name" in resume_flags("exp", "exp-2$(id)")


def _pointing_by_method(summary: dict, share: float) -> None:
    """A labelled image and a dataset record whose cat row has gradcam's pointing ``share``."""
    labelled_cat(summary, pointing_by_method={"gradcam": share})


def test_a_methods_pointing_share_outside_0_to_1_is_a_damaged_folder(tmp_path, capsys):
    """Attack 35 bounded a class's accuracy, pointing and interval to 0..1; its per-method
    pointing was left out: a shared summary's NaN, -inf or 7 read 'nan%', '-inf%', '700.0%'
    in the page's per-class table. Now the summary's one line, exit 2, for every reader."""
    import explain
    from helpers import one_line, tampered
    finished = finished_tiny_run(tmp_path)
    for name, share in (("nan", float("nan")), ("neg", float("-inf")), ("big", 7.0)):
        run = tampered(finished, tmp_path / name, lambda s: _pointing_by_method(s, share))
        code, err, _ = cli(capsys, "report", run)
        assert code == 2, err
        one_line(err, "summary.json", "pointing_by_method.gradcam", "the run folder is damaged")
        assert "%</td>" not in (run / "report.html").read_text()  # the copy's, not rewritten
        with pytest.raises(explain.ExplainError, match="pointing_by_method"):
            explain.load(run)
    honest = tampered(finished, tmp_path / "honest", lambda s: _pointing_by_method(s, 0.25))
    code, err, _ = cli(capsys, "report", honest)
    assert code == 0, err
    assert "<td>25.0%</td>" in (honest / "report.html").read_text()


def _segmentation_runs(folder: Path) -> tuple[Path, Path]:
    """Runs A and B of two tiny untrained segmenters on the cat and dog photos, their maps
    saved: the two run folders."""
    import torch
    import yaml
    from helpers import IMAGES
    from explain.cli import main
    for name, seed in (("a", 0), ("b", 3)):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(4, 3, 1))
        torch.save(net, folder / f"{name}.pt")
        config = dict(name=name, task="segmentation", model=dict(file=f"{name}.pt"),
                      classes={"background": 0, "cat": 1, "dog": 2}, target_layers=["1"],
                      images=[str(IMAGES / "cat.jpg"), str(IMAGES / "dog.jpg")],
                      methods=["gradcam"], metrics=[], preprocess=dict(size=32),
                      output=dict(dir=str(folder / "out"), save_arrays=True))
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
        assert main([str(folder / f"{name}.yaml"), "--quiet"]) == 0
    return folder / "out" / "a", folder / "out" / "b"


def _every_segment(summary: dict, key: str, value: float) -> None:
    for entry in summary["images"]:
        for rec in entry["cams"]:
            rec["segment"][key] = value


def test_a_segmentation_maps_share_outside_0_to_1_is_a_damaged_folder(tmp_path, capsys):
    """A segmentation map's energy in region, in mask, mask IoU and pixel shares are shares:
    a shared summary's NaN or 7 read 'nan%' or '700.0%' on its card, and explain diff
    (which now compares them, their change's interval cut to -1..1) printed 'energy_in_region
    +nan' or +6.94 with intervals such as [+6, +1]. Now the summary's one line, exit 2."""
    from helpers import one_line, tampered
    a, b = _segmentation_runs(tmp_path)
    capsys.readouterr()  # the runs' lines
    for name, key, value in (("nan", "energy_in_region", float("nan")),
                             ("big", "energy_in_region", 7.0), ("neg", "mask_iou", -1.0),
                             ("share", "predicted_share", 2.0)):
        shared = tampered(b, tmp_path / name, lambda s: _every_segment(s, key, value))
        for argv in (("report", shared), ("diff", a, shared, "--out", tmp_path / "d")):
            code, err, _ = cli(capsys, *argv)
            assert code == 2, err
            one_line(err, "summary.json", f"segment.{key}", "the run folder is damaged")
    assert not (tmp_path / "d").exists()
    code, err, out = cli(capsys, "diff", a, b, "--out", tmp_path / "d")
    assert code == 0, err
    assert "energy_in_region" in out + err

"""The thirty-fourth attack (a helper's findings): today's new readers of a shared run folder
(the sanity interval's image count, the task numbers' retired names, explain diff's
switched-off sections) held a report or a diff for CPU seconds, or stopped in a traceback."""

from __future__ import annotations

import copy
import json
import time

from helpers import cli, finished_tiny_run, one_line, tampered, tiny_config


def _sanity(summary: dict, count: int) -> None:
    """A sanity record of ``count`` methods over ``count`` maps (an image each)."""
    summary["config"]["sanity"]["enabled"] = True
    summary["sanity"] = {
        "measure": "spearman", "threshold": 0.5, "logit_threshold": 0.5, "seed": 0,
        "layers": ["fc"], "not_randomised": 0,
        "maps": [{"image": f"i{k}", "class": "cat"} for k in range(count)],
        "methods": [{"method": f"m{k}", "verdict": "pass", "final": 0.4, "final_low": 0.3,
                     "final_high": 0.6, "cascading": []} for k in range(count)]}


def test_a_sanity_record_of_many_methods_and_maps_is_counted_once(tmp_path, capsys):
    """SanitySummary.images counted the maps' images again for every method, in the verdict
    line and twice in the table's row: a shared summary's 7,000 methods over 7,000 maps (1 MB)
    held ``explain report`` for about 12 s of CPU (quadratic; 10,000 of each: 21.6 s), 2 s
    with the count made once."""
    run = tampered(finished_tiny_run(tmp_path), tmp_path / "shared",
                   lambda s: _sanity(s, 7000))
    start = time.process_time()
    code, err, _ = cli(capsys, "report", run)
    spent = time.process_time() - start
    assert code == 0, err
    assert "Its interval over the 7000 images" in (run / "report.html").read_text()
    assert spent < 5.0, spent


def test_a_task_record_naming_its_task_by_a_list_is_one_line(tmp_path, capsys):
    """summary.json's ``task.task`` as a list: the retired-names reader looked it up in a
    dict (TypeError: unhashable type: 'list') before validation, and ``explain report``
    stopped in a traceback. Now validation's one line says what is wrong."""
    run = tampered(finished_tiny_run(tmp_path), tmp_path / "shared",
                   lambda s: s.__setitem__("task", {"task": ["segmentation"], "numbers": []}))
    code, err, _ = cli(capsys, "report", run)
    assert code == 2
    one_line(err, "summary.json: not a summary of this explain version", "task.task",
             "the run folder is damaged")


def test_switched_off_sections_do_not_walk_every_setting_to_its_root(tmp_path):
    """explain diff leaves out the settings of sections switched off (enabled: false): up to
    22 dotted names, each walked over every differing setting's path to the root. A shared
    summary's 100,000 model arguments 14 deep against a run with its sections off took 4.6 s
    of CPU in the settings' comparison (0.3 s with the 3 names before), 0.7 s with each path
    walked once."""
    from explain.config import load_config
    from explain.diff.numbers import switched_off
    from explain.settingsdiff import changes
    config = load_config(tiny_config(tmp_path, {"file": "m.pth"})).model_dump(mode="json")
    a, b = copy.deepcopy(config), copy.deepcopy(config)
    for side, delta in ((a, 0), (b, 1)):
        args: dict = {f"k{i}": i + delta for i in range(100_000)}
        for _ in range(14):
            args = {"a": args}
        side["model"]["arch_args"] = args
    for name in ("sanity", "channels", "guided", "concepts", "compare"):
        a[name]["enabled"] = not b[name]["enabled"]
    skip = ("name", "workers", "output.dir", *switched_off(a, b))
    assert "sanity.images" in skip and "channels.atlas" in skip and len(skip) > 20
    start = time.process_time()
    found, total = changes(a, b, skip=skip, shown=20, limit=80)
    spent = time.process_time() - start
    assert total == 100_000 + 5  # the arguments, and each section's enabled
    assert not any(key.startswith(("sanity.images", "channels.atlas")) for key, _, _ in found)
    assert spent < 2.0, spent


def test_the_report_of_a_shared_unfinished_run_lists_no_folder_outside_it(tmp_path, capsys):
    """An interrupted segmentation run's report makes the run's task notes again, and their
    new letter-case hint listed segmentation.masks: a folder that a shared config.json names
    anywhere ('~' too), outside the run folder the report reads, whose names then stood in
    the report ('Cat.png' for 'cat.png'). The report's notes come from the run folder
    alone."""
    import shutil

    import numpy as np
    from PIL import Image

    from conftest import IMAGES
    from test_seg_leftovers import seg_config
    shutil.copy(IMAGES / "cat.jpg", tmp_path / "cat.jpg")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "Cat.png")
    cfg = seg_config(tmp_path, "predicted", ["cat.jpg"], masks="masks")
    code, err, _ = cli(capsys, cfg, "--quiet")
    assert code == 0, err
    shared = tmp_path / "shared"
    shutil.copytree(tmp_path / "results" / "seg", shared)
    (shared / "summary.json").unlink()  # an interrupted run: its item files and config.json
    config = json.loads((shared / "config.json").read_text())  # naming a folder of this machine
    config["segmentation"]["masks"] = str(tmp_path / "masks")
    (shared / "config.json").write_text(json.dumps(config))
    code, err, _ = cli(capsys, "report", shared)
    assert code == 0, err
    page = (shared / "report.html").read_text()
    assert "no label map for 1 image(s)" in page
    assert "Cat.png" not in page and "another case" not in page


def test_task_numbers_said_to_be_medians_must_be_the_ratios():
    """summary.json's new ``task.medians`` was read as written: a shared summary headed a
    segmentation run's mean columns '(median)' (report, notebook). Only the ratios (inside /
    outside) are medians; anything else is a task record the run cannot have written, left
    out with a note."""
    from explain.tasks.records import TaskSummary, task_problem
    means = {"gradcam": {"energy_in_region": 0.5, "mask_iou": 0.25}}
    said = TaskSummary(task="segmentation", numbers=["energy_in_region", "mask_iou"],
                       means=means, medians=["mask_iou"], maps={"gradcam": 2})
    assert task_problem(said, "segmentation", ["gradcam"]) == "medians of numbers it averages"
    detection = TaskSummary(task="detection", numbers=["energy_in_box", "inside_outside"],
                            means={"gradcam": {"energy_in_box": 0.5, "inside_outside": 2.0}},
                            medians=["inside_outside"], maps={"gradcam": 2})
    assert task_problem(detection, "detection", ["gradcam"]) is None

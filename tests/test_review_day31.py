"""Review day 31 (review 25): findings in the commits of day 31 (beats_baselines' one rule,
compare's no_relu, pace's waiting rule, the unfinished report's resume flags, the paired
comparisons' text, explain diff's flip line, the look-alike and sanity notes, attack 35)."""
import pytest


def test_an_unfinished_report_rebuilt_from_inside_its_folder_names_that_folder(
        tmp_path, monkeypatch):
    """``cd results/exp-2 && explain report .``: the unfinished run's page said 'complete it
    with explain CONFIG.yaml --resume', which resumes results/exp, the finished run (the
    folder's name was that of '.', empty); with model.name set it said --set 'name=""'."""
    import shutil

    import torch

    from explain.config import load_config
    from explain.runner import RunOptions, run
    from explain.writers.report import rebuild
    from helpers import tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, metrics=[],
                       classes={"a": 0, "b": 1}, output={"dir": str(tmp_path / "out")})
    run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    shutil.copytree(tmp_path / "out" / "exp", tmp_path / "out" / "exp-2")
    folder = tmp_path / "out" / "exp-2"
    (folder / "summary.json").unlink()  # as an interrupted run leaves it
    monkeypatch.chdir(folder)
    rebuild(folder.relative_to(folder))  # Path('.')
    page = (folder / "report.html").read_text()
    import re
    assert re.findall(r"complete it with [^(]*", page) == [
        "complete it with explain CONFIG.yaml --resume --set name=exp-2 "]


def test_a_shared_summarys_pointing_per_method_is_a_share_too():
    """d89e944 held a class's accuracy, pointing and its interval within 0..1 ('nan%–inf%' on
    the page), not its pointing per method, a share the same table prints with the same
    '%': a shared summary's {"gradcam": NaN} read 'nan%' in the gradcam column, 2.0 '200.0%'."""
    from pydantic import ValidationError

    from explain.results import ClassNumbers
    row = {"class": "cat", "images": 3, "correct": 2, "predicted_as": 2}
    shares = {"gradcam": 0.5, "layercam": 1.0}
    assert ClassNumbers.model_validate({**row, "pointing_by_method": shares}
                                       ).pointing_by_method == shares
    for value in (float("nan"), 2.0, -0.5):
        with pytest.raises(ValidationError, match="pointing_by_method"):
            ClassNumbers.model_validate({**row, "pointing_by_method": {"gradcam": value}})


def test_a_shared_summarys_dataset_accuracy_and_counts_are_held_as_its_classes_are():
    """e64d601 and d89e944 held each class's counts at 0 or more and its shares within 0..1;
    the dataset's own line above that table, 'accuracy <b>nan%</b> · -3 of 5 labelled
    image(s)', and the console's 'dataset: accuracy nan%' read a shared summary's numbers as
    they were."""
    from pydantic import ValidationError

    from explain.results import DatasetSummary
    row = {"labelled": 5, "unlabelled": 1, "correct": 3, "accuracy": 0.6}
    assert DatasetSummary.model_validate(row).accuracy == 0.6
    for key, value in (("accuracy", float("nan")), ("accuracy", 1.5), ("correct", -3),
                       ("labelled", -1), ("unlabelled", -2)):
        with pytest.raises(ValidationError, match=key):
            DatasetSummary.model_validate({**row, key: value})


def test_diff_does_not_call_the_same_percentiles_in_another_order_another_setting():
    """ROAD's score is the mean over its percentiles: a run at [90, 10] and one at [10, 90]
    measure the same metric, and explain diff said 'measured at percentiles 90, 10 in A and
    10, 90 in B: its change is partly the setting's, not only the maps''."""
    from types import SimpleNamespace

    from explain.config.sections import MetricSpec
    from explain.diff.numbers import measured_apart

    def summary(*percentiles):
        return SimpleNamespace(config=SimpleNamespace(metrics=[
            MetricSpec(name="road_combined", percentiles=list(percentiles))]))
    assert measured_apart(summary(90, 10), summary(10, 90)) == []
    assert measured_apart(summary(90, 90), summary(90)) == []
    assert measured_apart(summary(10, 50, 90), summary(90)) == [
        "road_combined: measured at percentiles 10, 50, 90 in A and 90 in B: its change is "
        "partly the setting's, not only the maps'"]


def test_maps_within_the_tolerance_are_no_cause_of_another_maps_differ(tmp_path):
    """b32d7cc explained only the maps outside the tolerance beside a no-ReLU one; without
    one, the agreeing maps still made the cause: three maps that agree (r 1) and one whose
    reference is another layer's map (r low) read 'r near 1 with a large |diff| is the same
    map resized or scaled another way', of the one map whose r is not near 1."""
    import cv2
    import numpy as np
    from test_leftovers21 import _compared
    from test_newcomer20 import _library_like
    size = (64, 64)
    rng = np.random.default_rng(5)
    raws = [cv2.GaussianBlur(rng.normal(size=(13, 13)), (5, 5), 1).astype(np.float32)
            for _ in range(5)]
    pairs = [(f"c{i}", _library_like(r, size), _library_like(r, size))
             for i, r in enumerate(raws[:3])]
    pairs += [("c3", _library_like(raws[3], size), _library_like(raws[4], size))]
    line, rows = _compared(tmp_path, pairs, 1e-4)
    assert [float(r["pearson"]) > 0.99 for r in rows] == [True, True, True, False]
    assert line.startswith("gradcam: differ") and "the maps differ in shape" in line
    assert "resized or scaled another way" not in line


def test_diff_cuts_a_long_list_of_method_names_between_names(tmp_path):
    """a9f5bea listed methods without options by name, so four read whole; nine (a study of
    every method) were still cut inside names: 'methods: ["gradcam", "gradcamplusplus",
    "xgradc..."eigencam", "scorecam", "ablationcam"]'. Cut between names now."""
    import re
    from types import SimpleNamespace

    from explain.config import load_config
    from explain.diff.numbers import config_changes
    from helpers import tiny_config
    many = ["gradcam", "gradcamplusplus", "xgradcam", "layercam", "hirescam", "eigengradcam",
            "eigencam", "scorecam", "ablationcam"]
    a, b = (SimpleNamespace(config=load_config(tiny_config(tmp_path, {"file": "m.pth"},
                                                           stem=stem, methods=methods)))
            for stem, methods in (("a", many), ("b", many[:-1])))
    (line,), total = config_changes(a, b)
    assert total == 1 and line.startswith("methods: ")
    old, new = line[len("methods: "):].split(" -> ")
    for side, names in ((old, many), (new, many[:-1])):
        assert len(side) <= 80 and ", ..., " in side
        shown = re.findall(r'"([^"]*)"', side)
        assert all(n in names for n in shown) and shown[0] == "gradcam", side
        assert shown[-1] == names[-1], side

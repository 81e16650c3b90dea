"""The course config end to end with a stand-in AlexNet saved whole, as the course's file is."""

import json
import sys

import numpy as np
import pytest
import torch

from explain.cli import main
from helpers import refused


def test_course_config_runs_with_whole_pickled_alexnet(course_tree, capsys):
    rc = main([str(course_tree / "configs" / "alexnet_catdog.yaml"), "--quiet",
               "--set", "metrics=[]"])  # the default ROAD is tested in test_road.py
    assert rc == 0, capsys.readouterr().err
    run_dir = course_tree / "results" / "alexnet_catdog"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [i["id"] for i in summary["images"]] == ["cat", "dog", "both"]
    for image in summary["images"]:
        assert sorted({(c["class"], c["method"]) for c in image["cams"]}) == [
            ("cat", "gradcam"), ("cat", "layercam"), ("dog", "gradcam"), ("dog", "layercam")]
        assert abs(sum(image["probabilities"].values()) - 1) < 1e-4
    cam = np.load(run_dir / "cams" / "layercam" / "both__dog.npy")
    assert cam.shape == (224, 224) and cam.max() > 0.99
    # the course's photos are 3:2, 4:3 and 2:1, made square: the run says so, by name
    assert ("preprocess.size [224, 224] changes the shape of 3 named image(s) by more than "
            "1.25x: cat.jpg (451 x 300), dog.jpg (768 x 576), both.jpg (448 x 224); their "
            "pictures and maps are of the squeezed photo (one number, preprocess.size: 224, is "
            "the short side and keeps each photo's shape, where the model takes any size)"
            ) in summary["notes"]


def test_how_far_a_fixed_size_changes_a_photo_s_shape():
    from explain.images.checking import aspect_change
    assert aspect_change(224, 448, [224, 224]) == 2.0
    assert aspect_change(448, 224, [224, 224]) == 2.0  # portrait alike
    assert aspect_change(300, 400, [240, 320]) == pytest.approx(1.0)  # same shape, other size
    assert aspect_change(300, 400, 224) == 1.0  # the short side: the shape is kept
    assert aspect_change(224, 448, [448, 224]) == 4.0  # landscape made portrait


def test_missing_course_model_stops_before_work(small_course_tree, capsys):
    course_tree = small_course_tree
    (course_tree / "models" / "torch_alex.pth").unlink()
    refused(capsys, course_tree / "configs" / "alexnet_catdog.yaml", "--quiet",
            needles=["torch_alex.pth", "not found", "demo_catdog.yaml"])
    assert not (course_tree / "results").exists()


def test_second_run_gets_a_new_folder(small_course_tree):
    course_tree = small_course_tree
    cfg = str(course_tree / "configs" / "alexnet_catdog.yaml")
    assert main([cfg, "--quiet", "--methods", "gradcam", "--set", "metrics=[]"]) == 0
    first = (course_tree / "results" / "alexnet_catdog" / "summary.json").read_bytes()
    assert main([cfg, "--quiet", "--methods", "layercam", "--set", "metrics=[]"]) == 0
    assert (course_tree / "results" / "alexnet_catdog" / "summary.json").read_bytes() == first
    second = json.loads((course_tree / "results" / "alexnet_catdog-2" / "summary.json").read_text())
    assert {c["method"] for i in second["images"] for c in i["cams"]} == {"layercam"}


def test_an_empty_option_is_one_line_not_ignored(small_course_tree, capsys):
    cfg = small_course_tree / "configs" / "alexnet_catdog.yaml"
    for flag in ("--methods", "--layer", "--out"):
        refused(capsys, cfg, "--quiet", flag, " ", needles=[f"{flag}: empty"])
    refused(capsys, cfg, "--quiet", "--methods", ",", needles=["methods", "at least one"])
    assert not (small_course_tree / "results").exists()


class _ScriptNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))[:, :2]


def test_a_class_from_the_saving_script_is_explained_in_one_line(tmp_path):
    """A student's own class saved whole from their script: even trusted, no other program
    can rebuild it; the line says what to do instead."""
    from explain.errors import ExplainError
    from explain.models.pickles import trusted_load
    script = sys.modules["__main__"]
    _ScriptNet.__module__ = "__main__"  # as torch.save records a class of the running script
    script._ScriptNet = _ScriptNet
    try:
        torch.save(_ScriptNet(), tmp_path / "mine.pth")
    finally:
        _ScriptNet.__module__ = __name__
        del script._ScriptNet
    from explain.models.pickles import safe_load
    for load in (trusted_load, safe_load):  # without trust: not "set model.trust: true" first
        with pytest.raises(ExplainError) as info:
            load(tmp_path / "mine.pth")
        message = str(info.value)
        assert "\n" not in message and \
            message.startswith(f"{tmp_path / 'mine.pth'}: the model's class")
        assert "_ScriptNet was defined in the script or notebook that saved it" in message
        assert "model.trust: true does not help" in message
        assert "model.state_dict()" in message and "model.arch" in message
    # the notebook that defines the class and calls explain itself: trust does help there
    _ScriptNet.__module__ = "__main__"
    script._ScriptNet = _ScriptNet
    try:
        with pytest.raises(ExplainError) as info:
            safe_load(tmp_path / "mine.pth")
        assert "does not help" not in str(info.value) and "model.trust: true" in str(info.value)
        assert isinstance(trusted_load(tmp_path / "mine.pth"), _ScriptNet)
    finally:
        _ScriptNet.__module__ = __name__
        del script._ScriptNet


def test_a_planning_error_names_the_config_file_first(small_course_tree, capsys):
    cfg = small_course_tree / "configs" / "alexnet_catdog.yaml"
    line = refused(capsys, cfg, "--quiet", "--layer", "features.99")
    assert line.startswith(f"explain: error: {cfg} (target_layers from the command line): "
                           f"target_layers[0]: no layer 'features.99'")
    line = refused(capsys, cfg, "--quiet", "--set", "classes.dog=5")
    assert line.startswith(f"explain: error: {cfg} (classes.dog from the command line): "
                           f"classes.dog: index 5")
    line = refused(capsys, cfg, "--quiet", "--set", "targets=[Dog]")  # a validation error
    assert line.startswith(f"explain: error: {cfg} (targets from the command line): targets")


def test_an_error_names_the_config_file_as_typed_and_only_flags_what_the_command_line_set(
        small_course_tree, capsys, monkeypatch):
    """The file as the user typed it (a planning error, which names it resolved, too), and
    "from the command line" only beside a field the command line set."""
    from explain.config import attribute
    from explain.errors import ExplainError

    def from_command_line(line, typed, overrides):
        exc = ExplainError(line)
        attribute(exc, typed, overrides, "the command line")
        return str(exc)
    monkeypatch.chdir(small_course_tree)
    typed = "configs/alexnet_catdog.yaml"
    (small_course_tree / "configs" / "bad.yaml").write_text(
        (small_course_tree / "configs" / "alexnet_catdog.yaml").read_text()
        .replace("features.10", "features.98"))
    line = refused(capsys, "configs/bad.yaml", "--quiet", "--methods", "gradcam")
    assert line.startswith("explain: error: configs/bad.yaml: target_layers[0]: no layer "
                           "'features.98'")  # the file's own value: no note
    line = refused(capsys, typed, "--quiet", "--layer", "features.99")
    assert line.startswith(f"explain: error: {typed} (target_layers from the command line): ")
    line = refused(capsys, "./" + typed, "--quiet", "--methods", "gradcm")  # a validation error
    assert line.startswith(f"explain: error: ./{typed} (methods from the command line): "
                           f"methods[0].name: unknown method 'gradcm'")
    (small_course_tree / "configs" / "nofile.yaml").write_text(
        "model: {trust: false}\nimages: [a.jpg]\ntarget_layers: [x]\nmethods: [gradcam]\n")
    line = refused(capsys, "configs/nofile.yaml", "--quiet", "--set", "model.trust=true")
    assert line.startswith("explain: error: configs/nofile.yaml: model: ")  # the file's mistake
    resolved = str((small_course_tree / typed).resolve())
    assert from_command_line(f"{resolved}: methods[1].name: unknown", typed, {"methods": []}) \
        == f"{typed} (methods from the command line): methods[1].name: unknown"
    assert from_command_line("other.pth: broken", typed, {"methods": []}) == "other.pth: broken"

"""The course config end to end with a stand-in AlexNet saved whole, as the course's file is."""

import json

import numpy as np

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

"""A student's first course run, with an untrained stand-in AlexNet and their own files: the
run says when the model is at chance, a training checkpoint's weights load, a state_dict
without its architecture says how many outputs it has, and a "differ" against a student's maps
names the inplace-ReLU trap."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torchvision

from explain import compare, referencefiles
from explain.chance import near_chance
from explain.results import CompareRow
from helpers import cli, explain_error, tiny_config


def _summary(*probabilities: dict, task: str = "classification") -> SimpleNamespace:
    images = [SimpleNamespace(probabilities=p) for p in probabilities]
    return SimpleNamespace(images=images, config=SimpleNamespace(task=task))


def test_near_chance_names_the_probabilities_and_the_likely_causes():
    line = near_chance(_summary({"cat": 0.499, "dog": 0.501}, {"cat": 0.4989, "dog": 0.5011}))
    assert line.startswith("the model is at chance on every image")
    assert "within 0.001 of 0.500 on all 2 image(s)" in line
    assert "preprocess.size, mean and std" in line


def test_near_chance_is_silent_for_a_model_that_decides_or_a_few_named_classes():
    assert near_chance(_summary({"cat": 0.499, "dog": 0.501}, {"cat": 0.9, "dog": 0.1})) is None
    # two classes named out of 1000 outputs: 1/2 is not chance
    assert near_chance(_summary({"cat": 0.001, "dog": 0.001})) is None
    assert near_chance(_summary({"cat": 0.5, "dog": 0.5}, task="segmentation")) is None
    assert near_chance(_summary()) is None
    for p in ({"cat": float("nan"), "dog": 0.5}, {"dog": 0.5, "cat": float("nan")}):
        assert near_chance(_summary(p)) is None  # it said 'within nan of 0.500'


def test_a_course_run_with_an_untrained_model_warns_on_the_console_and_in_the_report(
        small_course_tree, capsys):
    model = torch.load(small_course_tree / "models" / "torch_alex.pth", weights_only=False)
    with torch.no_grad():  # logits near 0: every image at 0.5 / 0.5
        model.classifier[0].weight.mul_(1e-4)
        model.classifier[0].bias.zero_()
    torch.save(model, small_course_tree / "models" / "torch_alex.pth")
    config = small_course_tree / "configs" / "alexnet_catdog.yaml"
    code, err, out = cli(capsys, config, "--set", "metrics=[]", "--set", "channels.enabled=false",
                         "--set", "preprocess.size=[112,112]", "--set", "methods=[gradcam]")
    assert code == 0, err
    said = [line.strip() for line in (err + "\n" + out).splitlines()]
    warning = [line for line in said if line.startswith("warning: ")]
    assert len(warning) == 1 and "at chance on every image" in warning[0], said
    assert "on all 3 image(s)" in warning[0]
    page = (small_course_tree / "results" / "alexnet_catdog" / "report.html").read_text()
    warnings = page[page.index("Warnings"):page.index("Which map to trust</h2>")]
    assert "the model is at chance on every image" in warnings


def _squeezenet_weights() -> dict:
    torch.manual_seed(0)
    return torchvision.models.squeezenet1_1(num_classes=2).state_dict()


def test_a_training_checkpoint_loads_its_model_state_dict(tmp_path):
    import explain
    torch.save({"epoch": 3, "model_state_dict": _squeezenet_weights(), "loss": 0.1},
               tmp_path / "ckpt.pth")
    config = tiny_config(tmp_path, {"file": "ckpt.pth", "arch": "torchvision.models.squeezenet1_1",
                                    "arch_args": {"num_classes": 2}})
    net = explain.load_model(config)
    assert torch.equal(net.state_dict()["classifier.1.weight"],
                       _squeezenet_weights()["classifier.1.weight"])


def test_a_checkpoint_under_another_key_is_named_in_the_error(tmp_path):
    import explain
    torch.save({"epoch": 3, "weights_ema": _squeezenet_weights()}, tmp_path / "ckpt.pth")
    config = tiny_config(tmp_path, {"file": "ckpt.pth", "arch": "torchvision.models.squeezenet1_1",
                                    "arch_args": {"num_classes": 2}})
    line = explain_error(explain.load_model, config)
    assert "its keys: 'epoch', 'weights_ema'" in line
    assert "the weights may be under 'weights_ema'" in line


def test_a_state_dict_without_arch_says_how_many_outputs_it_has(tmp_path):
    import explain
    torch.save(_squeezenet_weights(), tmp_path / "sd.pth")
    line = explain_error(explain.load_model, tiny_config(tmp_path, {"file": "sd.pth"}))
    assert "is a state_dict (weights only); add 'model.arch'" in line
    assert "its last layer 'classifier.1.weight' has 2 outputs: model.arch_args: " \
           "{num_classes: 2}" in line


def test_maps_of_another_pattern_point_to_the_inplace_relu_trap():
    rows = [CompareRow(image="both", class_name="cat", method="gradcam", max_abs=0.5,
                       mean_abs=0.1, pearson=r, iou_top20=0.5) for r in (0.81, 0.85, 0.9)]
    note = compare.why_references_differ(rows)
    assert "Pearson r median 0.85, lowest 0.81 (both / cat)" in note
    assert "differ in shape: where they are high, not only in size or scale" in note
    assert "ReLU(inplace=True)" in note and "inplace-ReLU trap" in note


def test_the_report_shows_the_configs_relative_model_path_as_the_config_names_it():
    """The course config names '../models/torch_alex.pth': the report's Run table showed
    '../../models/torch_alex.pth' (resolved from the working directory, the repository root)."""
    from explain.shownpaths import shown_path
    config = "/home/student/explain/configs/alexnet_catdog.yaml"
    assert shown_path("../models/torch_alex.pth", config) == "../models/torch_alex.pth"
    assert shown_path("/home/student/explain/models/torch_alex.pth", config) \
        == "../models/torch_alex.pth"
    assert shown_path("models/x.pth", config) == "models/x.pth"
    assert shown_path("../../../../data/x.pth", config) == ".../data/x.pth"


def test_a_reference_file_named_with_single_underscores_is_pointed_to_its_map(
        small_course_tree, capsys):
    """A student's maps saved as both_cat_gradcam.npy matched nothing, and the line only
    gave the pattern: it now names the map the file looks meant for."""
    import numpy as np
    refs = small_course_tree / "mine"
    refs.mkdir()
    for image in ("cat", "dog", "both"):
        for cls in ("cat", "dog"):
            np.save(refs / f"{image}_{cls}_gradcam.npy", np.ones((6, 6), np.float32))
    code, err, out = cli(capsys, small_course_tree / "configs" / "alexnet_catdog.yaml",
                         "--compare", "--set", f"compare.reference_dir={refs}",
                         "--set", "metrics=[]", "--set", "channels.enabled=false",
                         "--set", "preprocess.size=[112,112]", "--set", "methods=[gradcam]")
    assert code == 0, err
    said = [line.strip() for line in (err + "\n" + out).splitlines()]
    line = [s for s in said if "matched no map" in s]
    assert line == ["compare: 6 file(s) in the reference folder matched no map (first: "
                    "both_cat_gradcam.npy, which looks meant for both__cat__gradcam.npy); "
                    "names are <image>__<class>__<method>.npy or .png"], said


def _notebook_cell(needle: str) -> str:
    import json
    from conftest import REPO
    nb = json.loads((REPO / "notebooks" / "course_lab.ipynb").read_text(encoding="utf-8"))
    return next("".join(c["source"]) for c in nb["cells"] if needle in "".join(c["source"]))


def test_the_notebook_says_when_the_stand_in_model_is_at_chance(capsys):
    """With the untrained stand-in AlexNet the notebook printed p = 0.499 / 0.501 and ended
    with "Both methods put each class's map on its animal": it now says the maps mean
    nothing, in step 2 and above the discussion."""
    cell = _notebook_cell("p(cat | {r.name}.jpg)")
    check = "\n".join(line for line in cell.splitlines() if line.startswith(("if all", "    ")))
    check = check[check.index("if all"):]
    chance = [SimpleNamespace(probabilities={"cat": 0.499, "dog": 0.501})] * 3
    exec(check, {"cams": chance})
    assert "warning: the model is at chance on every photo" in capsys.readouterr().out
    exec(check, {"cams": [SimpleNamespace(probabilities={"cat": 0.97, "dog": 0.03})] * 3})
    assert capsys.readouterr().out == ""
    assert "its maps mean nothing" in _notebook_cell("## Discussion")


def test_running_twice_says_where_the_second_run_went_and_why(small_course_tree, capsys):
    config = small_course_tree / "configs" / "alexnet_catdog.yaml"
    argv = (config, "--set", "metrics=[]", "--set", "channels.enabled=false",
            "--set", "preprocess.size=[112,112]", "--set", "methods=[gradcam]")
    first = cli(capsys, *argv)
    assert first[0] == 0 and "holds an earlier run" not in first[1] + first[2]
    code, err, out = cli(capsys, *argv)
    assert code == 0, err
    said = [line.strip() for line in (err + "\n" + out).splitlines()]
    assert "(alexnet_catdog holds an earlier run, kept: this one is alexnet_catdog-2; "\
           "--overwrite replaces alexnet_catdog)" in said, said


def test_a_colormap_png_is_refused_as_a_reference_and_a_grey_rgba_png_is_read(tmp_path):
    """A student saved cv2.applyColorMap pictures as their maps: read as grey, jet's
    brightness is not the map, and the verdict blamed the maps' shape. Refused, naming the
    file; a grey picture in RGBA (plt.imsave with cmap='gray') still reads as its values."""
    import cv2
    import numpy as np
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    cv2.imwrite(str(tmp_path / "jet.png"), cv2.applyColorMap(ramp, cv2.COLORMAP_JET))
    line = explain_error(referencefiles.read_reference, tmp_path / "jet.png")
    assert line.startswith(f"{tmp_path / 'jet.png'}: a colour picture (its red, green and blue "
                           f"differ, as a colormap's do), not a map: save the map's values")
    grey = np.dstack([ramp, ramp, ramp, np.full_like(ramp, 255)])
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    m = referencefiles.read_reference(tmp_path / "grey.png")
    assert m.shape == (16, 32) and m[0, 0] == 0.0 and m[0, -1] == 1.0
    assert abs(float(m[3, 16]) - ramp[3, 16] / 255) < 1e-6


def test_identical_maps_at_chance_give_the_reason():
    """A newcomer's ScoreCAM maps were the same for cat and dog on the untrained stand-in,
    with no reason given: a run at chance says it may be why (a class-agnostic method's own
    reason first; a model that decides gives none)."""
    from explain.writers.metrics import same_map_notes
    same = {"scorecam": [3, 3], "eigencam": [1, 3], "gradcam": [0, 3]}
    at_chance = same_map_notes(same, True)
    assert at_chance == [
        "scorecam: identical maps for every class on 3 of 3 image(s) computed in this run (the "
        "model is at chance on every image, see the warnings: class scores that barely move "
        "weight the channels alike for every class)",
        "eigencam: identical maps for every class on 1 of 3 image(s) computed in this run "
        "(class-agnostic method)"]
    assert same_map_notes(same, False)[0] == (
        "scorecam: identical maps for every class on 3 of 3 image(s) computed in this run")

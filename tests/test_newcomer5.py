"""What a researcher hit following README.md and docs/ with an own model, a labelled folder,
segmentation, detection and the notebook API (the fifth newcomer session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import CAT, cli, refused, tiny_config, tiny_net
from test_trust_section import GOOD, synthetic
from torch import nn

from explain import trustlines
from explain.methodtable import method_table


def test_a_tie_at_the_top_does_not_hide_a_method_that_is_significantly_worse():
    """Three methods beat the baselines, two tie and the third is significantly worse: the
    conclusion said all three 'do not differ significantly', against its own comparisons."""
    summary = synthetic({"gradcam": list(GOOD), "layercam": [v + 0.2 for v in GOOD],
                         "gradcamplusplus": [v + 0.2 for v in GOOD]},
                        {"random": [v - 0.3 for v in GOOD]})
    table = method_table(summary, ["gradcam", "layercam", "gradcamplusplus"])
    evidence = trustlines.build(summary, table)
    assert evidence.trusted is None
    assert evidence.conclusion == (
        "no method is clearly better: gradcam, layercam, gradcamplusplus beat every baseline, "
        "but none is significantly better than every other on ROAD combined (significant: "
        "layercam better than gradcam; gradcamplusplus better than gradcam)"
        + trustlines.NO_SANITY)
    assert "do not differ" not in evidence.conclusion


def test_a_whole_timm_model_is_pointed_to_its_state_dict(tmp_path, capsys):
    """README: 'a state_dict (or a whole model saved with torch.save)' beside timm:resnet18;
    a whole timm model is refused (its classes are not allow-listed as pickled objects), and
    the line offered only model.trust, not the state_dict route that needs none."""
    timm = pytest.importorskip("timm")
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                        timm.layers.SelectAdaptivePool2d(pool_type="avg", flatten=True),
                        nn.Linear(4, 2)).eval()
    torch.save(net, tmp_path / "whole.pth")
    config = tiny_config(tmp_path, {"file": "whole.pth"}, classes={"cat": 0, "dog": 1},
                         metrics=[])
    line = refused(capsys, config, "--quiet", needles=(
        "refused to load: the file creates timm.layers.adaptive_avgmax_pool."
        "SelectAdaptivePool2d while loading",
        "(a timm model: save model.state_dict() instead and set model.arch: timm:<its name>, "
        "e.g. timm:resnet18, with model.arch_args as you built it; no trust needed)",
        "If you trust this file, set 'model.trust: true'"))
    assert line.startswith(f"explain: error: {config}: model.file: ")
    torch.save(tiny_net(), tmp_path / "plain.pth")  # a torch-only pickle: loads, no hint
    config = tiny_config(tmp_path, {"file": "plain.pth"}, classes={"cat": 0, "dog": 1},
                         metrics=[])
    assert cli(capsys, config, "--quiet")[0] == 0


def test_a_segmenter_layer_is_not_called_blind_from_one_pixel_of_its_score_map(tmp_path,
                                                                              capsys):
    """The run's 'zero grad' note took the top score of one pixel of a segmenter's score maps
    (reaching one position under a 1x1 head) and said gradient maps would be blank for every
    class, while a class's explained score is its map summed over its region and the maps
    were not blank (explain layers did not mark the layer either)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    torch.save(net, tmp_path / "seg.pt")
    config = tiny_config(tmp_path, {"file": "seg.pt"}, task="segmentation", target_layers=["1"],
                         classes={"a": 0, "b": 1, "c": 2}, methods=["gradcam"],
                         output={"save_arrays": True})
    code, err, out = cli(capsys, config)
    assert code == 0, err
    assert "zero grad" not in out + err and "blank for every class" not in out + err
    maps = list((tmp_path / "results" / "exp" / "cams" / "gradcam").glob("*.npy"))
    assert maps and all(np.load(m).max() > 0 for m in maps)


def test_a_gradient_method_at_a_detector_pyramid_names_the_config_and_the_field(tmp_path,
                                                                                 capsys):
    """'explain: error: gradcam: needs the gradient at ...': the one model-stage line of a
    detection run that named neither the config file nor the field."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96,
        rpn_pre_nms_top_n_test=20, rpn_post_nms_top_n_test=5, box_detections_per_img=2)
    torch.save(det.state_dict(), tmp_path / "det.pt")
    config = tiny_config(tmp_path, {"file": "det.pt", "arch": "torchvision.models.detection."
                                    "fasterrcnn_mobilenet_v3_large_fpn",
                                    "arch_args": {"num_classes": 3, "min_size": 64,
                                                  "max_size": 96}},
                         task="detection", classes={"cat": 1, "dog": 2}, target_layers="auto",
                         methods=["gradcam"], preprocess={"size": 64, "mean": [0, 0, 0],
                                                          "std": [1, 1, 1]})
    line = refused(capsys, config, "--quiet")
    assert line.startswith(f"explain: error: {config}: methods: gradcam: needs the gradient at "
                           f"target_layers[0] 'backbone', whose output is a dict of feature maps")
    line = refused(capsys, config, "--quiet", "--methods", "eigencam,layercam")
    assert line.startswith(f"explain: error: {config} (methods from the command line): methods: "
                           f"layercam: needs the gradient at")
    assert not (tmp_path / "results").exists()


def test_explain_cam_takes_methods_as_one_comma_string_as_a_config_does():
    """docs/api.md: explain.cam's methods are 'names ... as in a config', and a config takes
    one string 'gradcam,layercam'; explain.cam wrapped it as one name and refused it."""
    import explain
    net = tiny_net()
    both = explain.cam(net, str(CAT), "0", "gradcam,layercam", classes=["cat", "dog"],
                       preprocess={"size": [32, 32]})
    assert both.methods == ["gradcam", "layercam"]
    listed = explain.cam(net, str(CAT), "0", ["gradcam", "layercam"], classes=["cat", "dog"],
                         preprocess={"size": [32, 32]})
    for method in ("gradcam", "layercam"):
        assert np.array_equal(both.maps[method]["dog"], listed.maps[method]["dog"])
    assert explain.cam(net, str(CAT), "0", "layercam", classes=["cat", "dog"],
                       preprocess={"size": [32, 32]}).methods == ["layercam"]
    with pytest.raises(explain.ExplainError, match="^explain.cam: methods"):
        explain.cam(net, str(CAT), "0", "gradcam layercam")


@pytest.mark.parametrize("command", ["run", "layers"])
def test_a_segmenter_run_as_a_classifier_says_to_use_task_segmentation(tmp_path, capsys,
                                                                       command):
    """A model returning (N, K, H, W) score maps under the default task: the layer survey
    (auto, explain layers) indexed one pixel of the maps as a class and stopped with 'the
    forward pass failed (IndexError: index 1144 is out of bounds ...)', or a traceback
    from explain layers; the run with a named layer already said 'expected (N, classes)
    logits', without the task to use."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    torch.save(net, tmp_path / "seg.pt")
    config = tiny_config(tmp_path, {"file": "seg.pt"}, classes={"a": 0, "b": 1, "c": 2},
                         metrics=[])
    argv = [config, "--quiet"] if command == "run" else ["layers", config]
    line = refused(capsys, *argv)
    assert line == (f"explain: error: {config}: model: forward returns shape (1, 3, 32, 32), "
                    f"expected (N, classes) logits; this looks like a segmentation model: use "
                    f"task: segmentation")
    named = refused(capsys, config, "--quiet", "--layer", "1")
    assert named.endswith("expected (N, classes) logits; this looks like a segmentation model: "
                          "use task: segmentation")

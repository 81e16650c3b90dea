"""What a newcomer hit on a fresh clone (a timm ResNet and ViT, whole and state_dict files, a
detector, the Python API): each now one clear line, or it works."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import detection

from conftest import IMAGES, make_small_alexnet, write_config
from explain import api
from explain.config import load_config
from explain.errors import ExplainError
from explain.models.layouts import LayoutError, infer_layout, usable_layout
from explain.models.loading import load_model
from explain.models.pickles import safe_load
from explain.runner import RunOptions, run


def test_a_whole_model_file_with_model_arch_is_refused_not_silently_rebuilt(tmp_path):
    torch.save(make_small_alexnet(), tmp_path / "whole.pth")
    path = write_config(tmp_path, model={"file": str(tmp_path / "whole.pth"),
                                         "arch": "alexnet", "arch_args": {"num_classes": 2}},
                        target_layers=["features.10"])
    with pytest.raises(ExplainError) as err:
        load_model(load_config(path))
    text = str(err.value)
    assert text.startswith("model.file: ") and "holds a whole model " \
        "(torchvision.models.alexnet.AlexNet)" in text and \
        "model.arch and model.arch_args would be ignored" in text
    # without arch it loads as saved
    plain = write_config(tmp_path, "plain", model={"file": str(tmp_path / "whole.pth")},
                         target_layers=["features.10"])
    assert type(load_model(load_config(plain))).__name__ == "AlexNet"


def test_a_four_dimensional_output_that_fits_no_map_is_refused_like_explain_layers_does():
    heads = (1, 3, 197, 64)  # a ViT's q_norm: (batch, heads, tokens, dim)
    assert usable_layout(heads, (224, 224)) is None
    with pytest.raises(LayoutError, match=r"fits neither a feature map .* reshape: none"):
        infer_layout(heads, (224, 224))
    assert infer_layout(heads, (224, 224), "none").kind == "nchw"  # the way to insist
    assert infer_layout((1, 64, 7, 7), (224, 224)).kind == "nchw"
    assert infer_layout((1, 7, 7, 64), (224, 224)).kind == "nhwc"
    assert infer_layout((1, 64, 7, 14), (224, 448)).kind == "nchw"


def test_a_whole_pickled_torchvision_detector_loads_safely(tmp_path):
    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3).eval()
    torch.save(model, tmp_path / "det.pt")
    loaded = safe_load(tmp_path / "det.pt").eval()
    assert type(loaded).__name__ == "FasterRCNN"
    coder = loaded.roi_heads.box_coder
    assert type(coder).__name__ == "BoxCoder" and coder.weights == model.roi_heads.box_coder.weights
    x = [torch.rand(3, 96, 128)]
    with torch.no_grad():
        a, b = model.backbone(x[0][None]), loaded.backbone(x[0][None])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_dict_configs_planning_errors_start_with_config_dict(tmp_path):
    torch.save(make_small_alexnet(), tmp_path / "small.pth")
    config = {"model": {"file": str(tmp_path / "small.pth")}, "classes": {"cat": 0, "dog": 1},
              "images": [str(IMAGES / "cat.jpg")], "target_layers": ["features.99"],
              "methods": ["gradcam"], "metrics": [], "preprocess": {"size": 64},
              "output": {"dir": str(tmp_path / "results")}}
    with pytest.raises(ExplainError) as err:
        api.run(config, progress=False)
    assert str(err.value).startswith("config dict: target_layers[0]: no layer 'features.99'")


def test_explain_layers_lists_a_config_that_names_no_layers_or_methods_yet(tmp_path, capsys):
    from conftest import OMIT
    from explain.cli import main
    torch.save(make_small_alexnet(), tmp_path / "small.pth")
    path = write_config(tmp_path, model={"file": str(tmp_path / "small.pth")},
                        methods=OMIT, preprocess={"size": 64})
    assert main(["layers", str(path)]) == 0
    out = capsys.readouterr().out
    assert "features.10" in out and "features.12" in out
    # a run of the same config says what to write
    assert main([str(path)]) == 2  # a config error
    err = capsys.readouterr().err
    assert "target_layers: required key is missing (e.g. target_layers: auto; explain " \
           "layers CONFIG lists the layers)" in err
    assert "methods: required key is missing (e.g. methods: [gradcam, layercam])" in err


def test_a_missing_model_or_images_says_what_to_write(tmp_path, capsys):
    """A newcomer's config without model: or images: was told only 'required key is
    missing'."""
    from explain.cli import main
    path = tmp_path / "c.yaml"
    path.write_text("target_layers: [features.10]\nmethods: [gradcam]\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "c.yaml: model: required key is missing (e.g. model: {file: torch_alex.pth}, a " \
           "file saved with torch.save; docs/models.md lists the other sources)" in err
    assert "c.yaml: images: required key is missing (e.g. images: [cat.jpg, photos/], files " \
           "and folders relative to the config)" in err


def test_a_misspelt_command_is_named_not_taken_for_a_config(tmp_path, capsys, monkeypatch):
    from explain.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["layer", "r18.yaml"]) == 2
    assert capsys.readouterr().err.strip() == \
        "explain: error: no command or config file 'layer': did you mean " \
        "'explain layers r18.yaml'?"
    main(["reports.yaml", "--quiet"])  # a missing config file is said to be missing
    assert "did you mean" not in capsys.readouterr().err
    (tmp_path / "layer").write_text("model: {}\n")  # a config named 'layer' is a config
    main(["layer", "--quiet"])
    assert "did you mean" not in capsys.readouterr().err


def test_classes_as_a_list_and_a_path_from_the_wrong_folder_say_what_to_write(tmp_path,
                                                                            monkeypatch):
    torch.save(make_small_alexnet(), tmp_path / "small.pth")
    (tmp_path / "study").mkdir()
    path = write_config(tmp_path / "study", model={"file": str(tmp_path / "small.pth")},
                        classes=["cat", "dog"], target_layers=["features.10"])
    with pytest.raises(ExplainError, match=r"classes: a mapping of name to output index, "
                                           r"e\.g\. classes: \{cat: 0, dog: 1\}"):
        load_config(path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes((IMAGES / "cat.jpg").read_bytes())
    cfg = load_config(path, {"classes": {"cat": 0, "dog": 1}, "images": ["photo.jpg"]})
    with pytest.raises(ExplainError) as err:
        run(cfg, RunOptions(progress=False, log=lambda line: None))
    assert "image not found" in str(err.value) and "relative paths are read from the " \
        "config's folder; 'photo.jpg' exists from the working directory" in str(err.value)

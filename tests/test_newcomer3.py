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
        "(torchvision.models.alexnet.AlexNet)" in text and "model.arch would be ignored" in text
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

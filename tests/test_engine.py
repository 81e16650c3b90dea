"""The shared-pass engine gives exactly the library's maps, and leaves the model as it found it."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (EigenGradCAM, GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM,
                              LayerCAM, XGradCAM)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain.config import MethodSpec
from explain.engine import CamEngine
from explain.model import find_layer, non_inplace
from conftest import make_alexnet

LIBRARY = {"gradcam": GradCAM, "layercam": LayerCAM, "gradcamplusplus": GradCAMPlusPlus,
           "xgradcam": XGradCAM, "hirescam": HiResCAM, "gradcamelementwise": GradCAMElementWise,
           "eigengradcam": EigenGradCAM}


def library_maps(model, layer, x, classes, batch):
    """The plain library call per method, class and batch (inplace switched off so it is
    correct). Same batches as the engine: conv kernels round differently per batch shape."""
    out = {}
    with non_inplace(model):
        for name, cls in LIBRARY.items():
            with cls(model, [layer]) as cam:
                out[name] = np.concatenate([
                    np.stack([cam(x[i:i + batch], [ClassifierOutputTarget(c)] * len(x[i:i + batch]))
                              for c in classes], 1)
                    for i in range(0, len(x), batch)])
    return out


def engine_maps(model, layer, x, classes, batch):
    methods = [MethodSpec(name=n) for n in LIBRARY]
    with CamEngine(model, [layer], methods, torch.device("cpu")) as engine:
        parts = [engine.run(x[i:i + batch], classes, classes).maps for i in range(0, len(x), batch)]
    return {n: np.concatenate([p[n] for p in parts]) for n in LIBRARY}


@pytest.mark.parametrize("layer_name", ["features.10", "features.11"])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_engine_equals_library_on_alexnet(layer_name, batch):
    model = make_alexnet()
    layer = find_layer(model, layer_name)
    x = torch.randn(5, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ours = engine_maps(model, layer, x, [0, 1], batch)
    theirs = library_maps(model, layer, x, [0, 1], batch)
    for name in LIBRARY:
        assert ours[name].shape == (5, 2, 224, 224)
        assert np.abs(ours[name] - theirs[name]).max() <= 1e-5, name


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_engine_equals_library_on_demo_network(demo_model, batch):
    layer = find_layer(demo_model, "backbone._blocks.15")
    x = torch.randn(5, 3, 224, 288, generator=torch.Generator().manual_seed(2))
    ours = engine_maps(demo_model, layer, x, [0, 1], batch)
    theirs = library_maps(demo_model, layer, x, [0, 1], batch)
    for name in LIBRARY:
        assert np.abs(ours[name] - theirs[name]).max() <= 1e-5, name


def test_model_state_is_restored():
    model = make_alexnet().train()
    model.classifier[6].weight.requires_grad_(False)
    with CamEngine(model, [find_layer(model, "features.10")], [MethodSpec(name="gradcam")],
                   torch.device("cpu")) as engine:
        engine.run(torch.randn(1, 3, 224, 224), [0], [0, 1])
        assert not model.training and not model.features[11].inplace
    assert model.training and model.features[11].inplace
    assert not model.classifier[6].weight.requires_grad and model.classifier[4].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients computed


def test_predicted_targets_pick_best_named_class():
    model = make_alexnet()
    x = torch.randn(4, 3, 224, 224)
    with CamEngine(model, [find_layer(model, "features.-3")], [MethodSpec(name="gradcam")],
                   torch.device("cpu")) as engine:
        result = engine.run(x, None, [0, 1])
    assert result.classes.shape == (4, 1)
    assert (result.classes[:, 0] == result.logits.argmax(1)).all()

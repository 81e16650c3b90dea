"""ScoreCAM and AblationCAM share their passes across the classes explained: one set of passes
per image, every class's score read from it (explain.sharedpasses), with maps equal to the
library's own call per class, and K classes cost one class's passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import AblationCAM, ScoreCAM
from torch import nn

from helpers import class_targets, engine_maps

TOLERANCE = 1e-5
SIDE = 24


def small_net(classes: int = 3) -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 10, 3, stride=2,
                        padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(10, classes)).eval()
    with torch.no_grad():  # scores far apart: ScoreCAM's softmax weights differ per class
        net[-1].weight.mul_(40)
    return net


def images(count: int = 3) -> torch.Tensor:
    return torch.randn(count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(5))


class Counting(nn.Module):
    """The network, counting the images its forward sees."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.net(x)


def library(cls: type, net: nn.Module, layer: nn.Module, x: torch.Tensor, classes: list[int],
            **options) -> np.ndarray:
    """(B, K, H, W): the library's own call, one per class."""
    out = []
    for c in classes:
        cam = cls(net, [layer], **options)
        try:
            out.append(cam(input_tensor=x, targets=class_targets(c, len(x))))
        finally:
            cam.activations_and_grads.release()
    return np.stack(out, 1)


@pytest.mark.parametrize("method,cls", [("scorecam", ScoreCAM), ("ablationcam", AblationCAM)])
@pytest.mark.parametrize("classes", [[0, 1], [2, 0, 1]])
def test_shared_passes_equal_the_library_per_class(method, cls, classes):
    net = small_net()
    layer = net[2]
    x = images()
    ours = engine_maps(net, layer, [{"name": method, "batch_size": 4}], x, classes)[method]
    if method == "scorecam":
        theirs = []
        for c in classes:
            cam = ScoreCAM(net, [layer])
            cam.batch_size = 4
            theirs.append(cam(input_tensor=x, targets=class_targets(c, len(x))))
            cam.activations_and_grads.release()
        theirs = np.stack(theirs, 1)
    else:
        theirs = library(cls, net, layer, x, classes, batch_size=4)
    assert ours.shape == (3, len(classes), SIDE, SIDE)
    assert np.abs(ours - theirs).max() <= TOLERANCE
    # not vacuous: the classes' maps differ and have content
    assert ours.max() > 0.5 and np.abs(ours[:, 0] - ours[:, 1]).max() > 0.01


def test_ablation_with_a_share_of_channels_and_per_image_targets():
    """ratio_channels_to_ablate < 1 and a different class per image (a (B, S) target array)."""
    net = small_net()
    layer = net[2]
    x = images()
    targets = np.array([[0, 1], [1, 2], [2, 0]])
    from helpers import cpu_engine
    with cpu_engine(net, [layer], [{"name": "ablationcam", "ratio_channels_to_ablate": 0.5}]
                    ) as engine:
        ours = engine.run(x, targets, [0, 1, 2]).maps["ablationcam"]
    for s in range(2):
        cam = AblationCAM(net, [layer], ratio_channels_to_ablate=0.5)
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c))
                                              for c in targets[:, s]])
        cam.activations_and_grads.release()
        assert np.abs(ours[:, s] - theirs).max() <= TOLERANCE


def test_scorecam_with_augmentation_smoothing_equals_the_library():
    net = small_net()
    layer = net[2]
    x = images(2)
    ours = engine_maps(net, layer, ["scorecam"], x, [0, 1], aug_smooth=True)["scorecam"]
    for k, c in enumerate([0, 1]):
        cam = ScoreCAM(net, [layer])
        theirs = cam(input_tensor=x, targets=class_targets(c, 2), aug_smooth=True)
        cam.activations_and_grads.release()
        assert np.abs(ours[:, k] - theirs).max() <= TOLERANCE


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_k_classes_cost_one_classs_passes(method):
    """3 classes run the model on as many images as 1 class; the library's per-class calls
    ran 3 times as many."""
    x = images(2)
    counts = {}
    for classes in ([0], [0, 1, 2]):
        model = Counting(small_net())
        engine_maps(model, model.net[2], [{"name": method, "batch_size": 4}], x, classes)
        counts[len(classes)] = model.rows
    model = Counting(small_net())
    library(ScoreCAM if method == "scorecam" else AblationCAM, model, model.net[2], x, [0, 1, 2])
    assert counts[3] == counts[1] and model.rows >= 3 * counts[1] - 6
    assert counts[1] >= 2 * 10  # one pass per channel (10) of each image, at least


def test_a_failing_pass_puts_the_ablated_layer_back():
    """AblationCAM swaps the target layer for its ablation layer during its passes; a model that
    fails in them leaves the network as it was (the library would keep the swapped layer)."""
    net = small_net()
    layer = net[2]
    calls = {"n": 0}

    def fail_when_ablated(module, args):
        calls["n"] += 1
        if calls["n"] > 3:  # the engine's pass, the library's two, then an ablated one
            raise RuntimeError("boom")
    handle = net[0].register_forward_pre_hook(fail_when_ablated)
    from explain.errors import ExplainError
    with pytest.raises(ExplainError, match="ablationcam: the library failed.*boom"):
        engine_maps(net, layer, ["ablationcam"], images(1), [0])
    handle.remove()
    assert net[2] is layer

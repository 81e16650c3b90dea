"""The shared-pass engine gives exactly the library's maps, and leaves the model as it found it.

The equality tests run on a small AlexNet (torchvision's ``features`` exactly, a small head) at
112 px: the same layers, inplace ReLUs and per-method code paths as the course network, at a
fraction of the cost. The demo network is checked once, at one batch size.
"""

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (EigenGradCAM, GradCAM, GradCAMElementWise, GradCAMPlusPlus, HiResCAM,
                              LayerCAM, XGradCAM)

from explain.config import Preprocess
from explain.images import preprocess, read_rgb
from explain.layers import find_layer
from conftest import IMAGES, SMALL_SIZE, make_small_alexnet
from helpers import class_targets, cpu_engine, engine_maps, library_map

LIBRARY = {"gradcam": GradCAM, "layercam": LayerCAM, "gradcamplusplus": GradCAMPlusPlus,
           "xgradcam": XGradCAM, "hirescam": HiResCAM, "gradcamelementwise": GradCAMElementWise,
           "eigengradcam": EigenGradCAM}
TOLERANCE = 1e-5


def library_maps(model, layer, x, classes, batch):
    """The plain library call per method, class and batch (pytorch-grad-cam's classes named
    here, not looked up through explain). Same batches as the engine: conv kernels round
    differently per batch shape."""
    return {name: np.concatenate([
        np.stack([library_map(cls, model, layer, part, class_targets(c, len(part)))
                  for c in classes], 1) for part in x.split(batch)])
        for name, cls in LIBRARY.items()}


def assert_same_maps(ours, theirs, shape):
    for name in LIBRARY:
        assert ours[name].shape == shape, name
        assert ours[name].dtype == np.float32, name
        assert np.abs(ours[name] - theirs[name]).max() <= TOLERANCE, name
        # Not a vacuous comparison: the maps have content, and differ between the two classes.
        assert ours[name].max() > 0.5, name
        assert np.abs(ours[name][:, 0] - ours[name][:, 1]).max() > 0.01, name


@pytest.mark.parametrize("layer_name, batch", [  # 2: a short last batch; 3: all in one
    ("features.10", 1), ("features.10", 2), ("features.10", 3),  # the conv an inplace ReLU
    ("features.11", 2)])                                           # follows; that ReLU
def test_engine_equals_library_on_alexnet(small_alexnet, layer_name, batch):
    layer = find_layer(small_alexnet, layer_name)[1]
    x = torch.randn(3, 3, SMALL_SIZE, SMALL_SIZE, generator=torch.Generator().manual_seed(1))
    ours = engine_maps(small_alexnet, layer, list(LIBRARY), x, [0, 1], batch=batch)
    theirs = library_maps(small_alexnet, layer, x, [0, 1], batch)
    assert_same_maps(ours, theirs, (3, 2, SMALL_SIZE, SMALL_SIZE))


def test_engine_equals_library_on_demo_network(demo_model):
    """Two real photos as one batch (on random noise this pretrained net's GradCAM++ maps are
    all zero, which would make the comparison vacuous)."""
    layer = find_layer(demo_model, "backbone._blocks.15")[1]
    spec = Preprocess(size=[224, 288])
    x = torch.stack([preprocess(read_rgb(IMAGES / f"{n}.jpg", spec.max_pixels), spec)[0]
                     for n in ("cat", "dog")])
    ours = engine_maps(demo_model, layer, list(LIBRARY), x, [0, 1], batch=2)
    theirs = library_maps(demo_model, layer, x, [0, 1], 2)
    assert_same_maps(ours, theirs, (2, 2, 224, 288))


def test_math_threads_give_the_maps_made_in_order(small_alexnet):
    """The shared maps' math runs on the engine's threads (one job per method and class, each
    writing its own slot): the same bits as made one after another, raw maxima too."""
    from helpers import cpu_engine
    layer = find_layer(small_alexnet, "features.10")[1]
    x = torch.randn(3, 3, SMALL_SIZE, SMALL_SIZE, generator=torch.Generator().manual_seed(4))
    results, before = [], torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs torch on one thread: no math threads then
    try:
        for threaded in (True, False):
            with cpu_engine(small_alexnet, [layer], list(LIBRARY)) as engine:
                if threaded:
                    assert engine._threads is not None
                else:
                    engine._threads = None
                results.append(engine.run(x, [0, 1], [0, 1]))
    finally:
        torch.set_num_threads(before)
    threaded, in_order = results
    for name in LIBRARY:
        assert np.array_equal(threaded.maps[name], in_order.maps[name]), name
        assert np.array_equal(threaded.raw_max[name], in_order.raw_max[name]), name
        assert threaded.maps[name].max() > 0.5, name  # not vacuous
    with cpu_engine(small_alexnet, [layer], ["gradcam"]) as engine:  # a failing job: its error
        with ThreadPoolExecutor(2) as engine._threads:
            engine._shared_map = lambda *a, **k: (_ for _ in ()).throw(ValueError("job failed"))
            with pytest.raises(ValueError, match="job failed"):
                engine.run(x, [0, 1], [0, 1])


def test_model_state_is_restored(small_alexnet):
    model = copy.deepcopy(small_alexnet).train()  # this test changes the model: its own copy
    head = model.classifier[0]
    head.weight.requires_grad_(False)
    with cpu_engine(model, [find_layer(model, "features.10")[1]], ["gradcam"]) as engine:
        engine.run(torch.randn(1, 3, SMALL_SIZE, SMALL_SIZE), [0], [0, 1])
        assert not model.training and not model.features[11].inplace
    assert model.training and model.features[11].inplace
    assert not head.weight.requires_grad and head.bias.requires_grad
    assert model.features[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients computed


def test_predicted_targets_pick_best_named_class():
    """targets: predicted explains each image's best NAMED class, not the overall argmax."""
    model = make_small_alexnet(num_classes=5)
    head = model.classifier[0]
    with torch.no_grad():
        head.weight[3] = -head.weight[1]  # logit 1 - logit 3 changes sign from image to image
        head.bias.copy_(torch.tensor([100.0, 0.0, 5.0, 0.0, 5.0]))  # unnamed 0, 2, 4 win overall
    named = [1, 3]
    x = torch.randn(6, 3, SMALL_SIZE, SMALL_SIZE, generator=torch.Generator().manual_seed(3))
    with cpu_engine(model, [find_layer(model, "features.10")[1]], ["gradcam"]) as engine:
        result = engine.run(x, None, named)
        fixed = {c: engine.run(x, [c], named).maps["gradcam"][:, 0] for c in named}
    logits = result.logits
    assert logits.shape == (6, 5)
    assert (logits.argmax(1) == 0).all()  # the overall best is an unnamed class, for every image
    assert not np.isin(np.argsort(logits, 1)[:, -3:], named).any()  # so are the next two
    best_named = np.where(logits[:, 1] > logits[:, 3], 1, 3)
    assert set(best_named) == {1, 3}  # both named classes win somewhere: a constant pick fails
    assert result.classes.shape == (6, 1)
    assert result.classes[:, 0].tolist() == best_named.tolist()
    # ... and the map explains that class: it is the map asked for with that class as target.
    assert result.maps["gradcam"].shape == (6, 1, SMALL_SIZE, SMALL_SIZE)
    for b, c in enumerate(best_named):
        assert np.abs(result.maps["gradcam"][b, 0] - fixed[int(c)][b]).max() <= TOLERANCE
    assert np.abs(fixed[1] - fixed[3]).max() > 0.01  # the two classes' maps do differ


class Branchy(torch.nn.Module):
    """A skip around the first hooked layer, a second hooked layer after it and one on a side
    branch of the input: each hooked output's gradient has paths the lean pass must keep."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.block = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.later = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.side = torch.nn.Conv2d(3, 6, 5, padding=2)
        self.fc = torch.nn.Linear(6, 3)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3

    def forward(self, x):
        s = torch.relu(self.stem(x))
        a = torch.relu(self.block(s) + s)  # the skip starts before the hooked block
        b = torch.relu(self.later(a)) * a  # hooked too, downstream of the block
        c = torch.tanh(self.side(x))  # hooked, not downstream of either
        return self.fc((b + c).mean(dim=(2, 3)))


def test_lean_pass_gives_the_full_pass_gradients():
    """The engine records only what follows the hooked layers (weights frozen, each hooked
    output a leaf): every layer's gradient equals the plain pass's, nothing upstream is
    recorded, and the weights' flags come back as they were."""
    model = Branchy().eval()
    model.stem.bias.requires_grad_(False)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    layers = [model.block, model.later, model.side]
    grads = {}
    with cpu_engine(model, layers, ["gradcam"]) as engine:
        for lean in (True, False):
            logits, acts = engine._pass(x, layers, engine.labels, lean)
            grads[lean] = torch.autograd.grad(logits[:, 1].sum(), acts)
            recorded = [a.grad_fn is not None for a in acts]
            assert recorded == ([False, True, False] if lean else [True, True, True])
    for lean_g, full_g in zip(grads[True], grads[False]):
        assert full_g.abs().max() > 1e-3
        assert torch.allclose(lean_g, full_g, atol=1e-6)
    assert [p.requires_grad for p in model.parameters()] == \
        [p is not model.stem.bias for p in model.parameters()]


class Detached(torch.nn.Module):
    """Scores that do not depend on the layer: the lean pass finds no gradient and the full
    pass gives the usual error, naming the layer."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).detach().mean(dim=(2, 3)))


def test_no_gradient_is_still_the_layer_error():
    from explain.errors import ExplainError
    model = Detached()
    with cpu_engine(model, [model.conv], ["gradcam"]) as engine:
        with pytest.raises(ExplainError, match="do not depend on this layer"):
            engine.run(torch.randn(1, 3, 8, 8), [0], [0, 1])


def test_guard_off_gives_the_library_own_maps_bug_and_all(small_alexnet):
    """With ``guard_inplace`` off the maps are pytorch-grad-cam's own call on the model as it
    is (the inplace ReLU after features.10 overwrites the stored activations, the gradients
    are from before it), as the README promises, not Grad-CAM of the ReLU (what a shared pass
    on the overwritten tensor would give); with the guard on they are the conv's maps."""
    from pytorch_grad_cam import GradCAM as LibGradCAM
    layer, relu = (find_layer(small_alexnet, n)[1] for n in ("features.10", "features.11"))
    assert relu.inplace
    x = torch.randn(2, 3, SMALL_SIZE, SMALL_SIZE, generator=torch.Generator().manual_seed(3))
    methods = ["gradcam", "gradcamplusplus", "layercam"]
    off = engine_maps(small_alexnet, layer, methods, x, [0, 1], guard_inplace=False)
    on = engine_maps(small_alexnet, layer, methods, x, [0, 1])
    of_relu = engine_maps(small_alexnet, relu, methods, x, [0, 1])
    for name, cls in (("gradcam", LibGradCAM), ("gradcamplusplus", GradCAMPlusPlus),
                      ("layercam", LayerCAM)):
        cam = cls(small_alexnet, [layer])  # the library as a user calls it: inplace ReLU kept
        try:
            theirs = np.stack([cam(input_tensor=x, targets=class_targets(c, len(x)))
                               for c in (0, 1)], 1)
        finally:
            cam.activations_and_grads.release()
        assert relu.inplace  # the engine gave the flags back
        assert np.abs(off[name] - theirs).max() <= TOLERANCE, name
    # the bug is visible: Grad-CAM off the guard is neither the conv's map nor the ReLU's
    assert np.abs(off["gradcam"] - on["gradcam"]).max() > 0.05
    assert np.abs(off["gradcam"] - of_relu["gradcam"]).max() > 0.05

"""Any image classifier: token and channels-last layouts, outputs that are not a bare tensor,
binary / multi-label heads, logit or probability targets. The engine's maps must equal
pytorch-grad-cam called directly with the matching reshape_transform and target object."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import (BinaryClassifierOutputTarget,
                                                  ClassifierOutputSoftmaxTarget)
from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform
from torch import nn

from explain.errors import ExplainError
from explain.models.heads import Classifier, Head
from explain.models.layouts import Layout, LayoutError, TokenSpec, infer_layout
from helpers import SIDE, class_targets, cpu_engine, engine_maps, library_map

timm = pytest.importorskip("timm")

SHARED = ["gradcam", "gradcamplusplus", "xgradcam", "hirescam", "gradcamelementwise",
          "layercam", "eigengradcam"]
TOL = 1e-5


def _x(batch: int = 2, seed: int = 1, side: int = SIDE, width: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, side, width or side, generator=g)


def _tiny_timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


@pytest.fixture(scope="module")
def vit():
    return _tiny_timm("vit_tiny_patch16_224", num_classes=3, img_size=SIDE, patch_size=8,
                      depth=2, embed_dim=48, num_heads=2)


@pytest.fixture(scope="module")
def deit():
    return _tiny_timm("deit_tiny_distilled_patch16_224", num_classes=3, img_size=SIDE,
                      patch_size=8, depth=2, embed_dim=48, num_heads=2)


@pytest.fixture(scope="module")
def swin():
    return _tiny_timm("swin_tiny_patch4_window7_224", num_classes=3, img_size=SIDE,
                      patch_size=4, window_size=4, embed_dim=16, depths=(1, 1),
                      num_heads=(1, 2))


def _module(net: nn.Module, name: str) -> nn.Module:
    return dict(net.named_modules())[name]


# ---- layouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, hw, expected", [
    ((1, 197, 192), (224, 224), Layout("tokens", 1, (14, 14))),       # ViT: class token
    ((1, 198, 192), (224, 224), Layout("tokens", 2, (14, 14))),       # DeiT: + distillation
    ((1, 201, 192), (224, 224), Layout("tokens", 5, (14, 14))),       # + 4 registers
    ((1, 1 + 14 * 28, 192), (224, 448), Layout("tokens", 1, (14, 28))),  # a wide photo
    ((1, 196, 96), (224, 224), Layout("tokens", 0, (14, 14))),        # no prefix (Swin v1)
    ((1, 7, 7, 768), (224, 224), Layout("nhwc")),                     # Swin / ConvNeXt blocks
    ((1, 768, 7, 7), (224, 224), Layout("nchw")),                     # CNN
    ((1, 256, 6, 13), (224, 448), Layout("nchw")),                    # CNN, wide, rounding
    ((1, 7, 14, 512), (224, 448), Layout("nhwc")),
])
def test_auto_layout(shape, hw, expected):
    assert infer_layout(shape, hw, "auto") == expected


def test_layout_modes_and_errors():
    assert infer_layout((1, 198, 8), (224, 224), TokenSpec(2)) == Layout("tokens", 2, (14, 14))
    assert infer_layout((1, 21, 8), (64, 64), TokenSpec(5, (4, 4))).grid == (4, 4)
    with pytest.raises(LayoutError, match="16 .* but reshape says 5"):
        infer_layout((1, 16, 8), (64, 64), TokenSpec(5, (4, 4)))
    with pytest.raises(LayoutError, match="not a feature map"):
        infer_layout((1, 197, 192), (224, 224), "none")
    with pytest.raises(LayoutError, match="channels-last"):
        infer_layout((1, 768, 7, 7), (224, 224), "swin")
    with pytest.raises(LayoutError, match="no patch grid"):
        infer_layout((1, 3, 1000), (224, 224), "auto")


def test_layout_moves_channels_first():
    t = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(1, 5, 6)  # 1 prefix + 2x2, C=6
    out = Layout("tokens", 1, (2, 2))(t)
    assert out.shape == (1, 6, 2, 2)
    assert torch.equal(out[0, :, 1, 0], t[0, 1 + 2])  # token (row 1, col 0) = 1 + 2
    hwc = torch.randn(1, 2, 3, 4)
    assert torch.equal(Layout("nhwc")(hwc)[0, :, 1, 2], hwc[0, 1, 2])


# ---- transformers: engine == library with its reshape_transform --------------------------------

def test_vit_engine_equals_library(vit):
    layer = _module(vit, "blocks.1.norm1")
    x, targets = _x(), [0, 2]
    model = Classifier(vit)
    ours = engine_maps(model, layer, SHARED + ["scorecam"], x, targets)
    reshape = functools.partial(vit_reshape_transform, height=4, width=4)
    for method, maps in ours.items():
        for s, c in enumerate(targets):
            lib = library_map(method, model, layer, x, class_targets(c, len(x)), reshape)
            assert np.abs(maps[:, s] - lib).max() <= TOL, method
    assert ours["gradcam"][:, 0].std() > 0.05  # a real map, not a constant


def test_deit_two_prefix_tokens(deit):
    layer = _module(deit, "blocks.1.norm1")
    x = _x()
    model = Classifier(deit)
    ours = engine_maps(model, layer, ["gradcam", "layercam"], x, [1])

    def drop_two(t):  # written here independently of explain.models.layouts
        return t[:, 2:, :].reshape(t.size(0), 4, 4, t.size(2)).permute(0, 3, 1, 2)
    for method in ("gradcam", "layercam"):
        lib = library_map(method, model, layer, x, class_targets(1, 2), drop_two)
        assert np.abs(ours[method][:, 0] - lib).max() <= TOL
    # a one-token-off layout would give a different map
    wrong = library_map("gradcam", model, layer, x, class_targets(1, 2),
                        lambda t: t[:, 1:17].reshape(2, 4, 4, -1).permute(0, 3, 1, 2))
    assert np.abs(ours["gradcam"][:, 0] - wrong).max() > 1e-3


def test_swin_channels_last(swin):
    layer = _module(swin, "layers.1.blocks.0.norm1")
    x = _x()
    model = Classifier(swin)
    ours = engine_maps(model, layer, SHARED, x, [2])
    # timm's Swin blocks give (B, h, w, C); the library's swinT_reshape_transform expects
    # (B, h*w, C), so flatten first and let it bring the channels forward
    def reshape(t):
        return swinT_reshape_transform(t.flatten(1, 2), height=4, width=4)
    for method in SHARED:
        lib = library_map(method, model, layer, x, class_targets(2, 2), reshape)
        assert np.abs(ours[method][:, 0] - lib).max() <= TOL, method


def test_vit_wide_input_and_probe(vit):
    """A 32x64 input: 4x8 patch grid; the channel probe sees the reshaped (B, C, 4, 8) maps."""
    vit_dyn = _tiny_timm("vit_tiny_patch16_224", num_classes=3, img_size=SIDE, patch_size=8,
                         depth=2, embed_dim=48, num_heads=2, dynamic_img_size=True)
    layer = _module(vit_dyn, "blocks.1.norm1")
    x = _x(width=64)
    with cpu_engine(Classifier(vit_dyn), [layer], ["gradcam"], probe_layer=layer) as eng:
        res = eng.run(x, [0], [0, 1, 2])
    assert res.maps["gradcam"].shape == (2, 1, 32, 64)
    assert res.probe.activations.shape == (2, 48, 4, 8)
    assert eng.layouts[0] == Layout("tokens", 1, (4, 8))


@pytest.mark.parametrize("net, name, shape, channels", [
    ("vit", "blocks.1.norm1", (17, 48), 48),  # 1 + 4x4 tokens of 48 dimensions
    ("swin", "layers.1.blocks.0.norm1", (4, 4, 32), 32),  # (h, w, C)
])
def test_the_probe_counts_channels_not_tokens_or_rows(request, net, name, shape, channels):
    net = request.getfixturevalue(net)
    layer = _module(net, name)
    with cpu_engine(Classifier(net), [layer], ["gradcam"]) as eng:
        info = eng.probe(_x(1)).info(layer)
    assert (info.shape, info.channels) == (shape, channels)


def test_layer_without_grid_is_one_line(vit):
    layer = _module(vit, "head")  # (B, classes): no map
    with pytest.raises(ExplainError, match="not a feature map .* or a token sequence"):
        engine_maps(Classifier(vit), layer, ["gradcam"], _x(), [0])


# ---- outputs that are not a bare logits tensor ----------------------------------------------

class TwoOutputs(nn.Module):
    """A small CNN whose forward returns a tuple, a dict or an output object."""

    def __init__(self, kind: str, classes: int = 2):
        super().__init__()
        torch.manual_seed(3)
        self.kind = kind
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        f = self.features(x)
        logits = self.fc(f.mean((2, 3)))
        if self.kind == "tuple":
            return logits, f
        if self.kind == "dict":
            return {"features": f, "logits": logits}
        if self.kind == "object":
            return type("Output", (), {"logits": logits, "hidden": f})()
        return logits.squeeze(1) if logits.shape[1] == 1 else logits


@pytest.mark.parametrize("kind, key", [("tuple", 0), ("dict", "logits"), ("object", "logits")])
def test_output_selection(kind, key):
    net, plain = TwoOutputs(kind), TwoOutputs("plain")
    x = _x()
    ours = engine_maps(Classifier(net, key), net.features[2], ["gradcam"], x, [1])
    ref = engine_maps(Classifier(plain), plain.features[2], ["gradcam"], x, [1])
    lib = library_map("gradcam", Classifier(net, key), net.features[2], x,
                      class_targets(1, 2))
    assert np.abs(ours["gradcam"][:, 0] - lib).max() <= TOL
    assert np.array_equal(ours["gradcam"], ref["gradcam"])  # same weights, same maps


def test_output_missing_key_lists_what_is_there():
    with pytest.raises(ExplainError, match=r"dict with keys 'features': tensor \(2, 8, 16, 16\), "
                                           r"'logits': tensor \(2, 2\).*model.output: logits"):
        Classifier(TwoOutputs("dict"))(_x())
    with pytest.raises(ExplainError, match=r"tuple of 2: \[0\] tensor \(2, 2\), \[1\] tensor"):
        Classifier(TwoOutputs("tuple"))(_x())
    with pytest.raises(ExplainError, match="'scores' is not a tensor"):
        Classifier(TwoOutputs("dict"), "scores")(_x())


# ---- heads and targets --------------------------------------------------------------------

def test_binary_head_equals_library_binary_target():
    net = TwoOutputs("plain", classes=1)
    model, layer, x = Classifier(net), net.features[2], _x(3)
    head = Head("binary")
    ours = engine_maps(model, layer, ["gradcam", "layercam"], x, [0, 1], head=head)
    for s, c in enumerate([0, 1]):
        for method in ("gradcam", "layercam"):
            lib = library_map(method, model, layer, x, [BinaryClassifierOutputTarget(c)] * 3)
            assert np.abs(ours[method][:, s] - lib).max() <= TOL, (method, c)
    # the negative side is not the positive side's map
    assert np.abs(ours["gradcam"][:, 0] - ours["gradcam"][:, 1]).max() > 0.1
    probs = head.probabilities(np.array([[0.0], [2.0]]))
    assert np.allclose(probs, [[0.5, 0.5], [1 - 1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-2))]])


def test_binary_head_refuses_two_logits():
    net = TwoOutputs("plain", classes=2)
    with cpu_engine(Classifier(net), [net.features[2]], ["gradcam"], head=Head("binary")) as eng:
        with pytest.raises(ExplainError, match="binary expects one logit per image, the model "
                                               "gives 2"):
            eng.probe(_x(1))


def test_probability_target_is_the_softmax_target():
    net = TwoOutputs("plain", classes=3)
    model, layer, x = Classifier(net), net.features[2], _x()
    ours = engine_maps(model, layer, ["gradcam", "scorecam"], x, [2],
                       head=Head("softmax", "probability"))
    logit = engine_maps(model, layer, ["gradcam"], x, [2])
    for method in ("gradcam", "scorecam"):
        lib = library_map(method, model, layer, x, [ClassifierOutputSoftmaxTarget(2)] * 2)
        assert np.abs(ours[method][:, 0] - lib).max() <= TOL, method
    assert np.abs(ours["gradcam"] - logit["gradcam"]).max() > 1e-3


def test_multilabel_each_class_on_its_own_logit():
    net = TwoOutputs("plain", classes=4)
    model, layer, x = Classifier(net), net.features[2], _x()
    head = Head("multilabel", "probability")
    ours = engine_maps(model, layer, ["gradcam"], x, [1, 3], head=head)
    for s, c in enumerate([1, 3]):
        lib = library_map("gradcam", model, layer, x, [head.library_target(c)] * 2)
        assert np.abs(ours["gradcam"][:, s] - lib).max() <= TOL
    # d sigmoid(z_c) / d acts = sigmoid'(z_c) * d z_c / d acts: a positive factor per image,
    # so after per-image min-max scaling Grad-CAM on the probability equals the logit's
    logit = engine_maps(model, layer, ["gradcam"], x, [1, 3], head=Head("multilabel"))
    assert np.abs(ours["gradcam"] - logit["gradcam"]).max() <= 1e-4
    probs = head.probabilities(np.array([[0.0, 10.0, -10.0, 1.0]]))
    assert np.allclose(probs[0], 1 / (1 + np.exp(-np.array([0.0, 10.0, -10.0, 1.0]))))
    assert not np.isclose(probs.sum(), 1.0)  # independent, not a softmax


def test_top_k_targets_rank_named_classes():
    net = TwoOutputs("plain", classes=5)
    model, layer, x = Classifier(net), net.features[2], _x(3)
    with cpu_engine(model, [layer], ["gradcam"]) as eng:
        res = eng.run(x, None, [0, 1, 3, 4], top=3)
    logits = model(x).detach().numpy()
    for b in range(3):
        named = [0, 1, 3, 4]
        expected = sorted(named, key=lambda c: -logits[b, c])[:3]
        assert list(res.classes[b]) == expected
    assert res.maps["gradcam"].shape == (3, 3, SIDE, SIDE)


def test_finercam_uses_the_most_similar_named_classes():
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget
    from explain.engine import most_similar
    assert most_similar(np.array([5.0, 4.0, 9.0, 4.9]), 0, [0, 1, 2, 3], 2) == [3, 1]
    net = TwoOutputs("plain", classes=4)
    model, layer, x = Classifier(net), net.features[2], _x(1)
    finer = {"name": "finercam", "alpha": 0.7, "comparisons": 2}
    ours = engine_maps(model, layer, [finer], x, [1], names=[0, 1, 2, 3])["finercam"]
    scores = model(x).detach().numpy()[0]
    similar = most_similar(scores, 1, [0, 1, 2, 3], 2)
    lib = library_map("finercam", model, layer, x, [FinerWeightedTarget(1, similar, 0.7)])
    assert np.abs(ours[:, 0] - lib).max() <= TOL
    plain = engine_maps(model, layer, ["gradcam"], x, [1])["gradcam"]
    assert np.abs(ours - plain).max() > 1e-3  # the comparison changes the map
    with pytest.raises(ExplainError, match="finercam: .*softmax head"):
        engine_maps(model, layer, [finer], x, [1], names=[0, 1, 2, 3], head=Head("multilabel"))


def test_library_failure_is_one_line(swin):
    layer = _module(swin, "layers.1.blocks.0.norm1")
    with pytest.raises(ExplainError, match="ablationcam: .*channels-last"):
        engine_maps(Classifier(swin), layer, ["ablationcam"], _x(1), [0])

"""Layer discovery (explain.layers, ``explain layers CONFIG``): the survey of a network's
modules, the layer ``target_layers: auto`` picks, layer names with negative indexes and hints.
Random weights and small inputs throughout; timm models are built small, never downloaded."""

from __future__ import annotations

import os
import sys

import pytest
import timm
import torch
import torchvision
from torch import nn

from conftest import SMALL_SIZE, make_small_alexnet, write_config
from helpers import explain_error, one_line
from explain.cli import main
from explain.errors import ExplainError
from explain.models.heads import Classifier, Head
from explain import layers
from explain.layers import auto_layer, find_layer, format_table, survey


def surveyed(net: nn.Module, side: int, seed: int = 0):
    torch.manual_seed(seed)
    return survey(net, Classifier(net), torch.randn(1, 3, side, side), Head())


def by_name(rows):
    return {r.name: r for r in rows}


def vit(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=2, img_size=64, patch_size=16,
                             depth=2).eval()


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    net = torchvision.models.alexnet(num_classes=2).eval()
    return net, surveyed(net, SMALL_SIZE)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=2).eval()
    return net, surveyed(net, 64)


@pytest.fixture(scope="module")
def vit_rows():
    return surveyed(vit("vit_tiny_patch16_224"), 64)


@pytest.fixture(scope="module")
def swin_rows():
    torch.manual_seed(0)
    # 64 px, patch 4: stages of 16x16, 8x8, 4x4, 2x2 (windows of 4; the last stage clamps to 2)
    net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=2,
                            img_size=64, window_size=4, embed_dim=24, depths=(1, 1, 1, 1),
                            num_heads=(1, 2, 4, 8)).eval()
    return surveyed(net, 64)


# ---- the auto pick -----------------------------------------------------------------------

def test_alexnet_auto_is_the_last_relu_not_the_pool(alexnet):
    _, rows = alexnet
    pick = auto_layer(rows)
    assert (pick.name, pick.type, pick.shape) == ("features.11", "ReLU", (1, 256, 6, 6))
    assert pick.layout.kind == "nchw"
    rows = by_name(rows)
    assert rows["features.12"].usable and rows["features.12"].passthrough  # a pool: skipped
    assert rows["features"].group == rows["features.12"].group  # the same tensor object
    assert rows["classifier.6"].layout is None and rows["classifier.6"].shape == (1, 2)


def test_resnet_auto_is_the_last_stage_and_a_twice_run_relu_is_no_target(resnet):
    _, rows = resnet
    assert auto_layer(rows).name == "layer4"  # outermost of layer4 / layer4.1 (same tensor)
    relu = by_name(rows)["layer4.1.relu"]
    assert relu.calls == 2 and not relu.usable and "2 times" in relu.problem
    assert "runs 2x" in format_table(rows)


def test_vit_auto_is_the_last_blocks_norm1_and_the_final_norm_has_zero_gradient(vit_rows):
    rows = by_name(vit_rows)
    pick = auto_layer(vit_rows)
    assert pick.name == "blocks.1.norm1"
    assert (pick.layout.kind, pick.layout.prefix, pick.layout.grid) == ("tokens", 1, (4, 4))
    # the head reads the class token only: no patch token of the final norm (or of the last
    # block's output) gets a gradient, so their CAMs would be blank
    norm = rows["norm"]
    assert norm.usable and norm.degenerate and "zero gradient" in norm.problem
    assert rows["blocks.1"].degenerate
    assert not rows["blocks.1.norm1"].degenerate and not rows["blocks.0"].degenerate
    assert rows["blocks.1.attn.qkv"].usable and not rows["blocks.1.attn.qkv"].degenerate  # a Linear
    lines = {line.split()[0]: line for line in format_table(vit_rows).splitlines() if line}
    assert lines["norm"].endswith("tokens 1+4x4, zero grad")
    assert lines["blocks.1.norm1"].endswith("tokens 1+4x4  (auto)")


def test_deit_distilled_has_two_prefix_tokens():
    rows = surveyed(vit("deit_tiny_distilled_patch16_224"), 64)
    pick = auto_layer(rows)
    assert pick.name == "blocks.1.norm1"
    assert (pick.layout.prefix, pick.layout.grid) == (2, (4, 4))
    assert by_name(rows)["norm"].degenerate  # the heads read the class and distillation tokens


def test_swin_auto_is_the_final_channels_last_norm(swin_rows):
    rows = by_name(swin_rows)
    pick = auto_layer(swin_rows)
    assert (pick.name, pick.shape, pick.layout.kind) == ("norm", (1, 2, 2, 192), "nhwc")
    assert not pick.degenerate  # the head averages every position
    # window attention runs on (windows, tokens, C): not the image's batch, so no target
    attn = rows["layers.0.blocks.0.attn"]
    assert attn.shape[0] == 16 and attn.layout is None
    assert rows["layers.0.blocks.0.norm2"].layout.kind == "tokens"  # (B, h*w, C) inside a block
    assert "channels-last 2x2  (auto)" in format_table(swin_rows)


def test_demo_auto_is_the_conv_head_map(demo_model):
    rows = surveyed(demo_model, 96)  # 3x3 maps at the end (7x7 at 224)
    pick = auto_layer(rows)
    # the conv head's BatchNorm: its ReLU6 (backbone._swish) is shared and runs twice
    assert (pick.name, pick.type, pick.shape) == ("backbone._bn1", "BatchNorm2d", (1, 1280, 3, 3))
    rows = by_name(rows)
    assert rows["backbone._swish"].calls > 1 and rows["backbone._avg_pooling"].layout is None


class Tail(nn.Module):
    """features -> pool -> linear; ``features`` given by the test."""

    def __init__(self, features: nn.Module, width: int = 4):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 2)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_a_tensor_passed_on_by_dropout_keeps_its_group_a_pool_output_does_not():
    torch.manual_seed(0)
    # eval-mode Dropout returns its input object: features.1 / .2 / features are one tensor,
    # made by the ReLU, so it stays a candidate (named by the outermost module)
    rows = surveyed(Tail(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.5))).eval(), 16)
    assert auto_layer(rows).name == "features"
    # a pool made the container's output: skipped, its input is the pick
    rows = surveyed(Tail(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))).eval(), 16)
    assert auto_layer(rows).name == "features.1"


def test_no_usable_layer_is_one_line():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    assert "auto found no layer" in explain_error(auto_layer, surveyed(net, 8))
    assert "auto: no layer a CAM can use" in format_table(surveyed(net, 8))


def test_survey_restores_mode_grad_flags_and_inplace():
    net = make_small_alexnet()
    net.train()
    net.features[0].weight.requires_grad_(False)
    rows = surveyed(net, SMALL_SIZE)
    assert net.training and all(m.training for m in net.modules())
    assert not net.features[0].weight.requires_grad and net.features[3].weight.requires_grad
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    assert net.features[0].weight.grad is None  # autograd.grad: nothing accumulated
    # inplace ReLUs were off: features.11 is its own tensor, not features.10's
    rows = by_name(rows)
    assert rows["features.10"].group != rows["features.11"].group
    assert auto_layer(list(rows.values())).name == "features.11"


# ---- layer names ---------------------------------------------------------------------------

def test_negative_indexes_resolve_to_real_names(alexnet, resnet):
    net, _ = alexnet
    name, module = find_layer(net, "features.-1", "target_layers[0]")
    assert name == "features.12" and module is net.features[12]
    assert find_layer(net, "features.-2")[0] == "features.11"
    assert find_layer(net, "-1")[0] == "classifier"
    assert find_layer(net, "features.10") == ("features.10", net.features[10])
    res, _ = resnet
    assert find_layer(res, "layer4.-1.conv2") == ("layer4.1.conv2", res.layer4[1].conv2)


def test_out_of_range_index_names_the_range_and_the_last_usable_layer(alexnet):
    net, rows = alexnet
    with pytest.raises(ExplainError) as err:
        find_layer(net, "features.99", "target_layers[0]", rows)
    msg = str(err.value)
    assert msg.startswith("target_layers[0]: no layer 'features.99' in the model")
    assert "'features' has layers 0 to 12" in msg
    assert "the last one a CAM can use is 'features.11'" in msg
    assert "'features.9'" not in msg  # not just the closest string
    with pytest.raises(ExplainError) as err:
        find_layer(net, "features.-14", "channels.layer")  # no survey: the range only
    assert str(err.value) == ("channels.layer: no layer 'features.-14' in the model — "
                              "'features' has layers 0 to 12")


def test_typo_suggests_a_usable_layer(alexnet, resnet):
    net, rows = alexnet
    with pytest.raises(ExplainError, match="did you mean 'features.10'"):
        find_layer(net, "featurs.10", "target_layers[0]", rows)
    # a letter O typed for a zero: 'features.1' (the first ReLU) is the closer string
    with pytest.raises(ExplainError, match=r"did you mean 'features.10'\?"):
        find_layer(net, "features.1O", "target_layers[0]", rows)
    res, res_rows = resnet
    with pytest.raises(ExplainError) as err:
        find_layer(res, "layer4.1.reluu", "target_layers[0]", res_rows)
    # layer4.1.relu runs twice (no target): the hint names the block, whose output is that
    # ReLU's last output, rather than the closest string
    assert str(err.value).endswith("did you mean 'layer4.1'?"), str(err.value)
    with pytest.raises(ExplainError, match="top-level modules: features, avgpool, classifier"):
        find_layer(net, "zzz", "target_layers[0]", rows)


# ---- explain layers CONFIG -----------------------------------------------------------------

def test_cli_prints_the_table_and_writes_nothing(tmp_path, capsys):
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    cfg = write_config(tmp_path, model={"file": "model.pth"}, target_layers="auto",
                       preprocess={"size": [SMALL_SIZE, SMALL_SIZE]})
    before = sorted(tmp_path.rglob("*"))
    assert main(["layers", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert sorted(tmp_path.rglob("*")) == before
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["features.11"] == ["features.11", "ReLU", "(1,", "256,", "6,", "6)", "map",
                                    "6x6", "(auto)"]
    assert lines["features.12"][1:] == ["MaxPool2d", "(1,", "256,", "2,", "2)", "map", "2x2"]
    assert lines["classifier.0"][1:] == ["Linear", "(1,", "2)"]  # no CAM mark
    assert "auto: features.11 (the last layer before the head a CAM can use)" in out
    assert out.splitlines()[0] == "exp.yaml: 17 modules, input (1, 3, 112, 112) (cat.jpg)"


def dict_model() -> nn.Module:
    """A network whose forward returns a dict (Hugging Face style)."""
    class DictNet(Tail):
        def forward(self, x):
            return {"logits": super().forward(x), "features": self.features(x)}
    torch.manual_seed(0)
    return DictNet(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())).eval()


def test_cli_dict_output_without_model_output_is_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path, model={"builder": "test_layers:dict_model", "trust": True},
                       target_layers="auto", preprocess={"size": [32, 32]})
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        rc = main(["layers", str(cfg)])
    finally:
        sys.path.pop(0)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    one_line(err, "forward returns a dict with keys 'logits'", "'features'", "model.output: logits")


def test_a_config_named_layers_is_still_a_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "layers").write_text("- just a list\n")
    assert main(["layers"]) == 2
    assert "layers: the top level must be a mapping" in capsys.readouterr().err


def test_the_survey_follows_the_reshape_setting():
    """reshape: none reads only (B, C, h, w) maps: on a ViT 'auto' then picks the patch
    embedding's convolution, not a token layer the engine would refuse."""
    net = vit("vit_tiny_patch16_224")
    x = torch.randn(1, 3, 64, 64)
    rows = survey(net, Classifier(net), x, Head(), mode="none")
    assert not [r for r in rows if r.usable and r.layout.kind == "tokens"]
    assert auto_layer(rows).name == "patch_embed.proj"
    tokens = survey(net, Classifier(net), x, Head(), mode="vit")
    assert auto_layer(tokens).name == "blocks.1.norm1"


class _Pair(torch.nn.Module):
    """A block whose output is no map (a dict of two), holding two convolutions that are."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        a = self.first(x)
        return {"a": a, "b": self.second(a)}


class _Wrapped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Pair()
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.backbone(x)["b"].mean((2, 3)))


def test_a_typo_of_a_block_names_the_block_and_a_layer_in_it():
    """'backbonee' was answered with some usable layer ('backbone.body.9' on a detector), not
    the block the user meant: now the block, and the last layer in it a CAM can use."""
    torch.manual_seed(0)
    net = _Wrapped().eval()
    rows = surveyed(net, 16)
    assert [r.name for r in rows if layers._good(r)] == ["backbone.first", "backbone.second"]
    with pytest.raises(ExplainError) as err:
        find_layer(net, "backbonee", "target_layers[0]", rows)
    assert str(err.value).endswith("did you mean 'backbone'? (the last layer in it that a CAM "
                                   "can use: 'backbone.second')"), str(err.value)
    with pytest.raises(ExplainError, match=r"did you mean 'backbone.second'\?$"):
        find_layer(net, "backbone.secnd", "target_layers[0]", rows)

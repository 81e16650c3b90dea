"""Model sources: timm architectures by name, safetensors weight files, TorchScript archives
(refused: hooks cannot capture their layers), and class names the model carries."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from explain.config import ModelSpec, load_config
from explain.errors import ExplainError
from explain.models.labels import class_names_from_model, safe_class_names
from explain.models.loading import load_model
from explain.models.factories import no_downloads
from explain.names import name_problem
from helpers import explain_error, one_line, refused, tiny_config, tiny_net

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

VIT = "vit_tiny_patch16_224"
VIT_ARGS = {"num_classes": 2, "img_size": 32, "depth": 1}


def tiny_vit(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(VIT, **VIT_ARGS).eval()


def load(folder: Path, **model) -> torch.nn.Module:
    return load_model(load_config(tiny_config(folder, model)))


def error(folder: Path, *needles: str, **model) -> str:
    """load_model's one-line error, holding every needle."""
    return one_line(explain_error(load, folder, **model), *needles)


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


# ---- 1. timm architectures by name ------------------------------------------------------------

def test_timm_builder_without_trust(tmp_path, homes):
    model = load(tmp_path, builder=f"timm:{VIT}", builder_args=VIT_ARGS)
    assert type(model).__module__.startswith("timm.") and not model.training
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    assert not any(p.exists() for p in homes)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_timm_arch_with_a_weights_file(tmp_path, homes, suffix):
    """A state_dict saved by torch or safetensors; safetensors is recognised by its content
    (.bin here), not by its name."""
    net = tiny_vit(seed=3)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(net.state_dict(), path)
    else:
        safetensors_torch.save_file(net.state_dict(), str(path))
    loaded = load(tmp_path, file=str(path), arch=f"timm:{VIT}", arch_args=VIT_ARGS)
    assert same_outputs(loaded, net)
    assert not any(p.exists() for p in homes)


@pytest.mark.parametrize("key,value", [
    ("pretrained", True), ("checkpoint_path", "x"), ("cache_dir", "cache"),
    ("pretrained_cfg", {"file": "x.pth"}), ("pretrained_cfg_overlay", {"url": "http://x/y.pth"}),
    ("pruned", True), ("weights_url", "http://x/y.pth"), ("config_path", "c.json"),
], ids=lambda v: str(v)[:20])
def test_timm_args_that_load_or_fetch_are_refused(tmp_path, capsys, homes, key, value):
    path = tiny_config(tmp_path, {"builder": f"timm:{VIT}", "builder_args": {**VIT_ARGS, key: value}})
    refused(capsys, path, "--quiet", needles=[f"model.builder_args.{key}", "refused"])
    assert not any(p.exists() for p in homes) and not (tmp_path / "results").exists()


def test_timm_arch_args_are_checked_too(tmp_path, homes):
    torch.save(tiny_vit().state_dict(), tmp_path / "w.pth")
    error(tmp_path, "model.arch_args.checkpoint_path", "refused", file=str(tmp_path / "w.pth"),
          arch=f"timm:{VIT}", arch_args={**VIT_ARGS, "checkpoint_path": str(tmp_path / "w.pth")})
    assert not any(p.exists() for p in homes)


def test_harmless_timm_args_pass(tmp_path):
    model = load(tmp_path, builder=f"timm:{VIT}", builder_args={
        **VIT_ARGS, "pretrained": False, "drop_path_rate": 0.1, "global_pool": "avg"})
    assert model.global_pool == "avg"


@pytest.mark.parametrize("name,needles", [
    ("vit_tiny_patch16_22", ["not a timm architecture", "did you mean 'vit_tiny_patch16_224'"]),
    ("create_model", ["not a timm architecture"]),
    ("list_models", ["not a timm architecture"]),
])
def test_unknown_timm_names(tmp_path, name, needles):
    error(tmp_path, "model.builder", f"timm:{name}", *needles, builder=f"timm:{name}")


@pytest.mark.parametrize("name,meant", [("alexnet", "torchvision.models.alexnet"),
                                         ("models.vgg16", "torchvision.models.vgg16"),
                                         ("catdog_efficientnet_lite0",
                                          "explain.demo:catdog_efficientnet_lite0")])
def test_a_bare_factory_name_gets_its_full_name(tmp_path, name, meant):
    """'arch: alexnet' was refused with no suggestion (difflib finds no close match for a name
    that is the tail of a longer one); the full allow-listed name is offered now."""
    error(tmp_path, "model.builder", f"'{name}' is not an allow-listed model factory",
          f"did you mean '{meant}'?", "model.trust: true", builder=name)


def test_timm_name_is_checked_even_with_trust(tmp_path):
    error(tmp_path, "not a timm architecture", builder="timm:create_model", trust=True,
          builder_args={"model_name": VIT})


def test_timm_bad_argument_is_one_line(tmp_path):
    error(tmp_path, "model.builder_args", builder=f"timm:{VIT}",
          builder_args={**VIT_ARGS, "bogus": 1})


def test_without_timm_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    error(tmp_path, "model.builder", "pip install explain[timm]", builder=f"timm:{VIT}")


def test_downloads_are_refused_inside_timm(tmp_path, homes):
    """Defence in depth: even a create_model call that asks for weights gets no further than
    timm's download / read functions, which no_downloads replaces."""
    torch.save(tiny_vit().state_dict(), tmp_path / "w.pth")
    calls = [dict(pretrained=True), dict(checkpoint_path=str(tmp_path / "w.pth")),
             dict(pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "w.pth")}),
             dict(pretrained=True, pretrained_cfg_overlay={"url": "http://x/y.pth",
                                                           "hf_hub_id": None})]
    for kwargs in calls:
        with no_downloads(), pytest.raises(ExplainError, match="download"):
            timm.create_model(VIT, **VIT_ARGS, **kwargs)
    with no_downloads(), pytest.raises(ExplainError, match="download"):
        torch.hub.load_state_dict_from_url("http://x/y.pth")
    assert not any(p.exists() for p in homes)
    from timm.models import _builder, _hub
    assert _builder.load_pretrained.__name__ == "load_pretrained"  # restored afterwards
    assert _hub.get_cache_dir.__name__ == "get_cache_dir"


# ---- 2. safetensors files ---------------------------------------------------------------------

@pytest.fixture
def st_file(tmp_path) -> Path:
    path = tmp_path / "net.safetensors"
    safetensors_torch.save_file(tiny_net(seed=1).state_dict(), str(path))
    return path


ARCH = "torchvision.models.resnet18"


def test_safetensors_with_torchvision_arch(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=2).eval()
    safetensors_torch.save_file(net.state_dict(), str(tmp_path / "r.safetensors"))
    loaded = load(tmp_path, file=str(tmp_path / "r.safetensors"), arch=ARCH,
                  arch_args={"num_classes": 2})
    assert same_outputs(loaded, net)
    # without arch_args: the head's outputs differ, and the line says what to set
    text = error(tmp_path, "'fc.", "has shape (2", "the model expects (1000",
                 file=str(tmp_path / "r.safetensors"), arch=ARCH)
    assert text.endswith("the weights have 2 outputs: set model.arch_args: {num_classes: 2}")
    weights = torchvision.models.resnet18(num_classes=2).state_dict()
    weights["conv1.weight"] = weights["conv1.weight"][:32]  # not the head: no such hint
    torch.save(weights, tmp_path / "w.pth")
    assert "num_classes" not in error(tmp_path, "'conv1.weight' has shape (32, 3, 7, 7)",
                                      file=str(tmp_path / "w.pth"), arch=ARCH,
                                      arch_args={"num_classes": 2})


def test_safetensors_needs_arch(tmp_path, st_file):
    error(tmp_path, "net.safetensors", "safetensors", "model.arch", file=str(st_file))


def _corrupt(path: Path, kind: str) -> None:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    if kind == "truncated data":
        path.write_bytes(data[:-7])
    elif kind == "truncated header":
        path.write_bytes(data[: 8 + length // 2])
    elif kind == "huge header length":
        path.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    elif kind == "header past the end":
        path.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    elif kind == "not JSON":
        path.write_bytes(data[:8] + b"{" + b"\xff" * (length - 1) + data[8 + length:])
    elif kind == "JSON list":
        body = b"[" + b" " * (length - 2) + b"]"
        path.write_bytes(data[:8] + body + data[8 + length:])
    elif kind == "bad offsets":
        header = json.loads(data[8:8 + length])
        first = next(k for k in header if k != "__metadata__")
        header[first]["data_offsets"] = [0, "x"]
        body = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + length:])
    elif kind == "wrong dtype":
        header = json.loads(data[8:8 + length])
        first = next(k for k in header if k != "__metadata__")
        header[first]["dtype"] = "Q99"
        body = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + length:])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no tensors":
        path.write_bytes(struct.pack("<Q", 2) + b"{}")


@pytest.mark.parametrize("kind", ["truncated data", "truncated header", "huge header length",
                                  "header past the end", "not JSON", "JSON list", "bad offsets",
                                  "wrong dtype", "empty", "no tensors"])
def test_broken_safetensors_files(tmp_path, st_file, kind):
    _corrupt(st_file, kind)
    error(tmp_path, "net.safetensors", "model.file", file=str(st_file), arch=ARCH)


def test_safetensors_that_does_not_fit(tmp_path, st_file):
    error(tmp_path, "net.safetensors", "does not fit", file=str(st_file), arch=ARCH)


# ---- 3. TorchScript archives ------------------------------------------------------------------

def _script(net: torch.nn.Module, how: str) -> torch.jit.ScriptModule:
    if how == "scripted":
        return torch.jit.script(net)
    return torch.jit.trace(net, torch.randn(1, 3, 8, 8))


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("how", ["scripted", "traced"])
def test_hooks_cannot_see_inside_a_loaded_torchscript_module(tmp_path, how):
    """The measurement behind the refusal: on a ScriptModule from torch.jit.load, registering
    a forward hook on a layer raises, and a hook put into its table by hand never fires (the
    compiled forward does not go through Python's __call__)."""
    torch.jit.save(_script(tiny_net(), how), str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    layer = loaded._modules["0"]
    with pytest.raises(RuntimeError, match="not supported on ScriptModules"):
        layer.register_forward_hook(lambda *a: None)
    fired = []
    layer._forward_hooks[0] = lambda *a: fired.append(1)
    loaded(torch.randn(1, 3, 8, 8))
    assert fired == []


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("how", ["scripted", "traced"])
@pytest.mark.parametrize("trust", [False, True])
def test_torchscript_files_are_refused(tmp_path, how, trust):
    torch.jit.save(_script(tiny_net(), how), str(tmp_path / "net.pt"))
    error(tmp_path, "net.pt", "TorchScript", "model.file", "hooks", "state_dict",
          file=str(tmp_path / "net.pt"), trust=trust)


# ---- 4. class names from the model ------------------------------------------------------------

def test_torchvision_names_by_arch(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r.pth")
    cfg = load_config(tiny_config(tmp_path, {"file": str(tmp_path / "r.pth"), "arch": ARCH}))
    net = load_model(cfg)
    names, source = class_names_from_model(net, cfg.model, 1000)
    assert names["tabby"] == 281 and names["tiger_cat"] == 282 and "torchvision" in source
    assert sorted(names.values()) == list(range(1000))
    assert class_names_from_model(net, cfg.model, 2) is None  # counts must match
    builder = ModelSpec(builder="torchvision.models:resnet18")
    assert class_names_from_model(net, builder, 1000)[0] == names


def test_timm_names_made_unique():
    torch.manual_seed(0)
    net = timm.create_model(VIT, img_size=32, depth=1, num_classes=1000)
    names, source = class_names_from_model(net, ModelSpec(builder=f"timm:{VIT}"), 1000)
    assert names["crane"] == 134 and names["crane_2"] == 517 and names["tabby"] == 281
    assert "timm" in source and "imagenet-1k" in source
    assert class_names_from_model(tiny_vit(), ModelSpec(builder=f"timm:{VIT}"), 2) is None


class _Config:
    def __init__(self, id2label):
        self.id2label = id2label


@pytest.mark.parametrize("id2label", [
    {0: "tabby, tabby cat", 1: "tiger cat", 2: "Egyptian cat"},
    {"0": "tabby, tabby cat", "1": "tiger cat", "2": "Egyptian cat"}], ids=["int", "str"])
def test_hugging_face_id2label(id2label):
    net = tiny_net()
    net.config = _Config(id2label)
    names, source = class_names_from_model(net, ModelSpec(file="x.pth"), 3)
    assert names == {"tabby": 0, "tiger_cat": 1, "Egyptian_cat": 2} and "id2label" in source
    assert class_names_from_model(net, ModelSpec(file="x.pth"), 4) is None


def test_class_names_attribute_and_nothing():
    net = tiny_net()
    assert class_names_from_model(net, ModelSpec(file="x.pth"), 2) is None
    net.classes = ["../evil", "my dog"]
    names, source = class_names_from_model(net, ModelSpec(file="x.pth"), 2)
    assert names == {"evil": 0, "my_dog": 1} and "classes" in source
    net.class_names = ["a", "b", "c"]  # wrong count: skipped
    assert class_names_from_model(net, ModelSpec(file="x.pth"), 2)[0] == names
    net.classes = [1, 2]
    assert class_names_from_model(net, ModelSpec(file="x.pth"), 2) is None


def test_safe_class_names():
    labels = ["crane", "Crane", "crane", "a b", "a_b", "", "$$", "x" * 90, "x" * 90, "b__c",
              "jack-o'-lantern", "猫", "-lead", "../../etc/passwd", "class_5"]
    names = safe_class_names(labels)
    assert names[:5] == ["crane", "Crane_2", "crane_3", "a_b", "a_b_2"]
    assert names[10:12] == ["jack-o-lantern", "猫"] and names[5] == "class_5"
    assert all(name_problem(n) is None for n in names), names
    assert len({n.lower() for n in names}) == len(names)

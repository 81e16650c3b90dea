"""Attacks on the 'any image classifier' features: timm architectures, safetensors and
TorchScript files, class names the model carries, output selection, heads, layouts, layer
discovery (``explain layers``), FinerCAM, guided backprop and concepts.

The first group reproduces bugs an attack found (each failed before its fix); the others are
attacks that were refused (or handled) as the project's rules say. All guard against
regressions. Everything runs on tiny models at 32 px.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from explain.errors import ExplainError
from explain.models.heads import Classifier
from explain.models.layouts import Layout, infer_layout
from explain.names import name_problem
from helpers import (CAT as IMAGE, SIDE, class_targets, cli, engine_maps, library_map,
                     ok_or_one_line, one_line, refused, tiny_config, tiny_net)

TOL = 1e-5
HAS_TIMM = importlib.util.find_spec("timm") is not None
HAS_SAFETENSORS = importlib.util.find_spec("safetensors") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed")
needs_safetensors = pytest.mark.skipif(not HAS_SAFETENSORS, reason="safetensors not installed")
VIT = "vit_tiny_patch16_224"
VIT_ARGS = {"num_classes": 2, "img_size": SIDE, "depth": 1}


# ---- helpers ---------------------------------------------------------------------------------

def write_cfg(folder: Path, model: dict, **fields) -> Path:
    """tiny_config without the report (not what these tests look at)."""
    return tiny_config(folder, model, **{"report": {"enabled": False}, **fields})


def seq(outputs: int = 2) -> nn.Sequential:
    """The tiny two-conv CNN (layers '0' and '2' convs, '4' pool, '6' Linear)."""
    return tiny_net(outputs=outputs, convs=2)


def answered(call, *args, **kwargs):
    """``call``'s result, or None after a one-line ExplainError; any other exception fails the
    test, after ``gc.collect()`` so that a half-made library CAM's ``__del__`` runs now."""
    result, problem = None, None
    try:
        result = call(*args, **kwargs)
    except ExplainError as exc:
        one_line(exc)
    except Exception as exc:  # noqa: BLE001 - dropped here, so the library's __del__ runs now
        problem = f"traceback: {type(exc).__name__}: {exc}"
    gc.collect()
    assert problem is None, problem
    return result


def saved(folder: Path, net: nn.Module, name: str = "m.pth") -> str:
    torch.save(net, folder / name)
    return str(folder / name)


# =============================================================================================
# BUGS FOUND BY THE ATTACK (fixed; each test failed before its fix)
# =============================================================================================

# ---- 1. a factory that raises anything but TypeError/ValueError/AssertionError -------------

FACTORY_CRASHES = [
    ({"builder": "torchvision.models.resnet18", "builder_args": {"num_classes": -1}},
     "RuntimeError: negative dimension"),
    ({"builder": f"timm:{VIT}", "builder_args": {**VIT_ARGS, "patch_size": 0}},
     "ZeroDivisionError"),
    ({"builder": f"timm:{VIT}", "builder_args": {**VIT_ARGS, "num_classes": 10 ** 13}},
     "RuntimeError: can't allocate memory"),
]
if not torch.cuda.is_available():
    FACTORY_CRASHES.append(({"builder": f"timm:{VIT}", "builder_args": {**VIT_ARGS,
                                                                          "device": "cuda"}},
                            "RuntimeError: no NVIDIA driver"))


@pytest.mark.parametrize("model,why", FACTORY_CRASHES, ids=[w for _, w in FACTORY_CRASHES])
def test_factory_errors_are_one_line(tmp_path, capsys, model, why):
    if model["builder"].startswith("timm:") and not HAS_TIMM:
        pytest.skip("timm is not installed")
    refused(capsys, write_cfg(tmp_path, model, classes={"a": 0, "b": 1}), "--quiet",
            needles=["model.builder_args"])


# ---- 2. explain layers: a forward pass that fails with anything but RuntimeError -----------

@needs_timm
def test_layers_with_a_wrong_input_size_is_one_line(tmp_path, capsys):
    path = write_cfg(tmp_path, {"builder": f"timm:{VIT}", "builder_args": VIT_ARGS},
                     classes={"a": 0, "b": 1}, preprocess={"size": [64, 64]})
    refused(capsys, path, "--quiet", needles=["forward pass failed"])  # the run: one line
    refused(capsys, "layers", path, needles=["forward pass failed"])


class Detached(nn.Module):
    """A (trusted) model whose class scores carry no gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3))).detach()


@pytest.mark.parametrize("command", ["run", "layers"])
def test_scores_without_gradient_are_one_line(tmp_path, capsys, command):
    path = write_cfg(tmp_path, {"file": saved(tmp_path, Detached().eval()), "trust": True},
                     classes={"a": 0, "b": 1}, target_layers=["conv"])
    argv = [path, "--quiet"] if command == "run" else ["layers", path]
    refused(capsys, *argv)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# ---- 3. explain layers stops at a broken first image the run would skip ----------------------

def test_layers_skips_a_broken_image_in_a_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(IMAGE.read_bytes()[:300])
    (folder / "b_cat.jpg").write_bytes(IMAGE.read_bytes())
    path = write_cfg(tmp_path, {"file": saved(tmp_path, seq())}, classes={"a": 0, "b": 1},
                     images=[str(folder)])
    code, err, _ = cli(capsys, path, "--quiet")
    assert code == 0, err  # the run skips it, says so, and explains the other one
    summary = json.loads((tmp_path / "results" / "exp" / "summary.json").read_text())
    assert [i["id"] for i in summary["images"]] == ["b_cat"]
    assert [s["path"] for s in summary["skipped_images"]] == [str(folder / "a_broken.jpg")]
    # cut within its header: found truncated before Pillow reads it (explain.images.reading)
    assert "truncated JPEG" in summary["skipped_images"][0]["reason"]
    code, err, out = cli(capsys, "layers", path)
    assert code == 0, err  # and so does explain layers: it surveys the first readable image
    lines = out.splitlines()
    assert lines[0] == "exp.yaml: 7 modules, input (1, 3, 32, 32) (b_cat.jpg)", out
    assert any(line.split()[:2] == ["3", "ReLU"] and line.endswith("(auto)") for line in lines)
    assert "auto: 3 (the last layer before the head a CAM can use)" in lines, out


# ---- 4. class names the model carries that the Config model refuses ---------------------------

def _named_net(names: list) -> nn.Sequential:
    net = seq(outputs=len(names))
    net.class_names = names
    return net


@pytest.mark.parametrize("names,targets", [
    ([f"c{i}" for i in range(1001)], "top3"),
    (["predicted", "dog"], ["predicted"]),
], ids=["1001 names", "class named predicted"])
def test_model_class_names_the_config_refuses_are_one_line(tmp_path, capsys, names, targets):
    path = write_cfg(tmp_path, {"file": saved(tmp_path, _named_net(names))}, targets=targets,
                     target_layers=["2"])
    ok_or_one_line(capsys, path, "--quiet")


def test_repeated_labels_are_named_in_linear_time():
    from explain.models.labels import safe_class_names
    n = 4000
    started = time.process_time()  # CPU seconds: a busy machine does not fail it
    names = safe_class_names(["x"] * n)
    took = time.process_time() - started
    assert len({name.lower() for name in names}) == n
    assert all(name_problem(name) is None for name in names)
    assert took < 0.5, f"{took:.2f} CPU s for {n} equal labels (linear: ~0.02 s)"


# ---- 5. concepts.layer that is neither a target nor the channels layer -----------------------

def test_concepts_at_another_layer(tmp_path, capsys):
    path = write_cfg(tmp_path, {"file": saved(tmp_path, seq())}, classes={"a": 0, "b": 1},
                     target_layers=["2"], concepts={"enabled": True, "layer": "0",
                                                    "n_components": 2})
    code, err, _ = cli(capsys, path, "--quiet")
    assert code == 0, err
    data = json.loads((tmp_path / "results" / "exp" / "concepts" / "cat.json").read_text())
    assert data["layer"] == "0" and len(data["concepts"]) == 2  # found at the layer asked for
    assert abs(sum(c["share"] for c in data["concepts"]) - 1) < 1e-3


def test_concepts_at_a_layer_without_a_map_is_one_line(tmp_path, capsys):
    path = write_cfg(tmp_path, {"file": saved(tmp_path, seq())}, classes={"a": 0, "b": 1},
                     target_layers=["2"], concepts={"enabled": True, "layer": "6"})
    refused(capsys, path, "--quiet", needles=["concepts.layer"])


# ---- 6. token layout: register tokens on a small grid ---------------------------------------

@needs_timm
def test_register_tokens_on_a_4x4_grid():
    import timm
    torch.manual_seed(0)
    net = timm.create_model(VIT, num_classes=3, img_size=SIDE, patch_size=8, depth=1,
                            embed_dim=48, num_heads=2, reg_tokens=4).eval()
    assert net.num_prefix_tokens == 5
    layer = net.blocks[0].norm1
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    ours = engine_maps(net, layer, ["gradcam"], x, [0], names=[0, 1, 2])["gradcam"][:, 0]
    right = library_map("gradcam", net, layer, x, class_targets(0, 2), Layout("tokens", 5, (4, 4)))
    assert np.abs(ours - right).max() <= TOL
    assert infer_layout((2, 21, 48), (SIDE, SIDE)) == Layout("tokens", 5, (4, 4))


# ---- 7. a layer that runs twice in one forward pass -----------------------------------------

def test_a_layer_that_runs_twice_is_refused_or_equals_the_library():
    torch.manual_seed(0)
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), relu, nn.Conv2d(4, 4, 3, padding=1), relu,
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    ours = answered(engine_maps, net, relu, ["gradcam"], x, [0], names=[0, 1, 2])
    if ours is None:
        return
    right = library_map("gradcam", net, relu, x, class_targets(0, 2))
    assert np.abs(ours["gradcam"][:, 0] - right).max() <= TOL


# ---- 8. library methods: releasing hooks may raise and hide the one-line error ---------------

class ToNHWC(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class ToNCHW(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


@pytest.mark.filterwarnings("ignore")
def test_shapleycam_on_a_channels_last_layer_is_one_line_or_right():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), ToNHWC(), nn.LayerNorm(8),
                        ToNCHW(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    ours = answered(engine_maps, net, net[3], ["shapleycam"], x, [0], names=[0, 1, 2])
    if ours is None:
        return
    ours = ours["shapleycam"][:, 0]
    right = library_map("shapleycam", net, net[3], x, class_targets(0, 2), Layout("nhwc"))
    assert np.abs(ours - right).max() <= TOL


# ---- 9. a model without parameters ----------------------------------------------------------

@pytest.mark.filterwarnings("ignore")
def test_a_model_without_parameters(tmp_path, capsys):
    net = nn.Sequential(nn.AvgPool2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    path = write_cfg(tmp_path, {"file": saved(tmp_path, net)}, classes={"r": 0, "g": 1, "b": 2},
                     target_layers=["0"])
    answered(ok_or_one_line, capsys, path, "--quiet")


# =============================================================================================
# ATTACKS THAT ARE REFUSED (or handled) AS THE RULES SAY: regression guards
# =============================================================================================

# ---- timm arguments and names ----------------------------------------------------------------

@needs_timm
@pytest.mark.parametrize("key,value", [
    ("pretrained", 1), ("pretrained", "yes"), ("pretrained_cfg", "augreg_in21k"),
    ("pretrained_cfg", {"hf_hub_id": "timm/x"}), ("pretrained_cfg_overlay", {"file": "/etc/x"}),
    ("pretrained_model_args", {}), ("hf_hub_id", "timm/x"), ("weights_path", "w.pth"),
    ("state_dict_file", "w.pth"), ("download", True), ("kwargs_filter", ["x"]),
], ids=lambda v: str(v)[:16])
def test_timm_arguments_that_fetch_are_refused(tmp_path, capsys, homes, key, value):
    path = write_cfg(tmp_path, {"builder": f"timm:{VIT}",
                                "builder_args": {**VIT_ARGS, key: value}},
                     classes={"a": 0, "b": 1})
    refused(capsys, path, "--quiet", needles=[f"model.builder_args.{key}"])
    assert not any(p.exists() for p in homes) and not (tmp_path / "results").exists()


@needs_timm
@pytest.mark.parametrize("name", [f"timm:{VIT}.augreg_in21k", "timm:hf-hub:timm/x",
                                  "timm:../../etc/passwd", "timm:", "timm:create_model",
                                  "timm:Vit_Tiny_Patch16_224", "timm:resnet18 "])
def test_odd_timm_names_are_refused(tmp_path, capsys, homes, name):
    refused(capsys, write_cfg(tmp_path, {"builder": name}, classes={"a": 0, "b": 1}), "--quiet")
    assert not any(p.exists() for p in homes)


# ---- safetensors and TorchScript look-alikes -------------------------------------------------

def _safetensors(path: Path, header: dict, data: bytes) -> None:
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)


def _f32(shape, start, end) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [start, end]}


SAFETENSORS_ATTACKS = {
    "overlapping": ({"0.bias": _f32([4], 0, 16), "0.weight": _f32([4], 0, 16)}, 16),
    "negative shape": ({"0.bias": _f32([-4], 0, 16)}, 16),
    "overflowing shape": ({"0.bias": _f32([2 ** 62, 2 ** 62, 4], 0, 16)}, 16),
    "2**64 offsets": ({"0.bias": _f32([4], 2 ** 64, 2 ** 64 + 16)}, 16),
    "negative offsets": ({"0.bias": _f32([4], -16, 0)}, 16),
    "metadata not text": ({"__metadata__": {"a": {"b": 1}}, "0.bias": _f32([4], 0, 16)}, 16),
    "shape past the data": ({"0.bias": _f32([400], 0, 16)}, 16),
}


@needs_safetensors
@pytest.mark.parametrize("kind", list(SAFETENSORS_ATTACKS))
def test_hostile_safetensors_headers_are_one_line(tmp_path, capsys, kind):
    header, size = SAFETENSORS_ATTACKS[kind]
    _safetensors(tmp_path / "w.safetensors", header, bytes(size))
    path = write_cfg(tmp_path, {"file": str(tmp_path / "w.safetensors"),
                                "arch": "torchvision.models.resnet18"}, classes={"a": 0, "b": 1})
    refused(capsys, path, "--quiet", needles=["w.safetensors"])


class _Marker:
    """Unpickling this creates a marker file: proof that the pickle ran code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("disguise", ["pickle named .safetensors", "zip named .safetensors",
                                      "TorchScript look-alike", "TorchScript look-alike, trust"])
def test_disguised_files_run_no_code(tmp_path, capsys, disguise):
    marker = tmp_path / "ran_code"
    payload = io.BytesIO()
    torch.save({"w": _Marker(str(marker))}, payload)
    trust = disguise.endswith("trust")
    if disguise == "pickle named .safetensors":
        target = tmp_path / "w.safetensors"
        torch.save({"w": _Marker(str(marker))}, target, _use_new_zipfile_serialization=False)
    elif disguise == "zip named .safetensors":
        target = tmp_path / "w.safetensors"
        target.write_bytes(payload.getvalue())
    else:  # a torch.save zip with a 'constants.pkl' and 'code/' as torch.jit.save writes them
        target = tmp_path / "w.pt"
        with zipfile.ZipFile(io.BytesIO(payload.getvalue())) as src, \
                zipfile.ZipFile(target, "w") as dst:
            for item in src.infolist():
                dst.writestr(item.filename, src.read(item))
            top = src.namelist()[0].split("/")[0]
            dst.writestr(f"{top}/constants.pkl", src.read(f"{top}/data.pkl"))
            dst.writestr(f"{top}/code/__torch__.py", "def forward(self): pass\n")
    model = {"file": str(target), "arch": "torchvision.models.resnet18", "trust": trust}
    refused(capsys, write_cfg(tmp_path, model, classes={"a": 0, "b": 1}), "--quiet")
    refused(capsys, "layers", write_cfg(tmp_path, model, classes={"a": 0, "b": 1}))
    assert not marker.exists()


def test_layers_on_a_refused_pickle_runs_no_code(tmp_path, capsys):
    marker = tmp_path / "ran_code"
    torch.save({"w": _Marker(str(marker))}, tmp_path / "m.pth")
    path = write_cfg(tmp_path, {"file": str(tmp_path / "m.pth")}, classes={"a": 0, "b": 1})
    refused(capsys, "layers", path, needles=["refused to load", "model.trust"])
    assert not marker.exists()


# ---- class names the model carries -----------------------------------------------------------

def test_hostile_model_class_names_become_safe_file_names(tmp_path, capsys):
    names = ["../../x", "a/b\\c", "__init__", "..", "x" * 500, "x" * 500, "Cat", "cat", "",
             "con", "\u202eevil", "a\x00b"]
    path = write_cfg(tmp_path, {"file": saved(tmp_path, _named_net(names))}, targets="top20",
                     target_layers=["2"])
    code, err, _ = cli(capsys, path, "--quiet")
    assert code == 0, err
    run = tmp_path / "results" / "exp"
    written = sorted(p.name for p in (run / "cams" / "gradcam").iterdir())
    assert len(written) == len(names)
    stems = [n.split("__", 1)[1].rsplit(".", 1)[0] for n in written]
    assert all(name_problem(s) is None for s in stems), stems
    assert len({s.lower() for s in stems}) == len(names)
    root = tmp_path.resolve()
    assert all(root in p.resolve().parents for p in tmp_path.rglob("*"))
    assert {p.name for p in tmp_path.iterdir()} == {"exp.yaml", "m.pth", "results"}


@pytest.mark.parametrize("names", [[1, 2], [b"a", b"b"], ["a", None], ["a"], {"0": "a"},
                                   {"0": "a", "x": "b"}], ids=str)
def test_unusable_model_class_names_are_not_taken(tmp_path, capsys, names):
    net = seq()
    net.class_names = names
    path = write_cfg(tmp_path, {"file": saved(tmp_path, net)}, target_layers=["2"])
    refused(capsys, path, "--quiet", needles=["classes: not given"])


# ---- what forward returns --------------------------------------------------------------------

class Returns(nn.Module):
    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        z = self.conv(x).mean((2, 3))
        return {"tuple": lambda: (z, z), "strings": lambda: ["a", "b"],
                "generator": lambda: (t for t in (z,)), "none": lambda: None,
                "dict": lambda: {"logits": z}}[self.what]()


@pytest.mark.parametrize("what,key", [("tuple", 2), ("tuple", 64), ("strings", 0),
                                      ("generator", 0), ("none", None), ("none", 0),
                                      ("dict", "logit"), ("dict", 0), ("tuple", "count"),
                                      ("dict", "__class__"), ("tuple", None)])
def test_outputs_that_hold_no_logits_are_one_line(what, key):
    with pytest.raises(ExplainError) as info:
        Classifier(Returns(what), key)(torch.randn(1, 3, 8, 8))
    one_line(info)


# ---- heads, targets, layouts, FinerCAM, guided, concepts ------------------------------------

@pytest.mark.parametrize("case", ["binary top3", "top20 of 3"])
def test_top_k_beyond_the_classes(tmp_path, capsys, case):
    """topK with K above the number of classes explains every class once, most likely first."""
    if case == "binary top3":
        net, model, classes = seq(outputs=1), {"head": "binary"}, {"no": 0, "yes": 1}
        targets = "top3"
    else:
        net, model, classes = seq(outputs=3), {}, {"a": 0, "b": 1, "c": 2}
        targets = "top20"
    path = write_cfg(tmp_path, {"file": saved(tmp_path, net), **model}, classes=classes,
                     targets=targets, target_layers=["2"], output={
                         "dir": str(tmp_path / "results"), "save_arrays": True})
    code, err, _ = cli(capsys, path, "--quiet")
    assert code == 0, err
    run = tmp_path / "results" / "exp"
    image, = json.loads((run / "summary.json").read_text())["images"]
    probs = image["probabilities"]
    assert sorted(probs) == sorted(classes) and sum(probs.values()) == pytest.approx(1, abs=1e-4)
    ranked = sorted(classes, key=lambda c: -probs[c])
    assert [c["class"] for c in image["cams"]] == ranked and image["predicted"] == ranked[0]
    assert [c["file"] for c in image["cams"]] == [f"cams/gradcam/cat__{c}.png" for c in ranked]
    maps = [np.load(run / "cams" / "gradcam" / f"cat__{c}.npy") for c in ranked]
    assert all(m.shape == (SIDE, SIDE) and m.max() == pytest.approx(1) for m in maps)
    assert all(np.abs(a - b).max() > 0.01 for a, b in zip(maps, maps[1:]))  # one map a class


@pytest.mark.parametrize("fields,needle", [
    ({"reshape": {"prefix": 64}}, "not a token sequence"),
    ({"reshape": "vit"}, "not a token sequence"),
    ({"reshape": "swin"}, "channels-last"),
    ({"targets": "label"}, "needs a label"),
    ({"targets": ["label", "a"]}, "needs a label"),
    ({"classes": {"a": 0}, "methods": ["finercam"]}, "finercam"),
    ({"model": {"head": "binary"}, "classes": {"no": 0, "yes": 1}, "methods": ["finercam"],
      "_outputs": 1}, "finercam"),
    ({"model": {"head": "binary"}}, "binary"),
    ({"model": {"output": 0}}, "model.output"),
    ({"model": {"output": "logits"}}, "model.output"),
    ({"classes": {"a": 0, "b": 7}}, "index 7"),
], ids=lambda v: str(v)[:30])
def test_refused_settings_on_a_cnn(tmp_path, capsys, fields, needle):
    fields = dict(fields)
    net = seq(outputs=fields.pop("_outputs", 2))
    model = {"file": saved(tmp_path, net), **fields.pop("model", {})}
    fields.setdefault("classes", {"a": 0, "b": 1})
    path = write_cfg(tmp_path, model, target_layers=["2"], **fields)
    refused(capsys, path, "--quiet", needles=[needle])
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.parametrize("command", ["run", "layers"])
def test_auto_without_a_usable_layer_is_one_line(tmp_path, capsys, command):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 8), nn.ReLU(),
                        nn.Linear(8, 2)).eval()
    path = write_cfg(tmp_path, {"file": saved(tmp_path, mlp)}, classes={"a": 0, "b": 1})
    if command == "run":
        refused(capsys, path, "--quiet", needles=["target_layers: auto"])
    else:
        code, err, out = cli(capsys, "layers", path)
        assert code == 0 and "auto: no layer a CAM can use" in out, err


def test_dff_on_a_one_by_one_map(tmp_path, capsys):
    path = write_cfg(tmp_path, {"file": saved(tmp_path, seq())}, classes={"a": 0, "b": 1},
                     target_layers=["4"], concepts={"enabled": True})
    code, err, _ = cli(capsys, path, "--quiet")
    assert code == 0, err
    data = json.loads((tmp_path / "results" / "exp" / "concepts" / "cat.json").read_text())
    assert abs(sum(c["share"] for c in data["concepts"]) - 1) < 1e-6


def test_guided_with_a_shared_relu_leaves_the_model_as_it_was(tmp_path, capsys):
    from explain.models.heads import Head, ScoreModel
    from explain.writers.guided import guided_gradient
    torch.manual_seed(0)
    relu = nn.ReLU(inplace=True)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), relu, nn.Conv2d(4, 4, 3, padding=1), relu,
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(1, 3, SIDE, SIDE)
    before = net(x).detach()
    image = guided_gradient(ScoreModel(Classifier(net), Head()), x, 1)
    assert image.shape == (SIDE, SIDE, 3) and np.isfinite(image).all()
    assert net[1] is relu and net[3] is relu and relu.inplace
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    assert torch.equal(net(x), before)
    # and the same net through the CLI
    path = write_cfg(tmp_path, {"file": saved(tmp_path, net)}, classes={"a": 0, "b": 1},
                     target_layers=["2"], guided={"enabled": True})
    code, err, _ = cli(capsys, path, "--quiet")
    assert code == 0, err
    assert (tmp_path / "results" / "exp" / "guided" / "cat__a.png").is_file()

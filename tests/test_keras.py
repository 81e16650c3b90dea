"""Keras 3 models on Keras' torch backend (explain.models.keras): the preprocess modes against
keras.applications' own functions, layers by Keras name, the engine's maps against the library
and the hand-written references on channels-last layers, safe loading, and a whole run of
configs/keras_example.yaml. Small seeded CNNs built here; no trained Keras model is needed."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, LayerCAM

os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported (explain sets it too)
keras = pytest.importorskip("keras")

from conftest import IMAGES, REPO, write_config  # noqa: E402
from helpers import (class_targets, cpu_engine, explain_error, library_map, one_line,  # noqa: E402
                     refused)
from explain import reference  # noqa: E402
from explain.models import keras as keras_model  # noqa: E402
from explain.cli import main  # noqa: E402
from explain.config import Preprocess, load_config  # noqa: E402
from explain.models.heads import Classifier, Head  # noqa: E402
from explain.images import find_images, prepare, preprocess  # noqa: E402
from explain.layers import auto_layer, survey  # noqa: E402
from explain.models.layouts import Layout  # noqa: E402
from explain.models.loading import load_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SIDE = 32
LIBRARY = {"gradcam": GradCAM, "layercam": LayerCAM}
TOL = 1e-5


def small_cnn(side: int | None = SIDE, softmax: bool = False, lam: bool = False) -> "keras.Model":
    """Two Conv2D layers named like VGG16's last block, global average pooling, Dense(2);
    seeded random weights. At 32 px block5_conv2 gives (B, 16, 16, 16): h == C, a tie that
    only the channels-last rule reads right; block5_conv3 gives (B, 14, 14, 24)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((side, side, 3), name="image")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs) if lam else inputs
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                            name="block5_conv2")(x)
    x = keras.layers.Conv2D(24, 3, activation="relu", name="block5_conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    small = keras.initializers.RandomNormal(stddev=0.02, seed=0)  # not too sure of itself
    out = keras.layers.Dense(2, activation="softmax" if softmax else None, name="predictions",
                             kernel_initializer=small)(x)
    return keras.Model(inputs, out, name="catdog")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "small.keras"
    small_cnn().save(path)
    return path, keras_model.load_keras(path, trust=False)


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


# ---- preprocessing ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode, keras_fn", [
    ("caffe", lambda x: keras.applications.vgg16.preprocess_input(x)),
    ("tf", lambda x: keras.applications.mobilenet_v2.preprocess_input(x)),
    ("torch", lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="torch")),
])
def test_preprocess_modes_equal_keras(mode, keras_fn):
    rgb = np.random.default_rng(3).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    tensor, shown = preprocess(rgb, Preprocess(size=[20, 28], mode=mode))  # no resampling
    want = keras_fn(rgb.astype(np.float32).copy())  # channels-last, like Keras takes it
    assert tensor.shape == (3, 20, 28)
    np.testing.assert_allclose(tensor.numpy().transpose(1, 2, 0), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(shown, rgb / 255.0, atol=1e-6)  # the overlay photo: unchanged


# ---- the wrapper -----------------------------------------------------------------------------

def test_layers_by_keras_name_and_channels_last_input(small):
    _, net = small
    assert [n for n, _ in net.named_modules()] == ["", "block5_conv2", "block5_conv3", "gap",
                                                   "predictions"]
    assert net.explain_reshape == "nhwc" and net.input_hw == (SIDE, SIDE)
    assert len(list(net.parameters())) == len(net.keras_model.variables) == 6
    assert [n for n, _ in Classifier(net).named_modules()][:2] == ["", "net"]
    x = _x()
    assert torch.equal(net(x), net.keras_model(x.permute(0, 2, 3, 1)))
    one_line(explain_error(net, torch.zeros(1, 3, 40, 40)), "takes 32x32 images",
             "preprocess.size: [32, 32]")


def test_nested_model_layers_by_name_and_auto(tmp_path):
    """The course's shape: a VGG16-style base model inside the classifier. Its layers are
    listed by their own names after it, and auto picks its last conv layer, not the pool that
    ends it (nor the base model, whose output is that pool's)."""
    keras.utils.set_random_seed(0)
    base_in = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="block5_conv3")(base_in)
    base = keras.Model(base_in, keras.layers.MaxPooling2D(name="block5_pool")(x), name="vgg16")
    inputs = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(x)) \
        .save(tmp_path / "nested.keras")
    net = keras_model.load_keras(tmp_path / "nested.keras", trust=False)
    assert [n for n, _ in net.named_modules()] == ["", "vgg16", "block5_conv3", "block5_pool",
                                                   "gap", "predictions"]
    assert auto_layer(survey(net, Classifier(net), _x(1), Head())).name == "block5_conv3"
    assert "'predictions' ends in softmax" in net.explain_notes[0]


@pytest.mark.parametrize("layer_name", ["block5_conv3", "block5_conv2"])
def test_engine_equals_library_and_reference(small, layer_name):
    """GradCAM and LayerCAM from the shared pass equal pytorch-grad-cam called on the wrapped
    model with the channels-last reshape_transform, and the hand-written references."""
    _, net = small
    model, layer, x = Classifier(net), net.get_submodule(layer_name), _x()
    with cpu_engine(model, [layer], list(LIBRARY), reshape=net.explain_reshape) as engine:
        result = engine.run(x, [0, 1], [0, 1])
        assert engine.layouts == [Layout("nhwc")]
    for method, cls in LIBRARY.items():
        for slot in (0, 1):
            ours = result.maps[method][:, slot]
            assert ours.max() > 0.5  # a real map, not a blank one
            lib = library_map(cls, model, layer, x, class_targets(slot, len(x)), Layout("nhwc"))
            assert np.abs(ours - lib).max() <= TOL, (method, slot)
            acts, grads = reference.capture(model, layer, x, [slot] * len(x),
                                            layout=Layout("nhwc"))
            ref = reference.reference_cam(method, acts, grads, (SIDE, SIDE))
            assert np.abs(ours - ref).max() <= TOL, (method, slot)


# ---- loading safely --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_needs_trust(tmp_path, capsys, suffix):
    path = tmp_path / f"lam{suffix}"
    small_cnn(side=8, lam=True).save(path)
    cfg = write_config(tmp_path, model={"keras": str(path)}, preprocess={"size": [8, 8]},
                       target_layers=["block5_conv3"], images=[str(IMAGES / "cat.jpg")])
    refused(capsys, cfg, "--quiet", needles=["lam", "model.trust: true"])
    assert not (tmp_path / "results").exists()
    net = load_model(load_config(cfg, {"model.trust": True}))
    assert "double" in dict(net.named_modules())
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 2)


def test_file_problems_are_one_line(tmp_path):
    load = keras_model.load_keras
    assert "missing.keras: model file not found" in explain_error(
        load, tmp_path / "missing.keras", trust=False)
    (tmp_path / "text.keras").write_text("not a zip")
    assert "not a .keras archive" in explain_error(load, tmp_path / "text.keras", trust=False)
    (tmp_path / "text.h5").write_text("not hdf5")
    assert "not an HDF5 file" in explain_error(load, tmp_path / "text.h5", trust=True)
    (tmp_path / "model.pth").write_bytes(b"x")
    assert "not a Keras model file" in explain_error(load, tmp_path / "model.pth", trust=False)


def test_keras_setup_problems_are_one_line(small, monkeypatch):
    path, _ = small
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "keras" else real_find(name, *a))
    assert "pip install explain[keras]" in explain_error(keras_model.load_keras, path, trust=False)
    monkeypatch.undo()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert "'jax' backend" in explain_error(keras_model.import_keras)
    monkeypatch.undo()
    monkeypatch.setattr(keras, "__version__", "3.10.0")
    one_line(explain_error(keras_model.load_keras, path, trust=False), "safe mode",
             "model.trust: true")
    assert keras_model.load_keras(path, trust=True) is not None  # trusted: the user's call


# ---- configs/keras_example.yaml, end to end --------------------------------------------------

RUN_SIZE = 32


@pytest.fixture(scope="module")
def keras_tree(tmp_path_factory):
    """The repository layout with a small seeded Keras CNN (softmax output, fixed 32 px input)
    saved where configs/keras_example.yaml expects the course's model."""
    root = tmp_path_factory.mktemp("kerasrun")
    (root / "configs").mkdir()
    shutil.copy(REPO / "configs" / "keras_example.yaml", root / "configs")
    shutil.copytree(IMAGES, root / "images")
    (root / "models").mkdir()
    small_cnn(side=RUN_SIZE, softmax=True).save(root / "models" / "keras_catdog.keras")
    return root


def test_keras_example_runs_and_matches_the_library(keras_tree, capsys):
    config = keras_tree / "configs" / "keras_example.yaml"
    # the model's fixed input is 32 px, not 224
    refused(capsys, config, "--quiet", needles=[f"preprocess.size: [{RUN_SIZE}, {RUN_SIZE}]"])
    size = f"preprocess.size=[{RUN_SIZE},{RUN_SIZE}]"
    assert main([str(config), "--quiet", "--set", size, "--compare"]) == 0
    run = keras_tree / "results" / "keras_example"
    summary = json.loads((run / "summary.json").read_text())
    assert any("'predictions' ends in softmax" in n for n in summary["notes"])
    for method in LIBRARY:
        assert summary["compare"]["per_method"][method]["max_abs"] <= TOL
    cfg = load_config(config, {"preprocess.size": [RUN_SIZE, RUN_SIZE]})
    net = load_model(cfg)
    original = keras.saving.load_model(keras_tree / "models" / "keras_catdog.keras")
    model, layer = Classifier(net), net.get_submodule("block5_conv3")
    refs, _ = find_images(cfg)
    for ref, image in zip(refs, summary["images"]):
        x = prepare(ref, cfg.preprocess).tensor[None]
        probs = original(x.permute(0, 2, 3, 1))[0].detach()  # Keras' own softmax output
        assert 0.01 < float(probs[0]) < 0.99
        assert image["probabilities"] == pytest.approx({"cat": float(probs[0]),
                                                        "dog": float(probs[1])}, abs=1e-5)
        for method, cls in LIBRARY.items():
            for index, name in enumerate(("cat", "dog")):
                lib = library_map(cls, model, layer, x, class_targets(index, 1), Layout("nhwc"))[0]
                ours = np.load(run / "cams" / method / f"{ref.id}__{name}.npy")
                assert ours.shape == (RUN_SIZE, RUN_SIZE)
                assert np.abs(ours - lib).max() <= TOL, (ref.id, method, name)
    item = json.loads((run / "items" / "cat.json").read_text())
    assert item["entry"]["cams"][0]["channels"]["channels"] == 24  # block5_conv3's channels
    report = (run / "report.html").read_text()
    assert "Keras model file" in report and 'src="cams/gradcam/cat__dog.png"' in report


def test_explain_layers_lists_keras_names(keras_tree, capsys):
    config = keras_tree / "configs" / "keras_example.yaml"
    assert main(["layers", str(config), "--set", f"preprocess.size=[{RUN_SIZE},{RUN_SIZE}]"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "channels-last 16x16" in lines["block5_conv2"]  # (1, 16, 16, 16): h == C, a tie
    assert "channels-last 14x14" in lines["block5_conv3"] and "(auto)" in lines["block5_conv3"]
    assert "Dense" in lines["predictions"] and "_torch_params" not in out
    assert "auto: block5_conv3" in out


def test_a_small_keras_file_whose_layers_outgrow_the_memory_is_refused(tmp_path, monkeypatch):
    """A 32 KB file of built-in layers (safe mode loads it): UpSampling2D(64) then pooling
    makes 2048 x 2048 maps of a 32 x 32 input. Against a budget it does not fit, one line;
    the file itself loads when the memory is there."""
    inp = keras.Input((32, 32, 3))
    x = keras.layers.UpSampling2D(size=(64, 64), name="up")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(x)
    x = keras.layers.AveragePooling2D(pool_size=(64, 64), name="pool")(x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "up.keras"
    keras.Model(inp, out).save(str(path))
    assert keras_model._output_bytes(keras_model.read_keras(path, False)) == \
        4 * (32 * 32 * 3 + 2048 * 2048 * (3 + 8) + 32 * 32 * 8 + 8 + 2)
    monkeypatch.setattr(keras_model, "available", lambda device: 512 * 2**20)
    text = explain_error(keras_model.read_keras, path, False)
    assert text.startswith(f"{path}: refused (model.keras): its layers' outputs for one "
                           f"image add up to ") and \
        "4 times that with their gradients and layout copies, more than the 512.0 MiB free" \
        in text

"""The fifteenth attack: a shared Keras file's layer calls on constants, which Keras makes as
it loads the file, outside every bound (docs/trust.md)."""

from __future__ import annotations

import json
import os
import zipfile

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from explain.errors import ExplainError  # noqa: E402
from explain.models import keras as kerasmodels  # noqa: E402
from explain.models.keras import load_keras  # noqa: E402

HUGE = 2**40  # 4 TiB of float32 were Keras to make it


def _model() -> "keras.Model":
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.Conv2D(4, 3)(inp))
    return keras.Model(inp, keras.layers.Dense(2, name="fc")(x))


def _bomb(cfg: dict, node) -> dict:
    cfg["config"]["layers"].append({
        "module": "keras.src.ops.numpy", "class_name": "Arange", "registered_name": None,
        "config": {"name": "bomb", "dtype": "float32"}, "name": "bomb",
        "inbound_nodes": node})
    return cfg


def _keras_file(tmp_path, node) -> "os.PathLike":
    src, path = tmp_path / "base.keras", tmp_path / "bomb.keras"
    _model().save(str(src))
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "config.json":
                data = json.dumps(_bomb(json.loads(data), node)).encode()
            zout.writestr(info.filename, data)
    return path


@pytest.fixture
def no_keras_load(monkeypatch):
    """Keras never opens a refused file (were it to, Arange(0, HUGE) would run)."""
    def fail(*args, **kwargs):
        raise AssertionError("Keras loaded a refused file")
    monkeypatch.setattr(kerasmodels, "_load", fail)


@pytest.mark.parametrize("node", [
    [{"args": [0, HUGE], "kwargs": {}}],  # a 20 KB file's (0, 2**30) took 4 GiB
    [{"args": [], "kwargs": {"start": 0, "stop": HUGE}}],
    [{"args": [{"class_name": "X", "config": {"x": {"class_name": "__keras_tensor__"}}}],
      "kwargs": {}}],  # a tensor inside an object's config is no tensor of the call
    [{"args": [{"class_name": "__keras_tensor__", "x": 1}, 0, HUGE]}],  # no config: a dict
    [{}], [[]], {"": 1},  # Keras calls the layer on nothing
])
def test_a_keras_call_on_constants_is_refused(tmp_path, no_keras_load, node):
    with pytest.raises(ExplainError) as err:
        load_keras(_keras_file(tmp_path, node), trust=False)
    assert str(err.value).endswith(
        "/bomb.keras: refused (model.keras): config.json: the layer 'bomb' is called on "
        "constants, not on a model tensor (Keras would run that call as it loads the file)")


def test_a_legacy_h5_call_on_constants_is_refused(tmp_path, no_keras_load):
    path = tmp_path / "bomb.h5"
    _model().save(str(path))
    with h5py.File(path, "r+") as f:
        cfg = _bomb(json.loads(f.attrs["model_config"]), [{"args": [0, HUGE], "kwargs": {}}])
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(ExplainError, match=r"/bomb.h5: refused \(model.keras\): model_config: "
                                           r"the layer 'bomb' is called on constants"):
        load_keras(path, trust=False)


def test_model_ops_on_tensors_still_load(tmp_path):
    """A model's own ops (keras.ops on its tensors) are nodes too, on a model tensor."""
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3)(inp)
    x = keras.ops.add(keras.ops.multiply(x, 2.0), x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "ops.keras"
    keras.Model(inp, out).save(str(path))
    assert load_keras(path, trust=False) is not None
    legacy = tmp_path / "legacy.h5"  # a legacy file's nodes name their layers
    _model().save(str(legacy))
    assert load_keras(legacy, trust=False) is not None


def test_a_keras_op_nodes_output_is_bounded(tmp_path):
    """A Keras op node (keras.ops.tile of a map) is no module: its output was in no module's
    count, and a 20 KB file took 3.6 GB at 32 px (60 GB asked at 2048 x 2048 tiles)."""
    import torch

    from explain.models import guard
    from explain.models.heads import Classifier
    inp = keras.Input((32, 32, 3))
    x = keras.ops.tile(keras.layers.Conv2D(4, 3)(inp), [1, 512, 512, 1])
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "tile.keras"
    keras.Model(inp, out).save(str(path))
    net = Classifier(load_keras(path, trust=False))
    problem = guard.forward_size_problem(net, torch.zeros(1, 3, 32, 32), 2**30)
    assert problem == ("one tensor operation's output (repeat, (1, 15360, 15360, 4)) with its "
                       "gradient passes the free memory")
    assert guard.forward_size_problem(net, torch.zeros(1, 3, 32, 32), 2**34) is None

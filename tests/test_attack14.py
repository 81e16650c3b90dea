"""The fourteenth attack: what a shared Keras file's layers ask of a pass that its symbolic
shapes do not show (docs/trust.md)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from explain.config import load_config  # noqa: E402
from explain.models import guard  # noqa: E402
from explain.models.heads import Classifier  # noqa: E402
from explain.models.keras import _output_bytes, load_keras, read_keras  # noqa: E402
from explain.plan import needs_bounds  # noqa: E402


def _save(tmp_path, name: str, inputs, x) -> "os.PathLike":
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / name
    keras.Model(inputs, out).save(str(path))
    return path


def _problem(path, side: int, free: int = 2**30) -> str | None:
    net = Classifier(load_keras(path, trust=False))
    return guard.forward_size_problem(net, torch.zeros(1, 3, side, side), free // 2)


def test_open_input_size_is_bounded_at_the_run_size(tmp_path):
    """An input of open size leaves every symbolic shape open: nothing was counted as it
    loaded, and 23 KB took 3.7 GB at 96 px (14336 x 14336 maps at 224 px)."""
    inp = keras.Input((None, None, 3))
    x = keras.layers.UpSampling2D(size=(64, 64), name="up")(inp)
    path = _save(tmp_path, "open.keras", inp, keras.layers.Conv2D(8, 3, name="conv")(x))
    assert _output_bytes(read_keras(path, False)) < 1024  # loads: its shapes say nothing
    problem = _problem(path, 96)
    assert problem and problem.startswith("its modules' outputs for one image, 4 times over "
                                          "with their gradients, pass the 1.0 GiB free, at")
    assert _problem(path, 2) is None


def test_a_layer_called_many_times_counts_each_call(tmp_path):
    """A shared layer's symbolic output is its first call's: 400 calls counted once."""
    inp = keras.Input((32, 32, 3))
    x = keras.layers.UpSampling2D(size=(16, 16), name="up")(inp)
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    for _ in range(400):
        x = conv(x)
    path = _save(tmp_path, "shared.keras", inp, x)
    assert _output_bytes(read_keras(path, False)) < 3 * 512 * 512 * 3 * 4  # not 400 maps
    problem = _problem(path, 32)
    assert problem and "4 times over" in problem and "at Conv2D ((1, 512, 512, 3))" in problem


def test_keras_pooling_work_is_bounded(tmp_path):
    """AveragePooling2D(1024, strides=1) over a 2048 x 2048 map: 25 KB ran past 400 s."""
    inp = keras.Input((32, 32, 3))
    x = keras.layers.UpSampling2D(size=(64, 64), name="up")(inp)
    x = keras.layers.AveragePooling2D(pool_size=(1024, 1024), strides=1, name="pool")(x)
    path = _save(tmp_path, "pool.keras", inp, x)
    problem = _problem(path, 32, free=64 * 2**30)
    assert problem == "over 4e+12 multiply-adds for one image (hours on a CPU), at " \
                      "AveragePooling2D"


def test_a_keras_config_is_bounded(tmp_path):
    """A Keras file's first pass is bounded as a torch file's is; with trust it is not."""
    path = tmp_path / "c.yaml"
    path.write_text("model: {keras: m.keras}\nclasses: {a: 0}\nimages: [x.jpg]\n"
                    "target_layers: auto\nmethods: [gradcam]\n")
    cfg = load_config(path)
    assert needs_bounds(cfg)
    trusted = load_config(path, {"model.trust": True})
    assert not needs_bounds(trusted)


def test_only_explains_keras_wrapper_takes_the_fake_pass():
    """The Keras path (the model itself under FakeTensorMode, its hooks firing) is chosen by
    the class, KerasNet's: a torch model file's module carrying ``explain_fake_pass = True``
    (a pickled attribute is data) still gets the copy on the meta device."""
    from torch import nn
    from explain.models.guard import forward_size_problem
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    net[0].explain_fake_pass = True
    called = []
    net[1].register_forward_hook(lambda *args: called.append(1))
    assert forward_size_problem(net, torch.rand(1, 3, 16, 16), 2**40) is None
    assert called == []

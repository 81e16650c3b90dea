"""The sixteenth attack: what a model factory named in a config computes for real while its
model is only sized on the meta device (docs/trust.md)."""

from __future__ import annotations

import resource

import pytest

from explain.errors import ExplainError
from explain.models import factories
from explain.models.factories import make_model

pytest.importorskip("timm")
linux = pytest.mark.skipif(not hasattr(resource, "RLIMIT_DATA"), reason="Linux's RLIMIT_DATA")


@linux
@pytest.mark.parametrize("arch, args, growth", [
    ("timm:regnetx_002", {"depth": 2**33}, None),  # torch.arange(depth, device='cpu'): 32 GB
    ("timm:cait_xxs24_224", {"depth": 2**31}, 2**26),  # a list of depth rates: 16 GB asked
    ("timm:vit_tiny_patch16_224", {"depth": 2**24}, 2**26),  # 4M drop-path tensors took 3.3 GB
])
def test_a_factory_allocating_while_sized_is_refused(monkeypatch, arch, args, growth):
    if growth:  # a smaller cap: the same refusal, sooner
        monkeypatch.setattr(factories, "MAX_BUILD_GROWTH", growth)
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with pytest.raises(ExplainError) as err:
        make_model(arch, args, "model.arch", False)
    assert str(err.value).startswith(f"model.arch: '{arch}' with model.arch_args {args} asks "
                                     f"for over ")
    assert "of memory while it is only sized (before any weight is made): refused" in str(err.value)
    assert resource.getrlimit(resource.RLIMIT_DATA) == before  # the cap is lifted again
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 8 * 2**20  # KiB: under 8 GiB


def test_the_cap_leaves_a_sized_build_alone():
    model = make_model("timm:cait_xxs24_224", {"depth": 2, "num_classes": 3}, "model.arch", False)
    assert len(model.blocks) == 2


def test_keras_op_outputs_held_at_once_are_bounded(tmp_path):
    """Keras keeps each op node's output until its pass ends: 8 tiles of a map, each under
    the bound and in no module's count, held 0.9 GB at 32 px, 7 times the bound (a file of
    n of them asks n times one)."""
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    import torch

    from explain.models import guard
    from explain.models.heads import Classifier
    from explain.models.keras import load_keras
    inp = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(4, 3)(inp)  # (30, 30, 4): each tile (480, 480, 4), 3.5 MiB
    maps = [keras.ops.tile(conv, [1, 16, 16, 1]) * float(i + 1) for i in range(8)]
    pooled = keras.layers.Add()([keras.layers.GlobalAveragePooling2D()(m) for m in maps])
    path = tmp_path / "tiles.keras"
    keras.Model(inp, keras.layers.Dense(2)(pooled)).save(str(path))
    net, x = Classifier(load_keras(path, trust=False)), torch.zeros(1, 3, 32, 32)
    problem = guard.forward_size_problem(net, x, 2**25)  # 32 MiB: each output under it
    assert problem == ("its tensor operations' outputs held at once, 0.1 GiB with their "
                       "gradients, pass the free memory, at GlobalAveragePooling2D")
    assert guard.forward_size_problem(net, x, 2**28) is None

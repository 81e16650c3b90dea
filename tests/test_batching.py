"""batch_size 'auto' (explain.batching): batches sized to a memory budget give the maps of a
fixed batch size, and an out-of-memory error in a batch halves it once before one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import engine_maps, one_line
from test_shared_passes import images, small_net

from explain.config import MethodSpec
from explain.errors import ExplainError

# scorecam's inner batch 'auto' (made without the config's option check, which takes numbers
# only until explain.methods.check_option accepts 'auto' for batch_size)
METHODS = ["gradcam", MethodSpec.model_construct(name="scorecam", batch_size="auto"),
           {"name": "ablationcam", "batch_size": 3}]


class Rows(nn.Module):
    """The network, recording the rows of every forward; out of memory above ``limit`` rows."""

    def __init__(self, net: nn.Module, limit: int = 10**6, passes_only: bool = False):
        super().__init__()
        self.net, self.limit, self.rows, self.grad = net, limit, [], []
        self.passes_only = passes_only  # only passes without gradients run out of memory

    def forward(self, x):
        self.rows.append(x.shape[0])
        self.grad.append(torch.is_grad_enabled())
        if x.shape[0] > self.limit and not (self.passes_only and torch.is_grad_enabled()):
            raise torch.OutOfMemoryError(f"out of memory: {x.shape[0]} rows (injected)")
        return self.net(x)


def test_a_small_budget_splits_the_batch_and_gives_the_same_maps():
    from explain.batching import bytes_per_row
    x = images(5)
    whole = engine_maps(net := small_net(), net[2], METHODS, x, [0, 1])
    model = Rows(small_net())
    per_row = bytes_per_row(model, x[:1], True)
    split = engine_maps(model, model.net[2], METHODS, x, [0, 1], batch_size="auto",
                        memory_budget=2 * per_row + 1)
    # the engine's passes (with gradients): 5 images in passes of 2 rows; ScoreCAM's inner
    # passes (no gradients: half the bytes) of 4 rows (its 10 channels as 4 + 4 + 2)
    engine = [n for n, g in zip(model.rows, model.grad) if g]
    assert engine == [2, 2, 1]
    assert max(model.rows) == 4 and model.rows.count(4) == 2 * 5  # ablationcam: 3 rows
    for name in whole:
        assert split[name].shape == whole[name].shape
        assert np.abs(split[name] - whole[name]).max() <= 1e-5, name


def test_the_lean_pass_is_sized_from_the_target_layer_on():
    """The engine's lean pass records for autograd only from the target layer on: before it
    an output lives until the next module has used it (twice the largest), from it on every
    output and its gradient; twice all that for the allocator. With the inplace guard off the
    engine runs (and is sized as) the plain pass."""
    from helpers import cpu_engine
    from explain.batching import bytes_per_row
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(8, 4, 3, stride=4, padding=1), nn.Flatten(),
                        nn.Linear(64, 2)).eval()
    x = torch.randn(1, 3, 16, 16)
    image, big, after = 3 * 16 * 16 * 4, 8 * 16 * 16 * 4, [64 * 4, 64 * 4, 2 * 4]
    plain = 2 * (image + 4 * big + sum(after))  # float32 outputs of the seven modules
    lean = 2 * (image + 2 * big + 2 * sum(after))
    assert bytes_per_row(net, x, True) == plain == 72720
    assert bytes_per_row(net, x, True, [net[4]]) == lean == 40992
    assert bytes_per_row(net, x, False, [net[4]]) == plain // 2  # no gradients: one pass
    assert bytes_per_row(net, x, True, [net[0]]) == plain  # never above the plain pass
    with cpu_engine(net, [net[4]], ["gradcam"]) as engine:
        assert engine.row_bytes(x) == lean
    with cpu_engine(net, [net[4]], ["gradcam"], guard_inplace=False) as engine:
        assert engine.row_bytes(x) == plain


def test_out_of_memory_halves_the_batch_once():
    x = images(4)
    whole = engine_maps(net := small_net(), net[2], ["gradcam", "layercam"], x, [0, 1])
    model = Rows(small_net(), limit=2)
    halved = engine_maps(model, model.net[2], ["gradcam", "layercam"], x, [0, 1],
                         batch_size=4)
    assert model.rows[:3] == [4, 2, 2]
    for name in whole:
        assert np.abs(halved[name] - whole[name]).max() <= 1e-6


def test_out_of_memory_twice_is_one_line_naming_the_setting():
    model = Rows(small_net(), limit=1)
    with pytest.raises(ExplainError) as err:
        engine_maps(model, model.net[2], ["gradcam"], images(4), [0], batch_size=4)
    assert one_line(err, "batch_size: out of memory with a batch of 4, and again with 2",
                    "set a smaller batch_size")


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_an_inner_batch_out_of_memory_is_halved_then_one_line(method):
    x = images(2)
    whole = engine_maps(net := small_net(), net[2], [{"name": method, "batch_size": 4}], x,
                        [0, 1])[method]
    model = Rows(small_net(), limit=3)  # the engine's own pass of 2 rows fits
    halved = engine_maps(model, model.net[2], [{"name": method, "batch_size": 4}], x,
                         [0, 1])[method]
    assert 4 in model.rows and np.abs(halved - whole).max() <= 1e-5
    model = Rows(small_net(), limit=1)
    with pytest.raises(ExplainError) as err:
        engine_maps(model, model.net[2], [{"name": method, "batch_size": 4}], x[:1], [0])
    assert one_line(err, f"methods.{method}.batch_size: out of memory with a batch of 4, "
                         f"and again with 2")


def test_out_of_memory_in_scorecams_first_pass_and_under_bf16_halves_the_batch():
    """The per-channel method's own forward of the whole batch, and the engine's pass under
    autocast, out of memory: the engine's batch is halved (not 'the library failed')."""
    x = images(4)
    spec = [{"name": "scorecam", "batch_size": 2}]
    whole = engine_maps(net := small_net(), net[2], spec, x, [0, 1])["scorecam"]
    model = Rows(small_net(), limit=3, passes_only=True)
    halved = engine_maps(model, model.net[2], spec, x, [0, 1], batch_size=4)["scorecam"]
    assert model.rows[:3] == [4, 4, 2] and model.grad[:3] == [True, False, True]
    assert np.abs(halved - whole).max() <= 1e-5
    model = Rows(small_net(), limit=2)
    engine_maps(model, model.net[2], ["gradcam"], x, [0], batch_size=4, precision="bf16")
    assert model.rows[:3] == [4, 2, 2]

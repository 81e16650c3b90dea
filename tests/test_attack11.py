"""The eleventh attack (a helper's findings, and two of ours): a whole model whose tensors
are saved as views that repeat their data, so a file of a few KB holds gigabytes of weights
once torch copies them; work the first pass's bound did not see (sizes a file sets, attention,
a recurrent layer's steps)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explain.errors import ExplainError
from helpers import memory_peak, one_line, tiny_config, tiny_net

WIDE = 2**28  # outputs of a Linear of 4 inputs: 7 GiB of weights and biases, 3 floats stored


def _repeating_model() -> nn.Sequential:
    """tiny_net's layers, then Linears of 7 GiB of weights saved as 3 floats (stride 0)."""
    net = tiny_net()
    wide, head = nn.Linear(4, 1), nn.Linear(1, 2)
    wide.weight = nn.Parameter(torch.full((1,), 0.01).expand(WIDE, 4))
    wide.bias = nn.Parameter(torch.zeros(1).expand(WIDE))
    head.weight = nn.Parameter(torch.full((1,), 0.01).expand(2, WIDE))
    return nn.Sequential(*net[:4], wide, head)


def test_a_model_file_of_repeated_tensors_is_refused_before_any_pass(tmp_path):
    """A 5.5 KB whole model whose Linear weights were views of one stored float (stride 0)
    loaded as it was: its first pass copied them (torch multiplies contiguous weights), 6 GB
    for 1.3e9 weights, more with a wider layer (the pass bound counts outputs, not weights).
    Now a file's model holds at most what a config may build: 2 GiB, or twice the file."""
    from explain.config import load_config
    from explain.models.loading import load_model
    path = tmp_path / "repeat.pth"
    torch.save(_repeating_model(), path)
    assert path.stat().st_size < 10_000
    config = tiny_config(tmp_path, {"file": str(path)}, classes={"cat": 0, "dog": 1},
                         target_layers=["0"])
    with pytest.raises(ExplainError) as info:
        load_model(load_config(config))
    one_line(info, "model.file:", "repeat.pth: refused to load", "7.00 GiB of parameters",
             "at most 2.00 GiB", "model.trust: true")
    trusted = tiny_config(tmp_path, {"file": str(path), "trust": True}, stem="trusted",
                          classes={"cat": 0, "dog": 1}, target_layers=["0"])
    assert load_model(load_config(trusted))[4].weight.shape == (WIDE, 4)  # trust: as saved


def test_tied_weights_count_once_and_an_ordinary_file_loads(tmp_path):
    from explain.config import load_config
    from explain.models.loading import load_model
    net = tiny_net()
    extra = nn.Linear(6, 2)
    extra.weight = net[4].weight  # one tensor in two modules
    path = tmp_path / "tiny.pth"
    torch.save(nn.Sequential(*net, extra), path)
    config = tiny_config(tmp_path, {"file": str(path)}, classes={"cat": 0, "dog": 1},
                         target_layers=["0"])
    assert isinstance(load_model(load_config(config)), nn.Sequential)


def _header_file(path, header: bytes) -> None:
    import struct
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_a_safetensors_header_of_empty_lists_is_refused_before_it_is_parsed(tmp_path):
    """A safetensors header may be 32 MiB; one of '[],' repeated under '__metadata__' (no
    tensor, so every offset check passed) was parsed into Python lists first: 840 MB and 4 s
    for a 32 MiB file, before safetensors itself refused it. Now it is refused unparsed, as
    the records and box files are; a real header of 30,000 tensors (2.7 MB) still reads."""
    from explain.models.formats import _safetensors_data_size, read_safetensors
    path = tmp_path / "bomb.safetensors"
    _header_file(path, b'{"__metadata__":[' + b"[]," * 2_800_000 + b"[]]}")
    with memory_peak() as peak, pytest.raises(ExplainError) as info:
        read_safetensors(path)
    one_line(info, "bomb.safetensors: not a valid safetensors file", "lists and objects")
    assert peak[0] < 40 * 2**20, peak  # the file's 8 MiB read and decoded, nothing parsed
    safetensors = pytest.importorskip("safetensors.torch")
    many = tmp_path / "many.safetensors"
    safetensors.save_file({f"blocks.{i}.attn.qkv.weight": torch.zeros(1)
                           for i in range(30_000)}, str(many))
    assert many.stat().st_size > 2**21 and _safetensors_data_size(many) == 120_000


def _lying_conv(lie: bool) -> nn.Sequential:
    """A 22 KB model whose second Conv2d has 256 x 128 kernels of 63 x 63 (stored as one
    float), saved with ``in_channels=1, kernel_size=(1, 1)`` beside them when ``lie``."""
    wide = nn.Conv2d(128, 256, 63, padding=31)
    wide.weight = nn.Parameter(torch.full((1,), 1e-4).expand(256, 128, 63, 63))
    if lie:
        wide.in_channels, wide.kernel_size = 1, (1, 1)
    return nn.Sequential(nn.Conv2d(3, 128, 3, padding=1), nn.ReLU(), wide, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 2))


def test_a_convolution_saved_with_false_sizes_is_bounded_by_its_weight(tmp_path):
    """The first pass's work bound read a convolution's kernel and input channels from its
    attributes, which a model file sets to anything, while torch multiplies by the weight:
    the model refused in seconds as 6.5e12 multiply-adds an image passed with
    ``kernel_size=(1, 1), in_channels=1`` and ran on (a forward alone ~135 s at 224 px on
    2 cores, the pass and its backward more, 4096 px 300 times that). Now both are refused."""
    from explain.models.guard import MAX_WORK, forward_size_problem, module_work
    from explain.models.pickles import safe_load
    x = torch.rand(1, 3, 224, 224)
    for lie in (False, True):
        path = tmp_path / f"conv{lie}.pth"
        torch.save(_lying_conv(lie), path)
        assert path.stat().st_size < 30_000
        problem = forward_size_problem(safe_load(path), x, 2**40)
        assert problem == (f"over {MAX_WORK:.0e} multiply-adds for one image (hours on a CPU), "
                           f"at Conv2d"), (lie, problem)
    linear = nn.Linear(300, 5)
    linear.in_features = 1
    grouped = nn.Conv2d(8, 16, 3, groups=2)
    grouped.in_channels, grouped.kernel_size = 1, (1, 1)
    for net, x, work in ((linear, torch.rand(3, 300), 5 * 300),
                         (grouped, torch.rand(1, 8, 12, 12), 16 * 100 * 4 * 9)):
        assert module_work(net, torch.empty(1, device="meta")) == 0  # counted per operation
        assert _work_refused(net, x, work) == (False, True), net


def _work_refused(net: nn.Module, x: torch.Tensor, work: int) -> tuple[bool, bool]:
    """Whether the bound refuses ``net`` on ``x`` with MAX_WORK at ``work`` and just below:
    (False, True) when the pass counts exactly ``work`` multiply-adds for its one image."""
    from explain.models import guard
    refused = []
    for limit in (work, work - 1):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(guard, "MAX_WORK", limit)
            refused.append(guard.forward_size_problem(net, x, 2**40) is not None)
    return tuple(refused)


def _attention_over_pixels(dim: int = 8, heads: int = 1) -> nn.Sequential:
    """A 1x1 Conv2d, the pixels made a sequence (Flatten, torchvision's Permute) and one
    TransformerEncoderLayer over it: allow-listed modules only, weights of a few KB."""
    from torchvision.ops.misc import Permute
    return nn.Sequential(nn.Conv2d(3, dim, 1), nn.Flatten(2), Permute([0, 2, 1]),
                         nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=0.0,
                                                    activation=nn.ReLU(), batch_first=True),
                         Permute([0, 2, 1]), nn.AdaptiveAvgPool1d(1), nn.Flatten(1),
                         nn.Linear(dim, 2))


def test_attention_over_every_pixel_is_counted_as_work(tmp_path):
    """A 12 KB model file of allow-listed modules attending over every pixel: at 512 x 512
    (262,144 tokens, 1.1e12 multiply-adds) it ran past a 2-minute timeout with nothing
    printed, at 1024 px it asks 16 times that, at 2048 px 256 times, and the bound saw none of
    it (attention is no module's weight). The pass's matrix products are now counted per
    tensor operation, from their operands' shapes: 1024 px is refused (512 px stays within
    the bound, as ConvNeXt-XL at 1024 px does)."""
    from explain.models.guard import MAX_WORK, forward_size_problem
    from explain.models.pickles import safe_load
    path = tmp_path / "attention.pth"
    torch.save(_attention_over_pixels(), path)
    assert path.stat().st_size < 20_000
    net = safe_load(path)
    assert forward_size_problem(net, torch.rand(1, 3, 64, 64), 2**40) is None
    # its attention weights alone (4 TiB, refused since the eighteenth attack) set aside:
    problem = forward_size_problem(net, torch.rand(1, 3, 1024, 1024), 2**60)
    assert problem == (f"over {MAX_WORK:.0e} multiply-adds for one image (hours on a CPU), "
                       f"at MultiheadAttention")
    tokens, dim = 256, 8  # attention's two products (2 x tokens^2 x dim), its projections (4 x
    counted = 2 * tokens * tokens * dim + 6 * tokens * dim * dim  # dim^2) and feed-forward (2)
    assert _work_refused(net[3], torch.rand(1, tokens, dim), counted) == (False, True)


def test_a_recurrent_layer_over_every_pixel_is_refused_by_its_operations(monkeypatch):
    """An nn.LSTM over a photo's pixels: the meta device runs its steps one by one (4,096
    steps took 10 s, a 4096 x 4096 photo's would take days) before the real pass began.
    Over MAX_OPERATIONS tensor operations the pass is refused (here 3,000 of them, as quick
    to reach as the 30,000 are in 7 s)."""
    import time
    from explain.models import guard
    from torchvision.ops.misc import Permute
    monkeypatch.setattr(guard, "MAX_OPERATIONS", 3_000)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(2), Permute([2, 0, 1]), nn.LSTM(4, 4))
    start = time.perf_counter()
    problem = guard.forward_size_problem(net, torch.rand(1, 3, 512, 512), 2**40)
    assert problem == "over 3000 tensor operations in one forward pass"
    assert time.perf_counter() - start < 30
    assert guard.forward_size_problem(net, torch.rand(1, 3, 8, 8), 2**40) is None

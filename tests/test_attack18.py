"""The eighteenth attack (a helper's findings): what a torch model's first pass did not
count, the tensors an allow-listed module makes inside its forward that are no module's
output (attention weights over every pixel)."""

from __future__ import annotations

import torch

from explain.models.guard import _Operations, forward_size_problem
from test_attack11 import _attention_over_pixels


def test_attention_weights_over_every_pixel_are_bounded(tmp_path):
    """A 17 KB file of a TransformerEncoderLayer of 16 heads over every pixel: its module
    outputs are 3 MiB at 224 px, but its pass without gradients (predictions, ScoreCAM) asked
    the CPU for 161 GB of attention weights at once, 16 x 50176 x 50176 floats, and the first
    pass counted none of it. Here at 64 px (1 GiB of weights): refused with a 256 MiB bound,
    and with 768 MiB, where one head's weights fit but the scores and the softmax held at
    once do not; a small photo still passes."""
    from explain.models.pickles import safe_load
    path = tmp_path / "attention.pth"
    torch.save(_attention_over_pixels(16, heads=16), path)
    assert path.stat().st_size < 20_000
    net, x = safe_load(path), torch.rand(1, 3, 64, 64)
    assert forward_size_problem(net, x, 2**28) == (  # said at the module's end
        "its tensor operations' outputs held at once, 2.0 GiB with their gradients, pass the "
        "free memory, at MultiheadAttention")
    held = forward_size_problem(_attention_over_pixels(16, heads=8), x, 768 * 2**20)
    assert held == ("its tensor operations' outputs held at once, 1.0 GiB with their "
                    "gradients, pass the free memory, at MultiheadAttention")
    assert forward_size_problem(net, torch.rand(1, 3, 16, 16), 2**28) is None


def test_views_and_ops_in_place_count_no_memory_of_their_own():
    """An output counts once while any tensor on its memory lives: views of it and ops made in
    place on it add nothing, a view of a weight is none of the pass's, a freed one is let go."""
    weight = torch.zeros(256, 256, device="meta")
    operations = _Operations(bound=2**30)
    with operations:
        y = torch.zeros(1024, 1024, device="meta") + 1  # 4 MiB, and the 4 MiB zeros freed
        y.relu_().view(-1).t()
        weight.t()
        z = y[0] * 2  # 4 KiB
        del y
    assert operations.peak == 8 * 2**20
    assert operations.held == z.numel() * z.element_size()

"""Newcomer 18: a researcher explaining a random-weight timm DeiT and a torchvision ResNet-18
over a labelled folder, from the command line and a notebook, reading "which map to trust"
and comparing runs with explain diff; what the numbers and messages told them."""

from __future__ import annotations

from types import SimpleNamespace

from explain import stats, trustlines


def _timed(cams_seconds: float, maps: int) -> SimpleNamespace:
    """A summary's parts cost_per_map reads: the CAM time and the images' maps."""
    images = [SimpleNamespace(cams=[object()] * 4) for _ in range(maps // 4)]
    return SimpleNamespace(durations_s={"cams": cams_seconds}, images=images)


def test_cost_per_map_is_shown_at_its_own_three_digits():
    """A ViT run's 24 maps took 0.017 s: the page said 'Cost: 0.000700 s per map' (the cost
    rounded to 4 decimals, then printed at 3 significant digits), 1% off and falsely
    precise; a fast GPU's 0.00003 s read 'Cost: 0 s per map'."""
    cost = trustlines.cost_per_map(_timed(0.017, 24))
    assert stats.cell(cost) == "0.000708"
    fast = trustlines.cost_per_map(_timed(0.002, 64))
    assert fast == 0.002 / 64 and stats.cell(fast) == "3.13e-5"


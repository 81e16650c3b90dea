"""Leftovers a newcomer reported (round 18): what explain diff lists, hints and legends."""

from __future__ import annotations

from types import SimpleNamespace

from explain.config.schema import Config
from explain.diff.numbers import config_changes


def _config(**fields) -> Config:
    return Config.model_validate({
        "model": {"builder": "torchvision.models:alexnet"}, "images": ["a.jpg"],
        "target_layers": ["features.10"], "methods": ["gradcam"], "metrics": [], **fields})


def _diff(a: dict, b: dict) -> list[str]:
    shown, total = config_changes(SimpleNamespace(config=_config(**a)),
                                  SimpleNamespace(config=_config(**b)))
    assert total == len(shown)
    return shown


def test_diff_leaves_out_the_settings_of_a_section_that_is_off():
    # off in both runs: its settings did nothing
    assert _diff({"sanity": {"images": 1}}, {"sanity": {"images": 2}, "seed": 3}) == \
        ["seed: 0 -> 3"]
    # on in one run: the enabled change says it, the rest is not a change that mattered
    assert _diff({"sanity": {"images": 1}}, {"sanity": {"enabled": True, "images": 2}}) == \
        ["sanity.enabled: False -> True"]
    # a section inside a section: channels on in both, the atlas off in both
    assert _diff({"channels": {"enabled": True, "atlas": {"top_n": 2}}},
                 {"channels": {"enabled": True, "atlas": {"top_n": 3}, "top_k": 4}}) == \
        ["channels.top_k: 16 -> 4"]
    # on in both: its settings are listed
    assert _diff({"sanity": {"enabled": True, "images": 1}},
                 {"sanity": {"enabled": True, "images": 2}}) == ["sanity.images: 1 -> 2"]

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
        ["sanity.enabled: false -> true"]
    # a section inside a section: channels on in both, the atlas off in both
    assert _diff({"channels": {"enabled": True, "atlas": {"top_n": 2}}},
                 {"channels": {"enabled": True, "atlas": {"top_n": 3}, "top_k": 4}}) == \
        ["channels.top_k: 16 -> 4"]
    # on in both: its settings are listed
    assert _diff({"sanity": {"enabled": True, "images": 1}},
                 {"sanity": {"enabled": True, "images": 2}}) == ["sanity.images: 1 -> 2"]


def _vit_error(tmp_path, trained: dict, config: dict) -> str:
    """The one line load_model gives for a tiny random timm ViT built with ``trained`` and
    loaded with ``config`` as its arch_args."""
    import pytest
    import torch
    timm = pytest.importorskip("timm")
    from explain.errors import ExplainError
    from explain.models.loading import load_model
    small = {"depth": 1, "embed_dim": 24, "num_heads": 2, "num_classes": 2}
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, **small, **trained)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    cfg = _config(model={"file": str(tmp_path / "vit.pth"), "arch": "timm:vit_tiny_patch16_224",
                         "arch_args": {**small, **config}})
    with pytest.raises(ExplainError) as caught:
        load_model(cfg)
    return str(caught.value)


def test_vit_weights_of_another_input_size_name_the_img_size(tmp_path):
    line = _vit_error(tmp_path, {"img_size": 64}, {})
    assert line.endswith("'pos_embed' has shape (1, 17, 24), the model expects (1, 197, 24); "
                         "the weights' 17 tokens are a 4 x 4 grid of 16x16-pixel patches: "
                         "set model.arch_args: {img_size: 64}"), line
    # register tokens embedded with the class token, another patch size
    line = _vit_error(tmp_path, {"img_size": 48, "patch_size": 8, "reg_tokens": 2},
                      {"patch_size": 8, "reg_tokens": 2})
    assert line.endswith("the model expects (1, 787, 24); the weights' 39 tokens are a "
                         "6 x 6 grid of 8x8-pixel patches: set model.arch_args: "
                         "{img_size: 48}"), line
    # no_embed_class: the position embedding has the grid's tokens only
    line = _vit_error(tmp_path, {"img_size": 32, "no_embed_class": True},
                      {"no_embed_class": True})
    assert line.endswith("(1, 4, 24), the model expects (1, 196, 24); the weights' 4 tokens "
                         "are a 2 x 2 grid of 16x16-pixel patches: set model.arch_args: "
                         "{img_size: 32}"), line


def test_vit_weights_of_a_grid_that_is_not_square_get_no_guess(tmp_path):
    line = _vit_error(tmp_path, {"img_size": (64, 32)}, {})
    assert line.endswith("'pos_embed' has shape (1, 9, 24), the model expects (1, 197, 24)"), \
        line


def _small_cnn():
    import torch
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_a_notebook_call_names_the_usable_layers_not_a_config_command():
    import numpy as np
    import pytest
    import explain
    image = (np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)
    with pytest.raises(explain.ExplainError) as caught:
        explain.cam(_small_cnn(), image, "6", preprocess={"size": 16})
    line = str(caught.value)
    assert "CONFIG" not in line, line
    assert line.endswith("pick a layer before the classifier (the layers a CAM can use here, "
                         "the last first: '3', '2', '1', '0'; layer='auto' takes '3')"), line
    # the layer the line names works
    assert explain.cam(_small_cnn(), image, "3", preprocess={"size": 16}).maps["gradcam"]


def test_a_notebook_call_reads_its_layers_as_its_reshape_says():
    """reshape= of explain.cam was validated, then left out of the plan (the maps were read as
    reshape: auto reads them), so the line above's 'or set reshape: none' did nothing."""
    import numpy as np
    import pytest
    import explain
    image = (np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8)
    with pytest.raises(explain.ExplainError) as caught:
        explain.cam(_small_cnn(), image, "2", preprocess={"size": 16}, reshape="vit")
    assert "is not a token sequence (B, tokens, C) (reshape: vit)" in str(caught.value)


def _methods_legend(tmp_path, metrics: bool) -> str:
    """The help paragraph under the report's methods table, tags taken out."""
    import re
    from test_photos import render, summary_of
    values = {f"im{i}": {"gradcam": 0.2 + 0.01 * i, "layercam": 0.3 - 0.01 * i} for i in range(6)}
    bases = {ident: {"random": 0.1} for ident in values}
    summary = summary_of(values, None, bases)
    for image in summary.images:
        for r in image.cams:
            r.agreement = 0.5
    if not metrics:
        summary.config = summary.config.model_copy(update={"metrics": []})
        for image in summary.images:
            image.baselines = []
            for r in image.cams:
                r.faithfulness, r.localisation = {}, None
    page = render(summary, tmp_path / f"run{metrics}")
    table = page[page.index('class="method-table"'):]
    legend = table[table.index('<p class="help">Each cell'):]
    return re.sub(r"<[^>]+>", "", legend[:legend.index("</p>")])


def test_the_methods_legend_explains_only_what_the_table_has(tmp_path):
    legend = _methods_legend(tmp_path, metrics=False)  # metrics: []: the agreement column alone
    assert legend.endswith("how many images and maps. No column here is ranked, so no method "
                           "has a place or a rank."), legend
    for word in ("place (#1", "★", "baseline", "Rank:"):
        assert word not in legend, (word, legend)
    ranked = _methods_legend(tmp_path, metrics=True)  # a metric and a baseline: all of it
    for word in ("A place (#1 = best)", "★ significantly better", "none where a baseline does",
                 "✗ baseline", "Baselines (not methods)", "Rank: methods by their mean place"):
        assert word in ranked, (word, ranked)
    assert "No column here is ranked" not in ranked


def test_without_numbers_the_conclusion_says_what_to_add_in_a_plain_sentence(tmp_path):
    from explain import trustlines
    from explain.methodtable import method_table
    from test_photos import summary_of
    summary = summary_of({"im0": {"gradcam": 0.2}}, None)
    summary.config = summary.config.model_copy(update={"metrics": []})
    for image in summary.images:
        for r in image.cams:
            r.faithfulness, r.localisation = {}, None
    evidence = trustlines.build(summary, method_table(summary, ["gradcam"]))
    assert evidence.conclusion == ("no conclusion: no faithfulness or localisation numbers; add "
                                   "metrics: [road_combined] or annotations: boxes to the config "
                                   "to get them")


def _peak_record(peak_x: int) -> object:
    numbers = dict.fromkeys(("probability", "logit", "raw_max", "peak_value", "mass_left",
                             "mass_right", "mass_top", "mass_bottom", "agreement"), 0.5)
    return SimpleNamespace(class_name="cat", method="gradcam", peak_x=peak_x, peak_y=10,
                           faithfulness=None, localisation=None, channels=None, detection=None,
                           segment=None, **numbers)


def test_diff_intervals_of_a_peak_s_pixel_stay_within_the_input(monkeypatch):
    """A peak that jumped across a 96-pixel-wide input on 5 of 6 images: the interval of
    peak_x's mean change reached past the 95 pixels a peak can move."""
    import numpy as np
    from explain.diff import numbers as diffnumbers
    monkeypatch.setattr(diffnumbers, "read_map", lambda side, entry, rec: np.zeros((64, 96)))
    maps = []
    for i in range(6):
        entry = SimpleNamespace(id=f"im{i}", predicted="cat", input_size=(64, 96))
        pair = (entry, entry, _peak_record(0), _peak_record(95 if i < 5 else 0))
        maps.append(diffnumbers.compare_maps("a", "b", pair)[0])
    found = {c.name: c for c in diffnumbers.changes(
        SimpleNamespace(maps=maps, a=SimpleNamespace(summary=None)))}
    peak = found["peak_x"]
    assert round(peak.mean_change, 3) == 79.167
    assert peak.high == 95.0 and 0 < peak.low < 79  # cut at 95, the other end as drawn
    assert found["peak_y"].low is not None and found["peak_y"].mean_change == 0

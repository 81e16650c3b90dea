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


def _map_diff(image: str, a: dict, b: dict):
    from explain.diff.numbers import MapDiff
    return MapDiff(image=image, class_name="dog", method="gradcam", correlation=0.0,
                   mean_abs_diff=0.5, max_abs_diff=1.0, peak_shift=0.0, resized=False,
                   predicted=("dog", "cat"), numbers=(a, b))


def test_diff_intervals_stay_within_the_changes_a_number_can_make():
    """A retrained ResNet's gradcam maps of class dog went blank on 5 of 6 images: diff.html
    said 'peak_value mean change -0.833 [-1.26, -0.333]', an interval past the -1 a 0..1
    number can fall by (the report cuts its differences to that span; diff did not)."""
    from explain.diff.numbers import changes
    maps = [_map_diff(f"im{i}", {"peak_value": 1.0, "mass_left": 0.9, "agreement": 0.9},
                      {"peak_value": 0.0 if i < 5 else 1.0, "mass_left": 0.0 if i < 5 else 0.9,
                       "agreement": -0.9 if i < 5 else 0.9}) for i in range(6)]
    result = SimpleNamespace(maps=maps, a=SimpleNamespace(summary=None))
    found = {c.name: c for c in changes(result)}
    peak = found["peak_value"]
    assert round(peak.mean_change, 3) == -0.833
    assert peak.low == -1.0 and -0.5 < peak.high < 0  # cut at -1, the other end as drawn
    assert found["mass_left"].low == -1.0
    assert found["agreement"].low == -2.0  # agreement: -1..1, a change down to -2


def _record(peak_x: int, peak_y: int) -> SimpleNamespace:
    numbers = dict.fromkeys(("probability", "logit", "raw_max", "peak_value", "mass_left",
                             "mass_right", "mass_top", "mass_bottom", "agreement"), 0.5)
    return SimpleNamespace(class_name="cat", method="gradcam", peak_x=peak_x, peak_y=peak_y,
                           faithfulness=None, localisation=None, channels=None, detection=None,
                           segment=None,
                           **numbers)


def test_diff_gives_b_s_peak_in_a_s_pixels_when_the_input_sizes_differ(monkeypatch):
    """A ResNet run at 64 x 96 against a DeiT run at 64 x 64: diff.csv had peak_shift 84.5
    (B's peak scaled to A's pixels) beside peak_x 0 -> 56, 'change 56' (pixels of two
    sizes). B's peak is now in A's pixels there too: 56 of 64 is 84 of 96."""
    import numpy as np
    from explain.diff import numbers as diffnumbers
    maps = {"a": np.zeros((64, 96)), "b": np.zeros((64, 64))}
    monkeypatch.setattr(diffnumbers, "read_map", lambda side, entry, rec: maps[side])
    ea = SimpleNamespace(id="cat0", predicted="dog", input_size=(64, 96))
    eb = SimpleNamespace(id="cat0", predicted="dog", input_size=(64, 64))
    one, _, _ = diffnumbers.compare_maps("a", "b", (ea, eb, _record(0, 48), _record(56, 39)))
    row = one.row()
    assert one.resized and row["peak_shift"] == 84.481
    assert (row["peak_x_a"], row["peak_x_b"], row["peak_x_change"]) == (0, 84, 84)
    assert (row["peak_y_b"], row["peak_y_change"]) == (39, -9)


def test_a_timm_model_in_a_notebook_without_ipywidgets_brings_no_tqdm_warning(
        tmp_path, monkeypatch):
    """model.arch: timm:... in Jupyter (no ipywidgets): importing timm imports
    huggingface_hub, whose tqdm.auto warned 'IProgress not found. Please update jupyter and
    ipywidgets' above the run, though docs/api.md promises the text bar without a warning.
    A stand-in timm warns as that import does."""
    import sys
    import warnings
    from explain.models.factories import timm_factory
    (tmp_path / "timm.py").write_text(
        "import warnings\n"
        "warnings.warn('IProgress not found. Please update jupyter and ipywidgets.')\n"
        "def list_models():\n    return ['tiny_vit']\n"
        "def create_model(name, **kw):\n    return name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = sys.modules.pop("timm", None)
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            make = timm_factory("tiny_vit", {}, "model.arch")
        assert make() == "tiny_vit"
    finally:  # the real timm back for the tests after this one
        sys.modules.pop("timm", None)
        if real is not None:
            sys.modules["timm"] = real
    assert not [w for w in said if "IProgress" in str(w.message)]


def test_a_fast_sanity_step_is_not_said_to_take_no_time(monkeypatch):
    """A ResNet-18 at 64 x 96 on 2 images: 'sanity: one layer's step takes 0.0 s: about 1 s
    more for the other 39 layer step(s)'. A step under 0.1 s gets its own 2 digits."""
    from explain.writers import sanity as writer
    said: list[str] = []
    clock = iter([10.0, 10.025, 10.05])
    monkeypatch.setattr(writer.time, "perf_counter", lambda: next(clock))
    tick = writer._ticker(SimpleNamespace(log=said.append),
                          SimpleNamespace(update=lambda n: None), 41)
    tick()
    tick()
    assert said == ["sanity: one layer's step takes 0.025 s: about 1 s more for the other 39 "
                    "layer step(s)"]


def test_the_notebook_methods_table_names_the_method_that_failed_sanity(tmp_path):
    """explain.load(run) in Jupyter after a run with sanity.enabled: the table under 'Which
    map to trust: ... without failing sanity' had no sanity verdict, so which method failed
    was not on show (the report's trust lines name it). RandomCAM ignores the class: its
    random-logit check fails beside GradCAM's pass."""
    import torch
    import explain
    from explain.api.runview import _methods
    from conftest import IMAGES
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    torch.save(net, tmp_path / "net.pt")
    study = explain.run({"model": {"file": str(tmp_path / "net.pt")},
                         "classes": {"cat": 0, "dog": 1}, "images": [str(IMAGES / "cat.jpg")],
                         "preprocess": {"size": [32, 32]}, "target_layers": ["0"],
                         "methods": ["gradcam", "randomcam"], "metrics": [],
                         "sanity": {"enabled": True, "images": 1}},
                        out=tmp_path / "results", log=lambda line: None, progress=False)
    verdicts = {line.method: line.sanity for line in study.trust().lines}
    assert verdicts["gradcam"] == "passes" and "fails" in verdicts["randomcam"]
    shown = _methods(explain.load(study.folder))
    assert "<th>sanity</th>" in shown
    for method, verdict in verdicts.items():
        assert verdict != "not run"
        assert f"<td>{method}</td>" in shown and f"<td>{verdict}</td>" in shown

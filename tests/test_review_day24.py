"""Review of day 24's changes: what the new code said wrongly, each shown on its content."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import explain
from explain.api.inputs import OPTIONS, VIEW_OPTIONS, call_words
from test_task_records import run_a, tree  # noqa: F401 (the detector's run, a fixture)


class _Body(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                        torch.nn.Flatten(), torch.nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x))


class _Wrapped(torch.nn.Module):
    """A model kept as ``self.model``: its layers are 'model.stem', 'model.head.0', ..."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _Body()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def test_a_layer_name_holding_a_config_key_is_not_rewritten_as_an_argument():
    """'model.head' is model.head's key, and also the start of a wrapped model's layer
    'model.head.0': the call's error must name the layer the user has, not 'head.0'."""
    photo = np.full((32, 32, 3), 120, np.uint8)
    with pytest.raises(explain.ExplainError) as info:
        explain.cam(_Wrapped().eval(), photo, "model.head.O", "gradcam", classes=["a", "b"],
                    preprocess={"size": 32})
    said = str(info.value)
    assert "'model.head.O'" in said and "did you mean 'model.head.0'?" in said, said


def test_call_words_leaves_paths_and_quoted_texts_alone():
    known = {**OPTIONS, **VIEW_OPTIONS}
    assert call_words("explain.cam: cannot read /data/model.output/cat.png", known) == \
        "explain.cam: cannot read /data/model.output/cat.png"
    assert call_words("explain.cam: images: cannot read 'model.target: 3.png'", known) == \
        "explain.cam: images: cannot read 'model.target: 3.png'"
    assert call_words("layers: model.head.fc, model.stem", known) == \
        "layers: model.head.fc, model.stem"
    # what a hint says is still the call's words
    assert call_words("explain.cam: model.in_channels: bad; set model.in_channels: 1. "
                      "(model.head: softmax, model.target: logit)", known) == \
        "explain.cam: in_channels: bad; set in_channels=1. (head='softmax', target='logit')"
    assert call_words("see output.colormap.", known) == "see colormap."


def test_a_torchrun_runs_durations_do_not_call_its_model_load_a_sum():
    """hand_in adds up every process's parts but the model load (process 0's); the sanity
    checks run once, at the end: the line says which parts are sums."""
    from types import SimpleNamespace

    from explain.writers.summary import summed_over
    durations = {"cams": 12.0, "figures": 3.0, "model_load": 2.0, "total": 7.0}
    two = SimpleNamespace(processes=2, durations_s=durations)
    assert summed_over(two) == "; the parts but model load and the total summed over 2 processes"
    two.durations_s = {**durations, "sanity": 1.0}
    assert summed_over(two) == ("; the parts but model load, sanity checks and the total summed "
                                "over 2 processes")
    assert summed_over(SimpleNamespace(processes=1, durations_s=durations)) == ""


def test_diff_page_names_bs_box_beside_as_when_paired_by_box(run_a, tmp_path, capsys):
    """Two detection runs: A's both/dog-1 is B's both/dog-3 (paired by box). The page's case
    of a changed map says B's name too, as diff.csv's class_b does; by A's name alone it
    read as B's dog-1, another box."""
    import json

    from helpers import cli
    from test_task_records import reranked
    b = reranked(run_a, tmp_path / "b", {"both": {"dog-1": "dog-3", "dog-2": "dog-1",
                                                  "dog-3": "dog-2"}})
    entry = next(e for e in json.loads((b / "summary.json").read_text())["images"]
                 if e["id"] == "both")
    rec = next(r for r in entry["cams"] if r["class"] == "dog-3")
    array = b / rec["files"]["array"]
    np.save(array, np.load(array)[::-1].copy())  # B's map of that box changed
    code, err, _ = cli(capsys, "diff", run_a, b, "--out", tmp_path / "out")
    assert code == 0, err
    html = (tmp_path / "out" / "diff-a-b" / "diff.html").read_text(encoding="utf-8")
    heading = re.search(r"<h3>1\. (.*?)</h3>", html).group(1)
    assert heading == f"both · dog-1 (B: dog-3) · {rec['method']}", heading
    assert f"run B: {rec['method']} map of dog-3 (A: dog-1) on both" in html

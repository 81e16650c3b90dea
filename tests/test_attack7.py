"""The seventh attack (a review session's findings): shared model files, run folders and masks
that still asked for unbounded time or memory past the earlier checks: a module hidden in an
attribute, a tampered atlas state, one array named by many records, a label map of repeated
JPEG scans, a whole read buffer for a small file, library warnings on the terminal."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from helpers import refused, tiny_config, tiny_net
from explain.models.pickles import safe_load, structure_problem


def _hidden(forward) -> nn.Sequential:
    """tiny_net with ``forward`` as its first module's instance attribute."""
    net = tiny_net()
    net[0].__dict__["forward"] = forward
    return net


def test_a_module_hidden_in_an_attribute_is_refused(tmp_path, capsys):
    """An Identity whose instance attribute ``forward`` is a Sequential(Upsample(32768^2)):
    Module.__call__ runs it, but no check walking ``modules()`` saw it (5 KB, 12.9 GB asked
    by the real pass). A module outside the children, or a callable in the place of the
    class's own method, is refused; ordinary models are not."""
    huge = nn.Sequential(nn.Upsample(size=(32768, 32768)), nn.AdaptiveAvgPool2d(4))
    path = tmp_path / "hidden.pth"
    torch.save(_hidden(huge), path)
    loaded = safe_load(path)  # allow-listed classes only: torch's safe loader takes it
    assert structure_problem(loaded) == \
        "'0.forward' holds a torch.nn.Module outside the module's children"
    inside = _hidden(nn.Identity())
    inside[0].__dict__.pop("forward")
    inside[0].__dict__["extras"] = [{"deep": nn.Linear(2, 2)}]  # in a container too
    assert structure_problem(inside) == \
        "'0.extras' holds a torch.nn.Module outside the module's children"
    assert structure_problem(_hidden(nn.ReLU)) == \
        "'0.forward' replaces the class's own 'forward' with a type"
    partial = _hidden(functools.partial(nn.Linear, 20000, 20000))
    assert "'0.forward' holds a functools.partial" in structure_problem(partial)
    activation = nn.TransformerEncoderLayer(8, 2)  # a function as a plain attribute: fine
    assert structure_problem(activation) is None and structure_problem(tiny_net()) is None
    refused(capsys, tiny_config(tmp_path, {"file": str(path)}), "--quiet",
            needles=["hidden.pth: refused to load", "'0.forward' holds a torch.nn.Module",
                     "model.trust: true"])

"""A review of the seventeenth attack's day: the Makefile split, target_layers as numbers and
the Keras-only work in the meta pass's operation counter."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from explain.errors import ExplainError
from conftest import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_creates_the_venv_before_it_adds_the_test_extras(tmp_path):
    """'.installed-test: .installed-test' was a circular rule make dropped: on a fresh
    machine ``make test`` ran pip from a .venv nobody had created (README: 'creates .venv
    if needed')."""
    (tmp_path / "pyproject.toml").write_text("")
    outer = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")  # under `make test` itself
    env = {k: v for k, v in os.environ.items() if k not in outer}  # ('Entering directory')
    done = subprocess.run(["make", "-n", "--no-print-directory", "-f", str(REPO / "Makefile"),
                           "test", f"VENV={tmp_path / 'venv'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "Circular" not in done.stderr, done.stderr
    steps = done.stdout.splitlines()
    assert steps[0] == f"python3 -m venv {tmp_path / 'venv'}"
    assert [s for s in steps if "pip install" in s][-2:] == [
        f"{tmp_path / 'venv'}/bin/python -m pip install --quiet -e \".[test]\"",
        f"{tmp_path / 'venv'}/bin/python -m pip install --quiet --no-deps quantus==0.6.0"]


def test_one_layer_number_alone_is_a_layer_name(tmp_path):
    """``--set target_layers=1`` (YAML reads 1) and ``target_layers: 1`` were still 'Input
    should be a valid list' where ``[1]`` names the child '1'; ``--set target_layers=1.10``
    reads as 1.1 and is refused as ``[1.10]`` is."""
    from explain.cli import parse_sets
    from explain.config import load_config
    path = tmp_path / "c.yaml"
    body = "model: {file: m.pth}\nimages: [a.jpg]\nmethods: [gradcam]\n"
    path.write_text(body + "target_layers: 1\n")
    assert load_config(path).target_layers == ["1"]
    path.write_text(body + "target_layers: auto\n")
    assert load_config(path, parse_sets(["target_layers=3"])).target_layers == ["3"]
    with pytest.raises(ExplainError) as err:
        load_config(path, parse_sets(["target_layers=1.10"]))
    assert "target_layers: 1.1 is a number to YAML (1.10 reads as 1.1): write the layer " \
           "name in quotes" in str(err.value)


def test_a_chain_of_exceptions_that_loops_ends_the_out_of_memory_check():
    """``raise a from b`` after ``raise b from a`` makes a loop: the walk went round it."""
    from explain.models.factories import _out_of_memory
    first, second = ValueError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert _out_of_memory(first) is False
    second.__cause__ = MemoryError()
    assert _out_of_memory(first) is True


def test_explain_cam_takes_one_method_as_a_dict():
    """A method with its options alone, as a dict, was read as a list of its keys ('name')."""
    import explain
    from conftest import IMAGES
    from helpers import tiny_net
    maps = explain.cam(tiny_net(), IMAGES / "cat.jpg", "0", {"name": "gradcam"},
                       classes={"a": 0, "b": 1}, preprocess={"size": [32, 32]}).maps
    assert list(maps) == ["gradcam"] and set(maps["gradcam"]) == {"a", "b"}

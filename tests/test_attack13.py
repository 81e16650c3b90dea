"""The thirteenth attack (a helper's findings): a shared interrupted run folder's
``config.json``, compared with the config by ``--resume``."""

from __future__ import annotations

import json
import time

import pytest

from explain.errors import ExplainError
from explain.outputs import RunFolder, same_settings
from helpers import memory_peak, one_line


def _nested_keys(depth: int, key_chars: int, leaves: int) -> str:
    """JSON of one key of ``key_chars`` characters nested ``depth`` deep above ``leaves``
    small settings: each leaf's dotted name is depth x key_chars characters long."""
    text = "{" + ",".join(f'"{i:x}":0' for i in range(leaves)) + "}"
    for _ in range(depth):
        text = '{"' + "A" * key_chars + '":' + text + "}"
    return text


def _run_with(tmp_path, text: str) -> RunFolder:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    return RunFolder(run)


def test_resume_compares_a_shared_config_json_in_bounded_memory(tmp_path):
    """--resume flattened config.json into a dictionary of dotted names before comparing:
    a key of 8,000 characters nested 100 deep above 1,500 leaves (an 800 KB file) made 1,500
    names of 800 KB each, 2.1 GB and 15 s (a 16 MiB file: terabytes). Now both mappings are
    walked side by side and only the names shown are spelled out."""
    run = _run_with(tmp_path, _nested_keys(100, 8000, 1500))
    now = {"output": {"colormap": "jet"}, "methods": [{"name": "gradcam"}]}
    started = time.perf_counter()
    with memory_peak() as peak, pytest.raises(ExplainError) as info:
        same_settings(run, "config.json", now)
    assert time.perf_counter() - started < 5
    assert peak[0] < 64 * 1024 * 1024, peak  # the file is 0.8 MB; 2.1 GB before
    text = one_line(info, "--resume: the config differs from the interrupted run's in",
                    "(was 0, now not set)", "(+1498 more)")
    assert "A" * 81 not in text  # a dotted name is cut to 80 characters


def test_resume_refuses_a_config_json_of_empty_lists_before_parsing(tmp_path):
    """config.json was parsed whole whatever it held (16 MiB of '[],' is 5 million lists);
    now it is refused before parsing as the other record files are."""
    run = _run_with(tmp_path, '{"a": [' + "[]," * 700_000 + "[]]}")
    with memory_peak() as peak, pytest.raises(ExplainError) as info:
        same_settings(run, "config.json", {"a": 1})
    assert peak[0] < 32 * 1024 * 1024, peak
    one_line(info, "config.json", "more lists and objects than such a file holds",
             "the run folder is damaged")


def test_resume_names_the_settings_that_differ_as_before(tmp_path):
    """The walk names nested settings, missing ones and equal ones as the flat comparison
    did: dotted, in key order, values as JSON cut to 40 characters."""
    before = {"output": {"colormap": "jet", "dpi": 100}, "seed": 1, "extra": {"x": {"y": 2}},
              "same": {"k": [1, 2]}, "empty": {}}
    now = {"output": {"colormap": "turbo", "dpi": 100}, "seed": 1, "same": {"k": [1, 2]},
           "empty": {}, "long": "z" * 60}
    run = _run_with(tmp_path, json.dumps(before))
    text = one_line(pytest.raises(ExplainError, same_settings, run, "config.json", now),
                    'extra.x.y (was 2, now not set)', 'long (was not set, now "zzz')
    assert 'output.colormap (was "jet", now "turbo")' in text
    assert not any(f"{k} (was" in text for k in ("seed", "same.k", "empty", "output.dpi"))
    same_settings(run, "config.json", before)  # the same settings: no error

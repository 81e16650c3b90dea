"""Leftovers from the nineteenth session's notes, each found in use: what a reader of
summary.csv, a torchrun user or a notebook that forks saw."""

from __future__ import annotations

import pytest

from explain import trustlines
from explain.methodtable import method_table
from explain.writers.summary import csv_rows
from test_trust_section import GOOD, METRIC, synthetic


@pytest.mark.parametrize("images", [3, 8])
def test_summary_csv_leaves_beats_baselines_empty_below_the_minimum_for_a_test(images):
    """3 images and a baseline whose mean is better: the page says "mean not better than
    centre" (no test was made), and summary.csv's column was False, read as a significant
    miss. It is empty there; with 8 images (tested) it stays False."""
    few = GOOD[:images]
    summary = synthetic({"gradcam": [v + 0.2 for v in few], "layercam": few},
                        {"centre": [v + 0.05 for v in few]})
    table = method_table(summary, ["gradcam", "layercam"])
    summary.trust = trustlines.build(summary, table)
    rows = csv_rows(summary)
    lay = next(r for r in rows if r["method"] == "layercam")
    grad = next(r for r in rows if r["method"] == "gradcam")
    cell = table.columns[0].cells["layercam"]
    assert cell.not_beaten == ["centre"]  # the page's warning (too few) or a finding
    assert cell.beats_baselines is (None if images < 5 else False)  # summary.json as the CSV
    expected = None if images < 5 else False
    assert lay[f"{METRIC}.beats_baselines"] is expected
    assert grad[f"{METRIC}.beats_baselines"] is (None if images < 5 else True)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_torchrun_rank_0_alone_prints_the_interrupted_line(tmp_path, monkeypatch, capsys,
                                                                 rank):
    """torchrun stops every rank on Ctrl-C: each printed the same "interrupted; N of M images
    are finished" line (4 ranks, 4 lines). Rank 0 prints it; every rank exits 130."""
    import explain.runner
    from conftest import write_config
    from explain.cli import main
    from explain.errors import RunInterrupted

    def stopped(cfg, opts):
        raise RunInterrupted("explain: interrupted; 3 of 8 images are finished in here")
    monkeypatch.setattr(explain.runner, "run", stopped)
    config = str(write_config(tmp_path, model={"file": "m.pth"}, target_layers=["x"]))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert main([config]) == 130
    err = capsys.readouterr().err
    assert ("3 of 8 images are finished" in err) is (rank == "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: RANK means nothing
    assert main([config]) == 130
    assert "3 of 8 images are finished" in capsys.readouterr().err


def test_a_process_forked_while_explain_reads_starts_with_the_users_settings():
    """A notebook's multiprocessing forking while a reader thread was inside ``reading``: the
    child kept Pillow without its bomb bound, its warnings ignored and OpenCV silent for good
    (nobody in it would leave the block). It starts with the user's settings."""
    import ast
    import os
    import warnings

    import cv2
    from PIL import Image

    from explain.images import quiet
    bound, level = Image.MAX_IMAGE_PIXELS, cv2.utils.logging.getLogLevel()
    filters = len(warnings.filters)
    read, write = os.pipe()
    with quiet.reading():
        assert Image.MAX_IMAGE_PIXELS is None  # inside: explain's own bound holds
        pid = os.fork()
        if pid == 0:  # the child: report its settings, then leave the block as the thread would
            seen = (Image.MAX_IMAGE_PIXELS, cv2.utils.logging.getLogLevel(),
                    len(warnings.filters))
            with quiet.reading():
                inside = Image.MAX_IMAGE_PIXELS
            os.write(write, repr((seen, inside, Image.MAX_IMAGE_PIXELS)).encode())
            os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    seen, inside, after = ast.literal_eval(os.read(read, 1000).decode())
    os.close(read)
    assert seen == (bound, level, filters) and inside is None and after == bound
    assert Image.MAX_IMAGE_PIXELS == bound  # the parent's block left as always


def test_a_type_name_gets_the_article_it_is_said_with():
    """'an UserDict' in a message about a file's contents."""
    from collections import OrderedDict, UserDict

    from explain.names import a_type
    made = {name: type(name, (), {})() for name in ("NDArray", "UNet", "Unicorn", "Ugly", "EuclidNorm",
                                                    "OneCycle", "Image", "Tensor", "SSD", "Box")}
    assert [a_type(v) for v in made.values()] == [
        "an NDArray", "a UNet", "a Unicorn", "an Ugly", "a EuclidNorm", "a OneCycle", "an Image",
        "a Tensor", "an SSD", "a Box"]
    assert (a_type(UserDict()), a_type(OrderedDict()), a_type(3)) == \
        ("a UserDict", "an OrderedDict", "an int")


def test_the_runs_inside_line_quotes_a_name_with_a_comma_or_a_space(tmp_path, capsys):
    """'explain report results/' names the runs inside: 'my run, v2' and 'plain' read as
    three runs, and the example path broke at its space when pasted."""
    from explain.cli import main
    from explain.outputs import RUN_MARKER
    for name in ("my run, v2", "plain"):
        (tmp_path / name).mkdir()
        (tmp_path / name / RUN_MARKER).write_text("")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"; it holds the run(s) 'my run, v2', plain: name one, e.g. "
                        f"'{tmp_path / 'my run, v2'}'"), err


def test_a_csv_row_with_a_quoted_field_over_lines_is_named_by_its_first_line():
    """A labelled list whose path is quoted over two lines: its rows were named by their last
    line (the row after it 'line 5' when it starts on line 4); a bad quote at the end of the
    file named only the last line."""
    from explain.csvrows import CsvRows
    from explain.errors import ExplainError
    text = 'path,label\n\na.jpg,cat\n"b\nc.jpg",dog\nd.jpg,dog\n'
    rows = list(CsvRows(text, "l.csv", 100, "").rows(("path", "label")))
    assert [(line, row["path"]) for line, row in rows] == [(3, "a.jpg"), (4, "b\nc.jpg"),
                                                          (6, "d.jpg")]
    long = "y" * 140_000  # over csv's field limit, under a line's
    one = CsvRows(f'path,label\na.jpg,cat\n"{long}",dog\n', "l.csv", 100, "")
    with pytest.raises(ExplainError) as err:
        list(one.rows(("path", "label")))
    assert str(err.value).startswith("l.csv: line 3: field larger"), str(err.value)
    many = CsvRows(f'path,label\na.jpg,cat\n"b.jpg\nc\n{long}",dog\n', "l.csv", 100, "")
    with pytest.raises(ExplainError) as err:
        list(many.rows(("path", "label")))
    assert str(err.value).startswith("l.csv: lines 3-5: field larger"), str(err.value)


def test_a_dict_keyed_by_numbers_is_named_and_read_by_its_key():
    """forward returning {0: logits, 1: features}: the hint said 'model.output: 0', and
    output: 0 then read position 0 of a tuple ('not a tensor'). A key no config can name (a
    tuple) is not offered."""
    import torch

    from explain.models.heads import output_hint, select_output
    logits, feats = torch.zeros(1, 2), torch.zeros(1, 8, 4, 4)
    out = {0: logits, 1: feats}
    assert output_hint(out) == "model.output: 0"
    assert select_output(out, 0) is logits and select_output(out, 1) is feats
    assert select_output((logits, feats), 1) is feats  # a tuple: still by position
    assert output_hint({("a", 1): logits, "maps": feats}).startswith("model.output: maps")


def test_the_report_environment_is_made_once_and_prints_true_as_true():
    """The cache meant for the report's Jinja environment sat on the function every printed
    value passes through (attack 33): the environment (its templates) was made again for
    every page, and ``True`` printed right after ``1.0`` came out as 1.0."""
    from explain.writers.report import environment
    env = environment()
    assert environment() is env
    shown = env.from_string("{{ a }} {{ b }} {{ c }} {{ d }}").render(a=1.0, b=True, c=0.0, d=False)
    assert shown == "1.0 True 0.0 False"


def test_a_named_pipe_given_as_images_or_a_labelled_list_is_called_what_it_is(tmp_path):
    """A FIFO named as a labelled list said "not found: /x/fifo.csv — did you mean
    /x/fifo.csv?" (attack 33); as an image, "image not found" likewise."""
    import os

    from conftest import write_config
    from test_datasets import one_line_error
    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    base = dict(model={"file": "m.pth"}, target_layers=["x"])
    text = one_line_error(write_config(tmp_path, images=[{"labelled": str(fifo)}], **base))
    assert f"images[0].labelled: {fifo} is a named pipe (FIFO), not a file or folder " \
           f"explain reads" in text and "did you mean" not in text, text
    text = one_line_error(write_config(tmp_path, images=[str(fifo)], **base))
    assert f"images[0]: image {fifo} is a named pipe (FIFO)" in text, text
    text = one_line_error(write_config(tmp_path, images=[str(tmp_path / "gone.jpg")], **base))
    assert "images[0]: image not found: " in text


def test_the_durations_add_up_to_the_total(tmp_path):
    """'24 maps in 14.6s (model load 6.7s, CAMs 0.0s, metrics 6.2s, pictures and files
    0.0s)' left 1.7 s unnamed (newcomer 18): the rest of the run (reading images, panels and
    tables) is named, and the parts add up to the total, on the console and the page; a
    torchrun run's parts are sums, and get no rest."""
    import json
    import re

    from helpers import finished_tiny_run
    from explain.results import RunSummary
    from explain.writers.summary import OTHER, console_lines, duration_parts
    run = finished_tiny_run(tmp_path)
    summary = RunSummary.model_validate(json.loads((run / "summary.json").read_text()))
    d = summary.durations_s
    last = console_lines(summary)[-1]
    shown = dict((name, float(value)) for name, value in
                 re.findall(r"([a-zA-Z ,]+?) ([0-9.]+)s", last.split("(", 1)[1]))
    rest = d["total"] - d["model_load"] - d["cams"] - d["figures"]
    if rest >= 0.05:
        assert shown[f", {OTHER}"] == pytest.approx(rest, abs=0.051), last
    parts = dict(duration_parts(d))
    assert sum(v for k, v in parts.items() if not k.startswith("method ") and k != "total") \
        == pytest.approx(d["total"], abs=0.06)
    page = (run / "report.html").read_text()
    assert (OTHER in page) is (rest >= 0.05)
    d2 = {**d, "total": d["total"] + 5}  # a visible rest, then the same under torchrun
    assert dict(duration_parts(d2))[OTHER] == pytest.approx(rest + 5)
    assert OTHER not in dict(duration_parts(d2, processes=2))


def test_a_short_pass_is_timed_until_the_budget_and_the_fastest_counts(monkeypatch):
    """A 5 ms pass timed while the process waited for a core read 0.7 s twice, and the
    sanity estimate said 5 min for a 2 s check: a short pass is timed again (up to 5 times,
    within 0.1 s) and the fastest counts; a long one twice, as before."""
    from types import SimpleNamespace

    import torch

    from explain import pace
    plan = SimpleNamespace(timed={}, first=SimpleNamespace(tensor=torch.zeros(3, 4, 4)),
                           device=torch.device("cpu"), model=None)
    said = iter([0.7, 0.7, 0.006, 0.005, 0.009] + [0.02] * 20)
    calls = []
    monkeypatch.setattr(pace, "seconds_per_pass",
                        lambda model, x, rows: calls.append(rows) or next(said))
    assert pace.timed_pass(plan, 1) == 0.005 and 5 <= len(calls) <= pace.MAX_TIMINGS
    assert pace.timed_pass(plan, 1) == 0.005 and len(calls) <= pace.MAX_TIMINGS  # once a plan
    slow, calls[:] = iter([2.0, 1.5, 0.1]), []

    def long_pass(model, x, rows):
        import time
        t0 = time.process_time()
        while time.process_time() - t0 < 0.15:  # a pass that spends the budget by itself
            pass
        calls.append(rows)
        return next(slow)
    monkeypatch.setattr(pace, "seconds_per_pass", long_pass)
    monkeypatch.setattr(pace, "WAITING", 0.0)  # a loaded machine's CPU share: not the point
    assert pace.timed_pass(plan, 16) == 1.5 and calls == [16, 16]


def test_explain_diff_shows_settings_as_the_config_writes_them():
    """'sanity.enabled: False -> True', 'None' (Python's words) in explain diff: a config
    says false, true, null; a text stays as it is, a list is a flow list."""
    from test_newcomer18_leftovers import _diff
    assert _diff({"sanity": {"images": 1}}, {"sanity": {"enabled": True, "images": 2}}) == \
        ["sanity.enabled: false -> true"]
    assert _diff({"output": {"image_format": None}}, {"output": {"image_format": "jpg"}}) == \
        ["output.image_format: null -> jpg"]
    assert _diff({"preprocess": {"size": [64, 64]}}, {"preprocess": {"size": [64, 96]}}) == \
        ["preprocess.size: [64, 64] -> [64, 96]"]


def test_a_cpu_run_on_a_busy_machine_says_how_to_run_on_one_thread(tmp_path, monkeypatch):
    """Two torch threads on a 2-core machine with other jobs: a small ViT's sanity check took
    2 to 13 s where one thread took 2 s. The run says so on the console when the load average
    is at the cores or above (not in its records: the same config gives the same files)."""
    import json
    import os

    import torch

    from explain import pace
    from helpers import finished_tiny_run
    cpu = torch.device("cpu")
    monkeypatch.setattr(pace, "others_running", lambda: True)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.3, 3.0, 2.0))
    line = pace.busy_machine(cpu)
    assert line.startswith("note: this machine is busy (load average 3.3 on 2 cores): torch's "
                           "2 threads") and "OMP_NUM_THREADS=1" in line
    assert pace.busy_machine(torch.device("cuda")) is None
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 3.0, 2.0))
    assert pace.busy_machine(cpu) is None
    monkeypatch.setattr(os, "getloadavg", lambda: (3.3, 3.0, 2.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert pace.busy_machine(cpu) is None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    # the minute's average is high but nothing else runs now (a run just ended): no line
    monkeypatch.setattr(pace, "others_running", lambda: False)
    assert pace.busy_machine(cpu) is None
    monkeypatch.setattr(pace, "others_running", lambda: True)
    logged = []
    import explain.runner
    real = explain.runner.run

    def run_logged(cfg, opts):
        from dataclasses import replace
        return real(cfg, replace(opts, log=logged.append))
    monkeypatch.setattr(explain.runner, "run", run_logged)
    run = finished_tiny_run(tmp_path)
    assert any(x.startswith("note: this machine is busy") for x in logged), logged
    assert "machine is busy" not in (run / "summary.json").read_text()


def test_others_running_reads_the_runnable_threads_now(monkeypatch):
    """The load average's minute lags: right after a 2-thread run ends it is still 2. What runs
    now is /proc/loadavg's runnable count (this reading among them), its median of a few."""
    import builtins
    import io

    from explain import pace
    real = builtins.open
    readings = iter(["2.5 2.1 2.4 1/125 9\n"] * 3 + ["2.5 2.1 2.4 4/125 9\n"] * 2)

    def fake(path, *args, **kwargs):
        if path == "/proc/loadavg":
            return io.StringIO(next(readings))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", fake)
    monkeypatch.setattr(pace, "_own_running", lambda: 1)
    assert pace.others_running() is False  # median 1: only this process
    readings = iter(["2.5 2.1 2.4 3/125 9\n"] * 5)
    assert pace.others_running() is True
    readings = iter(["garbled\n"] * 5)
    assert pace.others_running() is False
    # this process's own threads, still spinning after a pass, are not other work
    monkeypatch.setattr(pace, "_own_running", lambda: 3)
    readings = iter(["2.5 2.1 2.4 3/125 9\n"] * 5)
    assert pace.others_running() is False
    monkeypatch.setattr(pace, "_own_running", lambda: 2)
    readings = iter(["2.5 2.1 2.4 3/125 9\n"] * 5)
    assert pace.others_running() is True


def test_the_page_lists_the_durations_in_the_consoles_order():
    """The page read 'cams 2.5 s · pictures and files 1.2 s · model load 4.3 s · metrics 16.5 s'
    (the record's order): it follows the console's, a method's own passes beside the cams."""
    from explain.writers.summary import OTHER, duration_parts
    d = {"cams": 2.5, "figures": 17.7, "model_load": 4.3, "metrics": 16.5,
         "method_scorecam": 1.0, "total": 28.6}
    assert [name for name, _ in duration_parts(d)] == [
        "model load", "cams", "method scorecam (in cams)", "metrics", "pictures and files",
        OTHER, "total"]


def test_a_panel_of_small_inputs_keeps_its_column_names_apart():
    """A 32 x 48 input's panel: its columns were as wide as the pictures, and the names ran
    into each other ('gradcamlayercam'). Each column is at least as wide as its name."""
    import numpy as np

    from explain.render import PANEL_GAP, panel, text_width
    tile = np.zeros((32, 48, 3), np.uint8)
    drawn = panel([("both", tile, [tile, tile])], ["gradcam", "layercam"], "t")
    (boxes,) = drawn.boxes
    centres = [(x0 + x1) / 2 for x0, _, x1, _ in boxes]
    names = ["original", "gradcam", "layercam"]
    for (a, b), (left, right) in zip(zip(names, names[1:]), zip(centres, centres[1:])):
        assert right - left >= (text_width(a, 13) + text_width(b, 13)) / 2, (a, b)
    big = np.zeros((224, 224, 3), np.uint8)  # pictures wider than their names: as before
    wide = panel([("x", big, [big])], ["gradcam"], "t").boxes[0]
    assert wide[1][0] - wide[0][2] == PANEL_GAP  # cells as wide as their pictures

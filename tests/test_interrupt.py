"""A run killed at any moment leaves only complete files, and --resume finishes it exactly."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
import yaml

from explain.cli import main
from conftest import IMAGES, REPO

COUNT = 10


def make_tree(course_tree):
    pics = course_tree / "pics"
    pics.mkdir()
    for i in range(COUNT):
        shutil.copy(IMAGES / ("cat.jpg", "dog.jpg", "both.jpg")[i % 3], pics / f"pic{i:02d}.jpg")
    cfg = course_tree / "configs" / "alexnet_catdog.yaml"
    data = yaml.safe_load(cfg.read_text())
    data.update(images=["../pics"], batch_size=2, preprocess={"size": [112, 112]},
                metrics=[], channels={"enabled": True, "tile_size": 16})  # small: fast
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def assert_all_files_complete(run_dir):
    for path in run_dir.rglob("*"):
        if path.suffix == ".png":
            assert cv2.imread(str(path)) is not None, path
        elif path.suffix == ".npy":
            np.load(path)
        elif path.suffix == ".csv":
            list(csv.DictReader(path.open()))
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_kill_then_resume_matches_an_uninterrupted_run(small_course_tree):
    course_tree = small_course_tree
    cfg = make_tree(course_tree)
    run_dir = course_tree / "results" / "alexnet_catdog"
    proc = subprocess.Popen([sys.executable, "-m", "explain", str(cfg), "--quiet"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # as conftest's torch
    deadline = time.time() + 300
    while time.time() < deadline and len(list((run_dir / "items").glob("*.json"))) < 4:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in (run_dir / "items").glob("*.json"))
    assert 4 <= len(finished) < COUNT and not (run_dir / "summary.json").exists()
    assert_all_files_complete(run_dir)
    (run_dir / "cams" / ".half-written.png.x.part").write_bytes(b"\x89PNG")  # as a kill mid-write leaves

    kept = run_dir / "cams" / "gradcam" / f"{finished[0]}__cat.png"
    stamp = kept.stat().st_mtime_ns
    assert main([str(cfg), "--quiet", "--resume"]) == 0
    assert kept.stat().st_mtime_ns == stamp  # finished items were not recomputed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"resumed: {len(finished)} image(s) kept" in " ".join(summary["notes"])
    assert [i["id"] for i in summary["images"]] == [f"pic{i:02d}" for i in range(COUNT)]

    other = course_tree / "fresh"
    assert main([str(cfg), "--quiet", "--out", str(other)]) == 0
    reference = other / "alexnet_catdog"
    names = sorted(p.relative_to(reference) for p in reference.rglob("*")
                   if p.is_file() and p.name not in ("summary.json", "report.html"))
    assert len(names) > COUNT * 8
    assert names == sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")
                           if p.is_file() and p.name not in ("summary.json", "report.html"))
    for rel in names:
        assert (run_dir / rel).read_bytes() == (reference / rel).read_bytes(), rel


def test_resume_needs_an_earlier_run(small_course_tree, capsys):
    course_tree = small_course_tree
    assert main([str(course_tree / "configs" / "alexnet_catdog.yaml"), "--quiet", "--resume"]) == 2
    assert "no earlier explain run" in capsys.readouterr().err


def stopping_at_item(at: int = 1):
    """A patch of RunFolder.write_bytes that raises KeyboardInterrupt (Ctrl-C) when the
    ``at``-th item file is about to be written."""
    from unittest import mock

    from explain.outputs import RunFolder
    original, items = RunFolder.write_bytes, []

    def stop(self, rel, data):
        if rel.startswith("items/"):
            items.append(rel)
            if len(items) == at:
                raise KeyboardInterrupt
        return original(self, rel, data)
    return mock.patch.object(RunFolder, "write_bytes", stop)


@pytest.mark.parametrize("at, line", [
    (0, "explain: interrupted before the run started; nothing was written"),
    (1, "explain: interrupted before the first image was finished; run the same command with "
        "--resume added to start again in {run}, or --overwrite"),
    (3, "explain: interrupted; 2 of 3 images are finished in {run}: run the same command with "
        "--resume added to complete the run"),
])
def test_an_interrupt_says_what_the_run_folder_holds(tmp_path, capsys, at, line):
    """Ctrl-C while the model loads (0), while the first image's item file is written (1),
    at the third (3): one line each, saying what is finished and how to go on; exit code 130.
    --resume then completes the run."""
    from unittest import mock

    from explain import runner
    from helpers import CAT, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pth")},
                      images=[str(CAT), str(IMAGES / "dog.jpg"), str(IMAGES / "both.jpg")],
                      target_layers=["0"], metrics=[], classes={"cat": 0, "dog": 1})
    run_dir = tmp_path / "results" / "exp"

    def stop_planning(*args, **kwargs):
        raise KeyboardInterrupt
    patch = stopping_at_item(at) if at else mock.patch.object(runner, "planned", stop_planning)
    with patch:
        assert main([str(cfg), "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == line.format(run=run_dir)
    assert run_dir.is_dir() == bool(at)
    if at:
        assert main([str(cfg), "--quiet", "--resume"]) == 0
        assert len(json.loads((run_dir / "summary.json").read_text())["images"]) == 3


@pytest.mark.parametrize("where", ["claim", "overwrite", "report", "after"])
def test_an_interrupt_at_the_edges_of_a_run(tmp_path, capsys, where):
    """Ctrl-C while the folder is claimed leaves no folder behind (the line says nothing was
    written, and whether --overwrite had deleted the earlier run); while the report is written (summary.json is there, so --resume would refuse)
    the line says the results are complete and how to write the report again; after the run,
    that the run is complete."""
    from unittest import mock

    from explain import runner
    from explain.outputs import RunFolder
    from helpers import CAT, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pth")}, images=[str(CAT)],
                      target_layers=["0"], metrics=[], classes={"cat": 0, "dog": 1})
    run_dir, original = tmp_path / "results" / "exp", RunFolder.write_bytes

    if where == "overwrite":  # an earlier run that --overwrite deletes before the claim
        assert main([str(cfg), "--quiet"]) == 0
        capsys.readouterr()

    def stop(self, rel, data):
        if rel == {"report": "report.html"}.get(where, "config.json"):
            raise KeyboardInterrupt
        return original(self, rel, data)

    def stop_lines(summary):
        raise KeyboardInterrupt
    patch = mock.patch.object(runner, "console_lines", stop_lines) if where == "after" else \
        mock.patch.object(RunFolder, "write_bytes", stop)
    with patch:
        assert main([str(cfg), "--quiet", *(["--overwrite"] if where == "overwrite" else [])]) == 130
    err = capsys.readouterr().err.strip()
    if where in ("claim", "overwrite"):
        assert err == "explain: interrupted before the run started; nothing was written" + (
            ", and --overwrite had deleted the earlier run" if where == "overwrite" else "")
        assert list((tmp_path / "results").iterdir()) == []
    elif where == "report":
        assert err == (f"explain: interrupted while the report was written; the results are "
                       f"complete in {run_dir}: 'explain report {run_dir}' writes the report again")
        assert main(["report", str(run_dir)]) == 0 and (run_dir / "report.html").is_file()
    else:
        assert err == f"explain: interrupted; the run is complete in {run_dir}"
        assert (run_dir / "summary.json").is_file() and (run_dir / "report.html").is_file()


def test_an_interrupt_before_the_first_image_says_overwrite_deleted_the_earlier_run(
        tmp_path, capsys):
    """--overwrite deletes the earlier run at the claim: Ctrl-C before the first image is
    finished says so (the folder now holds the new, empty run) and says to run again with
    --resume instead of --overwrite (the two exclude each other), which completes it."""
    from helpers import CAT, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pth")}, images=[str(CAT)],
                      target_layers=["0"], metrics=[], classes={"cat": 0, "dog": 1})
    run_dir = tmp_path / "results" / "exp"
    assert main([str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    with stopping_at_item():
        assert main([str(cfg), "--quiet", "--overwrite"]) == 130
    assert capsys.readouterr().err.strip() == (
        f"explain: interrupted before the first image was finished (--overwrite had deleted the "
        f"earlier run); run it again with --resume instead of --overwrite to start again in "
        f"{run_dir}")  # --resume added beside --overwrite would be refused
    assert not (run_dir / "summary.json").exists() and not (run_dir / "items").exists()
    assert main([str(cfg), "--quiet", "--resume"]) == 0
    assert len(json.loads((run_dir / "summary.json").read_text())["images"]) == 1


@pytest.mark.parametrize("at", [1, 2])
def test_an_interrupted_second_run_is_resumed_by_its_own_folder(tmp_path, capsys, at):
    """A finished run holds results/exp, so the next run writes exp-2: when that one is
    interrupted the line names the flags that resume exp-2 (--overwrite, which would delete
    exp, is not offered), a bare --resume on the finished exp points to exp-2, and the
    named flags complete exp-2 while exp stays as it was."""
    from helpers import CAT, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pth")},
                      images=[str(CAT), str(IMAGES / "dog.jpg")], target_layers=["0"],
                      metrics=[], classes={"cat": 0, "dog": 1})
    first, second = tmp_path / "results" / "exp", tmp_path / "results" / "exp-2"
    assert main([str(cfg), "--quiet"]) == 0
    stamp = (first / "summary.json").read_bytes()
    capsys.readouterr()
    with stopping_at_item(at):
        assert main([str(cfg), "--quiet"]) == 130
    line = capsys.readouterr().err.strip()
    go_on = "run the same command with --resume --set name=exp-2 added"
    assert line == ({1: f"explain: interrupted before the first image was finished; {go_on} "
                        f"to start again in {second}",
                     2: f"explain: interrupted; 1 of 2 images are finished in {second}: "
                        f"{go_on} to complete the run"}[at])
    assert main([str(cfg), "--quiet", "--resume"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"the interrupted run {second} goes on with --resume --set name=exp-2")
    assert main([str(cfg), "--quiet", "--resume", "--set", "name=exp-2"]) == 0
    assert [i["id"] for i in json.loads((second / "summary.json").read_text())["images"]] == \
        ["cat", "dog"]
    assert (first / "summary.json").read_bytes() == stamp
    assert sorted(p.name for p in first.parent.iterdir()) == ["exp", "exp-2"]


def test_the_flags_that_resume_a_numbered_run_work_when_pasted(tmp_path):
    """resume_flags quotes a folder name YAML would read as a number or a date, a run name
    at the length limit still resumes its <name>-2, and a rank's failure line (torchrun)
    names the numbered folder too."""
    from types import SimpleNamespace

    from explain import runner
    from explain.config import parse_value
    from explain.config.schema import Config
    from explain.outputs import RunFolder, resume_flags
    assert resume_flags("exp", "exp") == "--resume"
    assert resume_flags("exp", "exp-2") == "--resume --set name=exp-2"
    for name, folder in (("1.0e", "1.0e-2"), ("2024-06", "2024-06-10")):
        flags = resume_flags(name, folder)
        assert flags == f"--resume --set 'name=\"{folder}\"'"
        assert parse_value(flags.split("name=", 1)[1].strip("'")) == folder  # as --set reads it
    long = "a" * 64
    base = {"model": {"file": "m.pth"}, "images": ["a.jpg"], "target_layers": ["x"],
            "methods": ["gradcam"]}
    assert Config.model_validate({**base, "name": f"{long}-12"}).run_name == f"{long}-12"
    with pytest.raises(Exception):
        Config.model_validate({**base, "name": "a" * 65})
    run_dir = tmp_path / "exp-2"
    (run_dir / "items").mkdir(parents=True)
    (run_dir / "items" / "pic00.json").write_text("{}")
    lines = []
    ranks = SimpleNamespace(world=2, lead=True)
    for overwrite, go_on in ((False, "run the same command with --resume --set name=exp-2 added"),
                             (True, "run it again with --resume --set name=exp-2 instead of "
                                    "--overwrite")):
        opts = SimpleNamespace(log=lines.append, resume=False, overwrite=overwrite)
        runner._failed(RunFolder(run_dir), None, opts, ranks, "exp")
        assert lines[-1] == (f"explain: the finished images are kept in {run_dir}; {go_on} to "
                             f"complete the run")


def test_only_ascii_numbered_unfinished_runs_are_pointed_to(tmp_path):
    from explain.outputs import RUN_MARKER, unfinished_runs
    for name in ("exp-3", "exp-²", "exp-x", "exp-12"):
        (tmp_path / name).mkdir()
        (tmp_path / name / RUN_MARKER).write_text("written by explain\n")
    (tmp_path / "exp-12" / "summary.json").write_text("{}")  # finished
    (tmp_path / "exp-4").write_text("a file")
    assert unfinished_runs(tmp_path, "exp") == [tmp_path / "exp-3"]


def test_the_interrupt_line_escapes_what_the_terminal_would_run(tmp_path, capsys):
    """The line names the run's folder, which a shared config chooses: an escape sequence in
    it is printed escaped, as every other line is."""
    from helpers import CAT, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pth")}, images=[str(CAT)],
                      target_layers=["0"], metrics=[], classes={"cat": 0, "dog": 1})
    with stopping_at_item():
        assert main([str(cfg), "--quiet", "--out", str(tmp_path / "out\x1b]0;owned\x07")]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first image" in err
    assert "\x1b" not in err and "\x07" not in err


def test_sigterm_ends_a_run_as_ctrl_c_does_with_exit_code_143(tmp_path, capsys):
    """kill (SIGTERM: a job scheduler's stop) ended a run without a word; as a program explain
    stops as on Ctrl-C: the line says what is finished and how to go on, exit code 143, and
    --resume completes the run."""
    from unittest import mock

    from explain import cli
    from explain.outputs import RunFolder
    from helpers import CAT, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pth")},
                      images=[str(CAT), str(IMAGES / "dog.jpg"), str(IMAGES / "both.jpg")],
                      target_layers=["0"], metrics=[], classes={"cat": 0, "dog": 1},
                      batch_size=1)
    run_dir, original, items = tmp_path / "results" / "exp", RunFolder.write_bytes, []

    def terminate(self, rel, data):
        if rel.startswith("items/"):
            items.append(rel)
            if len(items) == 3:
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, rel, data)
    before = signal.getsignal(signal.SIGTERM)
    try:
        cli.stop_on_terminate()  # as main() does when run as the program
        with mock.patch.object(RunFolder, "write_bytes", terminate):
            assert main([str(cfg), "--quiet"]) == 143
    finally:
        signal.signal(signal.SIGTERM, before)
        cli._TERMINATED.clear()
    assert capsys.readouterr().err.strip() == (
        f"explain: interrupted; 2 of 3 images are finished in {run_dir}: run the same command "
        f"with --resume added to complete the run")
    assert main([str(cfg), "--quiet", "--resume"]) == 0

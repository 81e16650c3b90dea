"""torchrun: two gloo processes on the CPU write what one process writes (a labelled dataset:
dataset/ mean maps summed over both ranks); a lost rank leaves its finished images and --resume
completes the run; a failing rank stops every rank."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import IMAGES, REPO, make_small_alexnet
from explain.cli import main
from explain.distributed import Ranks, drop_kept, join

COUNT = 12
TIMEOUT = 240  # seconds for one torchrun; a hang fails the test instead of stalling the suite
# summary.json fields a run may change
VARIES = ("durations_s", "device", "output_dir", "processes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 ARGS`` in its own process group, killed on timeout."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(free_port()), *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # torchrun stops its workers (own sessions) first
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} did not end within {TIMEOUT} s")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@contextmanager
def one_thread() -> Iterator[None]:
    """Runs in this process with one torch thread, as torchrun's processes get (OMP_NUM_THREADS
    =1): the thread count can change the last bits of a convolution, hence of a map."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A labelled tree of 12 photos (copies and mirror images of images/: pics/cat/pic00..05,
    pics/dog/pic06..11), the small AlexNet saved whole, a config at 64 x 64 px, and
    results/single: the run of one process."""
    folder = tmp_path_factory.mktemp("torchrun")
    for i in range(COUNT):
        img = cv2.imread(str(IMAGES / ("cat.jpg", "dog.jpg", "both.jpg")[i % 3]))
        label = folder / "pics" / ("cat" if i < COUNT // 2 else "dog")
        label.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(label / f"pic{i:02d}.jpg"), img[:, ::-1] if (i // 3) % 2 else img)
    torch.save(make_small_alexnet(), folder / "net.pth")
    config = {"model": {"file": "net.pth"}, "classes": {"cat": 0, "dog": 1},
              "images": [{"labelled": "pics"}], "preprocess": {"size": [64, 64]},
              "target_layers": ["features.10"], "methods": ["gradcam", "layercam"],
              "batch_size": 1, "device": "cpu",
              # the channel atlas too: its streamed heaps and sums merge across the ranks
              "channels": {"enabled": True, "atlas": {"enabled": True, "top_n": 2}},
              "output": {"save_arrays": True}, "metrics": []}
    (folder / "exp.yaml").write_text(yaml.safe_dump(config))
    with one_thread():
        assert main([str(folder / "exp.yaml"), "--quiet", "--out", str(folder / "single")]) == 0
    return folder


def summary_of(run_dir: Path, drop_notes: str = "") -> dict:
    data = json.loads((run_dir / "summary.json").read_text())
    for key in VARIES:
        data.pop(key)
    data["notes"] = [n for n in data["notes"] if not (drop_notes and n.startswith(drop_notes))]
    return data


def assert_same_run(reference: Path, run_dir: Path, drop_notes: str = "") -> None:
    """Every file byte-identical but summary.json and report.html (timings, device, folder);
    summary.json equal without those fields."""
    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob("*")
                      if p.is_file() and p.name not in ("summary.json", "report.html"))
    names = files(reference)
    assert len([n for n in names if n.parts[0] == "cams"]) == COUNT * 2 * 2 * 2  # .png, .npy
    assert any(n.parts[:2] == ("dataset", "mean") for n in names)
    assert names == files(run_dir)
    for rel in names:
        assert (run_dir / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert summary_of(run_dir, drop_notes) == summary_of(reference)


def broken_config(tree: Path) -> Path:
    """broken.yaml: the tree's pictures with pic09 replaced by a PNG header over garbage (found
    fine, fails to decode), gradcam only, no channel views."""
    pictures = sorted((tree / "pics").rglob("*.jpg"))
    broken = tree / "pic09.png"
    ok, buf = cv2.imencode(".png", np.zeros((80, 80, 3), np.uint8))
    data = bytearray(buf.tobytes())
    start = data.find(b"IDAT") + 4
    data[start:start + 36] = bytes(36)
    broken.write_bytes(bytes(data))
    listed = [str(broken) if p.stem == "pic09" else str(p) for p in pictures]
    config = yaml.safe_load((tree / "exp.yaml").read_text())
    config.update(name="broken", images=listed, methods=["gradcam"], channels={"enabled": False})
    (tree / "broken.yaml").write_text(yaml.safe_dump(config))
    return broken


# One torchrun for every multi-process check (a torchrun start costs seconds): the two
# processes run explain ("two": the plain run), then RANKS_SCRIPT, then explain again
# ("broken": a corrupt image on rank 1; "lost": rank 1 dies after its first batch, which ends
# torchrun). Every later process group gets a store of its own on a fresh port (torchrun's
# agent store keeps the first group's keys). Each rank writes the exit code and what an
# explain run printed to stderr as <step><rank>.txt.
RUNS_SCRIPT = """
import contextlib, io, os, sys
from pathlib import Path
from explain.cli import main
from explain.distributed import CRASH_ENV
tree, ports = Path(sys.argv[2]), sys.argv[3:]

def explain_run(step, config):
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        code = main([str(tree / config), "--quiet", "--out", str(tree / step)])
    Path(sys.argv[1], f"{step}{os.environ['RANK']}.txt").write_text(f"{code}\\n{said.getvalue()}")

def fresh_store():
    os.environ.update(TORCHELASTIC_USE_AGENT_STORE="False", MASTER_PORT=ports.pop())
"""
LATER_RUNS = """
fresh_store()
explain_run("broken", "broken.yaml")
fresh_store()
os.environ[CRASH_ENV] = "1"
explain_run("lost", "exp.yaml")
"""


@pytest.fixture(scope="module")
def two_ranks(tree, tmp_path_factory) -> dict:
    """Runs the one torchrun (see RUNS_SCRIPT). Returns torchrun's exit code, the folder of the
    ranks' files and the broken image."""
    broken = broken_config(tree)
    said = tmp_path_factory.mktemp("ranks")
    script = (RUNS_SCRIPT + 'explain_run("two", "exp.yaml")\nfresh_store()\n' + RANKS_SCRIPT
              + LATER_RUNS)
    (said / "ranks.py").write_text(script)
    done = torchrun([str(said / "ranks.py"), str(said), str(tree),
                     *(str(free_port()) for _ in range(3))])
    return {"done": done, "said": said, "broken": broken}


def step(two_ranks: dict, name: str, rank: int) -> tuple[int, str]:
    """(exit code, stderr) of run ``name`` on ``rank``; a rank that died wrote nothing."""
    path = two_ranks["said"] / f"{name}{rank}.txt"
    assert path.exists(), (name, rank, two_ranks["done"].stderr[-3000:])
    code, _, err = path.read_text().partition("\n")
    return int(code), err


def test_two_processes_write_what_one_process_writes(tree, two_ranks):
    said = [step(two_ranks, "two", rank) for rank in (0, 1)]
    assert [code for code, _ in said] == [0, 0], said
    run_dir = tree / "two" / "exp"
    assert_same_run(tree / "single" / "exp", run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["device"] == "cpu (2 processes)" and summary["processes"] == 2
    # the CAMs' and pictures' seconds are both ranks' added up; the total is the run's
    from explain.results import RunSummary
    from explain.writers.summary import console_lines
    said_last = console_lines(RunSummary.model_validate(summary))[-1]
    assert said_last.endswith("; the parts but model load and the total summed over 2 "
                              "processes)"), said_last
    page = (run_dir / "report.html").read_text()
    assert "model load and the total summed over 2 processes</td>" in page
    assert "summed over" not in (tree / "single" / "exp" / "report.html").read_text()
    assert summary["atlas"]["images"] == COUNT and summary["atlas"]["files"]["regions_csv"]
    assert "".join(err for _, err in said).count("explain: exp ->") == 1  # rank 0 only


def test_a_lost_rank_leaves_its_images_and_resume_completes_the_run(tree, two_ranks):
    assert two_ranks["done"].returncode != 0
    assert not (two_ranks["said"] / "lost1.txt").exists()  # rank 1 died in the run
    run_dir = tree / "lost" / "exp"
    finished = sorted(p.stem for p in (run_dir / "items").glob("*.json"))
    # rank 1 explains pic01, pic03, ... one per batch, and died after its first batch
    assert [f for f in finished if int(f[3:]) % 2] == ["pic01"]
    assert not (run_dir / "summary.json").exists()
    for path in run_dir.rglob("*.png"):
        assert cv2.imread(str(path)) is not None, path

    with one_thread():
        assert main([str(tree / "exp.yaml"), "--quiet", "--out", str(tree / "lost"),
                     "--resume"]) == 0
    notes = json.loads((run_dir / "summary.json").read_text())["notes"]
    assert f"resumed: {len(finished)} image(s) kept from the interrupted run, " \
           f"{COUNT - len(finished)} computed now" in notes
    assert_same_run(tree / "single" / "exp", run_dir, drop_notes="resumed:")


def test_an_error_in_one_ranks_batches_stops_every_rank_and_keeps_the_finished_images(
        tree, two_ranks):
    said = [step(two_ranks, "broken", rank) for rank in (0, 1)]
    assert all(code != 0 for code, _ in said), said
    stderr = "".join(err for _, err in said)
    error = (f"explain: error: {tree / 'broken.yaml'}: images: {two_ranks['broken']}: corrupt "
             f"or unsupported image data (on rank 1 of 2)")
    assert stderr.count(error) == 2, stderr  # both ranks, the same line
    run_dir = tree / "broken" / "broken"
    finished = sorted(p.stem for p in (run_dir / "items").glob("*.json"))
    assert finished == [f"pic{i:02d}" for i in range(COUNT) if i % 2 == 0 or i < 9]
    assert not (run_dir / "summary.json").exists()
    assert "the finished images are kept" in stderr


RANKS_SCRIPT = """
import sys
from pathlib import Path
from explain.distributed import join
from explain.errors import ExplainError

ranks = join("cpu")
lines = [f"share: {ranks.shard(list(range(5)))}"]
def fail(rank, exc):
    if ranks.rank == rank:
        raise exc
for step, rank, exc in (("checks", 1, ExplainError("model: cannot read net.pth")),
                        ("os", 1, FileNotFoundError(2, "No such file or directory", "x.png")),
                        ("bug", 0, ZeroDivisionError("division by zero"))):
    try:
        with ranks.together():
            fail(rank, exc)
        lines.append(f"{step}: passed")
    except ExplainError as error:
        lines.append(f"{step}: {error}")
try:
    ranks.from_lead(lambda: fail(0, ExplainError("--resume: results/exp is already finished")))
except ExplainError as error:
    lines.append(f"claim: {error}")
lines.append(f"lead says: {ranks.from_lead(lambda: 'results/exp-2')}")
try:
    ranks.same("images", ["pic00", "pic01"][:2 - ranks.rank])
except ExplainError as error:
    lines.append(str(error))
with ranks.together():
    pass
lines.append("all passed")
ranks.close()
Path(sys.argv[1], f"rank{ranks.rank}.txt").write_text("\\n".join(lines))
"""


def test_a_failing_rank_stops_every_rank_with_the_same_error(two_ranks):
    said = [(two_ranks["said"] / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert said[0][0] == "share: [0, 2, 4]" and said[1][0] == "share: [1, 3]"
    assert said[0][1:] == said[1][1:] == [
        "checks: model: cannot read net.pth (on rank 1 of 2)",
        "os: x.png: No such file or directory (on rank 1 of 2)",
        "bug: ZeroDivisionError: division by zero (on rank 0 of 2)",
        "claim: --resume: results/exp is already finished",
        "lead says: results/exp-2",
        "torchrun: rank 0 and rank 1 find different images; every node must see the same files",
        "all passed"]


def test_without_torchrun_nothing_changes(monkeypatch):
    import torch.distributed as dist
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ranks = join("auto")
    assert (ranks.rank, ranks.world, ranks.lead) == (0, 1, True)
    assert not dist.is_initialized()
    assert ranks.shard([1, 2, 3]) == [1, 2, 3]
    assert ranks.from_lead(lambda: "x") == "x"
    with pytest.raises(ValueError):  # a single process raises its own exception, unchanged
        with ranks.together():
            raise ValueError("mine")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert join("auto").world == 1 and not dist.is_initialized()


def test_the_metric_counts_of_every_rank_reach_rank_0():
    from explain.writers.metrics import MetricsWriter
    mine, theirs = MetricsWriter(), MetricsWriter()
    mine.same, mine.no_raw = {"eigencam": [3, 6]}, {"eigencam"}
    theirs.same, theirs.no_raw = {"eigencam": [2, 6], "gradcam": [0, 6]}, {"scorecam"}
    mine.merge(theirs.state())
    assert mine.same == {"eigencam": [5, 12], "gradcam": [0, 6]}
    assert mine.no_raw == {"eigencam", "scorecam"}


def test_the_mean_map_sums_of_every_rank_add_up_to_one_process_sums():
    from explain.datasets import MeanSums
    from explain.writers.dataset import DatasetWriter
    maps = [(("cat", "gradcam", "correct" if i % 3 else "wrong"), np.full((6, 6), i / 7))
            for i in range(7)]
    alone, ranks = MeanSums(), [DatasetWriter(), DatasetWriter()]
    for i, (key, cam) in enumerate(maps):
        alone.add(key, cam)
        alone.cover([f"pic{i}"])
        ranks[i % 2].sums.add(key, cam)
        ranks[i % 2].sums.cover([f"pic{i}"])
    ranks[0].merge(ranks[1].state())
    assert ranks[0].sums.to_bytes([]) == alone.to_bytes([])
    assert Ranks().gather("x") == ["x"]


def test_ranks_but_0_forget_the_kept_images_sums():
    from explain.writers.dataset import DatasetWriter
    writer = DatasetWriter()
    writer.sums.add(("cat", "gradcam", "correct"), np.ones((6, 6)))
    writer.sums.cover(["pic0"])
    drop_kept(Ranks(rank=0, world=2), [writer])  # rank 0 counts the kept images
    assert writer.sums.covered == 1
    drop_kept(Ranks(rank=1, world=2), [writer])
    assert (writer.sums.covered, writer.sums.sums) == (0, {})

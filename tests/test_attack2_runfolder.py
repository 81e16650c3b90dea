"""The second attack on the run folder (issue 25): --overwrite loses nothing when the new run
fails early, a live run's folder is locked, a run folder is read only from inside itself, and a
damaged one is one line naming the file."""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import IMAGES, REPO, make_small_alexnet, write_config
from helpers import explain_error, one_line, refused
from explain.cli import main
from explain.config import load_config
from explain.errors import ExplainError
from explain.runner import RunOptions, run

QUIET = dict(progress=False, log=lambda _: None)
LOCK = ".explain-lock"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder, by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def small_config(folder: Path, model: Path, name: str = "exp", **fields) -> Path:
    fields.setdefault("images", [str(IMAGES / "cat.jpg"), str(IMAGES / "dog.jpg")])
    return write_config(folder, name, model={"file": str(model)}, target_layers=["features.10"],
                        preprocess={"size": [64, 64]}, **fields)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-image, two-method run: (its config, its folder)."""
    tmp = tmp_path_factory.mktemp("attack2")
    torch.save(make_small_alexnet(), tmp / "small.pth")
    cfg = small_config(tmp, tmp / "small.pth", methods=["gradcam", "eigencam"])
    run(load_config(cfg), RunOptions(**QUIET))
    return cfg, tmp / "results" / "exp"


def copy_run(finished, tmp_path: Path, unfinished: bool = False) -> Path:
    """The finished run copied to tmp_path/results/exp (without summary.json: interrupted)."""
    target = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], target)
    if unfinished:
        (target / "summary.json").unlink()
    return target


# ---- 1. --overwrite: every input that can fail is read before the earlier run is deleted ----

def _bad_input(tmp: Path, case: str) -> dict:
    """Config fields that make a run fail on one of its inputs."""
    if case == "reference map":
        refs = tmp / "refs"
        refs.mkdir()
        np.save(refs / "cat__cat__gradcam.npy", np.zeros((3, 8, 8), np.float32))
        return {"compare": {"enabled": True, "reference_dir": str(refs)}}
    rows = {"unknown class": "cat.jpg,tiger,0,0,10,10",
            "box outside": "cat.jpg,cat,0,0,900,900",
            "huge field": "cat.jpg,cat,0,0,10," + "1" * (200 * 1024)}[case]
    (tmp / "boxes.csv").write_text(f"image,class,x0,y0,x1,y1\n{rows}\n")
    return {"annotations": {"file": str(tmp / "boxes.csv")}}


@pytest.mark.parametrize("case, message", [
    ("unknown class", "class 'tiger' is not a named class"),
    ("box outside", "lies outside the 451x300 image"),
    ("reference map", "expected a 2-D numeric map"),
    ("huge field", None),  # the input bounds give it its own line; here: nothing is lost
])
def test_overwrite_keeps_the_earlier_run_when_an_input_fails(finished, tmp_path, case, message):
    old = copy_run(finished, tmp_path)
    before = snapshot(old)
    cfg = small_config(tmp_path, finished[0].parent / "small.pth", methods=["gradcam", "eigencam"],
                       **_bad_input(tmp_path, case))
    with pytest.raises(Exception) as err:
        run(load_config(cfg), RunOptions(overwrite=True, **QUIET))
    if message:
        assert isinstance(err.value, ExplainError) and message in str(err.value)
    assert snapshot(old) == before  # byte for byte
    assert sorted(p.name for p in old.parent.iterdir()) == ["exp"]


# ---- 2. a live run's folder is locked -------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from explain.outputs import claim_run_dir
run = claim_run_dir(Path(sys.argv[1]), "exp")  # as a run claims its folder
run.write_bytes("config.json", Path(sys.argv[2]).read_bytes())
print("claimed", flush=True)
time.sleep(120)
"""


def test_overwrite_and_resume_refuse_a_live_runs_folder(finished, tmp_path, capsys):
    """A second process claims results/exp as a run does and stays alive: --overwrite and
    --resume from this process are refused; once it is killed, its lock is stale."""
    cfg = small_config(tmp_path, finished[0].parent / "small.pth", methods=["gradcam", "eigencam"])
    run_dir = tmp_path / "results" / "exp"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir.parent),
                               str(finished[1] / "config.json")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        before = snapshot(run_dir)
        for flag in ("--overwrite", "--resume"):
            refused(capsys, cfg, flag, "--quiet", needles=[
                f"{flag}: {run_dir} is in use by a running explain (pid {holder.pid})"])
        assert snapshot(run_dir) == before and (run_dir / LOCK).exists()
    finally:
        holder.kill()  # as a crash or kill -9 ends a run: its lock stays behind
        holder.wait()
    assert json.loads((run_dir / LOCK).read_text())["pid"] == holder.pid
    assert main([str(cfg), "--overwrite", "--quiet"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["images"]) == 2 and not (run_dir / LOCK).exists()
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["exp"]


def _plant(folder: Path, pid: int, start: str) -> None:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (folder / LOCK).write_text(json.dumps({"pid": pid, "start": start, "boot": boot,
                                           "host": socket.gethostname()}))


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def test_a_stale_lock_is_taken_over_a_live_one_is_not(finished, tmp_path, capsys):
    from explain.outputs import RunLock
    old = copy_run(finished, tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _plant(old, gone.pid, "1")  # a killed run: its pid is dead
    RunLock.take(old, "--resume").release()
    assert not (old / LOCK).exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _plant(old, sleeper.pid, "1")  # the pid is alive, but another process (reused pid)
        RunLock.take(old, "--resume").release()
        _plant(old, sleeper.pid, _start_time(sleeper.pid))  # that very process: refused
        before = snapshot(old)
        cfg = small_config(tmp_path, finished[0].parent / "small.pth",
                           methods=["gradcam", "eigencam"])
        refused(capsys, cfg, "--overwrite", "--quiet",
                needles=[f"is in use by a running explain (pid {sleeper.pid})"])
        assert snapshot(old) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    # a race between two claims in one process: the second asks while the first holds it
    first = RunLock.take(old, "--overwrite")
    with pytest.raises(ExplainError, match=f"in use by a running explain \\(pid {os.getpid()}\\)"):
        RunLock.take(old, "--overwrite")
    first.release()
    assert not (old / LOCK).exists()


# ---- 3. a run folder is read from inside itself only ----------------------------------------

def _secret_png(tmp: Path) -> Path:
    noise = np.random.default_rng(7).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = tmp / "private" / "secret.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), noise)
    return path


def test_report_reads_no_photo_from_a_stored_path_and_links_no_planted_link(finished, tmp_path,
                                                                            capsys):
    copy = copy_run(finished, tmp_path)
    secret = _secret_png(tmp_path)
    data = json.loads((copy / "summary.json").read_text())
    data["images"][0]["path"] = str(secret)  # cat's entry now names another picture
    (copy / "summary.json").write_text(json.dumps(data))
    (copy / "report" / "photos" / "cat.jpg").unlink()
    planted = copy / "cams" / "gradcam" / "dog__dog.png"
    planted.unlink()
    planted.symlink_to(secret)
    assert main(["report", str(copy)]) == 0
    assert not (copy / "report" / "photos" / "cat.jpg").exists()
    html = (copy / "report.html").read_text()
    card = html[html.index('id="img-cat"'):html.index('id="img-dog"')]
    assert "photo not available" in card
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert "cams/gradcam/dog__dog.png" not in links and "cams/gradcam/dog__cat.png" in links
    assert not any("secret" in link or link.startswith(("/", "..")) for link in links)
    assert "1 map picture(s) listed in the summary are missing" in html


def test_resume_takes_photos_from_the_config_not_the_item_file(finished, tmp_path):
    copy = copy_run(finished, tmp_path, unfinished=True)
    item = json.loads((copy / "items" / "cat.json").read_text())
    item["entry"]["path"] = str(IMAGES / "both.jpg")
    (copy / "items" / "cat.json").write_text(json.dumps(item))
    (copy / "panels" / "cat.png").unlink()
    assert main([finished[0].as_posix(), "--resume", "--quiet", "--out", str(copy.parent)]) == 0
    assert (copy / "panels" / "cat.png").read_bytes() == \
        (finished[1] / "panels" / "cat.png").read_bytes()
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["images"][0]["path"] == str(IMAGES / "cat.jpg")


# ---- 7. a damaged run folder is one line naming the file ------------------------------------

def _set(data: dict, keys: str, value) -> None:
    *path, last = keys.split("/")
    for key in path:
        data = data[int(key)] if isinstance(data, list) else data[key]
    data[last] = value


@pytest.mark.parametrize("case", [
    ("config/output/colormap", "zzz", "colormap"),
    ("config/report/page_size", 0, "page_size"),
    ("config/report/page_size", "abc", "page_size"),
    ("config/report/weak_below", "abc", "weak_below"),
    ("config/model", [1], "config.model"),
    ("config/output", "x", "config.output"),
    ("images/0/input_size", [0, 0], "input_size"),
    ("images/0/input_size", [1], "input_size"),
    ("compare", {"per_method": {"gradcam": 5}}, "per_method"),
    ("images/0/cams/0/file", "../../outside.png", "refusing to read '../../outside.png'"),
    ("files/atlas_page", "//attacker.example/phish.html", "not a plain relative path"),
    ("files/atlas_page", "../beside.html", "not a plain relative path"),
    ("images/0/cams/0/peak_x", 10 ** 400, "an integer of 401 digits"),
    ("nested", None, "nested too deeply"),
])
def test_report_on_a_tampered_summary_is_one_line(finished, tmp_path, capsys, case):
    keys, value, says = case
    copy = copy_run(finished, tmp_path)
    if keys == "nested":
        (copy / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    else:
        data = json.loads((copy / "summary.json").read_text())
        _set(data, keys, value)
        (copy / "summary.json").write_text(json.dumps(data))
    err = refused(capsys, "report", copy, needles=[says])
    assert "summary.json" in err or "refusing to read" in err


def _drop_eigencam_of_cat(copy: Path) -> None:
    item = json.loads((copy / "items" / "cat.json").read_text())
    item["entry"]["cams"] = [r for r in item["entry"]["cams"]
                             if (r["class"], r["method"]) != ("cat", "eigencam")]
    (copy / "items" / "cat.json").write_text(json.dumps(item))


@pytest.mark.parametrize("case", [
    (lambda c: (c / "cams" / "gradcam" / "cat__cat.png").unlink(), "items/cat.json",
     "its map file 'cams/gradcam/cat__cat.png' is missing"),
    (_drop_eigencam_of_cat, "items/cat.json", "0 maps of class 'cat' by eigencam"),
    (lambda c: (c / "config.json").write_text("{\"a\":" * 100_000 + "1" + "}" * 100_000),
     "config.json", "nested too deeply"),
    (lambda c: (c / "items" / "cat.json").write_text("[" * 100_000 + "]" * 100_000),
     "items/cat.json", "nested too deeply"),
])
def test_resume_on_a_damaged_folder_is_one_line(finished, tmp_path, capsys, case):
    damage, names, says = case
    copy = copy_run(finished, tmp_path, unfinished=True)
    damage(copy)
    refused(capsys, finished[0], "--resume", "--quiet", "--out", copy.parent,
            needles=[str(copy / names), says])
    assert not (copy / LOCK).exists()  # the lock is given back on an error too


def test_resume_with_a_bogus_mean_map_state_starts_the_means_again(finished, tmp_path):
    tmp = tmp_path / "labelled"
    tmp.mkdir()
    for name in ("cat.jpg", "dog.jpg"):
        shutil.copy(IMAGES / name, tmp / name)
    (tmp / "labels.csv").write_text("path,label\ncat.jpg,cat\ndog.jpg,dog\n")
    cfg = small_config(tmp, finished[0].parent / "small.pth",
                       images=[{"labelled": str(tmp / "labels.csv")}])
    run(load_config(cfg), RunOptions(**QUIET))
    run_dir = tmp / "results" / "exp"
    means = snapshot(run_dir / "dataset" / "mean")
    (run_dir / "summary.json").unlink()
    state = run_dir / "dataset" / "mean" / "sums.zip"
    with zipfile.ZipFile(io.BytesIO(state.read_bytes())) as z:
        header, sums = json.loads(z.read("state.json")), z.read("sums.npy")
    header["groups"][0][2] = "bogus"  # the digest still matches the kept images
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("state.json", json.dumps(header))
        z.writestr("sums.npy", sums)
    state.write_bytes(out.getvalue())
    assert main([str(cfg), "--resume", "--quiet"]) == 0
    notes = " ".join(json.loads((run_dir / "summary.json").read_text())["notes"])
    assert f"{state}: not a mean-map state of this explain version" in notes
    assert "group" in notes and "bogus" in notes
    # the kept images' maps were not saved (no save_arrays): the means say they miss them
    assert "2 image(s) kept from the interrupted run are not in the mean maps" in notes
    assert snapshot(run_dir / "dataset" / "mean") != means


# ---- 7 and 8: one-line errors from the runner; reading is not writing ----------------------

@pytest.mark.parametrize("name", ["my layer", "conv\x1b[31m", "cost$1", "x" * 5000])
def test_a_layer_name_explain_cannot_record_is_one_line(finished, name):
    from explain.plan import recordable
    text = explain_error(recordable, [name], "auto chose")
    assert text.startswith("target_layers: auto chose the layer ")
    assert len(text) < 400 and "\x1b" not in text


def test_allocation_errors_keep_their_numbers():
    from explain.errors import model_failed as _model_failed
    text = ("[enforce fail at /opt/conda/pytorch/work/c10/core/impl/"
            "alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
            "allocate 20480000000000 bytes. Buy new RAM!")
    assert text.index("2048") < 150 < text.index(" bytes")  # the number crosses the old cut
    message = str(_model_failed(RuntimeError(text), "cat"))
    one_line(message, "allocate 20480000000000 bytes")


def test_reading_a_path_outside_the_folder_says_read(tmp_path):
    from explain.outputs import RunFolder
    folder = RunFolder(tmp_path)
    with pytest.raises(ExplainError, match="refusing to read '../x.png'"):
        folder.has_file("../x.png")
    with pytest.raises(ExplainError, match="refusing to write '../x.png'"):
        folder.write_bytes("../x.png", b"")

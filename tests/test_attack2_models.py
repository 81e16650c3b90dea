"""The second attack on explain, its model findings (issue 25, items 4 and 5): Keras archives
and .h5 files checked member by member before Keras opens them, factory models sized on the
meta device before they are built, a rendezvous that ends in seconds with one line, and
nothing written outside the run folder (HOME and TMPDIR stay as they were).

The hostile files are small: deflate streams of zeros made from one block repeated (1 KB per
MiB), HDF5 datasets declared but never written. Peak memory is measured in one child process
under an address-space limit of its size + 1.5 GiB (the pattern of tests/test_trust.py), with
a file-size limit so that the original code cannot fill the disk when it extracts."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml

import explain

from conftest import IMAGES, REPO, make_small_alexnet
from explain import distributed
from explain.errors import ExplainError

h5py = pytest.importorskip("h5py")
MIB = 2**20
GIB_CAP = 1536 * MIB  # the address space a case may add
PRIVATE = ("KERAS_HOME", "TORCHINDUCTOR_CACHE_DIR")  # what explain points into its own folder


# ---- small hostile files ---------------------------------------------------------------------

def zeros_deflate(mib: int) -> tuple[bytes, int]:
    """(raw deflate stream, crc32) of ``mib`` MiB of zeros: after a full flush the compressor
    starts afresh, so every MiB compresses to the same bytes, repeated here."""
    zero = bytes(MIB)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = squeeze.compress(zero) + squeeze.flush(zlib.Z_FULL_FLUSH)
    again = squeeze.compress(zero) + squeeze.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zero, crc)
    return first + again * (mib - 1) + squeeze.flush(), crc


def write_zip(path: Path, members: list[tuple[str, int, bytes, int, int]]) -> Path:
    """A zip archive written by hand: (name, method, stored bytes, crc32, unpacked size)."""
    body, central = bytearray(), bytearray()
    for name, method, data, crc, size in members:
        raw, offset = name.encode(), len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data),
                            size, len(raw), 0) + raw + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc,
                               len(data), size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def stored(archive: Path, swap: dict[str, bytes] | None = None) -> list[tuple]:
    """The members of a real .keras archive as write_zip takes them (stored), some swapped."""
    with zipfile.ZipFile(archive) as zf:
        out = []
        for info in zf.infolist():
            data = (swap or {}).get(info.filename, zf.read(info))
            out.append((info.filename, 0, data, zlib.crc32(data), len(data)))
        return out


def unwritten(h5: Path, name: str) -> None:
    """Replace dataset ``name`` by one that declares 1.6 GB and stores nothing (chunks never
    written read as zeros): an HDF5 bomb of a few KB."""
    with h5py.File(h5, "r+") as f:
        del f[name]
        f.create_dataset(name, shape=(400_000_000,), dtype="f4", chunks=(MIB,), compression="gzip")


def widen(config: dict) -> dict:
    """A Keras model config whose Dense layer has 300 million units (28 GB of weights)."""
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer["config"]["units"] = 300_000_000
    return config


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The files and configs of every case (see the module's docstring)."""
    root = tmp_path_factory.mktemp("attack2")
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported (as test_keras does)
    pytest.importorskip("keras")
    from test_keras import small_cnn
    good = root / "good.keras"
    small_cnn(side=8).save(good)
    small_cnn(side=8).save(root / "good.h5")
    bomb, crc = zeros_deflate(1600)
    write_zip(root / "weights_bomb.keras", [m for m in stored(good) if m[0] != "model.weights.h5"]
              + [("model.weights.h5", 8, bomb, crc, 1600 * MIB)])
    blob, blob_crc = zeros_deflate(255)
    write_zip(root / "assets_bomb.keras", stored(good) + [
        (f"assets/blob{i}", 8, blob, blob_crc, 255 * MIB) for i in range(8)])
    with zipfile.ZipFile(good) as zf:
        (root / "inner.h5").write_bytes(zf.read("model.weights.h5"))
    unwritten(root / "inner.h5", "layers/dense/vars/0")
    write_zip(root / "dataset_bomb.keras", stored(good, {"model.weights.h5": (root / "inner.h5")
                                                         .read_bytes()}))
    (root / "legacy_bomb.h5").write_bytes((root / "good.h5").read_bytes())
    unwritten(root / "legacy_bomb.h5", "model_weights/predictions/predictions/kernel")
    with zipfile.ZipFile(good) as zf:
        wide = json.dumps(widen(json.loads(zf.read("config.json")))).encode()
    write_zip(root / "units.keras", stored(good, {"config.json": wide}))
    (root / "units.h5").write_bytes((root / "good.h5").read_bytes())
    with h5py.File(root / "units.h5", "r+") as f:
        f.attrs["model_config"] = json.dumps(widen(json.loads(f.attrs["model_config"])))
    torch.save(make_small_alexnet(), root / "alex.pth")
    keras = dict(preprocess={"size": [8, 8]}, target_layers=["block5_conv3"])
    cases = {
        "weights_bomb": dict(model={"keras": str(root / "weights_bomb.keras")}, **keras),
        "assets_bomb": dict(model={"keras": str(root / "assets_bomb.keras")}, **keras),
        "dataset_bomb": dict(model={"keras": str(root / "dataset_bomb.keras")}, **keras),
        "legacy_bomb": dict(model={"keras": str(root / "legacy_bomb.h5")}, **keras),
        "keras_units": dict(model={"keras": str(root / "units.keras")}, **keras),
        "legacy_units": dict(model={"keras": str(root / "units.h5")}, **keras),
        "num_classes": dict(model={"builder": "torchvision.models.resnet18",
                                   "builder_args": {"num_classes": 1_200_000}},
                            target_layers=["layer4"]),
        "timm_depth": dict(model={"builder": "timm:vit_base_patch16_224",
                                  "builder_args": {"depth": 100_000}}, target_layers=["norm"]),
    }
    configs = {case: config(root, case, **fields) for case, fields in cases.items()}
    run = config(root, "tiny", model={"file": str(root / "alex.pth")},
                 target_layers=["features.10"], preprocess={"size": [64, 64]})
    return {"root": root, "configs": configs, "run": run, "good": str(good)}


def config(root: Path, stem: str, **fields) -> str:
    data = {"classes": {"cat": 0, "dog": 1}, "images": [str(IMAGES / "cat.jpg")],
            "methods": ["gradcam"], "output": {"dir": str(root / "results")}, **fields}
    path = root / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ---- one child process: a clean run, a Keras load, then every bomb under a memory cap -----------

CHILD = r"""
import contextlib, io, json, os, resource, signal, sys, time
import torch
torch.set_num_threads(1)
from explain.cli import main
import explain.runner, explain.models, explain.models.keras, explain.writers.panels
import matplotlib.pyplot, timm, torchvision
from pathlib import Path

args = json.loads(sys.argv[1])
err = io.StringIO()
with contextlib.redirect_stderr(err):
    clean_rc = main([args["run"], "--quiet"])
net = explain.models.keras.load_keras(Path(args["good"]), trust=False)  # imports keras
clean = dict(rc=clean_rc, err=err.getvalue(), keras=type(net).__name__)

def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

limit = vm_size() + args["cap"]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the size limit fails instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("over 30 s")))
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
bombs = {}
for case, path in args["configs"].items():
    before, err, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, io.StringIO(), time.process_time()
    with contextlib.redirect_stderr(err):
        try:
            signal.alarm(30)
            rc = main([path, "--quiet"])
        except BaseException as exc:
            rc = -1
            print(f"raised {type(exc).__name__}: {str(exc)[:200]}", file=err)
        finally:
            signal.alarm(0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bombs[case] = dict(rc=rc, err=err.getvalue(), cpu_seconds=time.process_time() - t0,
                       grew_mb=(after - before) / 1024)
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024
print(json.dumps(dict(clean=clean, bombs=bombs, peak_mb=peak)))
"""


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def child(world, stale, tmp_path_factory) -> dict:
    """Runs CHILD with HOME and TMPDIR pointing at empty folders; what it printed, and what
    those folders hold after it ended (the processes of ``stale`` run meanwhile)."""
    home, tmp = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("tmp")
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE}
    env.update(HOME=str(home), TMPDIR=str(tmp), KERAS_BACKEND="torch", OMP_NUM_THREADS="1",
               PYTHONPATH=os.environ.get("PYTHONPATH", str(REPO)))
    args = dict(run=world["run"], good=world["good"], configs=world["configs"], cap=GIB_CAP)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=world["root"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(out, home=tree(home), tmp=tree(tmp))


BOMB_WORDS = {
    "weights_bomb": ["weights_bomb.keras: refused (model.keras)", "'model.weights.h5'",
                     "1.56 GiB unpacked", "decompression bomb"],
    "assets_bomb": ["assets_bomb.keras: refused (model.keras)", "'assets/blob0'", "255.0 MiB"],
    "dataset_bomb": ["dataset_bomb.keras: refused (model.keras)", "model.weights.h5 declare"],
    "legacy_bomb": ["legacy_bomb.h5: refused (model.keras)", "legacy_bomb.h5 declare"],
    # a config of 28 GB of weights: loaded on the meta device first, where it fails against
    # the file's (24, 2) weights, as Keras says, before anything is allocated
    "keras_units": ["units.keras: Keras cannot load it (model.keras)", "predictions"],
    "legacy_units": ["units.h5: Keras cannot load it (model.keras)", "Shape mismatch",
                     "(24, 300000000)"],
    "num_classes": ["model.builder_args {'num_classes': 1200000}", "over 2.00 GiB",
                    "2.33 GiB)", "model.trust: true"],
    "timm_depth": ["model.builder_args {'depth': 100000}", "over 2.00 GiB", "model.trust: true"],
}


@pytest.mark.parametrize("case", list(BOMB_WORDS))
def test_small_input_cannot_take_memory_or_disk(child, case):
    """Item 4: each bomb is one line, exit 2, in under 10 CPU seconds (CPU, not wall-clock
    time: a busy machine must not fail it; the child's 30 s alarm catches a hang), adding
    under 300 MB of memory, and no allocation was tried (under the cap, a failed one would
    say so)."""
    got = child["bombs"][case]
    err = got["err"].strip()
    assert got["rc"] == 2 and err.count("\n") == 0, err[-800:]
    assert "allocat" not in err and "MemoryError" not in err, err
    for words in BOMB_WORDS[case]:
        assert words in err, err
    assert got["cpu_seconds"] < 10 and got["grew_mb"] < 300, got


def test_bombs_together_stay_under_the_cap(child):
    assert child["peak_mb"] < 400, child["peak_mb"]


def test_nothing_written_outside_the_run_folder(child, world):
    """Item 5: a whole run and a Keras load leave TMPDIR empty (no torchinductor_<user>, no
    explain folder left) and HOME without .keras/keras.json; matplotlib's own font cache is
    the one thing in HOME (matplotlib's choice, like any program that plots)."""
    assert child["clean"]["rc"] == 0, child["clean"]["err"]
    assert child["clean"]["keras"] == "KerasNet"
    assert (world["root"] / "results" / "tiny" / "summary.json").is_file()
    assert child["tmp"] == [], child["tmp"]
    mpl = {".cache", ".cache/matplotlib", ".config", ".config/matplotlib"}
    assert [p for p in child["home"] if p not in mpl and not
            p.startswith(".cache/matplotlib/fontlist-")] == [], child["home"]


# ---- factory bounds in this process: what still builds ------------------------------------------

def test_bounded_factories_still_build(tmp_path):
    """The meta build changes nothing for a normal model: torchvision (also a regnet, which
    cannot build on the meta device and is counted while it builds), timm with arguments,
    the demo network (weights from its package, never built on meta); trust lifts the bound."""
    from explain.models.factories import make_model
    net = make_model("torchvision.models.regnet_x_400mf", {"num_classes": 3}, "model.arch", False)
    assert net.fc.out_features == 3 and net.fc.weight.device.type == "cpu"
    with pytest.raises(ExplainError, match=r"num_classes.*over 2.00 GiB"):
        make_model("torchvision.models.regnet_x_400mf", {"num_classes": 10**7}, "model.arch", False)
    net = make_model("timm:resnet18", {"num_classes": 3}, "model.arch", False)
    assert net.fc.out_features == 3 and not any(p.is_meta for p in net.parameters())
    demo = make_model("explain.demo:catdog_efficientnet_lite0", {}, "model.builder", False)
    assert demo.backbone._fc.weight.abs().sum() > 0  # its package's weights, not meta tensors
    with pytest.raises(ExplainError, match="'torchvision.models.vit_h_14' makes a model of over"):
        make_model("torchvision.models.vit_h_14", {}, "model.builder", False)
    with pytest.raises(ExplainError, match=r"over 1.0 MiB of parameters and buffers \(at least 1.\d MiB\)"):
        make_model("torchvision.models.resnet18", {"num_classes": 3}, "model.arch", False, MIB)
    trusted = make_model("torchvision.models.resnet18", {"num_classes": 3}, "model.arch", True, MIB)
    assert trusted.fc.out_features == 3  # 44 MB over a bound of 1 MiB: trust lifts it


# ---- a WORLD_SIZE left in a shell ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STALE = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "EXPLAIN_RENDEZVOUS_TIMEOUT": "1"}
# ``python -m explain ARGS``, then whether the CAM library was imported, on stdout
AS_MAIN = ("import runpy, sys\nsys.argv[0] = 'explain'\ntry:\n"
           "    runpy.run_module('explain', run_name='__main__', alter_sys=True)\nfinally:\n"
           "    print('pytorch_grad_cam' in sys.modules)")


@pytest.fixture(scope="module")
def stale():
    """``python -m explain`` with a stale WORLD_SIZE=2 as RANK 0 (it waits for a client) and
    as RANK 1 (no server to reach), started early: they run while the bombs' child does.
    Yields {rank: (process, port)} and the start time."""
    procs = {}
    for rank in (0, 1):
        port = free_port()
        env = {**os.environ, **STALE, "RANK": str(rank), "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        procs[rank] = subprocess.Popen(
            [sys.executable, "-c", AS_MAIN, "--quiet",
             str(IMAGES.parent / "configs" / "demo_catdog.yaml")],
            cwd=Path(explain.__file__).parent.parent,  # -c: the explain under test comes first
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), port
    yield procs, time.perf_counter()
    for proc, _ in procs.values():
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("rank", [0, 1])
def test_stale_world_size_is_one_line_within_seconds(stale, rank):
    """Item 4: WORLD_SIZE=2 without torchrun ends within the wait that
    EXPLAIN_RENDEZVOUS_TIMEOUT sets (1 s here; 20 s by default): exit 2 and one line naming
    WORLD_SIZE and MASTER_ADDR:MASTER_PORT (torch's own connection logs held back), before
    the CAM library is imported (about 3 s of a start's 5 s of CPU)."""
    procs, started = stale
    proc, port = procs[rank]
    try:
        out, err = proc.communicate(timeout=max(1, 60 - (time.perf_counter() - started)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"rank {rank}: still waiting after 60 s")
    assert proc.returncode == 2, err[-2000:]
    assert err.count("\n") == 1, err[-2000:]
    assert err.startswith(f"explain: error: torchrun: WORLD_SIZE=2 is set (RANK={rank})"), err
    assert f"MASTER_ADDR:MASTER_PORT 127.0.0.1:{port}" in err, err
    assert "unset WORLD_SIZE and RANK to run alone, or start with torchrun" in err, err
    if rank == 0:
        assert "no other process joined" in err and "within 1 s" in err, err
    assert out == "False\n"


def test_rendezvous_wait_is_seconds(monkeypatch):
    assert distributed.RENDEZVOUS_TIMEOUT <= 60
    monkeypatch.setenv("EXPLAIN_RENDEZVOUS_TIMEOUT", "1.5")
    assert distributed._rendezvous_timeout() == timedelta(seconds=1.5)
    for bad in ("abc", "0", "-3", "nan", "1e9"):
        monkeypatch.setenv("EXPLAIN_RENDEZVOUS_TIMEOUT", bad)
        with pytest.raises(ExplainError, match="EXPLAIN_RENDEZVOUS_TIMEOUT"):
            distributed._rendezvous_timeout()


def test_build_stops_at_the_tensor_bound(monkeypatch):
    """Many small tensors (a huge depth of a thin model) are stopped too, at the 11th of 10
    allowed here, and the registration functions are restored afterwards."""
    from explain.models import factories as safeload
    monkeypatch.setattr(safeload, "MAX_MODEL_TENSORS", 10)
    original = torch.nn.Module.register_parameter
    seen = []

    def refuse(size: int, tensors: int) -> ExplainError:
        seen.append((size, tensors))
        return ExplainError("too many")

    with pytest.raises(ExplainError, match="too many"), safeload.bounded_build(2**30, refuse):
        torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(6)])
    assert seen == [(44, 11)] and torch.nn.Module.register_parameter is original


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_model_file_size_is_bounded(tmp_path, suffix):
    """A 5 GB model file (sparse: no disk used) is refused from its size alone, before keras
    or h5py reads a byte of it."""
    from explain.models.keras import load_keras
    path = tmp_path / f"big{suffix}"
    with open(path, "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" if suffix == ".h5" else b"PK\x03\x04")
        f.truncate(5 * 2**30)
    with pytest.raises(ExplainError) as caught:
        load_keras(path, trust=True)
    assert str(caught.value).endswith(f"big{suffix}: refused (model.keras): the file holds "
                                      f"5.00 GiB, over the 4.00 GiB explain reads as a Keras "
                                      f"model"), caught.value

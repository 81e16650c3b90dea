"""Trust: nothing runs, escapes, mixes or is lost that the user did not ask for.

An attacker's and a careless user's view of explain, as a matrix of cases. Every failing case
goes through ``refused``, which checks the invariants of a user error: exit code 2, one line
on stderr (no traceback), the expected words, nothing changed anywhere under the test's folder
(no file outside a run folder, earlier runs intact, no half-written run folder left behind)
and no marker file a payload would have created. Successful cases go through ``works``: every
new path lies under results/<run>/.

Cases that the current code gets wrong are kept as they should be and marked
``xfail(strict=True)``: when explain is fixed, the mark must go.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
import time
import uuid
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from explain.cli import main
from conftest import IMAGES, REPO
from helpers import CAPPED_CHILD, cli, one_line, tiny_config, tiny_net

SIZE = [32, 32]
LONG = 100_000  # characters of a long input
RUN = "exp"


# ---- the tiny world every case runs in -----------------------------------------------------

def small_jpeg(path: Path, source: str = "cat.jpg", size=(48, 32)) -> Path:
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(IMAGES / source)), size))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Shared, read-only inputs: the tiny model (whole and as a state_dict) and small photos."""
    folder = tmp_path_factory.mktemp("trust_assets")
    torch.save(tiny_net(), folder / "tiny.pth")
    torch.save(tiny_net().state_dict(), folder / "tiny_sd.pth")
    for name in ("cat", "dog", "both"):
        small_jpeg(folder / f"{name}.jpg", f"{name}.jpg")
    return folder


def cfg(tmp_path: Path, assets: Path, stem: str = RUN, **fields) -> str:
    """A config in tmp_path: the tiny model, one small photo, layer '0', 32x32, gradcam."""
    model = fields.pop("model", {"file": str(assets / "tiny.pth")})
    return str(tiny_config(tmp_path, model, stem, **{
        "images": [str(assets / "cat.jpg")], "target_layers": ["0"], "classes": {"cat": 0, "dog": 1},
        **fields}))


def raw_cfg(tmp_path: Path, text: str, name: str = RUN) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (links not followed): 'dir', 'link:<target>' or the file's hash."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def changes(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def refused(capsys, tmp_path: Path, argv: list[str], *needles: str, marker: Path | None = None,
            multiline: bool = False) -> str:
    """The invariants of a user error; returns the error text."""
    before = snapshot(tmp_path)
    rc, err, _ = cli(capsys, *argv)
    assert rc == 2, err
    if multiline:
        assert "Traceback" not in err and all(n in err for n in needles), err
    else:
        one_line(err, *needles)
    changed = changes(before, snapshot(tmp_path))
    assert not changed, f"changed on disk: {sorted(changed)[:10]}; error: {err}"
    if marker is not None:
        assert not marker.exists(), "the payload ran"
    return err


def works(capsys, tmp_path: Path, argv: list[str], run: str = RUN) -> Path:
    """A successful run; every new or changed path is the run folder or inside it."""
    before = snapshot(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 0, err
    outside = {p for p in changes(before, snapshot(tmp_path))
               if p not in ("results", f"results/{run}") and not p.startswith(f"results/{run}/")}
    assert not outside, f"written outside results/{run}: {sorted(outside)[:10]}"
    return tmp_path / "results" / run


def map_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "cams").glob("*/*.png"))


# ---- 1. callables named in YAML run only with model.trust ----------------------------------

UNTRUSTED_MODELS = {
    "builder os:system": lambda m, a: {"builder": "os:system", "builder_args": {"command": f"touch {m}"}},
    "builder os.system": lambda m, a: {"builder": "os.system", "builder_args": {"command": f"touch {m}"}},
    "builder subprocess:run": lambda m, a: {"builder": "subprocess:run",
                                            "builder_args": {"args": ["touch", str(m)]}},
    "builder builtins:exec": lambda m, a: {"builder": "builtins:exec",
                                           "builder_args": {"source": f"open({str(m)!r}, 'w')"}},
    "builder torch.hub:load": lambda m, a: {"builder": "torch.hub:load",
                                            "builder_args": {"repo_or_dir": "evil/repo", "model": "x"}},
    "builder torchvision.models:get_model": lambda m, a: {
        "builder": "torchvision.models:get_model", "builder_args": {"name": "resnet18"}},
    "builder through a torchvision module": lambda m, a: {
        "builder": "torchvision.models.resnet.os.system", "builder_args": {"command": f"touch {m}"}},
    "builder explain.demo non-factory": lambda m, a: {"builder": "explain.demo:GroupHead"},
    "arch subprocess.run": lambda m, a: {"file": str(a / "tiny_sd.pth"), "arch": "subprocess.run",
                                         "arch_args": {"args": ["touch", str(m)]}},
    "arch os:system": lambda m, a: {"file": str(a / "tiny_sd.pth"), "arch": "os:system",
                                    "arch_args": {"command": f"touch {m}"}},
}


@pytest.mark.parametrize("case", list(UNTRUSTED_MODELS))
def test_named_callable_needs_trust(tmp_path, capsys, assets, case):
    marker = tmp_path / "MARKER"
    model = UNTRUSTED_MODELS[case](marker, assets)
    field = "model.arch" if "arch" in model else "model.builder"
    refused(capsys, tmp_path, [cfg(tmp_path, assets, model=model), "--quiet"],
            field, "allow-listed", "model.trust: true", marker=marker)


def test_builder_from_the_command_line_needs_trust(tmp_path, capsys, assets):
    marker = tmp_path / "MARKER"
    path = cfg(tmp_path, assets, model={"builder": "torchvision.models.resnet18",
                                        "builder_args": {"num_classes": 2}}, target_layers=["layer4"])
    refused(capsys, tmp_path, [path, "--quiet", "--set", "model.builder=os:system",
                               "--set", f"model.builder_args={{command: touch {marker}}}"],
            "model.builder", "model.trust: true", marker=marker)


@pytest.mark.parametrize("dotted", ["{mod}:build", "{mod}.build", "{mod}.sub:build"])
def test_untrusted_builder_module_is_never_imported(tmp_path, capsys, assets, monkeypatch, dotted):
    """Importing a module runs its code: without trust the module must not even be imported."""
    marker = tmp_path / "IMPORTED"
    mod = f"evil_{uuid.uuid4().hex[:8]}"
    code = f"open({str(marker)!r}, 'w').close()\ndef build():\n    raise SystemExit(9)\n"
    (tmp_path / mod).mkdir()
    (tmp_path / mod / "__init__.py").write_text(code)
    (tmp_path / mod / "sub.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    refused(capsys, tmp_path, [cfg(tmp_path, assets, model={"builder": dotted.format(mod=mod)}),
                               "--quiet"], "model.builder", "model.trust: true", marker=marker)
    assert mod not in sys.modules


def test_torchvision_factory_works_without_trust(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets, model={"builder": "torchvision.models.resnet18",
                                        "builder_args": {"num_classes": 2}}, target_layers=["layer4"])
    run = works(capsys, tmp_path, [path, "--quiet"])
    assert len(map_files(run)) == 2


def test_demo_factory_is_allow_listed(tmp_path):
    from explain.models.factories import resolve_factory
    from explain.demo import catdog_efficientnet_lite0
    assert resolve_factory("explain.demo:catdog_efficientnet_lite0", "model.builder",
                           False) is catdog_efficientnet_lite0


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    mod = f"mine_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent("""
        import torch

        def build(outputs=2):
            return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                       torch.nn.Linear(4, outputs))

        def not_a_model():
            return "a string"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return mod


def test_own_module_works_with_trust(tmp_path, capsys, assets, user_module):
    path = cfg(tmp_path, assets, model={"builder": f"{user_module}:build", "trust": True,
                                        "builder_args": {"outputs": 2}})
    assert len(map_files(works(capsys, tmp_path, [path, "--quiet"]))) == 2


def test_trusted_builder_must_return_a_module(tmp_path, capsys, assets, user_module):
    path = cfg(tmp_path, assets, model={"builder": f"{user_module}:not_a_model", "trust": True})
    refused(capsys, tmp_path, [path, "--quiet"], "model.builder", "str", "torch.nn.Module")


# ---- 2. names become paths ------------------------------------------------------------------

BAD_NAMES = {
    "parent escape": "../../../victim/evil",
    "absolute": "<ABS>",
    "slash": "a/b",
    "backslash": "..\\..\\x",
    "dot": ".",
    "dotdot": "..",
    "root": "/",
    "empty": "",
    "nul": "a\x00b",
    "300 chars": "x" * 300,
    "double underscore": "b__c",
    "space": "a b",
    "dollar": "$x$",
    "leading dash": "-x",
    "newline": "a\nb",
}


def _name(key: str, tmp_path: Path) -> str:
    return str(tmp_path / "victim" / "evil") if BAD_NAMES[key] == "<ABS>" else BAD_NAMES[key]


@pytest.mark.parametrize("key", list(BAD_NAMES))
def test_bad_class_name(tmp_path, capsys, assets, key):
    name = _name(key, tmp_path)
    err = refused(capsys, tmp_path, [cfg(tmp_path, assets, classes={name: 0, "dog": 1}), "--quiet"],
                  "classes", "class name")
    assert len(err) < 300 + len(str(tmp_path)), err


@pytest.mark.parametrize("key", list(BAD_NAMES))
def test_bad_run_name(tmp_path, capsys, assets, key):
    name = _name(key, tmp_path)
    err = refused(capsys, tmp_path, [cfg(tmp_path, assets, stem="conf", name=name), "--quiet"],
                  "name")
    assert len(err) < 300 + len(str(tmp_path)), err


ODD_FILES = ["my cat.jpg", "$x$.jpg", "$\\alpha$.jpg", "猫.jpg", "a__b.jpg", "a_b.jpg", "a.jpg",
             "Cat.jpg", "cat.jpg", "..jpg", "-.jpg", "x-2.jpg", "é\u0301.jpg", "a\nb.jpg",
             "<img src=x onerror=alert(1)>.jpg", "' onmouseover='alert(1).jpg"]


def test_odd_image_file_names_stay_inside_and_distinct(tmp_path, capsys, assets):
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ODD_FILES:
        shutil.copy(assets / "dog.jpg", pics / name)
    path = cfg(tmp_path, assets, images=[str(pics)])
    run = works(capsys, tmp_path, [path, "--quiet"])
    files = map_files(run)
    assert len(files) == len(set(files)) == len(ODD_FILES) * 2
    summary = json.loads((run / "summary.json").read_text())
    ids = [i["id"] for i in summary["images"]]
    assert len(set(ids)) == len(ODD_FILES) and not summary["skipped_images"]
    assert len({i.lower() for i in ids}) == len(ids)  # distinct on case-insensitive disks too
    for f in run.rglob("*"):
        assert all(c.isalnum() or c in "._-" for c in f.name), f.name
    for page in run.rglob("*.html"):  # names shown in a report are escaped
        text = page.read_text(encoding="utf-8")
        assert "<img src=x" not in text and "' onmouseover='" not in text, page


def test_odd_config_file_name_gives_a_safe_run_folder(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets, stem="my $exp$ ..")
    before = snapshot(tmp_path)
    assert main([path, "--quiet"]) == 0, capsys.readouterr().err
    new = changes(before, snapshot(tmp_path))
    folders = {p.split("/")[1] for p in new if p.count("/") >= 1}
    assert len(folders) == 1 and all(p.startswith("results") for p in new), new
    (folder,) = folders
    assert all(c.isalnum() or c in "._-" for c in folder) and folder not in (".", ".."), folder


def planted_outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "gradcam").mkdir(parents=True)
    (outside / "keep.txt").write_text("keep me")
    (outside / "gradcam" / "cat__cat.png").write_bytes(b"precious")
    (outside / "gradcam" / ".cat__cat.png.abc.part").write_bytes(b"precious too")
    (outside / ".explain-run").write_text("written by explain\n")  # a forged marker
    return outside


def test_overwrite_does_not_follow_a_planted_link(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets)
    run = works(capsys, tmp_path, [path, "--quiet"])
    outside = planted_outside(tmp_path)
    shutil.rmtree(run / "cams")
    (run / "cams").symlink_to(outside, target_is_directory=True)
    (run / "summary.csv").unlink()
    (run / "summary.csv").symlink_to(outside / "keep.txt")
    kept = snapshot(outside)
    assert main([path, "--quiet", "--overwrite"]) == 0, capsys.readouterr().err
    assert snapshot(outside) == kept
    assert not (run / "cams").is_symlink() and len(map_files(run)) == 2


def test_resume_does_not_follow_a_planted_link(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets)
    run = works(capsys, tmp_path, [path, "--quiet"])
    outside = planted_outside(tmp_path)
    (run / "summary.json").unlink()
    shutil.rmtree(run / "items")
    shutil.rmtree(run / "cams")
    (run / "cams").symlink_to(outside, target_is_directory=True)
    kept = snapshot(outside)
    rc = main([path, "--quiet", "--resume"])
    err = capsys.readouterr().err.strip()
    assert snapshot(outside) == kept
    if rc == 0:  # completed without the link: the maps are in a real folder of the run
        assert not (run / "cams").is_symlink() and len(map_files(run)) == 2
    else:  # or refused, one line
        assert rc == 2, err
        one_line(err, "symbolic link")


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_symlinked_run_folder_is_refused(tmp_path, capsys, assets, flag):
    path = cfg(tmp_path, assets)
    outside = planted_outside(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / RUN).symlink_to(outside, target_is_directory=True)
    refused(capsys, tmp_path, [path, "--quiet", flag], flag, "symbolic link")


# ---- 3. pickles that call allow-listed constructors -------------------------------------------

class Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def newobj_pickle(module: str, name: str, *ints: int) -> bytes:
    """cls.__new__(cls, *ints) via NEWOBJ (copyreg.__newobj__), written by hand: the pickler
    refuses to write it for an object that is not an instance of cls."""
    assert len(ints) == 2
    return (b"\x80\x02" + b"c" + f"{module}\n{name}\n".encode()
            + b"".join(b"J" + struct.pack("<i", n) for n in ints) + b"\x86" + b"\x81" + b".")


def as_zip(pkl: bytes) -> bytes:
    """A torch zip file whose data.pkl is ``pkl``."""
    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = pkl if info.filename.endswith("data.pkl") else src.read(info.filename)
            dst.writestr(info.filename, data)
    return out.getvalue()


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def as_legacy(pkl: bytes) -> bytes:
    """The pre-1.6 format: magic, protocol, system info, the object, storage keys."""
    info = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    head = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, 1001, info))
    return head + pkl + pickle.dumps([], protocol=2)


def as_polyglot(pkl: bytes) -> bytes:
    """Legacy bytes followed by a harmless zip model: zipfile.is_zipfile() says zip (it looks
    at the end), torch.load says legacy (it looks at the first bytes)."""
    buf = io.BytesIO()
    torch.save(tiny_net(), buf)
    return as_legacy(pkl) + buf.getvalue()


def partial_forward_model() -> torch.nn.Module:
    """Loads as data; its forward then calls functools.partial(nn.Linear, 30000, 30000)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(1, 1), torch.nn.Identity(),
                                torch.nn.Linear(1, 2))
    with torch.no_grad():
        model[3].bias.fill_(1.0)
        model[3].weight.zero_()
    model[4].forward = functools.partial(torch.nn.Linear, 30000, 30000)
    return model


def partial_shadow_model() -> torch.nn.Module:
    """SqueezeExcitation's forward calls self.scale_activation: an instance attribute
    holding a partial shadows the child module of that name."""
    from torchvision.ops.misc import SqueezeExcitation
    se = SqueezeExcitation(1, 1)
    with torch.no_grad():
        se.fc2.weight.zero_()
        se.fc2.bias.fill_(1.0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1), se,
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
    se.__dict__["scale_activation"] = functools.partial(torch.nn.Linear, 30000, 30000)
    return model


PAYLOADS = {
    "Linear REDUCE": lambda m: pickle.dumps(Reduce(torch.nn.Linear, (30000, 30000)), protocol=2),
    "bytearray REDUCE": lambda m: pickle.dumps(Reduce(bytearray, (10**10,)), protocol=2, fix_imports=False),
    "FloatTensor REDUCE": lambda m: pickle.dumps(Reduce(torch.FloatTensor, (30000, 30000)), protocol=2),
    "FloatTensor NEWOBJ": lambda m: newobj_pickle("torch", "FloatTensor", 30000, 30000),
    "Linear NEWOBJ with args": lambda m: newobj_pickle("torch.nn.modules.linear", "Linear", 30000, 30000),
    "os.system REDUCE": lambda m: pickle.dumps(Reduce(os.system, (f"touch {m}",)), protocol=2),
}
CONTAINERS = {"zip": as_zip, "legacy": as_legacy, "polyglot": as_polyglot}
def raw_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip written by hand: (name, method, data as stored, crc32, uncompressed size)."""
    out, central = io.BytesIO(), []
    for name, method, data, crc, size in entries:
        offset, encoded = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data),
                              size, len(encoded), 0) + encoded + data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc,
                                   len(data), size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          out.tell() - start, start, 0))
    return out.getvalue()


def deflated_pickle_zip(head: bytes, chunk: bytes, repeats: int, tail: bytes) -> bytes:
    """A torch-like zip whose data.pkl is head + chunk * repeats + tail, deflated: a few KB or
    MB on disk, as much as the pickle wants once decompressed."""
    def raw(data, mode):
        c = __import__("zlib").compressobj(9, 8, -15)
        return c.compress(data) + c.flush(mode)
    import zlib
    body = raw(head, zlib.Z_FULL_FLUSH) + raw(chunk, zlib.Z_FULL_FLUSH) * repeats + raw(tail, zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + len(chunk) * repeats + len(tail)
    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    entries = [(i.filename, 8, body, crc, size) if i.filename.endswith("data.pkl") else
               (i.filename, 0, src.read(i.filename), i.CRC, i.file_size) for i in src.infolist()]
    return raw_zip(entries)


def bytes_bomb(marker) -> bytes:
    """data.pkl = BINBYTES8 of 1.6 GB of zeros (1.6 MB on disk): reading it as data allocates it."""
    n = 100 * 2**24
    return deflated_pickle_zip(b"\x80\x04\x8e" + struct.pack("<Q", n), bytes(2**24), 100, b".")


def opcode_flood(marker) -> bytes:
    """data.pkl = 50 million NONE/POP instructions (100 KB on disk): a long read as data."""
    return deflated_pickle_zip(b"\x80\x02", b"N0" * 2**20, 50, b"N.")


RAW_FILES = {"deflated 1.6 GB BINBYTES8": bytes_bomb, "deflated 50M opcodes": opcode_flood}

WHOLE_PAYLOADS = {"partial as forward": partial_forward_model,
                  "partial shadowing a child": partial_shadow_model}


def _pickle_cases():
    return [f"{payload} / {container}" for payload in PAYLOADS for container in CONTAINERS] + \
        list(WHOLE_PAYLOADS) + list(RAW_FILES)


CHILD_SCRIPT = CAPPED_CHILD + r"""
# 1. four runs of one config released at the same moment (item 8), forked before any torch op
ready, go = os.pipe()
pids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        os.close(go)
        os.read(ready, 1)
        code = main([sys.argv[1], "--quiet"])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    pids.append(pid)
os.close(ready)
os.write(go, b"4444")
os.close(go)
race = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]

# 2. hostile model files (item 3), with the address space capped at its size now + 1.5 GB:
# a 30000 x 30000 float layer (3.6 GB) cannot fit, a big allocation fails here, not in pytest
cap_memory()


class CaseTimeout(BaseException):
    pass


def on_alarm(*_):
    raise CaseTimeout("still running after 2 s")


signal.signal(signal.SIGALRM, on_alarm)
bombs = {}
for case, path in json.loads(sys.argv[2]).items():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err, t0 = io.StringIO(), time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            signal.alarm(2)
            rc = main([path, "--quiet"])
            signal.alarm(0)
        except BaseException as exc:
            signal.alarm(0)
            rc = -1
            print(f"raised {type(exc).__name__}: {str(exc)[:200]}", file=err)
    bombs[case] = dict(rc=rc, err=err.getvalue(), seconds=time.perf_counter() - t0,
                       rss_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024)
print(json.dumps({"race": race, "bombs": bombs}))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory, assets):
    """One child process that pays for importing torch once: it forks the four racing runs of
    item 8, then loads every hostile model file through the CLI under a memory cap."""
    race = tmp_path_factory.mktemp("race")
    race_cfg = cfg(race, assets)
    folder = tmp_path_factory.mktemp("bombs")
    configs = {}
    for payload, make in PAYLOADS.items():
        for container, wrap in CONTAINERS.items():
            case = f"{payload} / {container}"
            slug = hashlib.sha1(case.encode()).hexdigest()[:10]
            marker = folder / f"MARKER-{slug}"
            (folder / f"{slug}.pth").write_bytes(wrap(make(marker)))
            configs[case] = (slug, marker)
    for case, make in WHOLE_PAYLOADS.items():
        slug = hashlib.sha1(case.encode()).hexdigest()[:10]
        torch.save(make(), folder / f"{slug}.pth")
        configs[case] = (slug, folder / f"MARKER-{slug}")
    for case, make in RAW_FILES.items():
        slug = hashlib.sha1(case.encode()).hexdigest()[:10]
        (folder / f"{slug}.pth").write_bytes(make(None))
        configs[case] = (slug, folder / f"MARKER-{slug}")
    paths = {}
    for case, (slug, _) in configs.items():
        sub = folder / slug
        sub.mkdir()
        paths[case] = cfg(sub, assets, model={"file": str(folder / f"{slug}.pth")})
    proc = subprocess.run([sys.executable, "-c", CHILD_SCRIPT, race_cfg, json.dumps(paths)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bombs = {case: dict(results["bombs"][case], marker=configs[case][1],
                        run=Path(paths[case]).parent) for case in configs}
    return {"race": (race, results["race"], proc.stderr), "bombs": bombs}


@pytest.mark.parametrize("case", _pickle_cases())
def test_hostile_pickle_is_refused_fast_and_small(child, case):
    r = child["bombs"][case]
    err = r["err"].strip()
    assert r["rc"] == 2, err
    one_line(err, "refused to load", "model.trust: true")
    assert r["seconds"] < 2.0, (r["seconds"], err)
    assert r["rss_mb"] < 300, (r["rss_mb"], err)
    assert not r["marker"].exists(), "the payload ran"
    assert not (r["run"] / "results").exists()


@pytest.fixture(scope="module")
def whole_models(tmp_path_factory):
    """Honest files that must load without trust."""
    folder = tmp_path_factory.mktemp("honest")
    torch.manual_seed(0)
    models = {
        "alexnet": (torchvision.models.alexnet(num_classes=2), {}),
        "resnet18": (torchvision.models.resnet18(num_classes=2), {}),
        "vit": (torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1,
                                                     num_heads=2, hidden_dim=16, mlp_dim=32,
                                                     num_classes=2), {}),
        "squeezenet state_dict": (torchvision.models.squeezenet1_1(num_classes=2),
                                  {"arch": "torchvision.models.squeezenet1_1",
                                   "arch_args": {"num_classes": 2}}),
        "checkpoint with state_dict": (torchvision.models.squeezenet1_1(num_classes=2),
                                       {"arch": "torchvision.models.squeezenet1_1",
                                        "arch_args": {"num_classes": 2}}),
    }
    out = {}
    for name, (model, extra) in models.items():
        path = folder / f"{name.replace(' ', '_')}.pth"
        model.eval()
        if name == "checkpoint with state_dict":
            torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
        elif extra:
            torch.save(model.state_dict(), path)
        else:
            torch.save(model, path)
        out[name] = (model, path, extra)
    return out


@pytest.mark.parametrize("name", [
    "alexnet", "resnet18",
    "vit",
    "squeezenet state_dict", "checkpoint with state_dict"])
def test_honest_files_load_without_trust(tmp_path, whole_models, assets, name):
    from explain.config import load_config
    from explain.models.loading import load_model
    model, path, extra = whole_models[name]
    loaded = load_model(load_config(cfg(tmp_path, assets, model={"file": str(path), **extra})))
    assert isinstance(loaded, torch.nn.Module) and type(loaded) is type(model)
    x = torch.randn(1, 3, *((32, 32) if name == "vit" else (64, 64)))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ---- 4. resource bombs in the config ------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


DEEP_AND_WIDE = "classes: " + "[" * 250 + "a," * 125_000 + "a" + "]" * 250 + "\n"  # 250 KB


@pytest.mark.parametrize("text,seconds", [
    pytest.param(BILLION_LAUGHS, 3, id="billion laughs"),
    pytest.param("classes: " + "[" * 2000 + "]" * 2000 + "\n", 3, id="2000 nested lists"),
    pytest.param("classes: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n", 3, id="2000 nested maps"),
    pytest.param(DEEP_AND_WIDE, 3, id="250 nested lists, 125000 items"),
])
def test_yaml_bombs_fail_fast(tmp_path, capsys, text, seconds):
    path = raw_cfg(tmp_path, text)
    t0 = time.perf_counter()
    err = refused(capsys, tmp_path, [path, "--quiet"], "exp.yaml")
    assert time.perf_counter() - t0 < seconds
    assert len(err) < 300 + len(str(tmp_path)), err


LONG_INPUTS = {
    "class name": lambda t, a: {"classes": {"x" * LONG: 0}},
    "class name, --set": lambda t, a: {"argv": ["--set", "classes={" + "x" * LONG + ": 0}"]},
    "unknown top-level key": lambda t, a: {"x" * LONG: 1},
    "unknown section key": lambda t, a: {"output": {"dir": str(t / "results"), "x" * LONG: 1}},
    "unknown key, --set": lambda t, a: {"argv": ["--set", "output." + "x" * LONG + "=1"]},
    "run name": lambda t, a: {"name": "x" * LONG},
    "builder": lambda t, a: {"model": {"builder": "x" * LONG}},
    "builder_args key": lambda t, a: {"model": {"builder": "torchvision.models.resnet18",
                                                "builder_args": {"x" * LONG: 1}}},
    "arch": lambda t, a: {"model": {"file": str(a / "tiny_sd.pth"), "arch": "x" * LONG}},
    "model file": lambda t, a: {"model": {"file": "x" * LONG}},
    "model file, 4000 chars": lambda t, a: {"model": {"file": "x" * 4000}},
    "image": lambda t, a: {"images": ["x" * LONG]},
    "image, 4000 chars": lambda t, a: {"images": ["x" * 4000]},
    "layer": lambda t, a: {"target_layers": ["x" * LONG]},
    "layer, 190 chars": lambda t, a: {"target_layers": ["x" * 190]},
    "method": lambda t, a: {"methods": ["x" * LONG]},
    "method option": lambda t, a: {"methods": [{"name": "scorecam", "x" * LONG: 1}]},
    "method option value": lambda t, a: {"methods": [{"name": "scorecam", "batch_size": "x" * LONG}]},
    "colormap": lambda t, a: {"output": {"dir": str(t / "results"), "colormap": "x" * LONG}},
    "targets": lambda t, a: {"targets": ["x" * LONG]},
    "device": lambda t, a: {"device": "x" * LONG},
    "reference_dir": lambda t, a: {"compare": {"enabled": True, "reference_dir": "x" * LONG}},
    "yaml syntax error": lambda t, a: {"raw": "classes: {" + "x" * LONG + ": [\n"},
    "duplicate key": lambda t, a: {"raw": f"{'x' * LONG}: 1\n{'x' * LONG}: 2\n"},
}
@pytest.mark.parametrize("case", list(LONG_INPUTS))
def test_long_inputs_are_never_quoted_whole(tmp_path, capsys, assets, case):
    fields = LONG_INPUTS[case](tmp_path, assets)
    argv = fields.pop("argv", [])
    path = raw_cfg(tmp_path, fields["raw"]) if "raw" in fields else cfg(tmp_path, assets, **fields)
    before = snapshot(tmp_path)
    rc, err, _ = cli(capsys, path, "--quiet", *argv)
    assert rc == 2, err[:500]
    one_line(err)
    assert "x" * 100 not in err, err[:500]
    assert len(err) < 600 + len(str(tmp_path)), err[:500]  # room for a list of valid names
    assert not changes(before, snapshot(tmp_path))


@pytest.mark.parametrize("fields,key", [
    ({"preprocess": {"size": 100000}}, "preprocess.size"),
    ({"preprocess": {"size": [100000, 32]}}, "preprocess.size"),
    ({"preprocess": {"size": 224, "multiple_of": 100000}}, "preprocess.multiple_of"),
    ({"preprocess": {"size": SIZE, "max_pixels": 10**12}}, "preprocess.max_pixels"),
    ({"channels": {"enabled": True, "tile_size": 100000}}, "channels.tile_size"),
    ({"batch_size": 10**9}, "batch_size"),
    ({"classes": {"cat": 10**9, "dog": 1}}, "classes"),
    ({"images": ["a.jpg"] * 10_001}, "images"),
    ({"methods": [{"name": "scorecam", "batch_size": 10**9}]}, "methods[0]"),
    ({"target_layers": ["0"] * 100}, "target_layers"),
], ids=["size", "size pair", "multiple_of", "max_pixels", "tile_size", "batch_size",
        "class index", "10001 images", "scorecam batch_size", "100 layers"])
def test_huge_numbers_are_one_line_errors_naming_the_key(tmp_path, capsys, assets, fields, key):
    err = refused(capsys, tmp_path, [cfg(tmp_path, assets, **fields), "--quiet"], f"exp.yaml: {key}")
    assert len(err) < 300 + len(str(tmp_path)), err


def test_config_over_256_kib(tmp_path, capsys, assets):
    path = Path(cfg(tmp_path, assets))
    path.write_text(path.read_text() + "# padding\n" * 30_000)
    refused(capsys, tmp_path, [str(path), "--quiet"], "exp.yaml", "bytes", "at most")


# ---- 5. --resume checks what it continues --------------------------------------------------------

def interrupted(tmp_path, capsys, assets, **fields) -> tuple[str, Path]:
    path = cfg(tmp_path, assets, images=[str(assets / "cat.jpg"), str(assets / "dog.jpg")], **fields)
    run = works(capsys, tmp_path, [path, "--quiet"])
    (run / "summary.json").unlink()
    (run / "items" / "dog.json").unlink()
    return path, run


@pytest.mark.parametrize("extra,keys", [
    (["--methods", "gradcam,layercam"], ["methods"]),
    (["--set", "classes={cat: 1, dog: 0}"], ["classes.cat", "classes.dog"]),
    (["--layer", "2"], ["target_layers"]),
    (["--set", "output.colormap=turbo"], ['output.colormap (was "jet", now "turbo")']),
    (["--methods", "layercam", "--set", "output.colormap=turbo", "--layer", "2"],
     ["methods", "output.colormap", "target_layers"]),
], ids=["methods", "classes", "layer", "colormap", "three at once"])
def test_resume_with_a_different_config(tmp_path, capsys, assets, extra, keys):
    path, _ = interrupted(tmp_path, capsys, assets)
    refused(capsys, tmp_path, [path, "--quiet", "--resume", *extra], "--resume", "differs", *keys)


def test_resume_a_finished_run(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets)
    works(capsys, tmp_path, [path, "--quiet"])
    refused(capsys, tmp_path, [path, "--quiet", "--resume"], "--resume", "finished")


def test_resume_and_overwrite_together(tmp_path, capsys, assets):
    path, _ = interrupted(tmp_path, capsys, assets)
    refused(capsys, tmp_path, [path, "--quiet", "--resume", "--overwrite"], "--resume", "--overwrite")


def test_resume_needs_an_explain_run(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets)
    refused(capsys, tmp_path, [path, "--quiet", "--resume"], "--resume", "no earlier")
    (tmp_path / "results" / RUN).mkdir(parents=True)
    (tmp_path / "results" / RUN / "mine.txt").write_text("not explain's")
    refused(capsys, tmp_path, [path, "--quiet", "--resume"], "--resume", "not written by explain")
    refused(capsys, tmp_path, [path, "--quiet", "--overwrite"], "--overwrite", "not written by explain")


# ---- 6. --overwrite keeps the earlier run when the new one cannot start -------------------------

def truncated_jpeg(folder: Path) -> Path:
    data = (IMAGES / "dog.jpg").read_bytes()
    path = folder / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def long_strip(folder: Path) -> Path:
    path = folder / "strip.png"
    cv2.imwrite(str(path), np.full((8, 20000, 3), 127, np.uint8))
    return path


OVERWRITE_BREAKERS = {
    "class index beyond outputs": lambda t, a: {"classes": {"cat": 0, "dog": 5}},
    "unknown layer": lambda t, a: {"target_layers": ["nope"]},
    "Linear layer": lambda t, a: {"target_layers": ["4"]},
    "missing model file": lambda t, a: {"model": {"file": str(t / "gone.pth")}},
    "second image truncated": lambda t, a: {"images": [str(a / "cat.jpg"), str(truncated_jpeg(t))]},
    "second image extreme aspect": lambda t, a: {"images": [str(a / "cat.jpg"), str(long_strip(t))],
                                                 "preprocess": {"size": 32}},
}
@pytest.mark.parametrize("case", list(OVERWRITE_BREAKERS))
def test_overwrite_keeps_the_earlier_run_on_a_user_error(tmp_path, capsys, assets, case):
    path = cfg(tmp_path, assets)
    works(capsys, tmp_path, [path, "--quiet"])
    path = cfg(tmp_path, assets, **OVERWRITE_BREAKERS[case](tmp_path, assets))
    refused(capsys, tmp_path, [path, "--quiet", "--overwrite"])
    assert len(map_files(tmp_path / "results" / RUN)) == 2


# ---- 7. two outputs never share a file name -------------------------------------------------------

def test_every_map_file_is_distinct(tmp_path, capsys, assets):
    pics = tmp_path / "pics"
    names = ["d1/x.jpg", "d2/x.jpg", "d1/Cat.jpg", "d2/cat.jpg", "a.jpg", "a__b.jpg", "a_b.jpg",
             "x-2.jpg"]
    for name in names:
        (pics / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(assets / "cat.jpg", pics / name)
    images = [str(pics / "d1"), str(pics / "d2"), str(pics / "*.jpg")]
    path = cfg(tmp_path, assets, images=images, classes={"b": 0, "c": 1},
               output={"dir": str(tmp_path / "results"), "save_arrays": True})
    run = works(capsys, tmp_path, [path, "--quiet"])
    assert len(map_files(run)) == len(names) * 2  # images x classes x methods
    assert len(list((run / "cams").glob("*/*.npy"))) == len(names) * 2
    summary = json.loads((run / "summary.json").read_text())
    ids = [i["id"] for i in summary["images"]]
    assert len(ids) == len(names) and len({i.lower() for i in ids}) == len(names)
    assert {"x", "d2_x", "Cat", "d2_cat"} <= set(ids)  # a repeated name: its folder's first
    assert len(list((run / "items").glob("*.json"))) == len(names)


def test_class_names_with_double_underscore_are_refused(tmp_path, capsys, assets):
    refused(capsys, tmp_path, [cfg(tmp_path, assets, classes={"b__c": 0, "c": 1}), "--quiet"],
            "classes", "'b__c'", "__")


# ---- 8. runs started together get a folder each ---------------------------------------------------

def test_four_runs_at_once_claim_four_folders(child):
    """Four processes released at the same moment (forked by the ``child`` process after it
    imported torch, so the suite pays for one import, not four): four complete folders."""
    tmp, codes, stderr = child["race"]
    assert codes == [0, 0, 0, 0], stderr[-2000:]
    folders = sorted(p.name for p in (tmp / "results").iterdir())
    assert folders == ["exp", "exp-2", "exp-3", "exp-4"]
    reference = None
    for name in folders:
        run = tmp / "results" / name
        assert (run / "summary.json").is_file() and len(map_files(run)) == 2
        assert not list(run.rglob("*.part"))
        files = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*")
                 if p.suffix in (".png", ".csv")}
        assert reference is None or files == reference
        reference = files


# ---- 9. --resume gives what an uninterrupted run gives ------------------------------------------

def test_resume_with_compare_is_byte_identical(tmp_path, capsys, assets):
    """Run to the end, keep its bytes, cut the run back as an interruption would (summary,
    comparison table and every other item file gone), --resume: the same bytes again."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for i, name in enumerate(("cat.jpg", "dog.jpg", "both.jpg")):
        shutil.copy(assets / name, pics / f"p{i}.jpg")
    path = cfg(tmp_path, assets, images=[str(pics)], targets=["cat"], batch_size=1,
               methods=["gradcam"], compare={"enabled": True})
    run = works(capsys, tmp_path, [path, "--quiet"])
    done = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*")
            if p.suffix in (".csv", ".png", ".npy")}
    assert "compare/compare.csv" in done and len(done["compare/compare.csv"].splitlines()) == 4
    for name in ("summary.json", "summary.csv", "compare/compare.csv"):
        (run / name).unlink()
    for item in sorted((run / "items").glob("*.json"))[::2]:
        item.unlink()
    assert main([path, "--quiet", "--resume"]) == 0, capsys.readouterr().err
    again = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*")
             if p.suffix in (".csv", ".png", ".npy")}
    assert again.keys() == done.keys()
    for rel, data in done.items():
        assert again[rel] == data, rel


# ---- 10. one bad file does not stop a folder run -------------------------------------------------

class _Slow(BaseException):
    pass


def test_recursive_glob_over_symlink_loops_finishes(tmp_path, capsys, assets):
    import signal
    pics = tmp_path / "pics"
    pics.mkdir()
    shutil.copy(assets / "cat.jpg", pics / "cat.jpg")
    (pics / "up").symlink_to(".", target_is_directory=True)
    (pics / "again").symlink_to(".", target_is_directory=True)
    path = cfg(tmp_path, assets, images=[str(pics / "**" / "*.jpg")])

    def stop(*_):
        raise _Slow("still looking for images after 2 s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(2)
    try:
        run = works(capsys, tmp_path, [path, "--quiet"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert len(map_files(run)) == 2


def test_extreme_aspect_ratio_is_skipped_in_a_folder(tmp_path, capsys, assets):
    pics = tmp_path / "pics"
    pics.mkdir()
    shutil.copy(assets / "cat.jpg", pics / "cat.jpg")
    long_strip(pics)
    path = cfg(tmp_path, assets, images=[str(pics)], preprocess={"size": 32})
    run = works(capsys, tmp_path, [path, "--quiet"])
    summary = json.loads((run / "summary.json").read_text())
    assert [i["id"] for i in summary["images"]] == ["cat"]
    assert [Path(s["path"]).name for s in summary["skipped_images"]] == ["strip.png"]


def test_extreme_aspect_ratio_named_alone_is_an_error(tmp_path, capsys, assets):
    strip = long_strip(tmp_path)
    refused(capsys, tmp_path, [cfg(tmp_path, assets, images=[str(strip)], preprocess={"size": 32}),
                               "--quiet"], "strip.png", "20000x8")


def test_matplotlib_markup_in_a_file_name_works_and_resumes(tmp_path, capsys, assets):
    pics = tmp_path / "pics"
    pics.mkdir()
    shutil.copy(assets / "cat.jpg", pics / "$\\alpha$.jpg")
    shutil.copy(assets / "dog.jpg", pics / "$x_{1}^2$.jpg")
    path = cfg(tmp_path, assets, images=[str(pics)])
    run = works(capsys, tmp_path, [path, "--quiet"])
    assert len(map_files(run)) == 4
    (run / "summary.json").unlink()
    for item in (run / "items").glob("*.json"):
        item.unlink()
        break
    assert main([path, "--quiet", "--resume"]) == 0, capsys.readouterr().err
    assert (run / "summary.json").is_file() and len(map_files(run)) == 4


@pytest.mark.parametrize("tail", [b"\x00" * 4096, b"\xff\xd8\xff\xe0" + b"fake trailer" * 300,
                                  b"\xff\xd9" * 10], ids=["4 KB zeros", "fake JPEG header", "end markers"])
def test_jpeg_with_bytes_after_its_end_is_accepted(tmp_path, capsys, assets, tail):
    photo = tmp_path / "phone.jpg"
    photo.write_bytes((assets / "cat.jpg").read_bytes() + tail)
    run = works(capsys, tmp_path, [cfg(tmp_path, assets, images=[str(photo)]), "--quiet"])
    assert len(map_files(run)) == 2


# ---- 11. one line, no traceback, no half-written folder ------------------------------------------

ONE_LINE = {
    "seed beyond 64 bits": ({"seed": 2**70}, ["seed"]),
    "negative seed": ({"seed": -1}, ["seed"]),
    "scorecam batch_size 0": ({"methods": [{"name": "scorecam", "batch_size": 0}]},
                              ["methods[0]", "batch_size"]),
    "scorecam batch_size 'x'": ({"methods": [{"name": "scorecam", "batch_size": "x"}]},
                                ["methods[0]", "batch_size"]),
    "scorecam batch_size true": ({"methods": [{"name": "scorecam", "batch_size": True}]},
                                 ["methods[0]", "batch_size"]),
    "unknown method option": ({"methods": [{"name": "gradcam", "bogus": 1}]}, ["methods[0]", "bogus"]),
    "method option that is an object": ({"methods": [{"name": "ablationcam", "ablation_layer": "x"}]},
                                        ["methods[0]", "ablation_layer"]),
    "Linear layer as target": ({"target_layers": ["4"]}, ["'4'", "feature map"]),
    "unknown builder keyword": ({"model": {"builder": "torchvision.models.resnet18",
                                           "builder_args": {"bogus": 1}},
                                 "target_layers": ["layer4"]}, ["model.builder", "bogus"]),
    "NaN std": ({"preprocess": {"size": SIZE, "std": [float("nan"), 1, 1]}}, ["preprocess.std"]),
    "zero std": ({"preprocess": {"size": SIZE, "std": [0, 1, 1]}}, ["preprocess.std"]),
    "infinite mean": ({"preprocess": {"size": SIZE, "mean": [float("inf"), 0, 0]}}, ["preprocess.mean"]),
    "two classes, one index": ({"classes": {"cat": 0, "dog": 0}}, ["classes", "index 0"]),
    "same class name but case": ({"classes": {"cat": 0, "Cat": 1}}, ["classes"]),
    "batch_size true": ({"batch_size": True}, ["batch_size"]),
    "batch_size 0": ({"batch_size": 0}, ["batch_size"]),
    "size true": ({"preprocess": {"size": True}}, ["preprocess.size"]),
    "trust 'yes'": ({"model": {"file": "<tiny>", "trust": "yes"}}, ["model.trust"]),
    "colormap unknown": ({"output": {"dir": "<results>", "colormap": "jett"}}, ["output.colormap", "jet"]),
    "image_weight 2": ({"output": {"dir": "<results>", "image_weight": 2}}, ["output.image_weight"]),
    "targets not a class": ({"targets": ["cow"]}, ["targets", "cow"]),
    "layer with spaces": ({"target_layers": ["features 10"]}, ["target_layers"]),
    "negative layer index too far": ({"target_layers": ["-9"]}, ["target_layers[0]", "-9"]),
    "cuda without a GPU": ({"device": "cuda"}, ["device", "cuda"]),
}


@pytest.mark.parametrize("case", list(ONE_LINE))
def test_one_line_errors(tmp_path, capsys, assets, case):
    fields, needles = ONE_LINE[case]
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    fields = json.loads(json.dumps(fields).replace('"<tiny>"', json.dumps(str(assets / "tiny.pth")))
                        .replace('"<results>"', json.dumps(str(tmp_path / "results"))))
    refused(capsys, tmp_path, [cfg(tmp_path, assets, **fields), "--quiet"], *needles)


def test_linear_layer_of_alexnet(tmp_path, capsys, assets, whole_models):
    _, path, _ = whole_models["alexnet"]
    refused(capsys, tmp_path, [cfg(tmp_path, assets, model={"file": str(path)},
                                   target_layers=["classifier.6"], preprocess={"size": [64, 64]}),
                               "--quiet"], "classifier.6", "feature map")


@pytest.mark.parametrize("value", [3, "x"], ids=["int", "str"])
def test_whole_model_with_a_non_module_child(tmp_path, capsys, assets, value):
    model = tiny_net()
    model._modules["bad"] = value
    inner = tiny_net()
    inner[0]._modules["deep"] = value
    for name, obj in (("top.pth", model), ("deep.pth", inner)):
        torch.save(obj, tmp_path / name)
        path = cfg(tmp_path, assets, model={"file": str(tmp_path / name)})
        article = "an" if type(value).__name__[0] in "aeiou" else "a"  # 'an int', 'a str'
        refused(capsys, tmp_path, [path, "--quiet"], name, "child",
                f"is {article} {type(value).__name__}")


def _none_child():
    model = tiny_net()
    model._modules["2"] = None
    return model


def _fixed_input():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 2)).eval()


@pytest.mark.parametrize("make", [pytest.param(_none_child, id="None child in a Sequential"),
                                  pytest.param(_fixed_input, id="input size it cannot take")])
def test_model_whose_forward_fails(tmp_path, capsys, assets, make):
    torch.save(make(), tmp_path / "broken.pth")
    refused(capsys, tmp_path, [cfg(tmp_path, assets, model={"file": str(tmp_path / "broken.pth")}),
                               "--quiet"], "model")


@pytest.mark.parametrize("where", ["_parameters", "_buffers"])
def test_whole_model_with_a_non_tensor_parameter(tmp_path, capsys, assets, where):
    model = tiny_net()
    getattr(model[0], where)["bogus"] = "not a tensor"
    torch.save(model, tmp_path / "odd.pth")
    refused(capsys, tmp_path, [cfg(tmp_path, assets, model={"file": str(tmp_path / "odd.pth")}),
                               "--quiet"], "odd.pth")


@pytest.mark.parametrize("model", [
    {"builder": "torchvision.models.resnet18", "builder_args": {"weights": "DEFAULT"}},
    {"builder": "torchvision.models.resnet18", "builder_args": {"weights": "IMAGENET1K_V1"}},
    {"file": "<state_dict>", "arch": "torchvision.models.resnet18",
     "arch_args": {"weights": "DEFAULT"}},
], ids=["builder DEFAULT", "builder IMAGENET1K_V1", "arch DEFAULT"])
def test_weights_are_never_downloaded(tmp_path, capsys, assets, monkeypatch, model):
    """No cache is there to find (TORCH_HOME is empty): a download would be the only way, and
    the refusal comes before torch.hub creates its cache folder."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    if model.get("file"):
        torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "sd.pth")
        model = dict(model, file=str(tmp_path / "sd.pth"))
    path = cfg(tmp_path, assets, model=model, target_layers=["layer4"])
    refused(capsys, tmp_path, [path, "--quiet"], "download")


def test_output_dir_is_a_file(tmp_path, capsys, assets):
    (tmp_path / "results").write_text("a file")
    refused(capsys, tmp_path, [cfg(tmp_path, assets), "--quiet"], "results", "file")


def test_read_only_results_folder(tmp_path, capsys, assets):
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    (tmp_path / "results").mkdir()
    os.chmod(tmp_path / "results", 0o555)
    try:
        refused(capsys, tmp_path, [cfg(tmp_path, assets), "--quiet"], "results", "writable")
    finally:
        os.chmod(tmp_path / "results", 0o755)


def test_duplicate_yaml_keys(tmp_path, capsys, assets):
    text = Path(cfg(tmp_path, assets)).read_text() + "batch_size: 1\nbatch_size: 2\n"
    refused(capsys, tmp_path, [raw_cfg(tmp_path, text), "--quiet"], "exp.yaml", "batch_size",
            "twice")


@pytest.mark.parametrize("text,needles", [
    ("!!python/object/apply:os.system ['touch {m}']\n", ["exp.yaml"]),
    ("model: !!python/name:os.system\n", ["exp.yaml"]),
    ("\x00\x01binary", ["exp.yaml"]),
    ("- just\n- a list\n", ["exp.yaml", "mapping"]),
    ("", ["exp.yaml"]),
], ids=["python object tag", "python name tag", "binary", "a list", "empty"])
def test_config_files_that_are_not_configs(tmp_path, capsys, text, needles):
    marker = tmp_path / "MARKER"
    refused(capsys, tmp_path, [raw_cfg(tmp_path, text.replace("{m}", str(marker))), "--quiet"],
            *needles, marker=marker)


def test_bad_set_arguments(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets)
    refused(capsys, tmp_path, [path, "--quiet", "--set", "nokeyvalue"], "--set", "KEY=VALUE")
    refused(capsys, tmp_path, [path, "--quiet", "--set", "=3"], "--set")
    refused(capsys, tmp_path, [path, "--quiet", "--set", "batch_size.x=3"], "batch_size")
    refused(capsys, tmp_path, [path, "--quiet", "--set", "model.file.x=3"], "model.file")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_output_files_respect_the_umask(tmp_path, capsys, assets, umask):
    old = os.umask(umask)
    try:
        run = works(capsys, tmp_path, [cfg(tmp_path, assets), "--quiet"])
    finally:
        os.umask(old)
    for png in map_files(run) + [run / "summary.json", run / "panels" / "cat.png"]:
        assert png.stat().st_mode & 0o777 == 0o666 & ~umask, (png, oct(png.stat().st_mode))
    assert (run / "cams").stat().st_mode & 0o777 == 0o777 & ~umask


# ---- 12. all config problems at once ---------------------------------------------------------------

def test_three_problems_at_once(tmp_path, capsys, assets):
    path = cfg(tmp_path, assets, batch_size=0, preprocess={"size": 100000},
               output={"dir": str(tmp_path / "results"), "colourmap": "jet"})
    err = refused(capsys, tmp_path, [path, "--quiet"], multiline=True)
    lines = err.splitlines()
    assert lines[0].endswith(f"3 problems in {path}:"), err
    body = [line.strip() for line in lines[1:]]
    assert len(body) == 3, err
    for key in ("batch_size", "preprocess.size", "output.colourmap"):
        assert sum(line.startswith(f"{path}: {key}: ") for line in body) == 1, (key, err)
    for internal in (".int", "tuple[", "(top level)", "pydantic", "Value error", "function-"):
        assert internal not in err, err
    assert "did you mean 'colormap'" in err


@pytest.mark.parametrize("fields,key", [
    ({"preprocess": {"size": "big"}}, "preprocess.size"),
    ({"preprocess": {"size": [32]}}, "preprocess.size"),
    ({"preprocess": {"size": [32, "x"]}}, "preprocess.size"),
    ({"methods": [{"name": "gradcam"}, {"nme": "x"}]}, "methods[1]"),
    ({"classes": {"cat": "zero"}}, "classes.cat"),
    ({"model": {"file": "x.pth", "builder": "torchvision.models.resnet18"}}, "model"),
    ({"targets": 3}, "targets"),
], ids=["size text", "size one item", "size pair text", "method without name", "class index text",
        "file and builder", "targets number"])
def test_problem_lines_name_the_key_in_file_terms(tmp_path, capsys, assets, fields, key):
    path = cfg(tmp_path, assets, **fields)
    err = refused(capsys, tmp_path, [path, "--quiet"], multiline=True)
    lines = [line.strip().removeprefix("explain: error: ") for line in err.splitlines()]
    if len(lines) > 1:
        assert lines[0] == f"{len(lines) - 1} problems in {path}:", err
        lines = lines[1:]
    assert all(line.startswith(f"{path}: ") for line in lines), err
    assert any(line.startswith(f"{path}: {key}") for line in lines), err
    for internal in (".int", "tuple[", "(top level)", "pydantic", "Value error", "function-",
                     ".str", "literal["):
        assert internal not in err, err

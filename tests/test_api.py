"""The Python API (explain.run / load / load_model / cam / channel_maps): the same numbers,
files and errors as the command line, typed results, inline display, no global state."""

from __future__ import annotations

import base64
import copy
import csv
import inspect
import os
import re
import subprocess
import sys
import typing

import cv2
import numpy as np
import pytest
import torch
import yaml

import explain
from conftest import IMAGES, REPO, SMALL_SIZE, make_small_alexnet
from explain.cli import main

DEMO = REPO / "configs" / "demo_catdog.yaml"
DEMO_LAYER = "backbone._blocks.15"
CLASSES = {"cat": 0, "dog": 1}
PHOTOS = [str(IMAGES / "cat.jpg"), str(IMAGES / "both.jpg")]
QUIET = {"progress": False, "log": lambda line: None}


def decoded(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def embedded(html: str) -> list[np.ndarray]:
    """Every picture of an HTML display; each must be a data URI that decodes."""
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources
    pictures = []
    for src in sources:
        match = re.fullmatch(r"data:image/(png|jpeg|webp);base64,([A-Za-z0-9+/=]+)", src)
        assert match, src[:80]
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(match.group(2)), np.uint8),
                               cv2.IMREAD_COLOR)
        assert picture is not None and picture.size > 0
        pictures.append(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
    return pictures


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    """The demo config through explain.run: cat.jpg and both.jpg, arrays and channel views
    (as the config says), no ROAD metrics and no boxes (fast)."""
    out = tmp_path_factory.mktemp("api_demo")
    return explain.run(DEMO, out=out, images=PHOTOS, metrics=[], annotations={"file": None},
                       **QUIET)


@pytest.fixture(scope="module")
def alex_file(tmp_path_factory):
    """A small AlexNet saved whole (as the course file is) and a config for it."""
    folder = tmp_path_factory.mktemp("api_alex")
    torch.save(make_small_alexnet(), folder / "alex.pth")
    data = {"model": {"file": "alex.pth"}, "classes": CLASSES,
            "images": [str(IMAGES / f) for f in ("cat.jpg", "dog.jpg", "both.jpg")],
            "preprocess": {"size": [SMALL_SIZE, SMALL_SIZE]}, "target_layers": ["features.10"],
            "methods": ["gradcam", "layercam"], "batch_size": 2,
            "report": {"enabled": False}, "output": {"dir": "results"}}
    (folder / "alex.yaml").write_text(yaml.safe_dump(data))
    return folder / "alex.yaml"


# ---- import, documentation -----------------------------------------------------------------

def test_import_does_not_import_torch():
    code = "import explain, sys; print('torch' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.split() == ["False", "False"]
    from explain import channels  # the module keeps its name beside the function channel_maps
    assert channels.__name__ == "explain.channels" and callable(explain.channel_maps)


def test_reading_a_run_back_imports_no_torch(demo_study, tmp_path):
    """explain report, explain.load and explain diff read records and pictures, never the
    model: they imported torch and the library through the writers' types (5.3 s and 840 MB
    for the demo's report on 2 cores; 1.4 s and 140 MB without them)."""
    run = demo_study.folder
    code = ("import sys, explain\n"
            "from explain.cli import main\n"
            f"assert main(['report', {str(run)!r}]) == 0\n"
            f"assert len(explain.load({str(run)!r}).table()) == 2 * 2 * 2\n"
            f"assert main(['diff', {str(run)!r}, {str(run)!r}, '--out', {str(tmp_path)!r}]) == 0\n"
            "print(sorted(m for m in ('torch', 'pytorch_grad_cam', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def _typed(func, where: str) -> None:
    namespace = {"np": np, "torch": torch, "nn": torch.nn}
    from matplotlib.figure import Figure
    from PIL import Image
    from explain.channels import ViewOptions
    from explain.config import Config
    from explain.evidence import Evidence
    from explain.results import CompareRow, ImageEntry, MapRecord, RunSummary
    namespace.update(Image=Image, Figure=Figure, Config=Config, CompareRow=CompareRow,
                     Evidence=Evidence,
                     ImageEntry=ImageEntry, MapRecord=MapRecord, RunSummary=RunSummary,
                     ViewOptions=ViewOptions)
    sig = inspect.signature(func)
    for name, param in sig.parameters.items():
        if name != "self":
            assert param.annotation is not inspect.Parameter.empty, f"{where}({name})"
    if func.__name__ != "__init__":
        assert sig.return_annotation is not inspect.Signature.empty, f"{where} -> ?"
    typing.get_type_hints(func, localns=namespace)  # every hint resolves


def test_every_public_name_has_a_docstring_and_type_hints():
    assert set(explain.__all__) >= {"run", "load", "load_model", "cam", "channel_maps", "Run",
                                    "CamResult", "CamBatch", "ChannelMaps", "ExplainError"}
    for name in explain.__all__:
        obj = getattr(explain, name)
        assert (obj.__doc__ or "").strip(), name
        if inspect.isfunction(obj):
            _typed(obj, name)
        elif inspect.isclass(obj) and obj is not explain.ExplainError:
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__getitem__"):
                    continue
                func = member.fget if isinstance(member, property) else member
                if inspect.isfunction(func):
                    assert (func.__doc__ or "").strip() or attr.startswith("_"), f"{name}.{attr}"
                    _typed(func, f"{name}.{attr}")


# ---- the demo network: explain.cam equals a run's saved arrays ----------------------------

def test_cam_equals_the_arrays_a_run_saves(demo_study, demo_model):
    cams = explain.cam(demo_model, PHOTOS, DEMO_LAYER, ["gradcam", "layercam"], classes=CLASSES)
    assert isinstance(cams, explain.CamBatch) and [r.name for r in cams] == ["cat", "both"]
    for result in cams:
        entry = demo_study.entry(result.name)
        assert result.image.shape[:2] == tuple(entry.input_size)
        for method in ("gradcam", "layercam"):
            for cls in CLASSES:
                saved = np.load(demo_study.folder / "cams" / method / f"{result.name}__{cls}.npy")
                mine = result.maps[method][cls]
                assert mine.dtype == np.float32 and mine.shape == saved.shape
                assert np.abs(mine - saved).max() <= 1e-6
                assert np.array_equal(demo_study.map(result.name, cls, method), saved)
            assert result.probabilities == pytest.approx(entry.probabilities, abs=1e-6)
        assert result.predicted == entry.predicted
    assert cams[0].probabilities["cat"] > 0.9
    with pytest.raises(explain.ExplainError, match="different sizes"):
        cams.maps  # 224x352 and 224x448 do not stack


def test_channel_maps_are_the_runs_channel_views(demo_study, demo_model):
    ch = explain.channel_maps(demo_model, IMAGES / "cat.jpg", DEMO_LAYER, "gradcam",
                              classes=CLASSES)
    folder = demo_study.folder / "channels"
    assert ch.activations.shape == (320, 7, 11)
    assert np.array_equal(ch.grid, read_rgb(folder / "cat__activations.png"))
    assert np.allclose(ch.activations, np.load(folder / "cat__activations.npy"), atol=1e-6)
    assert np.array_equal(ch.contribution_grid("dog"),
                          read_rgb(folder / "gradcam" / "cat__dog__contributions.png"))
    with open(folder / "gradcam" / "cat__cat__channels.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["channel"] for r in ch.channels["cat"][:10]] == [int(r["channel"]) for r in rows[:10]]
    record = demo_study.record("cat", "cat", "gradcam")
    assert ch.counts["cat"] == record.channels.model_dump()
    assert np.array_equal(ch.cams["cat"], demo_study.map("cat", "cat", "gradcam"))
    with pytest.raises(explain.ExplainError, match="not a sum over channels"):
        explain.channel_maps(demo_model, IMAGES / "cat.jpg", DEMO_LAYER, "scorecam")


# ---- Run: records, table, display ----------------------------------------------------------

def test_run_records_table_and_load(demo_study, tmp_path):
    run = demo_study
    assert run.methods == ["gradcam", "layercam"] and run.classes == ["cat", "dog"]
    assert run.layers == [DEMO_LAYER] and run.report_path == run.folder / "report.html"
    rows = run.table()
    with open(run.folder / "summary.csv") as f:
        on_disk = list(csv.DictReader(f))
    assert len(rows) == len(on_disk) == 2 * 2 * 2
    for mine, theirs in zip(rows, on_disk):
        assert (mine["image"], mine["class"], mine["method"]) == \
               (theirs["image"], theirs["class"], theirs["method"])
        assert mine["peak_x"] == int(theirs["peak_x"])
        assert mine["mass_left"] == pytest.approx(float(theirs["mass_left"]))
    loaded = explain.load(run.folder)
    assert loaded.table() == rows and loaded.finished
    assert np.array_equal(loaded.map("both", "cat", "layercam"), run.map(1, "cat", "layercam"))
    both = run.map("both", "cat", "gradcam")
    assert both[:, :both.shape[1] // 2].sum() / both.sum() > 0.7
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(explain.ExplainError, match="pip install pandas"):
            run.table(as_frame=True)
    else:
        assert run.dataframe().shape[0] == len(rows)
    with pytest.raises(explain.ExplainError, match="did you mean 'both'"):
        run.map("bot", "cat", "gradcam")
    with pytest.raises(explain.ExplainError, match="did you mean 'gradcam'"):
        run.record("both", "cat", "gradcm")
    with pytest.raises(explain.ExplainError, match="no such results folder"):
        explain.load(tmp_path / "nothing")


def test_trust_is_the_record_or_regrouped(demo_study):
    """``Run.trust()``: summary.json's record; with a photo separator, worked out again from
    the records (the demo's three photos have no '-': each its own photo); a bad one is one
    line."""
    loaded = explain.load(demo_study.folder)
    assert loaded.trust().model_dump() == demo_study.summary.trust.model_dump()
    again = loaded.trust(photo_separator="-")
    assert (again.unit, again.photos, again.conclusion) == (
        "photo", 0, demo_study.summary.trust.conclusion)  # no ranked number: none counted
    with pytest.raises(explain.ExplainError, match=r"^trust: photo_separator: 'a b': 1 to 8"):
        loaded.trust("a b")


def test_displays_embed_their_pictures(demo_study, demo_model):
    html = demo_study._repr_html_()
    assert "demo_catdog" in html and "<h4>Methods</h4>" in html
    pictures = embedded(html)
    panels = [read_rgb(demo_study.folder / "panels" / f"{c}.png") for c in CLASSES]
    assert len(pictures) == 2 and all(np.array_equal(a, b) for a, b in zip(pictures, panels))
    result = explain.cam(demo_model, IMAGES / "cat.jpg", DEMO_LAYER, ["gradcam"],
                         targets="cat", classes=CLASSES)
    assert isinstance(result, explain.CamResult) and result.classes == ["cat"]
    photo, overlay = embedded(result._repr_html_())
    assert photo.shape == overlay.shape == (*result.image.shape[:2], 3)
    assert np.abs(overlay.astype(int) - result.overlay("gradcam", "cat")).mean() < 3  # JPEG
    saved = read_rgb(demo_study.folder / "cams" / "gradcam" / "cat__cat.png")
    assert np.array_equal(result.overlay("gradcam", "cat"), saved)
    figure = demo_study.show("both", "cat")
    assert figure._repr_png_().startswith(b"\x89PNG") and len(figure.axes) == 3


# ---- configs, overrides, errors as the command line ----------------------------------------

def test_overrides_merge_like_set(alex_file):
    from explain.api.runs import load_settings
    from explain.config import load_config
    cfg = load_settings(alex_file, {"channels": {"tile_size": 20}, "layer": "features.11",
                                    "methods": "gradcam, xgradcam", "compare": True})
    assert cfg == load_config(alex_file, {"channels.tile_size": 20, "compare.enabled": True,
                                          "target_layers": ["features.11"],
                                          "methods": ["gradcam", "xgradcam"]})
    again = load_settings(cfg, {"output": {"image_weight": 0.3}})
    assert again.output.image_weight == 0.3 and again.compare.enabled
    assert again.source == cfg.source and again.run_name == "alex"


def _cli_error(args: list[str], capsys) -> str:
    assert main(args + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("explain: error: ")
    return err[len("explain: error: "):]


@pytest.mark.parametrize("api, cli", [
    ({"methods": ["gradcm"]}, ["--methods", "gradcm"]),
    ({"layer": "features.100"}, ["--layer", "features.100"]),
    ({"model": {"output": 0}}, ["--set", "model.output=0"]),
    ({"preprocess": {"sise": 3}}, ["--set", "preprocess.sise=3"]),
])
def test_run_errors_are_the_command_lines(alex_file, capsys, api, cli):
    out = alex_file.parent / "never"
    with pytest.raises(explain.ExplainError) as caught:
        explain.run(alex_file, out=out, **api, **QUIET)
    message = str(caught.value)
    assert "from the call's arguments" in message  # the field is not the file's
    assert "\n" not in message and message.replace("the call's arguments", "the command line") \
        == _cli_error([str(alex_file), "--out", str(out)] + cli, capsys)
    assert not out.exists() and not (alex_file.parent / "results").exists()


class DictNet(torch.nn.Module):
    """A model whose forward returns a dict (needs model.output / output='logits')."""

    def __init__(self):
        super().__init__()
        self.net = make_small_alexnet()

    def forward(self, x):
        return {"logits": self.net(x), "features": x.mean()}


def test_cam_errors_are_the_command_lines(alex_file, tmp_path, capsys):
    net = make_small_alexnet()
    config = yaml.safe_load(alex_file.read_text())
    config["model"] = {"builder": "test_api:DictNet", "trust": True}
    config["target_layers"] = ["net.features.10"]
    (tmp_path / "dict.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(explain.ExplainError) as caught:
        explain.cam(DictNet(), IMAGES / "cat.jpg", "net.features.10")
    # the same line in the call's words; the command line's names the config file first
    from explain.api.inputs import OPTIONS, call_words
    said = _cli_error([str(tmp_path / "dict.yaml")], capsys)
    assert "model.output: logits" in said and "output='logits'" in str(caught.value)
    assert f"{tmp_path / 'dict.yaml'}: {caught.value}" == call_words(said, OPTIONS)
    assert explain.cam(DictNet(), IMAGES / "cat.jpg", "net.features.10", output="logits",
                       preprocess={"size": SMALL_SIZE}).classes == ["0", "1"]
    expected = [
        ((np.zeros((40, 50), np.uint8),), "images: an image array must be H x W x 3 (RGB), got "
                                          "shape (40, 50)"),
        ((np.zeros((40, 50, 3), np.int64),), "images: image array of dtype int64; expected uint8"),
        ((np.full((40, 50, 3), 2.0),), "images: a float image array must hold values in 0..1"),
        (([IMAGES / "cat.jpg", IMAGES / "dgo.jpg"],),
         f"images[1]: image not found: {IMAGES / 'dgo.jpg'} — did you mean {IMAGES / 'dog.jpg'}?"),
        ((IMAGES / "cat.jpg", "features.100"), "target_layers[0]: no layer 'features.100' in the "
                                               "model — 'features' has layers 0 to 12"),
        ((IMAGES / "cat.jpg", "features.10", ["gradcm"]),
         "explain.cam: methods[0].name: unknown method 'gradcm' — did you mean 'gradcam'?"),
    ]
    for args, start in expected:
        args = args + ("features.10",) if len(args) == 1 else args
        with pytest.raises(explain.ExplainError) as caught:
            explain.cam(net, *args)
        assert str(caught.value).startswith(start) and "\n" not in str(caught.value)
    with pytest.raises(explain.ExplainError, match="unknown option 'colourmap' — did you mean "
                                                   "'colormap'"):
        explain.cam(net, IMAGES / "cat.jpg", "features.10", colourmap="jet")


# ---- inputs: the same maps from a path, an array, a PIL image, a tensor ---------------------

def test_every_kind_of_image_gives_the_same_maps():
    from PIL import Image
    net = make_small_alexnet()
    opts = {"classes": CLASSES, "preprocess": {"size": [SMALL_SIZE, SMALL_SIZE]}}
    path = IMAGES / "dog.jpg"
    first = explain.cam(net, path, "features.10", ["gradcam", "layercam"], **opts)
    rgb = read_rgb(path)
    for other in (rgb, rgb.astype(np.float32) / 255, Image.fromarray(rgb), first.input):
        again = explain.cam(net, other, net.features[10], ["gradcam", "layercam"], **opts)
        for method in ("gradcam", "layercam"):
            for cls in CLASSES:
                assert np.abs(again.maps[method][cls] - first.maps[method][cls]).max() <= 1e-5
    batch = explain.cam(net, torch.stack([first.input, first.input]), "features.10",
                        targets=1, **opts)
    assert batch.maps["gradcam"]["dog"].shape == (2, SMALL_SIZE, SMALL_SIZE)
    # another batch (two images, one class): the same map up to the last float bits
    assert np.abs(batch.maps["gradcam"]["dog"][0] - first.maps["gradcam"]["dog"]).max() <= 1e-5


# ---- maps without saved arrays, and no global state ----------------------------------------

def test_map_without_arrays_is_made_again_in_process(alex_file):
    plain = explain.run(alex_file, metrics=[], **QUIET)
    saved = explain.run(alex_file, output={"save_arrays": True}, metrics=[], **QUIET)
    assert not (plain.folder / "cams" / "gradcam" / "cat__cat.npy").exists()
    for entry in plain.images:
        for cls in CLASSES:
            for method in ("gradcam", "layercam"):
                assert np.array_equal(plain.map(entry.id, cls, method),
                                      saved.map(entry.id, cls, method))
    with pytest.raises(explain.ExplainError, match="output.save_arrays: true"):
        explain.load(plain.folder).map("cat", "cat", "gradcam")


def test_a_saved_map_missing_from_a_loaded_run_is_named_not_blamed_on_save_arrays(alex_file,
                                                                                   tmp_path):
    """Run.map reads the file the record names; one gone from a run that saved its arrays
    was reported as 'the run saved no arrays (output.save_arrays: false)'."""
    saved = explain.run(alex_file, out=tmp_path, output={"save_arrays": True}, metrics=[],
                        **QUIET)
    rel = saved.record("cat", "cat", "gradcam").files.array
    assert rel == "cams/gradcam/cat__cat.npy"
    (saved.folder / rel).unlink()
    with pytest.raises(explain.ExplainError) as caught:
        explain.load(saved.folder).map("cat", "cat", "gradcam")
    assert str(caught.value) == (f"{saved.folder / rel}: the saved map of cat / cat / gradcam "
                                 f"is missing or not a plain file; the run folder is damaged")


def _outputs(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.suffix in (".npy", ".png", ".csv")}


def test_runs_in_one_process_equal_fresh_processes(alex_file, tmp_path):
    """Two runs and a run after a failed one, in this process, write the bytes a fresh process
    writes; explain.cam on one model object, before and after a failed call, gives the same
    maps and leaves the model as it was."""
    opts = {"output": {"save_arrays": True}, "metrics": [], **QUIET}
    first = explain.run(alex_file, out=tmp_path / "a", **opts)
    with pytest.raises(explain.ExplainError, match="model.output"):
        explain.run(alex_file, out=tmp_path / "a", model={"output": 0}, **opts)
    second = explain.run(alex_file, out=tmp_path / "a", **opts)
    code = (f"import explain; explain.run({str(alex_file)!r}, out={str(tmp_path / 'b')!r}, "
            f"output={{'save_arrays': True}}, metrics=[], progress=False)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    fresh = _outputs(tmp_path / "b" / "alex")
    assert len(fresh) == 3 * 2 * 2 * 2 + 3  # maps (png, npy), summary.csv, 2 panels
    assert fresh == _outputs(first.folder) == _outputs(second.folder)

    net = make_small_alexnet()
    net.train()
    state = copy.deepcopy(net.state_dict())
    args = (IMAGES / "both.jpg", "features.10", ["gradcam", "eigencam"])
    kw = {"classes": CLASSES, "preprocess": {"size": SMALL_SIZE}}
    before = explain.cam(net, *args, **kw)
    with pytest.raises(explain.ExplainError):
        explain.cam(net, *args, output=0, **kw)
    after = explain.cam(net, *args, **kw)
    for method in ("gradcam", "eigencam"):
        for cls in CLASSES:
            assert np.array_equal(before.maps[method][cls], after.maps[method][cls])
    assert net.training and all(m.training for m in net.modules())
    assert [m.inplace for m in net.modules() if hasattr(m, "inplace")] == \
           [m.inplace for m in make_small_alexnet().modules() if hasattr(m, "inplace")]
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_a_compare_run_returns_its_rows_as_load_does(alex_file, tmp_path):
    done = explain.run(alex_file, out=tmp_path, compare=True, metrics=[], **QUIET)
    loaded = explain.load(done.folder)
    assert sorted(done.compare_rows) == ["both", "cat", "dog"]
    assert done.compare_rows == loaded.compare_rows
    rows = [row for rows in done.compare_rows.values() for row in rows]
    assert len(rows) == 3 * len(CLASSES) * 2  # images x classes x (gradcam, layercam)
    assert max(row.max_abs for row in rows) < 1e-4  # the guard on: hand-written code agrees


def test_errors_of_a_call_name_its_arguments_not_config_keys():
    """A notebook passes in_channels=1, not model.in_channels: 1: explain.cam's and
    explain.channel_maps' errors say the argument (a grey network fed RGB, a bad option)."""
    from explain.api.inputs import OPTIONS, call_words
    grey = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2)).eval()
    photo = np.full((32, 32, 3), 120, np.uint8)
    for call in (explain.cam, explain.channel_maps):
        with pytest.raises(explain.ExplainError) as info:
            call(grey, photo, "0", "gradcam", classes=["a", "b"], preprocess={"size": 32})
        assert "set in_channels=1 (" in str(info.value), str(info.value)
        assert "model.in_channels" not in str(info.value)
    with pytest.raises(explain.ExplainError) as info:
        explain.cam(grey, photo, "0", "gradcam", classes=["a", "b"], in_channels=2)
    assert str(info.value) == "explain.cam: in_channels: Input should be 1 or 3 (got 2)"
    said = call_words("set model.fix_inplace: false, model.head: softmax. output.colormap", OPTIONS)
    assert said == "set fix_inplace=False, head='softmax'. colormap"

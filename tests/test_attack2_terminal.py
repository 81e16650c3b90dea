"""Second attack (issue 25), the terminal and unclear failures: names from files and models
(layer names, image and folder names, dictionary keys, exception texts) reach the terminal only
through ``explain.names.printable``, so escape codes, carriage returns and line breaks cannot
redraw the screen or forge an ``explain: error:`` line; NaN/inf weights stop a run with one line
naming the layer or the outputs; exception texts are quoted without cutting a number in half;
the README's Trust section says what ``--set`` can lift and where outputs may go."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import explain
from conftest import IMAGES, SMALL_SIZE, make_small_alexnet, write_config
from helpers import cpu_engine, explain_error, refused
from explain.errors import ExplainError

CODE_ROOT = Path(explain.__file__).resolve().parent.parent  # the copy under test
FORGED = "\nexplain: error: fake"
HOSTILE = ["a\x1b[31mred", "b\r\x1b[2Jclear", "c" + FORGED, "d\x9b2Je\u202egnp_exe",
           "\u2066f\x07\t"]
RAW = re.compile("[\x1b\r\x07\x9b\u202e\u2066]")  # must never reach the terminal as is


def run_explain(args: list[str], capfd) -> SimpleNamespace:
    """``explain ARGS`` in this process, with what reached the terminal's file descriptors
    (stdout, stderr) as text: everything explain and its libraries printed. (A child process
    per test took 5 s more each, torch's import.)"""
    from explain.cli import main
    capfd.readouterr()
    code = main(args)
    out, err = capfd.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def assert_clean(*texts: str) -> None:
    """No raw control or bidi character, and no forged error line."""
    for text in texts:
        assert not RAW.search(text), repr(text)
        assert not any(line.startswith("explain: error: fake") for line in text.splitlines()), text


# ---- the sanitiser ----------------------------------------------------------------------------

def test_printable_escapes_controls_bidi_and_surrogates():
    from explain.names import printable
    text = printable("x\x1b[31my\r\nexplain: error: fake\t\x9b\x85\u202e\u2066\udcff\x00\x7f")
    assert text == ("x\\x1b[31my\\r\\nexplain: error: fake\\t\\x9b\\x85\\u202e\\u2066\\udcff"
                    "\\x00\\x7f")
    text.encode("utf-8")  # no lone surrogate left: stdout can write it
    assert printable("features.11 猫 é — ok") == "features.11 猫 é — ok"


def test_printable_caps_the_length_with_a_marker():
    from explain.names import printable
    long = "start-" + "x" * 5000 + "-end"
    text = printable(long, 200)
    assert len(text) <= 200 and text.startswith("start-") and text.endswith("-end")
    assert "[...4837 characters cut...]" in text  # 5010 characters, 173 of them shown
    escaped = printable("\x1b" * 500, 100)  # escapes count towards the cap, never cut in half
    assert len(escaped) <= 100 and re.fullmatch(r"(\\x1b)+\[\.\.\.\d+ characters cut\.\.\.\]"
                                                r"(\\x1b)+", escaped), escaped
    assert printable("a" * 200, 200) == "a" * 200


# ---- exception texts keep their numbers -------------------------------------------------------

def test_first_line_keeps_an_allocation_size_whole():
    from explain.errors import first_line
    try:
        torch.empty(512_000_000_000)  # 2 TB: refused by the allocator at once
    except RuntimeError as exc:
        text = first_line(exc)
    assert "allocate 2048000000000 bytes" in text, text
    line = "CUDA out of memory. " + "x" * 170 + " Tried to allocate 2048000000000 bytes. More"
    cut = first_line(RuntimeError(line + "\nsecond line"), 200)
    assert len(cut) <= 200 and cut.endswith(" ...") and "20480" not in cut, cut
    assert first_line(RuntimeError("\n  a   b \nc")) == "a b"
    assert first_line(KeyError()) == "KeyError"


class Raises(nn.Module):
    """A network whose forward fails with a long one-line message holding a byte count."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        raise RuntimeError("DefaultCPUAllocator: " + "y" * 161 + " you tried to allocate "
                           "2048000000000 bytes. Error code 12 (Cannot allocate memory)")


def test_a_failed_forward_is_quoted_without_cutting_a_number():
    from explain.models.heads import Classifier, Head
    from explain.layers import survey
    net = Raises()
    with pytest.raises(ExplainError) as info:
        survey(net, Classifier(net), torch.randn(1, 3, 16, 16), Head())
    text = str(info.value)
    numbers = re.findall(r"\d+", text)
    assert "204800" not in numbers and all(n != "2048000000000"[:len(n)] or
                                           n == "2048000000000" for n in numbers), text
    assert "RuntimeError: DefaultCPUAllocator: yyy" in text and " ...)" in text, text


# ---- hostile names at the terminal ------------------------------------------------------------

def hostile_net() -> nn.Sequential:
    """A small network whose module names hold escape codes, CR, a forged error line, C1 and
    bidi characters (torch accepts any name without a dot)."""
    torch.manual_seed(0)
    net = nn.Sequential()
    for name, module in zip(HOSTILE, [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)]):
        net.add_module(name, module)
    return net.eval()


def test_explain_layers_escapes_module_and_image_names(tmp_path, capfd):
    torch.save(hostile_net(), tmp_path / "model.pth")
    photo = tmp_path / "p\x1b[31mhoto\r\u202e.jpg"
    shutil.copy(IMAGES / "cat.jpg", photo)
    cfg = write_config(tmp_path, model={"file": "model.pth"}, target_layers="auto",
                       images=[str(photo)], preprocess={"size": [32, 32]})
    done = run_explain(["layers", str(cfg)], capfd)
    assert done.returncode == 0, done.stderr
    assert_clean(done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[0] == "exp.yaml: 5 modules, input (1, 3, 32, 32) (p\\x1b[31mhoto\\r\\u202e.jpg)"
    rows = {line.split()[0]: line for line in lines[1:7] if line.strip()}
    assert {"a\\x1b[31mred", "b\\r\\x1b[2Jclear", "c\\nexplain:", "d\\x9b2Je\\u202egnp_exe",
            "\\u2066f\\x07\\t"} <= set(rows), lines
    assert "auto: b\\r\\x1b[2Jclear (the last layer" in done.stdout


def test_a_run_escapes_file_and_folder_names_in_warnings_and_notes(tmp_path, capfd):
    torch.save(make_small_alexnet(), tmp_path / "model.pth")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(IMAGES / "cat.jpg", photos / "ok\x1b]0;title\x07.jpg")
    (photos / ("bad\x1b[2J\r" + FORGED + ".jpg")).write_bytes(b"not an image")
    tree = tmp_path / "tree"
    for folder in ("cat", "dog", "x\x1b[31m" + FORGED):
        (tree / folder).mkdir(parents=True)
        shutil.copy(IMAGES / "dog.jpg", tree / folder / "one.jpg")
    cfg = write_config(tmp_path, model={"file": "model.pth"}, target_layers=["features.10"],
                       images=[str(photos), {"labelled": str(tree), "skip_unknown": True}],
                       preprocess={"size": [SMALL_SIZE, SMALL_SIZE]}, report={"enabled": False},
                       annotations={"boxes": {"ghost\x1b[31m" + FORGED: {"cat": [0, 0, 9, 9]}}})
    done = run_explain([str(cfg), "--quiet"], capfd)
    assert done.returncode == 0, done.stderr
    assert_clean(done.stdout, done.stderr)
    err = done.stderr
    assert "warning: skipped " in err and "bad\\x1b[2J\\r\\nexplain: error: fake.jpg" in err, err
    assert "x\\x1b[31m\\nexplain: error: fake" in err, err  # the skipped class folder
    assert "ghost\\x1b[31m\\nexplain: error: fake" in err, err  # boxes for no image
    summary = json.loads((tmp_path / "results" / "exp" / "summary.json").read_text("utf-8"))
    assert any(s["path"].endswith("bad\x1b[2J\r" + FORGED + ".jpg")  # the record stays raw
               for s in summary["skipped_images"]), summary["skipped_images"]


def test_an_unexpected_safetensors_key_is_escaped(tmp_path, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    key = "evil\x1b[2J\r" + FORGED
    safetensors_torch.save_file({key: torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    cfg = write_config(tmp_path, model={"file": "w.safetensors",
                                        "arch": "torchvision.models.squeezenet1_1",
                                        "arch_args": {"num_classes": 2}},
                       target_layers=["features.12"])
    err = refused(capsys, cfg, needles=["unexpected key 'evil\\x1b[2J\\r\\nexplain: error: fake'"])
    assert_clean(err)


def test_an_error_keeps_its_detail_lines_and_escapes_every_other_break(capsys):
    from explain.cli import _print_error
    assert _print_error(ExplainError("2 problems in c.yaml:",
                                     details=["a: bad \x1b[31m" + FORGED, "b:\r\x1b[2J"])) == 2
    assert capsys.readouterr().err.splitlines() == [
        "explain: error: 2 problems in c.yaml:", "  a: bad \\x1b[31m\\nexplain: error: fake",
        "  b:\\r\\x1b[2J"]


def test_uncaught_tracebacks_and_warnings_are_escaped(tmp_path):
    code = ("import warnings; from explain import cli; cli._guard_terminal(); "
            "warnings.warn('w\\x1b[31m\\nexplain: error: fake'); "
            "raise RuntimeError('r\\x1b[2J\\r\\nexplain: error: fake')")
    env = dict(os.environ, PYTHONPATH=str(CODE_ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert_clean(done.stderr)
    assert "UserWarning: w\\x1b[31m\\nexplain: error: fake" in done.stderr, done.stderr
    assert "RuntimeError: r\\x1b[2J\\r\n    explain: error: fake" in done.stderr, done.stderr
    assert "Traceback (most recent call last):" in done.stderr


# ---- NaN / inf weights -------------------------------------------------------------------------

def broken(where: str) -> nn.Module:
    net = make_small_alexnet()
    with torch.no_grad():
        (net.classifier[0].weight if where == "head" else net.features[0].bias)[0] = \
            float("nan") if where == "head" else float("inf")
    return net


@pytest.mark.parametrize("where, needle", [
    ("head", "model: NaN or infinite values in the outputs (logits), for 1 of 1 image(s)"),
    ("features", "target_layers[0] 'features.11': NaN or infinite values in the layer's "
                 "output, for 1 of 1 image(s)")])
def test_nan_or_inf_weights_stop_the_run_in_one_line(tmp_path, capsys, where, needle):
    torch.save(broken(where), tmp_path / "model.pth")
    cfg = write_config(tmp_path, model={"file": "model.pth"}, target_layers=["features.11"],
                       preprocess={"size": [SMALL_SIZE, SMALL_SIZE]})
    refused(capsys, cfg, "--quiet", needles=[needle])
    assert not (tmp_path / "results").exists()  # stopped before a folder was claimed


class NanGradient(torch.autograd.Function):
    """Identity forward; a NaN gradient backward (finite activations and logits)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class GradientBreaker(nn.Module):
    def forward(self, x):
        return NanGradient.apply(x)


def test_a_non_finite_gradient_at_the_layer_is_one_line():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), GradientBreaker(), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with cpu_engine(net, [net[0]], ["gradcam"], layer_names=["0"]) as engine:
        assert engine.probe(torch.randn(1, 3, 16, 16)).logits.shape[1] == 2  # forward values are finite
        text = explain_error(engine.run, torch.randn(2, 3, 16, 16), None, [0, 1])
    assert text.startswith("target_layers[0] '0': NaN or infinite values in the "
                                      "gradient of the class scores at the layer, for 2 of 2 ")


# ---- README ------------------------------------------------------------------------------------

def test_readme_trust_says_what_set_lifts_and_where_outputs_may_go():
    text = (CODE_ROOT / "README.md").read_text(encoding="utf-8")  # of the copy under test
    trust = text.split("## Trust", 1)[1].split("\n## ", 1)[0]
    assert "--set model.trust=true" in trust
    assert "output.dir" in trust and "--out" in trust and "symlink" in trust

"""Helpers the test files share (fixtures live in conftest.py): a tiny CNN, a config for a tiny
model, the checks of a one-line user error, and maps from the engine and from pytorch-grad-cam
called directly (the yardstick the engine is held to), and the memory peak of a block."""

from __future__ import annotations

import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pytest
import torch
from torch import nn

from conftest import IMAGES, OMIT, config_fields, save_config

SIDE = 32  # the input side of the tiny models
CAT = IMAGES / "cat.jpg"


@contextmanager
def memory_peak() -> Iterator[list[int]]:
    """The most Python's allocations held during the block (tracemalloc), in bytes, as the
    list's one item once the block ends: the peak of this block alone (a process's
    high-water mark may be an earlier test's)."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


# ---- tiny models and their configs -----------------------------------------------------------

def tiny_net(seed: int = 0, outputs: int = 2, convs: int = 1) -> nn.Sequential:
    """``convs`` 3x3 convolutions, each with its ReLU (4 then 6 channels), then pool ->
    flatten -> Linear: ``outputs`` logits. One conv: layers '0' conv, '1' ReLU, '2' pool,
    '4' Linear; two: '0' and '2' convs, '4' pool, '6' Linear. Only torch classes, so it loads
    from a whole pickle without ``model.trust``."""
    torch.manual_seed(seed)
    widths = [3, 4, 6][:convs + 1]
    layers: list[nn.Module] = []
    for size_in, size_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(size_in, size_out, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(widths[-1], outputs)).eval()


def tiny_config(folder: Path, model: dict, stem: str = "exp", **fields: Any) -> Path:
    """``folder``/``stem``.yaml for a tiny model: the ``model:`` section given, the cat photo,
    layer auto, SIDE x SIDE, gradcam, and no ``classes`` unless given (the model's own names,
    or none); each keyword replaces a top-level field (``name`` too), as in write_config."""
    base = dict(model=model, images=[str(CAT)], target_layers=["auto"],
                preprocess={"size": [SIDE, SIDE]}, classes=OMIT)
    return save_config(folder, stem, config_fields(folder, **{**base, **fields}))


# ---- one-line user errors --------------------------------------------------------------------

def one_line(error: str | BaseException | pytest.ExceptionInfo, *needles: str) -> str:
    """The text of ``error`` (a message, an exception or pytest's ExceptionInfo): exactly one
    line, no traceback, holding every needle. Returns the text."""
    if isinstance(error, pytest.ExceptionInfo):
        error = error.value
    text = str(error)
    assert len(text.splitlines()) == 1 and "\n" not in text, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def explain_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The one-line ExplainError that ``call(*args, **kwargs)`` raises."""
    from explain.errors import ExplainError
    with pytest.raises(ExplainError) as info:
        call(*args, **kwargs)
    return one_line(info)


def cli(capsys, *argv: Any) -> tuple[int, str, str]:
    """``explain ARGV`` in this process: exit code, stderr (stripped), stdout. An exception
    escaping main (a traceback for the user) fails the test."""
    from explain.cli import main
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.err.strip(), out.out


def refused(capsys, *argv: Any, needles: Sequence[str] = ()) -> str:
    """``explain ARGV`` stops with exit code 2 and one line holding every needle."""
    code, err, _ = cli(capsys, *argv)
    assert code == 2, err
    return one_line(err, *needles)


def ok_or_one_line(capsys, *argv: Any) -> tuple[int, str]:
    """``explain ARGV`` either works (exit 0) or stops with one line (exit 2)."""
    code, err, _ = cli(capsys, *argv)
    assert code in (0, 2), err
    if code == 2:
        one_line(err)
    return code, err


# ---- maps: the engine, and the library called directly ---------------------------------------

def cpu_engine(model: nn.Module, layers: Sequence[nn.Module], methods: Sequence, **options: Any):
    """A CamEngine on the CPU: methods by name (or MethodSpec / its dict), keyword arguments as
    EngineOptions fields. Use it as a context manager."""
    from explain.config import MethodSpec
    from explain.engine import CamEngine, EngineOptions
    specs = [m if isinstance(m, MethodSpec) else MethodSpec.model_validate(m) for m in methods]
    return CamEngine(model, list(layers), specs, torch.device("cpu"), EngineOptions(**options))


def engine_maps(model: nn.Module, layer: nn.Module, methods: Sequence, x: torch.Tensor,
                targets: Sequence[int], *, names: Sequence[int] | None = None,
                batch: int | None = None, **options: Any) -> dict[str, np.ndarray]:
    """The engine's maps of ``x`` at ``layer``, method -> (B, len(targets), H, W), every image
    explaining the classes ``targets``; ``names``: the named classes (default: the targets);
    ``batch``: images per engine.run (default: all at once); other keywords: EngineOptions."""
    names = sorted(set(targets)) if names is None else list(names)
    batch = batch or len(x)
    with cpu_engine(model, [layer], methods, **options) as engine:
        parts = [engine.run(x[i:i + batch], list(targets), names).maps
                 for i in range(0, len(x), batch)]
    return {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}


def library_map(method: str | type, model: nn.Module, layer: nn.Module, x: torch.Tensor,
                targets: list, reshape: Callable | None = None) -> np.ndarray:
    """pytorch-grad-cam's own call: ``method`` (a name in ``explain.methods.registry`` or a
    library class) on ``x`` with one target object per image, inplace operations switched off
    as the engine does; the library's hooks are released afterwards."""
    from explain.methods import registry
    from explain.models.guard import non_inplace
    cam_class = registry()[method] if isinstance(method, str) else method
    cam = cam_class(model, [layer], reshape_transform=reshape)
    try:
        with non_inplace(model):
            return cam(input_tensor=x, targets=targets)
    finally:  # FinerCAM wraps a base CAM that holds the hooks
        getattr(cam, "base_cam", cam).activations_and_grads.release()


def class_targets(cls: int, count: int) -> list:
    """The library's plain target (ClassifierOutputTarget) of class ``cls`` for ``count``
    images."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    return [ClassifierOutputTarget(cls)] * count


# ---- a child process under a memory cap ------------------------------------------------------

# The start of a ``python -c`` script that measures explain in a child process: torch on one
# thread, explain's modules imported before any cap, and ``cap_memory()``, which limits the
# address space (RLIMIT_AS) to its size now + 1.5 GB, so a big allocation fails in the child,
# not in pytest. The test's own script follows.
CAPPED_CHILD = r"""
import contextlib, io, json, os, resource, signal, sys, time
import torch
torch.set_num_threads(1)
from explain.cli import main
import explain.runner, explain.models, explain.models, explain.engine  # before the cap
import explain.writers.panels, matplotlib.pyplot


def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024


def cap_memory():
    limit = vm_size() + 1536 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
"""


def interrupted(path: Path, out: Path, where: str, at: int) -> Path:
    """Run until the ``at``-th batch ('batch': after its writers, before its item files) or
    item file ('item'), then stop as Ctrl-C does."""
    from unittest import mock

    from explain.config import load_config
    from explain.outputs import RunFolder
    from explain.runner import RunOptions, run
    from explain.writers.panels import PanelWriter
    calls = {"n": 0}
    if where == "batch":
        def hook(self, ctx, batch):
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt
        patch = mock.patch.object(PanelWriter, "write", hook)
    else:
        original = RunFolder.write_bytes  # item files are written last, as bytes

        def hook(self, rel, value):
            if rel.startswith("items/"):
                calls["n"] += 1
                if calls["n"] == at:
                    raise KeyboardInterrupt
            return original(self, rel, value)
        patch = mock.patch.object(RunFolder, "write_bytes", hook)
    with patch, pytest.raises(KeyboardInterrupt):
        run(load_config(path), RunOptions(out_root=out, progress=False, log=lambda _: None))
    return out / "exp"


def two_tiny_runs(tmp_path: Path, photos: Path, separator: Any = None) -> tuple[Path, Path]:
    """Runs A and B of tiny nets of other seeds (0, 3) on the images in ``photos``, their maps
    saved and ``report.photo_separator`` set: the two folders, for ``explain diff``."""
    from explain.cli import main
    for name, seed in (("a", 0), ("b", 3)):
        torch.save(tiny_net(seed), tmp_path / f"{name}.pth")
        path = tiny_config(tmp_path, {"file": str(tmp_path / f"{name}.pth")}, stem=name,
                           images=[str(photos)], classes={"cat": 0, "dog": 1},
                           target_layers=["0"], methods=["gradcam"], metrics=[],
                           report={"photo_separator": separator},
                           output={"dir": str(tmp_path / "results"), "save_arrays": True})
        assert main([str(path), "--quiet"]) == 0
    return tmp_path / "results" / "a", tmp_path / "results" / "b"


def finished_tiny_run(folder: Path) -> Path:
    """A finished run of a tiny net on the cat photo (classes cat, dog) in ``folder``: its
    run folder, for tests that copy it and tamper with the copy (a shared folder)."""
    from explain.config import load_config
    from explain.runner import RunOptions, run
    torch.save(tiny_net(), folder / "m.pth")
    path = tiny_config(folder, {"file": "m.pth"}, name="a", classes={"cat": 0, "dog": 1})
    run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    return folder / "results" / "a"


def tampered(finished: Path, where: Path, edit: Callable[[dict], Any]) -> Path:
    """A copy of the run folder ``finished`` at ``where`` whose summary.json ``edit`` changed
    (in place)."""
    import json
    import shutil
    shutil.copytree(finished, where)
    summary = json.loads((where / "summary.json").read_text())
    edit(summary)
    (where / "summary.json").write_text(json.dumps(summary))
    return where


def labelled_cat(summary: dict, **row: Any) -> None:
    """A finished tiny run's summary (``finished_tiny_run``) made a labelled one: its image
    labelled cat, and a dataset record whose cat row has ``row``'s fields besides its counts
    (a shared summary's per-class numbers, for tests that tamper with them)."""
    summary["images"][0]["label"] = "cat"
    summary["dataset"] = {
        "labelled": 1, "unlabelled": 0, "correct": 1, "classes": ["cat", "dog"],
        "confusion": [[1, 0], [0, 0]],
        "per_class": [{"class": "cat", "images": 1, "correct": 1, "predicted_as": 1,
                       "pointing_maps": 1, "pointing_hits": 1, "pointing": 1.0, **row}]}

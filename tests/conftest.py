"""Shared fixtures: the real demo network, a stand-in course AlexNet, a small AlexNet for the
engine tests, fresh model caches without network, and ``write_config``. The other shared
helpers (tiny models, one-line error checks, engine and library maps) are in helpers.py."""

from __future__ import annotations

import copy
import functools
import inspect
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Callable

# One torch thread in the child processes too (explain runs, torchrun ranks, notebooks): the
# suite keeps both cores busy, and two torch threads on a busy machine wait on each other at
# every operation (a small ViT's sanity check: 2 s on one thread, 2 to 13 s on two).
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402 (torch reads the variable when it is imported)
import torch  # noqa: E402
import torchvision  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"

# One torch thread: the models here are small, and on 2 shared cores two threads spend more
# time waiting on each other than computing (test_engine.py + test_vit_example.py: 105 s of CPU
# with 2 threads, 31 s with 1, on a loaded machine). Child processes get one thread through
# OMP_NUM_THREADS (above): the same as this process's, as the thread count can change a map's
# last bits, and bytes are compared between them.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_model():
    from explain.demo import catdog_efficientnet_lite0
    return catdog_efficientnet_lite0()


def made_once(build: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    """``build`` (seeded, so its result depends on its arguments alone) run once per arguments in
    a process; each call returns a copy, and leaves torch's random state where ``build`` leaves
    it, so what a test draws next is as before. Building AlexNet initialises its 58 million
    classifier weights (about 0.4 s): the suite built it some 70 times."""
    made: dict[tuple, tuple[torch.nn.Module, torch.Tensor]] = {}
    signature = inspect.signature(build)

    @functools.wraps(build)
    def copy_of(*args: Any, **kwargs: Any) -> torch.nn.Module:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = tuple(bound.arguments.items())
        if key not in made:
            made[key] = (build(*bound.args), torch.get_rng_state())
        model, state = made[key]
        torch.set_rng_state(state)
        return copy.deepcopy(model)
    return copy_of


@made_once
def make_alexnet(seed: int = 0) -> torch.nn.Module:
    """torchvision AlexNet with 2 outputs and random weights (inplace ReLUs, like the course's)."""
    torch.manual_seed(seed)
    return torchvision.models.alexnet(num_classes=2).eval()


SMALL_SIZE = 112  # input side for make_small_alexnet: features.10 is then 6x6 (13x13 at 224)


@made_once
def make_small_alexnet(seed: int = 0, num_classes: int = 2) -> torch.nn.Module:
    """torchvision AlexNet's ``features`` exactly (inplace ReLUs, features.10 = last conv,
    features.11 = its inplace ReLU) with a small head: AdaptiveAvgPool2d(1) as ``avgpool`` and one
    Linear(256, num_classes) as ``classifier`` (AlexNet.forward flattens in between). A fraction
    of the full network's cost, meant for SMALL_SIZE x SMALL_SIZE inputs."""
    torch.manual_seed(seed)
    model = torchvision.models.alexnet(num_classes=num_classes)
    model.avgpool = torch.nn.AdaptiveAvgPool2d(1)
    model.classifier = torch.nn.Sequential(torch.nn.Linear(256, num_classes))
    return model.eval()


@pytest.fixture(scope="session")
def small_alexnet() -> torch.nn.Module:
    """One small AlexNet for the session. Tests must not change it (the engine restores what it
    touches); a test that changes the model itself takes ``copy.deepcopy(small_alexnet)``."""
    return make_small_alexnet()


def make_course_tree(folder: Path, small: bool = False) -> Path:
    """A copy of the course layout in ``folder``: configs/alexnet_catdog.yaml, images/,
    models/torch_alex.pth (a stand-in: random-weight AlexNet saved whole with torch.save, like
    the course file; ``small``: make_small_alexnet, 10 MB instead of 233 MB, for tests that are
    not about the course network itself)."""
    (folder / "configs").mkdir()
    shutil.copy(REPO / "configs" / "alexnet_catdog.yaml", folder / "configs")
    shutil.copytree(IMAGES, folder / "images")
    (folder / "models").mkdir()
    torch.save(make_small_alexnet() if small else make_alexnet(),
               folder / "models" / "torch_alex.pth")
    return folder


@pytest.fixture
def course_tree(tmp_path: Path) -> Path:
    """A fresh course layout for one test."""
    return make_course_tree(tmp_path)


@pytest.fixture
def small_course_tree(tmp_path: Path) -> Path:
    """A fresh course layout with the small AlexNet saved whole as models/torch_alex.pth."""
    return make_course_tree(tmp_path, small=True)


@pytest.fixture(scope="module")
def shared_course_tree(tmp_path_factory) -> Path:
    """One course layout for a module's tests that only add runs to it (with --overwrite)."""
    return make_course_tree(tmp_path_factory.mktemp("course"))


OMIT = object()  # a field given as OMIT is left out of the config


def config_fields(folder: Path, **fields) -> dict:
    """A config's fields: classes cat and dog, the repository's three photos, gradcam, results
    under ``folder``, no metrics (small runs would compute ROAD by default); each keyword
    replaces a top-level field (OMIT leaves it out)."""
    data = {
        "classes": {"cat": 0, "dog": 1},
        "images": [str(IMAGES / f) for f in ("cat.jpg", "dog.jpg", "both.jpg")],
        "methods": ["gradcam"],
        "output": {"dir": str(folder / "results")},
        "metrics": [],
        **fields,
    }
    return {k: v for k, v in data.items() if v is not OMIT}


def save_config(folder: Path, stem: str, data: dict) -> Path:
    """``data`` as ``folder``/``stem``.yaml."""
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def write_config(folder: Path, name: str = "exp", **fields) -> Path:
    """``folder``/``name``.yaml holding ``config_fields(folder, **fields)``."""
    return save_config(folder, name, config_fields(folder, **fields))


@pytest.fixture
def homes(tmp_path, monkeypatch) -> list[Path]:
    """Fresh TORCH_HOME and HF_HOME (not created), and no network: a connection attempt fails
    the test."""
    paths = [tmp_path / "torch_home", tmp_path / "hf_home"]
    monkeypatch.setenv("TORCH_HOME", str(paths[0]))
    monkeypatch.setenv("HF_HOME", str(paths[1]))
    monkeypatch.setenv("HF_HUB_CACHE", str(paths[1] / "hub"))
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # read at import time: point the loaded module there too
        monkeypatch.setattr(constants, "HF_HOME", str(paths[1]), raising=False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(paths[1] / "hub"), raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return paths


# The longest test files start first (seconds each, summed from `--durations=0`), so that under
# `make test` (pytest-xdist, a file per worker, --no-loadscope-reorder) no long file is left to
# run alone at the end while the other workers idle.
LONGEST_FIRST = ("test_torchrun.py", "test_attack2_models.py", "test_atlas.py", "test_trust.py",
                 "test_api.py", "test_notebook.py", "test_segdet.py", "test_compare.py",
                 "test_engine.py", "test_interrupt.py", "test_attack2_inputs.py",
                 "test_reliability.py", "test_demo.py", "test_attack11.py", "test_metrics.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep order

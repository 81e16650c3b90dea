"""Getting the network: safe loading of model files, layers by dotted name, inplace guard.

Loading never runs code from a file unless the config says ``model.trust: true``: files are
read with ``torch.load(weights_only=True)`` and only nn.Module classes from torch.nn and
torchvision are allow-listed, which is what a whole pickled CNN (``torch.save(model)``) needs.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import re
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from explain.config import Config, ModelSpec
from explain.errors import ExplainError
from explain.methods import suggest

SAFE_PREFIXES = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.")


def import_object(dotted: str, field: str) -> Any:
    """'pkg.mod:obj' or 'pkg.mod.obj' -> the object; ExplainError naming the field otherwise."""
    module_name, _, attr = dotted.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ExplainError(f"{field}: cannot import '{dotted}' ({exc})") from None


def _allowed_class(name: str) -> type | None:
    module_name, _, attr = name.rpartition(".")
    if not module_name.startswith(SAFE_PREFIXES):
        return None
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def safe_load(path: Path) -> Any:
    """torch.load with weights_only=True and the nn.Module classes of torch/torchvision allowed."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy or foreign format: let torch.load below say what is wrong
        names = []
    allowed = [cls for cls in map(_allowed_class, names) if cls is not None]
    with torch.serialization.safe_globals(allowed):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+)", str(exc))
            if found is None:
                raise ExplainError(f"{path}: not a PyTorch model file ({_first_line(exc)})") from None
            raise ExplainError(
                f"{path}: refused to load: the file needs '{found.group(1)}', which is not an "
                f"allow-listed torch/torchvision class; if you trust this file, set "
                f"'model.trust: true' to load it with full unpickling (this can run code)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _read_file(path: Path, trust: bool) -> Any:
    if not path.is_file():
        raise ExplainError(f"{path}: model file not found (model.file): put the model there (the course hands out torch_alex.pth, an AlexNet cat/dog classifier saved whole), or try the demo: python -m explain configs/demo_catdog.yaml")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        return safe_load(path)
    except ExplainError:
        raise
    except Exception as exc:
        raise ExplainError(f"{path}: not a PyTorch model file ({_first_line(exc)})") from None


def _from_state_dict(obj: Any, spec: ModelSpec, path: Path) -> nn.Module:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a training checkpoint wrapping the weights
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise ExplainError(f"{path}: holds a {type(obj).__name__}, neither a whole nn.Module "
                           f"nor a state_dict of tensors")
    if not spec.arch:
        raise ExplainError(f"{path}: is a state_dict (weights only); add 'model.arch' "
                           f"(e.g. torchvision.models.alexnet) and 'model.arch_args'")
    builder = import_object(spec.arch, "model.arch")
    try:
        model = builder(**spec.arch_args)
    except TypeError as exc:
        raise ExplainError(f"model.arch_args: {spec.arch} rejected them ({exc})") from None
    own = model.state_dict()
    for key, value in obj.items():
        if key not in own:
            raise ExplainError(f"{path}: state_dict does not fit {spec.arch}: unexpected key '{key}'")
        if own[key].shape != value.shape:
            raise ExplainError(f"{path}: state_dict does not fit {spec.arch}: '{key}' has shape "
                               f"{tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    missing = [k for k in own if k not in obj]
    if missing:
        raise ExplainError(f"{path}: state_dict does not fit {spec.arch}: missing key '{missing[0]}'")
    model.load_state_dict(obj)
    return model


def load_model(cfg: Config) -> nn.Module:
    """Build or load the configured network, in eval mode, on the CPU."""
    spec = cfg.model
    if spec.builder:
        model = import_object(spec.builder, "model.builder")(**spec.builder_args)
    else:
        path = cfg.resolve(spec.file)
        obj = _read_file(path, spec.trust)
        model = obj if isinstance(obj, nn.Module) else _from_state_dict(obj, spec, path)
    if not isinstance(model, nn.Module):
        raise ExplainError(f"model.builder: '{spec.builder}' returned a {type(model).__name__}, "
                           f"not a torch.nn.Module")
    return model.eval()


def find_layer(model: nn.Module, dotted: str, field: str = "target_layers") -> nn.Module:
    """The sub-module named as named_modules() prints it; negative indexes count from the end."""
    module = model
    for part in dotted.split("."):
        children = module._modules
        if part in children:
            module = children[part]
        elif re.fullmatch(r"-\d+", part) and children and -int(part) <= len(children):
            module = list(children.values())[int(part)]
        else:
            names = [n for n, _ in model.named_modules() if n]
            hint = suggest(dotted, names) or f" (top-level modules: {', '.join(list(model._modules)[:12])})"
            raise ExplainError(f"{field}: no layer '{dotted}' in the model{hint}")
    return module


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is layer)


@contextlib.contextmanager
def non_inplace(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Switch every ``inplace=True`` module off for the duration; yields how many were switched.

    An inplace activation after the target layer overwrites the stored activation on CPU,
    so CAMs would mix post-activation values with pre-activation gradients. Turning inplace
    off changes no output.
    """
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True] if enabled else []
    for m in switched:
        m.inplace = False
    try:
        yield len(switched)
    finally:
        for m in switched:
            m.inplace = True


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore train/eval flags and requires_grad of every parameter afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ExplainError("device: 'cuda' was asked for but no CUDA device is available "
                           "(use 'auto' or 'cpu')")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)

"""Getting the network: model files and factories, layers by dotted name, inplace guard.

Nothing named in a config runs unless the config says ``model.trust: true``:
- model files are read by explain.safeload, which refuses pickles that call code;
- ``builder`` / ``arch`` may name only allow-listed model factories: torchvision's
  classification models (``torchvision.models.resnet18``) and this package's demo builders.
  Any other callable (``mypkg.models:build``, the usual case for research code) needs
  ``trust: true``, since importing and calling it runs that code;
- no weights are ever downloaded: a factory that tries is stopped with a one-line error.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from explain.config import Config, ModelSpec
from explain.errors import ExplainError
from explain.names import quote, short, suggest
from explain.safeload import safe_load, structure_problem, trusted_load

DEMO_BUILDERS = ("catdog_efficientnet_lite0",)


def allowed_factories() -> list[str]:
    """The factory names a config may use without ``trust``."""
    import torchvision
    return sorted([f"torchvision.models.{n}" for n in torchvision.models.list_models(
        module=torchvision.models)] + [f"explain.demo:{n}" for n in DEMO_BUILDERS])


def _is_allowed(module_name: str, attr: str) -> bool:
    if module_name == "explain.demo":
        return attr in DEMO_BUILDERS
    if module_name == "torchvision.models" or module_name.startswith("torchvision.models."):
        import torchvision
        return attr in torchvision.models.list_models(module=torchvision.models)
    return False


def resolve_factory(dotted: str, field: str, trust: bool) -> Callable[..., Any]:
    """'pkg.mod:obj' or 'pkg.mod.obj' -> the callable. Without trust, only allow-listed names
    are imported at all (importing a module runs its code)."""
    module_name, _, attr = dotted.replace(":", ".").rpartition(".")
    if not trust and not _is_allowed(module_name, attr):
        raise ExplainError(
            f"{field}: {quote(dotted)} is not an allow-listed model factory (torchvision.models."
            f"<name>, explain.demo:<name>){suggest(dotted, allowed_factories())}; naming your own "
            f"code needs 'model.trust: true' (it imports and runs that code)")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ExplainError(f"{field}: cannot import {quote(dotted)} ({str(exc)[:200]})") from None


WEIGHT_ARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")


def _download_refused(what: str) -> ExplainError:
    return ExplainError(f"model: {what} would be downloaded; explain never downloads at run time: "
                        f"save the weights to a file and load them with model.file + model.arch "
                        f"(a state_dict)")


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Make torch.hub's download functions (behind torchvision's ``weights=``) fail with a
    one-line error before they touch the disk or the network."""
    import torch.hub
    import torchvision.models._api as tv_api

    def refuse(url="weights", *args, **kwargs):
        raise _download_refused(str(url)[:120])

    patched = [(torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file"),
               (torch.hub, "load"), (tv_api, "load_state_dict_from_url")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in patched if hasattr(owner, name)]
    for owner, name, _ in saved:
        setattr(owner, name, refuse)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def call_factory(factory: Callable[..., Any], args: dict, field: str) -> Any:
    """Call a model factory with the config's arguments; bad keywords are one-line errors.
    Pretrained weights are refused up front (``weights: DEFAULT``, ``pretrained: true``)."""
    for key in WEIGHT_ARGS:
        if args.get(key) not in (None, False):
            raise _download_refused(f"{field}_args.{key} = {quote(args[key], 40)}: pretrained weights")
    with no_downloads():
        try:
            return factory(**args)
        except ExplainError:
            raise
        except (TypeError, ValueError) as exc:
            raise ExplainError(f"{field}_args: {field.split('.')[-1]} rejected them "
                               f"({str(exc)[:120]})") from None


def _read_file(path: Path, trust: bool) -> Any:
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ExplainError(f"model.file: {quote(str(path))}: {exc.strerror}") from None
    if not found:
        raise ExplainError(f"{short(path)}: model file not found (model.file): put the model file "
                           f"there, or try the demo: python -m explain configs/demo_catdog.yaml")
    return trusted_load(path) if trust else safe_load(path)


def _from_state_dict(obj: Any, spec: ModelSpec, path: Path) -> nn.Module:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a training checkpoint wrapping the weights
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise ExplainError(f"{path}: holds a {type(obj).__name__}, neither a whole nn.Module "
                           f"nor a state_dict of tensors")
    if not spec.arch:
        raise ExplainError(f"{path}: is a state_dict (weights only); add 'model.arch' "
                           f"(e.g. torchvision.models.alexnet) and 'model.arch_args'")
    model = call_factory(resolve_factory(spec.arch, "model.arch", spec.trust), spec.arch_args,
                         "model.arch")
    if not isinstance(model, nn.Module):
        raise ExplainError(f"model.arch: {quote(spec.arch)} returned a {type(model).__name__}, "
                           f"not a torch.nn.Module")
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
        where = "model.builder"
        model = call_factory(resolve_factory(spec.builder, where, spec.trust), spec.builder_args,
                             where)
    else:
        where = str(cfg.resolve(spec.file))
        obj = _read_file(Path(where), spec.trust)
        model = obj if isinstance(obj, nn.Module) else _from_state_dict(obj, spec, Path(where))
    if not isinstance(model, nn.Module):
        raise ExplainError(f"{where}: gives a {type(model).__name__}, not a torch.nn.Module")
    _check_children(model, where, from_file=spec.file is not None and not spec.trust)
    return model.eval()


def _check_children(model: nn.Module, where: str, from_file: bool) -> None:
    """Every module has the usual structure (a pickle can put anything anywhere)."""
    problem = structure_problem(model)
    if problem and from_file:
        raise ExplainError(f"{where}: refused to load: the model it holds is not a usable "
                           f"model: {problem}; if you trust this file, set 'model.trust: true'")
    if problem:
        raise ExplainError(f"{where}: not a usable model: {problem}")


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
            raise ExplainError(f"{field}: no layer {quote(dotted)} in the model{hint}")
    return module


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

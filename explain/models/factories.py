"""Models built from a config's ``builder`` / ``arch``: which factories a config may name,
how they are called (no downloads, arguments checked) and how big the model may get.

Nothing named in a config runs unless the config says ``model.trust: true``: ``builder`` /
``arch`` may name only allow-listed model factories (torchvision's classification models and
this package's demo builders) or a ``timm:<name>`` architecture from ``timm.list_models()``,
whose arguments may not make timm load or fetch anything; any other callable needs trust.
No weights are ever downloaded: a factory that tries is stopped with a one-line error.
Without trust, a factory's model is built on torch's meta device first (no memory, nothing
read) and refused over MAX_MODEL_BYTES of parameters and buffers or MAX_MODEL_TENSORS
tensors, naming the arguments (``bounded_build``, ``meta_size``); the demo builder is built
directly; with trust, nothing is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from explain.errors import ExplainError, first_line
from explain.names import a_type, quote, suggest


MAX_MODEL_BYTES = 2 * 2**30  # parameters + buffers of a model built from a config, without trust
MAX_MODEL_TENSORS = 100_000  # parameter and buffer tensors (a ViT-H/14 registers ~400)
# memory a factory may allocate for real while its model is built on the meta device (Linux);
# timm's largest models take under 100 MB there
MAX_BUILD_GROWTH = 2**30
DEMO_BUILDERS = ("catdog_efficientnet_lite0",)
# torchvision's segmentation and detection builders a config may name (task: segmentation /
# detection), by module and name prefix; they are built with weights=None and
# weights_backbone=None (their defaults download an ImageNet backbone), other values refused
TASK_MODULES = {"torchvision.models.segmentation": ("fcn_", "deeplabv3_", "lraspp_"),
                "torchvision.models.detection": ("fasterrcnn_", "retinanet_", "fcos_", "ssd",
                                                 "maskrcnn_")}


def _task_builders(module_name: str) -> list[str]:
    """The allow-listed builders of one of TASK_MODULES (those torchvision lists)."""
    import torchvision
    prefixes = TASK_MODULES.get(module_name, ())
    if not prefixes:
        return []
    names = torchvision.models.list_models(module=importlib.import_module(module_name))
    return [n for n in names if n.startswith(prefixes)]


def allowed_factories() -> list[str]:
    """The factory names a config may use without ``trust``."""
    import torchvision
    tasks = [f"{module}.{n}" for module in TASK_MODULES for n in _task_builders(module)]
    return sorted([f"torchvision.models.{n}" for n in torchvision.models.list_models(
        module=torchvision.models)] + tasks + [f"explain.demo:{n}" for n in DEMO_BUILDERS])


def _is_allowed(module_name: str, attr: str) -> bool:
    if module_name == "explain.demo":
        return attr in DEMO_BUILDERS
    if module_name in TASK_MODULES:
        return attr in _task_builders(module_name)
    if module_name == "torchvision.models" or module_name.startswith("torchvision.models."):
        import torchvision
        return attr in torchvision.models.list_models(module=torchvision.models)
    return False


def resolve_factory(dotted: str, field: str, trust: bool) -> Callable[..., Any]:
    """'pkg.mod:obj' or 'pkg.mod.obj' -> the callable. Without trust, only allow-listed names
    are imported at all (importing a module runs its code)."""
    module_name, _, attr = dotted.replace(":", ".").rpartition(".")
    if not trust and not _is_allowed(module_name, attr):
        allowed = allowed_factories()
        tail = [f for f in allowed if re.split(r"[.:]", f)[-1] == dotted]  # 'alexnet'
        hint = f" — did you mean '{tail[0]}'?" if tail else suggest(dotted, allowed)
        raise ExplainError(
            f"{field}: {quote(dotted)} is not an allow-listed model factory (torchvision.models."
            f"<name>, timm:<name>, explain.demo:<name>){hint}; "
            f"naming your own "
            f"code needs 'model.trust: true' (it imports and runs that code)")
    if trust:
        own_modules()
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ExplainError(f"{field}: cannot import {quote(dotted)} ({first_line(exc)})") from None


def own_modules() -> None:
    """Before a trusted config's code is imported: the working directory on sys.path after
    every installed package, so that 'mynet:build' is found there but a cv2.py beside it never
    replaces OpenCV (``python -m explain`` takes it off the front). It stays there: the code
    may import more of its own modules when it is called. Never without trust (an optional
    import of an allow-listed library would find a shared folder's module)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


WEIGHT_ARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")


def _download_refused(what: str) -> ExplainError:
    return ExplainError(f"model: {what} would be downloaded; explain never downloads at run time: "
                        f"save the weights to a file and load them with model.file + model.arch "
                        f"(a state_dict)")


# Functions that download or read weights / configs, by module; patched while a factory runs.
# Modules are patched only when already imported (nothing is imported for this).
_FETCHERS = {
    "torch.hub": ("load_state_dict_from_url", "download_url_to_file", "load"),
    "torchvision.models._api": ("load_state_dict_from_url",),
    "timm.models._builder": (
        "load_pretrained", "load_custom_pretrained", "load_state_dict_from_url",
        "download_cached_file", "check_cached_file", "load_state_dict_from_hf",
        "load_state_dict_from_path", "load_custom_from_hf", "load_state_dict"),
    "timm.models._factory": ("load_checkpoint", "load_model_config_from_hf",
                             "load_model_config_from_path"),
    "timm.models._helpers": ("load_checkpoint", "load_state_dict"),
    "timm.models._hub": (
        "hf_hub_download", "download_url_to_file", "download_cached_file", "check_cached_file",
        "get_cache_dir", "download_from_hf", "load_model_config_from_hf",
        "load_model_config_from_path", "load_state_dict_from_hf", "load_state_dict_from_path",
        "load_custom_from_hf", "model_info"),
    "huggingface_hub": ("hf_hub_download", "snapshot_download"),
    "huggingface_hub.file_download": ("hf_hub_download",),
}


def _fetched(args: tuple, kwargs: dict) -> str:
    """What a refused download function was asked for, for the message."""
    for value in (*args[:1], kwargs.get("url"), kwargs.get("repo_id"), kwargs.get("filename")):
        if isinstance(value, (str, Path)):
            return " ".join(str(value).split())[:120]
    return "weights"


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Make the download / weight-reading functions of torch.hub, torchvision, timm and
    huggingface_hub fail with a one-line error before they touch the disk or the network."""
    for module_name in ("torch.hub", "torchvision.models._api"):  # torchvision's weights
        importlib.import_module(module_name)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _download_refused(_fetched(args, kwargs))

    saved = []
    for module_name, names in _FETCHERS.items():
        owner = sys.modules.get(module_name)
        for name in names if owner is not None else ():
            original = owner.__dict__.get(name)  # no lazy import (huggingface_hub's __getattr__)
            if original is not None:
                saved.append((owner, name, original))
    for owner, name, _ in saved:
        setattr(owner, name, refuse)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def call_factory(factory: Callable[..., Any], args: dict, field: str) -> Any:
    """Call a model factory with the config's arguments; bad keywords are one-line errors."""
    with no_downloads():
        try:
            return factory(**args)
        except ExplainError:
            raise
        except (Exception, MemoryError) as exc:  # the factory's own checks (or a crash)
            why = first_line(exc, 120)
            raise ExplainError(f"{field}_args: {field.split('.')[-1]} rejected them "
                               f"({type(exc).__name__}: {why})") from None


TIMM_PREFIXES = ("timm:", "timm.")


# create_model / build_model_with_cfg arguments that load or fetch weights or configs
TIMM_REFUSED = frozenset({
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict",
    "pretrained_filter_fn", "pretrained_model_args", "checkpoint_path", "cache_dir", "pruned",
    "kwargs_filter"})


_FETCHING_KEY = re.compile(r"url|uri|hub|file|cache|download|checkpoint_path|(^|_)dirs?($|_)"
                           r"|(?<!drop)(?<!num)_paths?$|^paths?$")


def timm_name(dotted: str) -> Optional[str]:
    """'timm:resnet18' (or 'timm.resnet18') -> 'resnet18'; None for any other name."""
    for prefix in TIMM_PREFIXES:
        rest = dotted[len(prefix):]
        if dotted.startswith(prefix) and rest and "." not in rest and ":" not in rest:
            return rest
    return None


def timm_factory(name: str, args: dict, field: str) -> Callable[..., Any]:
    """timm.create_model for a name in timm.list_models(), checked before anything but timm
    is imported. Arguments that would make timm read or fetch anything are refused."""
    for key, value in args.items():
        if (key in TIMM_REFUSED or _FETCHING_KEY.search(key)) and value not in (None, False):
            raise ExplainError(
                f"{field}_args.{key} = {quote(value, 40)}: refused: it makes timm load or download "
                f"weights or configs; explain reads weights only from model.file (a state_dict "
                f"or .safetensors file) with model.arch: timm:{name}")
    try:
        with warnings.catch_warnings():  # timm imports huggingface_hub, which imports
            # tqdm.auto: in Jupyter without ipywidgets its "IProgress not found. Please update
            # jupyter and ipywidgets" came before every timm run's text bar
            warnings.filterwarnings("ignore", message="IProgress not found")
            import timm
    except ImportError:
        raise ExplainError(f"{field}: 'timm:{name}' needs timm, which is not installed: "
                           f"pip install explain[timm]") from None
    names = timm.list_models()
    if name not in names:
        raise ExplainError(f"{field}: 'timm:{name}' is not a timm architecture"
                           f"{suggest(name, names)} (the names timm.list_models() gives)")
    return functools.partial(timm.create_model, name)


def _too_big(given: str, limit: int, size: int, tensors: int = 0) -> ExplainError:
    """The refusal of the model ``given`` names (factory and arguments): ``size`` bytes, or
    ``tensors`` counted so far when stopped while building."""
    def gib(count: int) -> str:
        return f"{count / 2**30:.2f} GiB" if count >= 2**28 else f"{count / 2**20:.1f} MiB"

    exact = f" ({'at least ' if tensors else ''}{gib(size)})"  # tensors: while building
    what = (f"over {MAX_MODEL_TENSORS} parameter and buffer tensors"
            if tensors > MAX_MODEL_TENSORS else
            f"over {gib(limit)} of parameters and buffers{exact}, the most explain "
            f"builds from a config (or twice model.file's size)")
    return ExplainError(f"{given} makes a model of {what}: refused before building it; set "
                        f"'model.trust: true' if you mean it")


def make_model(dotted: str, args: dict, field: str, trust: bool,
               limit: int = MAX_MODEL_BYTES) -> nn.Module:
    """Build the network the factory ``dotted`` names (``field``: model.arch / model.builder).
    Without trust it is sized on the meta device first and refused over ``limit`` bytes (see
    the module's docstring); explain's demo builder (no arguments) is built directly."""
    name = timm_name(dotted)
    factory = timm_factory(name, args, field) if name else resolve_factory(dotted, field, trust)
    if getattr(factory, "__module__", "").startswith(tuple(TASK_MODULES)):
        args = {"weights": None, "weights_backbone": None, **args}  # their defaults download
    for key in WEIGHT_ARGS:
        if args.get(key) not in (None, False):
            raise _download_refused(
                f"{field}_args.{key} = {quote(args[key], 40)}: pretrained weights")
    bounded = not trust and getattr(factory, "__module__", "") != "explain.demo"
    given = f"{field}: {quote(dotted)}" + (f" with {field}_args {quote(args, 80)}" if args else "")
    refuse = functools.partial(_too_big, given, limit)
    if bounded:
        with no_downloads():
            size = meta_size(functools.partial(factory, **args), limit, refuse, given)
        if size is not None and size > limit:
            raise refuse(size)
    with bounded_build(limit, refuse) if bounded else contextlib.nullcontext():
        model = call_factory(factory, args, field)
    if not isinstance(model, nn.Module):
        raise ExplainError(f"{field}: {quote(dotted)} returned {a_type(model)}, "
                           f"not a torch.nn.Module")
    return model


@contextlib.contextmanager
def bounded_build(limit: int, refuse: Callable[..., ExplainError]) -> Iterator[None]:
    """While a model is built, ``refuse(bytes, tensors)`` is raised as soon as the parameters
    and buffers registered pass ``limit`` bytes or MAX_MODEL_TENSORS tensors."""
    seen = [0, 0]
    originals = nn.Module.register_parameter, nn.Module.register_buffer

    def counted(original: Callable[..., None]) -> Callable[..., None]:
        def register(module: nn.Module, name: str, tensor: Any, *rest: Any, **kw: Any) -> None:
            if isinstance(tensor, torch.Tensor):
                seen[0], seen[1] = seen[0] + tensor.nbytes, seen[1] + 1
                if seen[0] > limit or seen[1] > MAX_MODEL_TENSORS:
                    raise refuse(*seen)
            return original(module, name, tensor, *rest, **kw)
        return register

    nn.Module.register_parameter, nn.Module.register_buffer = map(counted, originals)
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = originals


def meta_size(build: Callable[[], Any], limit: int,
              refuse: Callable[..., ExplainError], given: str = "the factory") -> Optional[int]:
    """Bytes of the parameters and buffers of ``build()``'s model made on the meta device (no
    memory used, nothing read) under bounded_build; None when it cannot be made there. What
    the factory makes for real meanwhile (timm's ``torch.linspace(0, rate, depth,
    device='cpu')``, CaiT's list of ``depth`` rates) may add at most MAX_BUILD_GROWTH to the
    process (``capped_memory``): past it, ``given`` is refused."""
    try:
        with bounded_build(limit, refuse), capped_memory(MAX_BUILD_GROWTH), \
                torch.device("meta"):
            model = build()
        tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    except ExplainError:
        raise
    except (Exception, MemoryError) as exc:  # an op the meta device lacks, or not a model
        if _out_of_memory(exc):
            raise ExplainError(
                f"{given} asks for over {MAX_BUILD_GROWTH / 2**30:.0f} GiB of memory while it "
                f"is only sized (before any weight is made): refused; check its numbers, or set "
                f"'model.trust: true' if you mean it") from None
        return None
    return sum(t.nbytes for t in tensors.values())


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an allocation that failed: Python's
    MemoryError, torch's CPU allocator or a C++ std::bad_alloc."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # a chain may loop back on itself
        seen.add(id(exc))
        text = str(exc)
        if isinstance(exc, MemoryError) or "can't allocate memory" in text or "bad_alloc" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def capped_memory(growth: int) -> Iterator[None]:
    """The process's data (RLIMIT_DATA: its heap and private mappings) capped at their size now
    plus ``growth`` bytes for the block, on Linux (elsewhere: no cap): an allocation past it
    fails at once with a MemoryError instead of filling the machine. A model built on the
    meta device allocates almost nothing, but a factory's own arithmetic does, sized by its
    arguments: timm's drop-path rates for ``depth: 2**22`` took 3.3 GB, RegNet's
    ``torch.arange(depth)`` and CaiT's ``[rate for i in range(depth)]`` (16 GB for ``depth:
    2**31``) too."""
    try:
        import resource
        with open("/proc/self/status") as f:
            data = [line.split()[1] for line in f if line.startswith("VmData:")]
        cap = int(data[0]) * 1024 + growth
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    except (ImportError, OSError, ValueError, IndexError):
        soft = hard = cap = None
    if cap is None or (soft != resource.RLIM_INFINITY and soft <= cap):
        yield  # no /proc (macOS, Windows), or a cap as low already
        return
    resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY
                                              else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

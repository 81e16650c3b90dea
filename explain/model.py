"""Getting the network: model files and factories, the class names a model carries, the
inplace guard and the device (a layer is found by its dotted name in ``explain.layers``).

Nothing named in a config runs unless the config says ``model.trust: true``:
- model files are read by explain.safeload, which refuses pickles that call code;
- ``builder`` / ``arch`` may name only allow-listed model factories: torchvision's
  classification models (``torchvision.models.resnet18``) and this package's demo builders.
  Any other callable (``mypkg.models:build``, the usual case for research code) needs
  ``trust: true``, since importing and calling it runs that code;
- ``timm:<name>`` (as ``arch`` or ``builder``) names a timm architecture; any name in
  ``timm.list_models()`` is allowed without trust, and its arguments may not make timm load or
  fetch anything (``pretrained``, ``pretrained_cfg``, ``checkpoint_path``, ``cache_dir``, ...);
- no weights are ever downloaded: a factory that tries is stopped with a one-line error;
- without trust a factory's model is built on torch's meta device first (no memory, nothing
  read) and refused over MAX_MODEL_BYTES (2 GiB, or twice model.file's size) of parameters and
  buffers or MAX_MODEL_TENSORS tensors, naming the arguments (explain.safeload.bounded_build);
  explain's demo builder (no arguments) is built directly; with trust, nothing is bounded.

Weight files: a torch file (whole model or state_dict, read by explain.safeload) or, the
safest choice, a ``.safetensors`` state_dict (tensors only), recognised by its content and
fitted to ``model.arch``. TorchScript archives (torch.jit.save) are refused: their compiled
forward never calls PyTorch hooks, so no layer can be captured for a CAM.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from explain.config import Config, ModelSpec
from explain.errors import ExplainError, first_line
from explain.names import MAX_NAME, name_problem, quote, safe_slug, short, suggest
from explain.safeload import (MAX_MODEL_BYTES, MAX_MODEL_TENSORS, bounded_build, is_torchscript,
                              looks_like_safetensors, meta_size, read_safetensors, safe_load,
                              structure_problem, trusted_load)

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
            f"<name>, timm:<name>, explain.demo:<name>){suggest(dotted, allowed_factories())}; "
            f"naming your own "
            f"code needs 'model.trust: true' (it imports and runs that code)")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ExplainError(f"{field}: cannot import {quote(dotted)} ({first_line(exc)})") from None


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
    for key in WEIGHT_ARGS:
        if args.get(key) not in (None, False):
            raise _download_refused(f"{field}_args.{key} = {quote(args[key], 40)}: pretrained weights")
    bounded = not trust and getattr(factory, "__module__", "") != "explain.demo"
    given = f"{field}: {quote(dotted)}" + (f" with {field}_args {quote(args, 80)}" if args else "")
    refuse = functools.partial(_too_big, given, limit)
    if bounded:
        with no_downloads():
            size = meta_size(functools.partial(factory, **args), limit, refuse)
        if size is not None and size > limit:
            raise refuse(size)
    with bounded_build(limit, refuse) if bounded else contextlib.nullcontext():
        model = call_factory(factory, args, field)
    if not isinstance(model, nn.Module):
        raise ExplainError(f"{field}: {quote(dotted)} returned a {type(model).__name__}, "
                           f"not a torch.nn.Module")
    return model


def _read_file(path: Path, spec: ModelSpec) -> Any:
    """The file's content: a state_dict (torch or safetensors) or a whole model (torch)."""
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ExplainError(f"model.file: {quote(str(path))}: {exc.strerror}") from None
    if not found:
        raise ExplainError(f"{short(path)}: model file not found (model.file): put the model file "
                           f"there, or try the demo: python -m explain configs/demo_catdog.yaml")
    try:
        safetensors = path.suffix.lower() == ".safetensors" or looks_like_safetensors(path)
        torchscript = not safetensors and is_torchscript(path)
    except OSError as exc:
        raise ExplainError(f"{short(path)}: cannot read the model file (model.file): "
                           f"{exc.strerror}") from None
    if safetensors and not spec.arch:
        raise ExplainError(f"{path}: a safetensors file holds weights only; add 'model.arch' "
                           f"(e.g. torchvision.models.resnet18 or timm:<name>) and "
                           f"'model.arch_args' (model.file)")
    if safetensors:
        return read_safetensors(path)
    if torchscript:
        raise ExplainError(
            f"{path}: a TorchScript archive (torch.jit.save; model.file): its compiled forward "
            f"never calls PyTorch hooks, so no layer can be captured for a CAM; save the weights "
            f"instead (torch.save(model.state_dict()) or safetensors, loaded with model.arch) "
            f"or the whole model with torch.save(model)")
    return trusted_load(path) if spec.trust else safe_load(path)


def _from_state_dict(obj: Any, spec: ModelSpec, path: Path) -> nn.Module:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a training checkpoint wrapping the weights
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise ExplainError(f"{path}: holds a {type(obj).__name__}, neither a whole nn.Module "
                           f"nor a state_dict of tensors")
    if not spec.arch:
        raise ExplainError(f"{path}: is a state_dict (weights only); add 'model.arch' "
                           f"(e.g. torchvision.models.alexnet) and 'model.arch_args'")
    limit = max(MAX_MODEL_BYTES, 2 * path.stat().st_size)  # the weights fill the model
    model = make_model(spec.arch, spec.arch_args, "model.arch", spec.trust, limit)
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
    """Build or load the configured network, in eval mode, on the CPU (a Keras model file:
    explain.keras_model.KerasNet, on Keras' torch backend)."""
    spec = cfg.model
    if spec.keras:
        from explain.keras_model import load_keras  # imports keras only for Keras models
        where = str(cfg.resolve(spec.keras))
        model = load_keras(Path(where), spec.trust)
    elif spec.builder:
        where = "model.builder"
        model = make_model(spec.builder, spec.builder_args, where, spec.trust)
    else:
        where = str(cfg.resolve(spec.file))
        obj = _read_file(Path(where), spec)
        model = obj if isinstance(obj, nn.Module) else _from_state_dict(obj, spec, Path(where))
    if not isinstance(model, nn.Module):
        raise ExplainError(f"{where}: gives a {type(model).__name__}, not a torch.nn.Module")
    _check_children(model, where, from_file=spec.file is not None and not spec.trust)
    return model.eval()


# ---- class names the model carries -----------------------------------------------------------

def safe_class_names(labels: Sequence[Any]) -> list[str]:
    """Labels -> safe, distinct class names (explain.names rules), in order. A label keeps the
    text before its first comma ('tabby, tabby cat' -> 'tabby'), spaces become '_', apostrophes
    go, other unsafe characters become '_'; a repeat (ignoring case) gets '_2', '_3', ...
    ('crane', 'crane_2'); a label with nothing usable becomes 'class_<index>'."""
    taken: set[str] = set()
    next_suffix: dict[str, int] = {}  # base -> the next number to try (linear in repeats)
    out = []
    for index, label in enumerate(labels):
        text = unicodedata.normalize("NFC", str(label)).split(",")[0].strip()
        base = safe_slug(re.sub(r"['\u2019`]", "", text), fallback=f"class_{index}")
        name, count = base, next_suffix.get(base.lower(), 2)
        while name.lower() in taken or name_problem(name):
            suffix = f"_{count}"
            name = base[: MAX_NAME - len(suffix)].rstrip("._-") + suffix
            count += 1
        next_suffix[base.lower()] = count
        taken.add(name.lower())
        out.append(name)
    return out


def _label_list(value: Any, outputs: int) -> Optional[list[str]]:
    """A list / tuple of ``outputs`` texts, or an id -> label mapping over 0..outputs-1."""
    if isinstance(value, dict):
        try:
            table = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        if set(table) != set(range(outputs)):
            return None
        value = [table[i] for i in range(outputs)]
    if isinstance(value, (list, tuple)) and len(value) == outputs and \
            all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _attribute(obj: Any, name: str) -> Any:
    """obj.name (or obj[name] for a dict); None when missing or when looking it up fails."""
    try:
        if isinstance(obj, dict):
            return obj.get(name)
        return getattr(obj, name, None)
    except Exception:  # a property of the model's own class that fails
        return None


def _timm_labels(net: nn.Module, outputs: int) -> Optional[tuple[list[str], str]]:
    """Labels from a timm model's pretrained_cfg: its label_names, else the ImageNet subset its
    num_classes implies (timm ships those label files; nothing is fetched)."""
    cfg = _attribute(net, "pretrained_cfg")
    if not isinstance(cfg, dict) or "timm" not in sys.modules:
        return None
    arch = cfg.get("architecture", type(net).__name__)
    for key in ("label_names", "label_descriptions"):
        labels = _label_list(cfg.get(key), outputs)
        if labels:
            return labels, f"timm pretrained_cfg.{key} of {arch}"
    if cfg.get("num_classes") != outputs:
        return None
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
        subset = infer_imagenet_subset(cfg)
        labels = ImageNetInfo(subset).label_descriptions() if subset else None
    except (ImportError, AssertionError, OSError, ValueError, KeyError):
        return None
    if labels and len(labels) == outputs:
        return labels, f"timm's {subset} labels ({arch})"
    return None


def _torchvision_labels(spec: ModelSpec, outputs: int) -> Optional[tuple[list[str], str]]:
    """The categories of the first weights enum of the torchvision model arch / builder names."""
    dotted = spec.arch or spec.builder or ""
    found = re.fullmatch(r"torchvision\.models(?:\.\w+)*[.:](\w+)", dotted)
    if not found:
        return None
    import torchvision
    try:
        weights = list(torchvision.models.get_model_weights(found.group(1)))
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    labels = _label_list(weights[0].meta.get("categories"), outputs) if weights else None
    return (labels, f"torchvision {weights[0]} categories") if labels else None


def class_names_from_model(net: nn.Module, spec: ModelSpec,
                           outputs: int) -> Optional[tuple[dict[str, int], str]]:
    """(safe class name -> output index, where the names came from) when the model carries
    exactly ``outputs`` names; None when it carries none. Looked for, in order: a list
    attribute ``class_names`` / ``classes`` on the net, a Hugging Face-style
    ``net.config.id2label``, a timm model's pretrained_cfg labels, the torchvision weights
    enum of the architecture ``model.arch`` / ``model.builder`` names. All offline."""
    found: Optional[tuple[list[str], str]] = None
    for attr in ("class_names", "classes"):
        labels = _label_list(_attribute(net, attr), outputs)
        if labels and not found:
            found = labels, f"the model's '{attr}' attribute"
    if not found:
        labels = _label_list(_attribute(_attribute(net, "config"), "id2label"), outputs)
        found = (labels, "the model's config.id2label") if labels else None
    found = found or _timm_labels(net, outputs) or _torchvision_labels(spec, outputs)
    if not found:
        return None
    labels, source = found
    return {name: i for i, name in enumerate(safe_class_names(labels))}, source


def _check_children(model: nn.Module, where: str, from_file: bool) -> None:
    """Every module has the usual structure (a pickle can put anything anywhere)."""
    problem = structure_problem(model)
    if problem and from_file:
        raise ExplainError(f"{where}: refused to load: the model it holds is not a usable "
                           f"model: {problem}; if you trust this file, set 'model.trust: true'")
    if problem:
        raise ExplainError(f"{where}: not a usable model: {problem}")


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

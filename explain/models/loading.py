"""Getting the network a config names: a model file (a whole pickled model or a state_dict
fitted to ``arch``, or a ``.safetensors`` state_dict), a factory (``builder``), or a Keras
file. Files are read without running their code (explain.models.pickles); TorchScript
archives are refused: their compiled forward never calls PyTorch hooks, so no layer can be
captured for a CAM.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from explain.config import Config, ModelSpec
from explain.errors import ExplainError
from explain.names import a_type, close_file, quote, short
from explain.models.factories import make_model, MAX_MODEL_BYTES, MAX_MODEL_TENSORS
from explain.models.formats import is_torchscript, looks_like_safetensors, read_safetensors
from explain.models.pickles import (hidden_modules, safe_load, saved_hooks, structure_problem,
                                    trusted_load)

MODEL_SUFFIXES = (".pth", ".pt", ".pkl", ".ckpt", ".bin", ".safetensors", ".tar", ".keras", ".h5")


def _read_file(path: Path, spec: ModelSpec) -> Any:
    """The file's content: a state_dict (torch or safetensors) or a whole model (torch)."""
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ExplainError(f"model.file: {quote(str(path))}: {exc.strerror}") from None
    if not found and path.exists() and not path.is_dir():  # a named pipe, a socket, a device
        from explain.names import not_found  # (the close name offered was the path)
        raise ExplainError(f"model.file: {not_found(path, '')}")
    if not found:
        hint = close_file(path, MODEL_SUFFIXES, folders=False)  # '.pt' for '.pth'
        course = " (README.md, 'For the computer-vision course', saves an untrained stand-in in one line)" \
            if path.name == "torch_alex.pth" else ""
        raise ExplainError(f"{short(path)}: model file not found" + (
            f"{hint} Or put" if hint else ": put") + f" the model file there{course}, or try "
            "the demo: python -m explain configs/demo_catdog.yaml")
    try:
        safetensors = path.suffix.lower() == ".safetensors" or looks_like_safetensors(path)
        torchscript = not safetensors and is_torchscript(path)
    except OSError as exc:
        raise ExplainError(f"{short(path)}: cannot read the model file: "
                           f"{exc.strerror}") from None
    if safetensors and not spec.arch:
        raise ExplainError(f"{path}: a safetensors file holds weights only; add 'model.arch' "
                           f"(e.g. torchvision.models.resnet18 or timm:<name>) and "
                           f"'model.arch_args'")
    if safetensors:
        return read_safetensors(path)
    if torchscript:
        raise ExplainError(
            f"{path}: a TorchScript archive (torch.jit.save): its compiled forward "
            f"never calls PyTorch hooks, so no layer can be captured for a CAM; save the weights "
            f"instead (torch.save(model.state_dict()) or safetensors, loaded with model.arch) "
            f"or the whole model with torch.save(model)")
    return trusted_load(path) if spec.trust else safe_load(path)


def _from_state_dict(obj: Any, spec: ModelSpec, path: Path) -> nn.Module:
    obj = _unwrapped(obj, path)
    if not spec.arch:
        raise ExplainError(f"{path}: is a state_dict (weights only); " + (
            _task_head_hint(obj) or f"add 'model.arch' (e.g. torchvision.models.alexnet) and "
            f"'model.arch_args'{_outputs_hint(obj)}"))
    limit = max(MAX_MODEL_BYTES, 2 * path.stat().st_size)  # the weights fill the model
    model = make_model(spec.arch, spec.arch_args, "model.arch", spec.trust, limit)
    own = model.state_dict()
    for key, value in obj.items():
        if key not in own:
            aux = isinstance(key, str) and key.startswith("aux_classifier.")  # or a number
            aux = "; the weights hold an auxiliary head (trained with aux_loss=True): add " \
                "aux_loss: true to model.arch_args" if aux else ""
            raise ExplainError(f"{path}: state_dict does not fit {spec.arch}: unexpected key "
                               f"'{key}'{aux}")
        if own[key].shape != value.shape:
            hint = _head_hint(own, key, value.shape) or _grid_hint(model, key, value.shape)
            raise ExplainError(f"{path}: state_dict does not fit {spec.arch}: '{key}' has shape "
                               f"{tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
                               f"{hint}")
    missing = [k for k in own if k not in obj]
    if missing:
        raise ExplainError(f"{path}: state_dict does not fit {spec.arch}: missing key '{missing[0]}'")
    model.load_state_dict(obj)
    return model


CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net")  # where trainers keep it


def _is_weights(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def _unwrapped(obj: Any, path: Path) -> dict:
    """The state_dict of a file: the file's dict of tensors, or the one a training checkpoint
    keeps under a usual key ({'epoch': 3, 'model_state_dict': ...}, as PyTorch's tutorial
    saves it). Else an error naming the keys that hold weights, if any."""
    if _is_weights(obj):
        return obj
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if _is_weights(obj.get(key)):
                return obj[key]
    what = f"holds {a_type(obj)}, neither a whole nn.Module nor a state_dict of tensors"
    if isinstance(obj, dict):
        inner = [k for k, v in obj.items() if _is_weights(v)][:3]
        keys = ", ".join(quote(str(k)) for k in list(obj)[:8] if isinstance(k, str))
        where = quote(inner[0]) if inner else ""
        what += (f" (its keys: {keys}" + (f"; the weights may be under {where}: save "
                 f"torch.save(checkpoint[{where}], ...) and load that file"
                 if inner else "") + ")")
    raise ExplainError(f"{path}: {what}")


def _outputs_hint(weights: dict) -> str:
    """How many outputs the weights' last layer has, as the arch_args it needs."""
    last = [k for k, v in weights.items()  # a weights-only pickle's keys may be any number
            if isinstance(k, str) and k.endswith(".weight") and v.ndim >= 2][-1:]
    if not last:
        return ""
    n = int(weights[last[0]].shape[0])
    return (f" (its last layer {quote(last[0])} has {n} outputs: "
            f"model.arch_args: {{num_classes: {n}}})")


# torchvision's detection and segmentation heads: what it is, the builders, the task, then the
# (key, ndim) of its weights that must all be there, its class layer first (its first
# dimension is num_classes; a segmenter's is a 1x1 conv, not a classifier's Linear). One key
# was not evidence enough: a classifier whose head is Sequential(conv, ..., conv) has a 4-d
# 'classifier.4.weight' too.
TASK_HEADS = (
    ("a Faster R-CNN or Mask R-CNN", "torchvision.models.detection.fasterrcnn_* or maskrcnn_*",
     "detection", (("roi_heads.box_predictor.cls_score.weight", 2),
                   ("roi_heads.box_predictor.bbox_pred.weight", 2),
                   ("rpn.head.cls_logits.weight", 4))),
    ("an LR-ASPP", "torchvision.models.segmentation.lraspp_mobilenet_v3_large", "segmentation",
     (("classifier.low_classifier.weight", 4), ("classifier.high_classifier.weight", 4),
      ("classifier.cbr.0.weight", 4))),
    ("a DeepLabV3", "torchvision.models.segmentation.deeplabv3_*", "segmentation",
     (("classifier.4.weight", 4), ("classifier.0.project.0.weight", 4),
      ("classifier.1.weight", 4), ("classifier.2.running_mean", 1))),
    ("an FCN", "torchvision.models.segmentation.fcn_*", "segmentation",
     (("classifier.4.weight", 4), ("classifier.0.weight", 4),
      ("classifier.1.running_mean", 1))))


def _task_head(weights: dict, keys: tuple) -> int:
    """The class count of the head whose (key, ndim) ``keys`` all are in ``weights``, beside
    a backbone's weights, its class layer a Linear or a 1x1 conv (0: not that head)."""
    found = [weights.get(key) for key, _ in keys]
    if not all(isinstance(v, torch.Tensor) and v.ndim == ndim
               for v, (_, ndim) in zip(found, keys)) or not any(
            isinstance(k, str) and k.startswith("backbone.") for k in weights):
        return 0
    n = int(found[0].shape[0])
    if found[0].ndim == 4 and tuple(found[0].shape[2:]) != (1, 1):
        return 0
    return n


def _task_head_hint(weights: dict) -> str:
    """For the weights of a torchvision detector or segmenter: the builder family, the task
    and num_classes, read from its class layer ('' for anything else)."""
    for what, builders, task, keys in TASK_HEADS:
        n = _task_head(weights, keys)
        if n:
            aux = ", aux_loss: true" if any(
                isinstance(k, str) and k.startswith("aux_classifier.") for k in weights) else ""
            return (f"they look like {what}'s ({quote(keys[0][0])} has {n} classes): add task: "
                    f"{task}, model.arch: the builder you trained ({builders}) and "
                    f"model.arch_args: {{num_classes: {n}{aux}}} with your other training "
                    f"arguments")
    return ""


def _head_hint(own: dict, key: str, shape: torch.Size) -> str:
    """When the mismatch is the last layer's outputs (a model trained for other classes), how
    to build it with that many."""
    last = [k for k in own if k.endswith((".weight", ".bias"))][-2:]
    if key in last and own[key].shape[1:] == shape[1:]:
        return f"; the weights have {shape[0]} outputs: set model.arch_args: {{num_classes: {shape[0]}}}"
    return ""


def _grid_hint(model: nn.Module, key: str, shape: torch.Size) -> str:
    """When a ViT's position embedding holds another number of tokens (weights trained at
    another input size, timm's ``img_size``), the size that gives that many: the file's tokens
    less the class / register tokens the model embeds with them, a whole square grid of the
    model's patches; else ''."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    own = getattr(model, key, None)
    if key != "pos_embed" or not isinstance(own, torch.Tensor) or len(shape) != 3 or \
            own.ndim != 3 or own.shape[2] != shape[2] or not isinstance(patch, (tuple, list)):
        return ""
    prefix = 0 if getattr(model, "no_embed_class", False) else \
        int(getattr(model, "num_prefix_tokens", 0))
    side = math.isqrt(max(0, shape[1] - prefix))
    if side == 0 or side * side != shape[1] - prefix or len(patch) != 2:
        return ""
    size = side * patch[0] if patch[0] == patch[1] else [side * patch[0], side * patch[1]]
    return (f"; the weights' {shape[1]} tokens are a {side} x {side} grid of "
            f"{'x'.join(map(str, patch))}-pixel patches: set model.arch_args: "
            f"{{img_size: {size}}}")


def load_model(cfg: Config) -> nn.Module:
    """Build or load the configured network, in eval mode, on the CPU (a Keras model file:
    explain.models.keras.KerasNet, on Keras' torch backend)."""
    spec = cfg.model
    if spec.builder:
        where = "model.builder"
        model = make_model(spec.builder, spec.builder_args, where, spec.trust)
    else:
        field = "model.keras" if spec.keras else "model.file"
        where = str(cfg.resolve(spec.keras or spec.file))
        with _naming(field, where):
            model = _from_file(Path(where), spec)
    if not isinstance(model, nn.Module):
        raise ExplainError(f"{where}: gives {a_type(model)}, not a torch.nn.Module")
    _check_children(model, where, from_file=spec.file is not None and not spec.trust)
    if spec.file is not None and not spec.trust:
        _stored_size(model, Path(where))
    return model.eval()


def _stored_size(model: nn.Module, path: Path) -> None:
    """A model read from a file without trust holds at most what a config may build
    (MAX_MODEL_BYTES of parameters and buffers, or twice the file's size): a file stores a
    tensor as its data and a view of it, and a view repeating its data (a stride of 0) is as
    large as its shape wherever torch copies it (a 5.5 KB file's Linear of 1.3e9 weights
    took 6 GB in the first pass). Tied weights (one tensor, two modules) count once."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    size = sum(t.nbytes for t in tensors.values())
    limit = max(MAX_MODEL_BYTES, 2 * path.stat().st_size)
    if size <= limit and len(tensors) <= MAX_MODEL_TENSORS:
        return
    what = (f"{len(tensors)} parameter and buffer tensors (at most {MAX_MODEL_TENSORS})"
            if size <= limit else f"{size / 2**30:.2f} GiB of parameters and buffers (at most "
            f"{limit / 2**30:.2f} GiB, or twice the file's size)")
    raise ExplainError(f"model.file: {short(str(path))}: refused to load: the model it holds "
                       f"has {what} in a file of {path.stat().st_size} bytes (a tensor saved "
                       f"as a view that repeats its data is as large as its shape); if you "
                       f"trust this file, set 'model.trust: true'")


def _from_file(path: Path, spec: ModelSpec) -> Any:
    """The model of a Keras file or of a torch / safetensors file (whole, or a state_dict
    built into ``model.arch``)."""
    if spec.keras:
        from explain.models.keras import load_keras  # imports keras only for Keras models
        return load_keras(path, spec.trust)
    obj = _read_file(path, spec)
    if isinstance(obj, nn.Module) and (spec.arch or spec.arch_args):
        field = " and ".join(name for name, value in (("model.arch", spec.arch),
                                                      ("model.arch_args", spec.arch_args)) if value)
        raise ExplainError(f"{short(str(path))}: holds a whole model "
                           f"({type(obj).__module__}.{type(obj).__name__}), which is used as "
                           f"saved: {field} would be ignored; remove {field} (for a "
                           f"state_dict), or give the state_dict file")
    return obj if isinstance(obj, nn.Module) else _from_state_dict(obj, spec, path)


@contextlib.contextmanager
def _naming(field: str, where: str) -> Iterator[None]:
    """An error about the model file ('<file>: ...') says which field named it first
    ('model.file: <file>: ...'), so the run's error line names the config too."""
    try:
        yield
    except ExplainError as exc:
        text = exc.message
        if type(exc) is not ExplainError or not text.startswith((where, short(where))):
            raise
        raise ExplainError(f"{field}: {text}", details=exc.details) from None


def _check_children(model: nn.Module, where: str, from_file: bool) -> None:
    """Every module has the usual structure (a pickle can put anything anywhere)."""
    problem = structure_problem(model) or \
        (saved_hooks(model) or hidden_modules(model) if from_file else None)
    if problem and from_file:
        raise ExplainError(f"{where}: refused to load: the model it holds is not a usable "
                           f"model: {problem}; if you trust this file, set 'model.trust: true'")
    if problem:
        raise ExplainError(f"{where}: not a usable model: {problem}")

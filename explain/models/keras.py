"""Keras 3 models (``model: {keras: model.keras}``), run on Keras' PyTorch backend.

With ``KERAS_BACKEND=torch`` a loaded Keras model and each of its layers are
``torch.nn.Module`` objects: forward hooks fire on the layers and gradients flow through them,
so every CAM method, the hand-written references and the channel views work unchanged.
``KerasNet`` adapts the model to what explain feeds a network:

- input: explain's (B, 3, H, W) batches are permuted to the (B, H, W, 3) a channels-last Keras
  model takes (Keras' default; a channels-first model gets them as they are);
- layers: every Keras layer, nested models' layers included, is a child under its Keras name
  (``block5_conv3``), so ``target_layers``, ``channels.layer`` and ``explain layers`` use the
  names ``model.summary()`` prints; their outputs are channels-last (B, h, w, C) maps, marked
  by ``explain_reshape = "nhwc"`` for the layout inference (explain.models.layouts);
- output: a final softmax / sigmoid is taken off (as Keras' own Grad-CAM example does), so the
  model gives logits and ``model.head`` turns them into probabilities; ``explain_notes`` says so.

Loading runs no code from the file unless ``model.trust: true``: ``keras.saving.load_model``
with ``safe_mode=True`` refuses lambda layers (Python bytecode) and cannot resolve custom
classes; Keras releases before ``SAFE_KERAS`` had known ways around safe mode and are refused
without trust. ``compile=False``: no optimizer, loss or metric is deserialized.

Nothing Keras reads, unpacks or allocates is unbounded; before keras is imported:
- a .keras or .h5 file holds at most MAX_FILE_BYTES (4 GiB, Keras' own bomb floor);
- a .keras archive: at most MAX_MEMBERS (256) members, none with a path leaving the archive,
  each one's stored bytes inside the file, unpacking to at most MAX_RATIO (100) times its
  stored size past its first MiB, all together to at most ``unpacked_bound`` = 64 MiB + twice
  the archive's size (Keras stores members as they are: a real archive unpacks to its size);
- the weights (the .h5 file or the archive's model.weights.h5) declare datasets of at most
  ``unpacked_bound`` bytes of their file and name no other file (external links or storage,
  virtual datasets);
- every layer call the model config records (config.json, an .h5 file's model_config) takes a
  model tensor: Keras makes them as it loads, and one on constants ran on real tensors.
Then, without trust, Keras loads the model on the meta device first (no memory; safe mode):
its weights may take at most explain.models.factories.MAX_MODEL_BYTES (2 GiB) or twice the file's
size, so a config with ``units: 300000000`` is refused before anything is allocated.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

from explain.errors import ExplainError, first_line
from explain.names import a_type, short
from explain.models.factories import MAX_MODEL_BYTES
from explain.models.guard import KERAS_COPIES, available
from explain.models.kerasfile import FIELD, check_file, gb, refused

SAFE_KERAS = (3, 15, 1)  # the first release with every known safe_mode bypass fixed


def _version(text: str) -> tuple[int, ...]:
    """'3.15.1' -> (3, 15, 1); '3.16.0.dev2026' -> (3, 16, 0)."""
    return tuple(int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3])


def import_keras() -> Any:
    """The keras module on the torch backend. The backend is chosen when keras is first
    imported, so it is set here before that; a keras already imported with another backend,
    a missing keras or a Keras 2 are one-line errors."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    if importlib.util.find_spec("keras") is None:
        raise ExplainError(f"{FIELD}: Keras models need Keras 3, which is not installed: "
                           f"pip install explain[keras]")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import keras
    except Exception as exc:  # a broken install
        raise ExplainError(f"{FIELD}: importing keras failed ({type(exc).__name__}: "
                           f"{first_line(exc)})") from None
    version = getattr(keras, "__version__", "0")
    if _version(version)[:1] != (3,):
        raise ExplainError(f"{FIELD}: Keras {version} is installed; Keras models need Keras 3 "
                           f"(its torch backend): pip install explain[keras]")
    backend = keras.backend.backend()
    if backend != "torch":
        raise ExplainError(f"{FIELD}: keras was already imported with the '{backend}' backend "
                           f"in this process; explain runs Keras models on the torch backend: "
                           f"run it in a fresh process (or set KERAS_BACKEND=torch)")
    return keras


def _chain_text(exc: BaseException) -> str:
    """The messages of an exception and the ones it came from (Keras wraps the cause)."""
    texts: list[str] = []
    while exc is not None and len(texts) < 8:
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


def _load_error(path: Path, exc: Exception, trust: bool) -> ExplainError:
    """Keras' own refusal or failure, in one line (with the trust hint where it helps)."""
    text = _chain_text(exc)
    custom = re.search(r"Could not locate (?:class|function) '([^']{1,80})'", text)
    if not trust and re.search(r"deserialization of a Python lambda|safe_mode=False|unsafe", text):
        return ExplainError(f"{short(path)}: refused to load ({FIELD}): it holds Python code "
                            f"(a Lambda layer or function), which Keras' safe mode does not run; "
                            f"if you trust this file, set 'model.trust: true' (Keras then loads "
                            f"it with safe_mode=False)")
    if custom:
        return ExplainError(f"{short(path)}: Keras cannot load it ({FIELD}): it uses the custom "
                            f"class or function '{custom.group(1)}', which explain cannot "
                            f"import (it loads models made of Keras' own layers)")
    return ExplainError(f"{short(path)}: Keras cannot load it ({FIELD}): "
                        f"{type(exc).__name__}: {first_line(exc)}")


def read_keras(path: Path, trust: bool) -> Any:
    """The Keras model in ``path`` (on the CPU), with Keras' safe mode unless ``trust``."""
    check_file(path)
    keras = import_keras()
    version = getattr(keras, "__version__", "0")
    if not trust and _version(version) < SAFE_KERAS:
        raise ExplainError(
            f"{FIELD}: Keras {version} has known ways around its safe mode (fixed in "
            f"{'.'.join(map(str, SAFE_KERAS))}), so it does not load a shared model file: "
            f"pip install -U 'keras>={'.'.join(map(str, SAFE_KERAS))}', or set "
            f"'model.trust: true' if you trust this file")
    if not trust:  # sized on the meta device first (with trust: the user's code, run once)
        shapes = _load(keras, path, "meta", trust)
        size = sum(v.value.nbytes for v in shapes.weights)
        limit = max(MAX_MODEL_BYTES, 2 * path.stat().st_size)
        if size > limit:
            raise refused(path, f"its config makes a model of {gb(size)} of weights, over the "
                                 f"{gb(limit)} explain loads from a file this size (twice its "
                                 f"size, at least); set 'model.trust: true' if you mean it")
        outputs, free = _output_bytes(shapes), available(torch.device("cpu"))
        if KERAS_COPIES * outputs > free:  # a 32 KB UpSampling2D(512), then pooling: 12 GB
            raise refused(path, f"its layers' outputs for one image add up to {gb(outputs)}, "
                                 f"{KERAS_COPIES} times that with their gradients and layout "
                                 f"copies, more than the {gb(free)} free; set 'model.trust: "
                                 f"true' if you mean it")
    return _load(keras, path, "cpu", trust)




def _output_bytes(model: Any) -> int:
    """float32 bytes of every layer's output for one image, from the functional model's
    symbolic shapes (layers whose shape Keras leaves open are not counted)."""
    total = 0
    for layer in _all_layers(model):
        try:
            outputs = layer.output
        except (AttributeError, ValueError, RuntimeError):
            continue
        for out in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            shape = tuple(getattr(out, "shape", None) or ())[1:]
            if shape and all(isinstance(d, int) for d in shape):
                total += math.prod(shape) * 4
    return total


def _all_layers(layer: Any) -> list:
    """Every layer inside a Keras layer, nested models' layers included."""
    found = []
    for sub in _sublayers(layer):
        found += [sub] + _all_layers(sub)
    return found


def _load(keras: Any, path: Path, device: str, trust: bool) -> Any:
    """keras.saving.load_model on ``device``; on 'meta' no memory is taken and nothing kept
    (the variables, assigned the file's weights, keep their shapes only)."""
    try:
        with warnings.catch_warnings(), keras.device(device):
            warnings.simplefilter("ignore")
            return keras.saving.load_model(str(path), compile=False, safe_mode=not trust)
    except ExplainError:
        raise
    except (Exception, MemoryError) as exc:
        raise _load_error(path, exc, trust) from None


# ---- the model as explain sees it ------------------------------------------------------------

def _sublayers(layer: Any) -> list:
    """The layers directly inside a Keras layer (a nested model's layers), in order."""
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except (AttributeError, TypeError):
        return list(getattr(layer, "layers", []) or [])


def keras_layers(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, layer) for every Keras layer inside ``model``, depth first in the model's order,
    a nested model before its own layers; InputLayers (which never run) left out. Names are
    the Keras names with characters a dotted layer path cannot hold replaced by '_'; a name
    taken by an earlier layer gets its parent's name in front (then _2, _3, ...)."""
    taken: set[str] = set()
    seen: set[int] = {id(model)}
    todo = [(layer, "") for layer in reversed(_sublayers(model))]
    while todo:
        layer, parent = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        base = re.sub(r"[^\w-]", "_", str(getattr(layer, "name", "")) or "layer")
        name = base if base not in taken else f"{parent}_{base}" if parent else base
        count = 2
        while name in taken:
            name, count = f"{base}_{count}", count + 1
        if type(layer).__name__ != "InputLayer":
            taken.add(name)
            yield name, layer
        todo.extend((sub, name) for sub in reversed(_sublayers(layer)))


def _output_layer(model: Any) -> Optional[Any]:
    """The layer that makes the model's only output (inside nested models), or None."""
    for _ in range(64):
        outputs = getattr(model, "outputs", None)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != 1:
            return None
        history = getattr(outputs[0], "_keras_history", None)
        layer = history[0] if history else None
        if layer is None or not isinstance(getattr(layer, "outputs", None), (list, tuple)):
            return layer
        model = layer  # a nested model: its own output layer
    return None


def _input_shape(model: Any) -> Optional[tuple]:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError, TypeError):
        return None
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
        raise ExplainError(f"{FIELD}: the model takes {len(inputs) if inputs else 0} inputs; "
                           f"explain feeds a classifier one image batch")
    return tuple(inputs[0].shape)


def _keep_input(module: nn.Module, args: tuple, output: Any) -> Any:
    """A forward hook that makes a Softmax layer hand on what it got: the logits."""
    return args[0] if args else output


class KerasNet(nn.Module):
    """A Keras model with explain's interface: forward takes (B, 3, H, W) and returns what the
    Keras model returns (logits once a final softmax / sigmoid is taken off); its children
    are the Keras layers by name; its parameters are the Keras model's variables."""

    explain_fake_pass = True  # its first pass is bounded under FakeTensorMode (guard)

    def __init__(self, model: Any):
        super().__init__()
        object.__setattr__(self, "keras_model", model)  # not a child: its layers are
        shape = _input_shape(model)
        if shape is not None and len(shape) != 4:
            raise ExplainError(f"{FIELD}: the model's input shape is {shape}, not a batch of "
                               f"images (None, height, width, 3)")
        if shape is not None and 3 not in (shape[1], shape[3]) and None not in shape[1::2]:
            raise ExplainError(f"{FIELD}: the model's input shape {shape} has no axis of 3 "
                               f"colour channels; explain feeds RGB images")
        # (None, H, W, 3) and, when unknown, Keras' default; (None, 3, H, W): channels first
        self.channels_last = shape is None or shape[3] == 3 or shape[1] != 3
        hw = (shape[1:3] if self.channels_last else shape[2:4]) if shape else (None, None)
        self.input_hw: tuple = tuple(hw)
        self.explain_reshape = "nhwc" if self.channels_last else "auto"  # see explain.models.layouts
        self.explain_notes: list[str] = []
        for name, layer in keras_layers(model):
            if isinstance(layer, nn.Module):
                self._modules[name] = layer  # not add_module: a layer may be named 'training'
        for name, param in model.torch_params.items():
            self._parameters[re.sub(r"\W", "_", name)] = param  # the same Parameter objects
        self._to_logits(model)

    def _to_logits(self, model: Any) -> None:
        """Take a final softmax / sigmoid off, so the model returns logits (noted)."""
        layer = _output_layer(model)
        act = getattr(layer, "activation", None)
        kind = getattr(act, "__name__", "") if act is not None else ""
        if type(layer).__name__ == "Softmax":
            layer.register_forward_hook(_keep_input)
            kind = "softmax"
        elif kind in ("softmax", "sigmoid"):
            import keras
            layer.activation = keras.activations.linear
        else:
            return
        heads = ("model.head: softmax turns them into probabilities" if kind == "softmax" else
                 "set model.head: binary for one output, multilabel for several")
        self.explain_notes.append(f"{FIELD}: the output layer '{layer.name}' ends in {kind}; "
                                  f"explain takes it off and explains the logits, as Keras' "
                                  f"Grad-CAM example does ({heads})")

    def named_modules(self, memo: Optional[set] = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Module]]:
        """This module, then each Keras layer by its name; not what Keras keeps inside a
        layer (its parameter dictionary: the parameters are this module's own)."""
        memo = set() if memo is None else memo
        for name, module in [("", self), *self._modules.items()]:
            if module is None or (remove_duplicate and module in memo):
                if name == "":
                    return
                continue
            if remove_duplicate:
                memo.add(module)
            yield (f"{prefix}.{name}" if prefix and name else prefix or name), module

    def forward(self, x: torch.Tensor) -> Any:
        import keras
        if x.ndim != 4:
            raise ExplainError(f"{FIELD}: expected a (B, 3, H, W) image batch, got shape "
                               f"{tuple(x.shape)}")
        want = self.input_hw
        if None not in want and tuple(x.shape[-2:]) != tuple(want):
            raise ExplainError(f"{FIELD}: the Keras model takes {want[0]}x{want[1]} images "
                               f"(its input shape), not {x.shape[-2]}x{x.shape[-1]}; set "
                               f"preprocess.size: [{want[0]}, {want[1]}]")
        where = x.device.type if x.device.index is None else f"{x.device.type}:{x.device.index}"
        with keras.device(where):  # tensors Keras makes on the way go where x is
            return self.keras_model(x.permute(0, 2, 3, 1) if self.channels_last else x)

    def extra_repr(self) -> str:
        return f"keras model '{getattr(self.keras_model, 'name', '?')}'"


def load_keras(path: Path, trust: bool) -> KerasNet:
    """The Keras model file at ``path`` as a KerasNet (see the module's docstring)."""
    model = read_keras(path, trust)
    if not isinstance(model, nn.Module):
        raise ExplainError(f"{short(path)}: Keras gave {a_type(model)}, not a model "
                           f"on the torch backend ({FIELD})")
    try:
        net = KerasNet(model)
    except ExplainError:
        raise
    except Exception as exc:
        raise ExplainError(f"{short(path)}: cannot use the Keras model ({FIELD}): "
                           f"{type(exc).__name__}: {first_line(exc)}") from None
    if next(net.parameters(), None) is None:
        raise ExplainError(f"{short(path)}: the Keras model has no weights ({FIELD})")
    return net

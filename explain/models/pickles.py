"""Reading model files without running their code.

A ``.pth`` file is a pickle: a small program that rebuilds objects, and it can name any
function to call. ``torch.load(weights_only=True)`` only lets it touch an allow-list of
globals; we add the ``nn.Module`` classes of torch.nn and torchvision, which a whole model
saved with ``torch.save(model)`` names. Even allow-listed names can be abused, so the pickle
is first read as data (``pickletools``, nothing is executed) and refused when it *calls*
anything beyond the tensor-rebuilding functions a saved model needs:

- a model class is only ever created empty (``cls.__new__``, the NEWOBJ instruction) and
  given its saved state; a call such as ``nn.Linear(30000, 30000)`` (REDUCE) could allocate
  gigabytes from a 1 KB file, so it is refused;
- the calls allowed are the rebuild functions for tensors and parameters (their sizes are
  checked against the stored data), ``OrderedDict``, ``set``, ``bytes`` decoding and
  ``functools.partial`` of a model class (torchvision's ViT keeps ``norm_layer`` as one). A
  partial is never called while loading, but one stored as ``forward`` or over a child would
  be called by the first forward pass, so after loading a partial may only sit in an instance
  attribute that nothing of the class, its children, parameters or buffers is named;
- the pickle is read in the format torch.load will use (a zip archive only when the file
  starts like one, read with torch's own zip reader: the bytes checked are the bytes loaded),
  and its size and length are bounded before anything is parsed.

After loading, every module must have the usual dictionaries of children, parameters and
buffers, holding modules and tensors only, and no hooks (torch would call them in a pass).
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
import pickletools
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from explain.errors import ExplainError, first_line
from explain.names import a_type, quote


SAFE_PREFIXES = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.")


CALLABLE = frozenset({
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "collections.OrderedDict", "builtins.set", "__builtin__.set", "_codecs.encode",
})


PARTIAL = "functools.partial"


LEGACY_PICKLES = 5  # magic number, protocol, system info, the object, storage keys


MAX_PICKLE_BYTES = 64 * 1024 * 1024  # a whole ViT-H's pickle is about 1 MB


MAX_INSTRUCTIONS = 5_000_000


_MARK, _OTHER = object(), object()


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class _Tuple:
    items: tuple


def _module_class(value: Any) -> bool:
    return isinstance(value, _Global) and value.name.startswith(SAFE_PREFIXES)


def _call_problem(func: Any, args: Any) -> Optional[str]:
    """Why calling ``func(*args)`` while loading is refused, or None if it is allowed."""
    if not isinstance(func, _Global):
        return "calls an object it computed while loading"
    if func.name in CALLABLE:
        return None
    if func.name == PARTIAL and isinstance(args, _Tuple) and len(args.items) == 1 and \
            _module_class(args.items[0]):
        return None
    return f"calls {func.name}(...) while loading"


def _pop_to_mark(stack: list) -> list:
    items = []
    while stack:
        item = stack.pop()
        if item is _MARK:
            return items[::-1]
        items.append(item)
    raise ValueError("MARK missing")


def _generic(op, stack: list) -> None:
    """Apply an instruction's stack effect, keeping only the shape of the stack."""
    before = op.stack_before
    if pickletools.markobject in before:
        _pop_to_mark(stack)
        before = before[: before.index(pickletools.markobject)]
    for _ in before:
        stack.pop()
    stack.extend(_MARK if kind is pickletools.markobject else _OTHER for kind in op.stack_after)


_CALLS = ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "BINPERSID", "INST", "OBJ")


def _call_opcode(name: str, stack: list) -> Optional[str]:
    """An instruction that calls something while loading: what makes it unsafe, or None
    (the stack then holds what it made)."""
    if name == "REDUCE":
        args, func = stack.pop(), stack.pop()
        problem = _call_problem(func, args)
        if problem:
            return problem
        stack.append(_OTHER)
    elif name in ("NEWOBJ", "NEWOBJ_EX"):
        if name == "NEWOBJ_EX":
            stack.pop()
        args, cls = stack.pop(), stack.pop()
        if not _module_class(cls):
            return f"creates {getattr(cls, 'name', 'an unnamed class')} while loading"
        if args != _Tuple(()):  # torch.save creates modules with no arguments
            return f"creates {cls.name} with arguments while loading"
        stack.append(_OTHER)
    elif name == "BINPERSID":  # legacy files name module classes as ('module', cls, ...)
        pid = stack.pop()
        legacy_class = isinstance(pid, _Tuple) and len(pid.items) > 1 and \
            pid.items[0] == "module" and _module_class(pid.items[1])
        stack.append(pid.items[1] if legacy_class else _OTHER)
    else:  # INST, OBJ
        return f"uses the {name} instruction (calls a class while loading)"
    return None


def pickle_problem(stream: io.BufferedIOBase, names: set[str]) -> Optional[str]:
    """Read one pickle (up to its STOP) as data; what makes it unsafe to load, or None.
    The global names it mentions are added to ``names``."""
    stack: list = []
    memo: dict = {}
    for count, (op, arg, _) in enumerate(pickletools.genops(stream)):
        if count > MAX_INSTRUCTIONS:
            return f"has a pickle of over {MAX_INSTRUCTIONS} instructions"
        name = op.name
        if name == "GLOBAL":
            names.add(arg.replace(" ", "."))
            stack.append(_Global(arg.replace(" ", ".")))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            ok = isinstance(attr, str) and isinstance(module, str)
            stack.append(_Global(f"{module}.{attr}") if ok else _OTHER)
            names.add(f"{module}.{attr}" if ok else "?")
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            stack.append(arg)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, _OTHER))
        elif name == "DUP":
            stack.append(stack[-1])
        elif name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            n = ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3").index(name)
            items = tuple(stack[len(stack) - n:]) if n else ()
            del stack[len(stack) - n:]
            stack.append(_Tuple(items))
        elif name == "TUPLE":
            stack.append(_Tuple(tuple(_pop_to_mark(stack))))
        elif name in _CALLS:
            problem = _call_opcode(name, stack)
            if problem:
                return problem
        elif name == "STOP":
            return None
        else:
            _generic(op, stack)
    return "ends before its STOP instruction"


class _TooLong(Exception):
    pass


class _Limited(io.RawIOBase):
    """A raw reader that refuses to read past ``limit`` bytes (legacy files have no index)."""

    def __init__(self, raw, limit: int):
        self.raw, self.left = raw, limit

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise _TooLong()
        view = memoryview(buffer)[: self.left]
        n = self.raw.readinto(view)
        self.left -= n or 0
        return n


def file_problem(path: Path, names: set[str]) -> Optional[str]:
    """Check every pickle in a torch file (zip archive or the legacy format) before loading;
    the global names the file mentions are added to ``names``."""
    try:
        if is_zip(path):  # as torch.load decides: by the first bytes
            return _archive_problem(path, names)
        with open(path, "rb") as stream:
            stream = io.BufferedReader(_Limited(stream, MAX_PICKLE_BYTES))
            for _ in range(LEGACY_PICKLES):
                if not stream.peek(1):
                    return None
                problem = pickle_problem(stream, names)
                if problem:
                    return problem
            return None
    except _TooLong:
        return f"has pickles of over {MAX_PICKLE_BYTES} bytes"
    except (ValueError, IndexError, KeyError, EOFError, zipfile.BadZipFile, pickle.PickleError) as exc:
        return f"is not a well-formed pickle ({type(exc).__name__})"


def _archive_problem(path: Path, names: set[str]) -> Optional[str]:
    """``file_problem`` of a zip archive, read with torch's own zip reader: the pickles
    checked are the bytes torch.load unpickles (Python's zipfile can find another central
    directory in the same file, e.g. one placed after data it takes for a prefix)."""
    try:
        with open(path, "rb") as f:
            archive = torch._C.PyTorchFileReader(f)
            records = [r for r in archive.get_all_records() if r.endswith(".pkl")]
            if "data.pkl" not in records:
                return "holds no data.pkl pickle"
            for record in records:
                size = archive.get_record_size(record)
                if size > MAX_PICKLE_BYTES:
                    return f"has a {size}-byte pickle (over {MAX_PICKLE_BYTES})"
                problem = pickle_problem(io.BytesIO(archive.get_record(record)), names)
                if problem:
                    return problem
    except RuntimeError as exc:  # torch's reader: not an archive it can read
        raise zipfile.BadZipFile(first_line(exc)) from None
    return None


def is_zip(path: Path) -> bool:
    """Whether torch.load will read ``path`` as a zip archive (it looks at the first bytes)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


# torchvision's detectors hold a few helpers that are not modules: plain data classes (their
# state is numbers) and box_iou, kept as an attribute (never called while loading: calls are
# checked apart). A whole pickled Faster R-CNN, RetinaNet, SSD, FCOS, Mask / Keypoint R-CNN
# needs no more than these beside modules.
DETECTION_HELPERS = frozenset(
    f"torchvision.models.detection._utils.{name}" for name in (
        "BalancedPositiveNegativeSampler", "BoxCoder", "BoxLinearCoder", "Matcher",
        "SSDMatcher")) | {"torchvision.ops.boxes.box_iou"}


def _allowed_global(name: str) -> Any:
    """The object behind a global name if it is an allow-listed nn.Module class (or partial,
    or one of torchvision's ``DETECTION_HELPERS``)."""
    if name == PARTIAL:
        return functools.partial
    if name in DETECTION_HELPERS:
        module_name, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module_name), attr, None)
    module_name, _, attr = name.rpartition(".")
    if not module_name.startswith(SAFE_PREFIXES):
        return None
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def _script_class(path: Path, name: str) -> ExplainError:
    """A class saved from a script or notebook (``__main__``) that this program does not
    define: no setting makes it loadable. (A notebook that defines the class and calls
    explain.run can load the file with model.trust: true: the usual refusal says so.)"""
    return ExplainError(
        f"{path}: the model's class {name} was defined in the script or notebook that saved "
        f"it, so no other program can rebuild it (model.trust: true does not help); move the "
        f"class into a .py file (a module), import it from there and save again, or save "
        f"model.state_dict() and name the class with model.arch")


def _refusal(path: Path, why: str, names: frozenset[str] = frozenset()) -> ExplainError:
    """The refusal; a whole timm model (allow-listed by name, not as a pickled object) is
    pointed to the state_dict route, which needs no trust."""
    timm = any(n.startswith("timm.") for n in names)
    hint = (" (a timm model: save model.state_dict() instead and set model.arch: "
            "timm:<its name>, e.g. timm:resnet18, with model.arch_args as you built it; no "
            "trust needed)") if timm else ""
    return ExplainError(
        f"{path}: refused to load: the file {why}; a model saved with torch.save needs no "
        f"more than allow-listed torch/torchvision classes and tensor data{hint}. If you trust "
        f"this file, set 'model.trust: true' to load it with full unpickling (this can run "
        f"code)")


def safe_load(path: Path) -> Any:
    """Load a torch file without running code from it; ExplainError naming what it wanted."""
    names: set[str] = set()
    problem = file_problem(path, names)
    if problem and problem.startswith("is not a well-formed"):
        raise ExplainError(f"{path}: not a PyTorch model file (it {problem})")
    main = sys.modules.get("__main__")
    script = sorted(n for n in names if n.startswith("__main__.")
                    and not hasattr(main, n.rpartition(".")[2]))
    if script:  # not in this program either: trust would not help, say so before suggesting it
        raise _script_class(path, script[0].rpartition(".")[2])
    if problem:
        raise _refusal(path, problem, frozenset(names))
    allowed = [obj for obj in map(_allowed_global, sorted(names)) if obj is not None]
    with torch.serialization.safe_globals(allowed):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "persistent_load of storage" in str(exc) and not is_zip(path):
                raise _legacy_refusal(path) from None
            found = re.search(r"GLOBAL (\S+)", str(exc))
            if found is None:
                raise ExplainError(f"{path}: not a PyTorch model file ({first_line(exc)})") from None
            raise _refusal(path, f"needs '{found.group(1)}', which is not an allow-listed "
                                 f"torch/torchvision class", frozenset(names)) from None
        except Exception as exc:
            raise ExplainError(f"{path}: not a PyTorch model file ({first_line(exc)})") from None


def _legacy_refusal(path: Path) -> ExplainError:
    return ExplainError(
        f"{path}: a whole model in torch's legacy file format (saved before PyTorch 1.6), which "
        f"torch's safe loader cannot read; re-save it with a current torch, or set "
        f"'model.trust: true' if you trust the file (this can run code)")


def structure_problem(model: nn.Module) -> Optional[str]:
    """Whether a loaded model has the shape torch.nn gives every module: children that are
    modules, parameters and buffers that are tensors. None when it does."""
    todo, seen = [("", model)], {id(model)}
    while todo:
        prefix, module = todo.pop()
        parts = {key: getattr(module, "__dict__", {}).get(key) for key in
                 ("_modules", "_parameters", "_buffers")}
        for key, table in parts.items():
            if not isinstance(table, dict):
                return f"its module '{prefix or 'model'}' has no {key} dictionary"
            odd = next((n for n in table if not isinstance(n, str) or not n or "." in n), None)
            if odd is not None:  # torch itself refuses such names: a file made by hand
                return (f"its module '{prefix.rstrip('.') or 'model'}' names an entry of {key} "
                        f"{quote(odd)}, a name torch never gives (empty or with a '.': its "
                        f"layers could not be named or copied)")
        for name, child in parts["_modules"].items():
            if child is not None and not isinstance(child, nn.Module):
                return (f"the model's child '{prefix}{name}' is {a_type(child)}, not a "
                        f"torch.nn.Module")
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                todo.append((f"{prefix}{name}.", child))
        for key in ("_parameters", "_buffers"):
            for name, value in parts[key].items():
                if value is not None and not isinstance(value, torch.Tensor):
                    return f"'{prefix}{name}' in {key} is {a_type(value)}, not a tensor"
        problem = _partial_problem(module, parts)
        if problem:
            return f"'{prefix}{problem}"
    return None


TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def saved_hooks(model: nn.Module) -> Optional[str]:
    """Hooks are code that torch calls during a pass. A file loaded without trust can only
    bring allow-listed objects, so any hook it brings is a trap (e.g. a partial that builds
    a huge layer when a gradient arrives): every module's hook tables and every parameter's
    and buffer's hooks must be empty. (A model built by trusted code may have hooks.)"""
    for prefix, module in model.named_modules():
        prefix = f"{prefix}." if prefix else ""
        for name, value in vars(module).items():
            if "hooks" in name and isinstance(value, dict) and value:
                return f"'{prefix}{name}' holds hooks saved with the model"
        tensors = [("parameter", module._parameters), ("buffer", module._buffers)]
        for kind, table in tensors:
            for name, tensor in table.items():
                for attr in TENSOR_HOOKS:
                    if tensor is not None and getattr(tensor, attr, None):
                        return f"'{prefix}{name}' ({kind}) carries {attr} saved with the model"
    return None


def _contains(value: Any, kind: type, depth: int = 0) -> bool:
    if isinstance(value, kind):
        return True
    if depth < 4 and isinstance(value, (list, tuple, set, dict)):
        items = value.values() if isinstance(value, dict) else value
        return any(_contains(v, kind, depth + 1) for v in items)
    return False


def _contains_partial(value: Any) -> bool:
    return _contains(value, functools.partial)


def hidden_modules(model: nn.Module) -> Optional[str]:
    """In a model read from a file: a module kept as a plain attribute (not a child) is run by
    whatever code calls it but seen by no check that walks ``modules()`` (a 5 KB file hid an
    Upsample to 32768 x 32768 in an Identity's ``forward``), and a callable attribute named as
    the class's own method replaces that method: both are refused. (Code that builds a model,
    a builder or explain's Keras wrapper, may keep modules in attributes.)"""
    for prefix, module in model.named_modules():
        prefix = f"{prefix}." if prefix else ""
        for name, value in vars(module).items():
            if name in ("_modules", "_parameters", "_buffers"):
                continue
            if _contains(value, nn.Module):
                return f"'{prefix}{name}' holds a torch.nn.Module outside the module's children"
            if callable(value) and hasattr(type(module), name):
                return (f"'{prefix}{name}' replaces the class's own '{name}' with a "
                        f"{type(value).__name__}")
    return None


def _partial_problem(module: nn.Module, tables: dict) -> Optional[str]:
    """A partial is allowed only as a plain attribute that no code of the class looks up
    (not 'forward', not a method or class attribute, not a child, parameter or buffer)."""
    for name, value in vars(module).items():
        if name in tables or not _contains_partial(value):
            continue
        taken = hasattr(type(module), name) or any(name in t for t in tables.values())
        if not isinstance(value, functools.partial) or taken or not (
                isinstance(value.func, type) and issubclass(value.func, nn.Module)):
            return f"{name}' holds a functools.partial where code would call it"
    return None


def trusted_load(path: Path) -> Any:
    """Full unpickling, for files the config says it trusts (this can run code)."""
    from explain.models.factories import own_modules
    own_modules()  # the saving script's modules, from the working directory
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        missing = re.search(r"Can't get attribute '([\w.]+)' on <module '([\w.]+)'", str(exc))
        if missing and missing.group(2).split(".")[-1] == "__main__":  # a script's class
            raise _script_class(path, missing.group(1)) from None
        if missing:
            raise ExplainError(f"{path}: the model's class {missing.group(1)} is not in the "
                               f"module {missing.group(2)} that saved it (renamed or moved?)"
                               ) from None
        raise ExplainError(f"{path}: not a PyTorch model file ({first_line(exc)})") from None

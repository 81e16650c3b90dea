"""The CAM methods of pytorch-grad-cam, by lower-case name.

Every class the library exports that is called as ``cam(input_tensor, targets)`` is listed,
so a new library release adds its methods here without code changes. Methods whose maps
follow from one set of activations and gradients are marked ``shared_pass``: the engine
computes those from a single forward/backward with the library's own per-method code.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

# Methods whose map is a function of (activations, gradients) of the target layers only.
# Everything else (ScoreCAM, AblationCAM, FullGrad, EigenCAM, ShapleyCAM, ...) needs its
# own forward passes, or randomness, and goes through the library's normal call.
SHARED_PASS = frozenset(
    {"gradcam", "gradcamplusplus", "xgradcam", "hirescam", "gradcamelementwise",
     "layercam", "eigengradcam"}
)

# Exported names that are helpers, not CAM methods.
_NOT_METHODS = frozenset({"ActivationsAndGradients", "GuidedBackpropReLUModel",
                          "DeepFeatureFactorization"})


@lru_cache(maxsize=1)
def registry() -> dict[str, type]:
    """Map lower-case method names ('gradcam', 'scorecam', ...) to library classes."""
    import pytorch_grad_cam
    from pytorch_grad_cam.base_cam import BaseCAM
    found: dict[str, type] = {}
    for attr, obj in vars(pytorch_grad_cam).items():
        if not inspect.isclass(obj) or attr in _NOT_METHODS:
            continue
        if attr.startswith("Ablation") and attr != "AblationCAM":  # AblationLayer helpers
            continue
        wraps_cam = callable(getattr(obj, "forward", None)) and \
            "target_layers" in inspect.signature(obj.__init__).parameters  # FinerCAM, SESS, ...
        is_cam = issubclass(obj, BaseCAM) or wraps_cam
        if is_cam:
            found[attr.lower().replace("_", "")] = obj
    return dict(sorted(found.items()))


@lru_cache(maxsize=1)
def method_names() -> list[str]:
    """The names ``registry()`` has, read from the library's ``__init__.py`` without importing
    it (that would import torch: seconds before a config error could be shown). Same filters,
    by name; tests/test_methods.py checks the two lists are equal. Falls back to the registry
    when the file cannot be read."""
    spec = importlib.util.find_spec("pytorch_grad_cam")
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (AttributeError, TypeError, OSError, SyntaxError, ValueError):
        return list(registry())
    names = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    return sorted(n.lower().replace("_", "") for n in names
                  if n[:1].isupper() and n not in _NOT_METHODS and
                  not (n.startswith("Ablation") and n != "AblationCAM"))


def method_options(name: str) -> list[str]:
    """Options a config may set for a method: its constructor keywords that take plain values
    (not objects such as reshape_transform or ablation_layer), plus instance attributes."""
    params = inspect.signature(registry()[name].__init__).parameters
    return [p for p in params if p in OPTION_RULES] + INSTANCE_OPTIONS.get(name, []) + \
        CALL_OPTIONS.get(name, [])


# Attributes the library reads from the instance rather than the constructor.
INSTANCE_OPTIONS = {"scorecam": ["batch_size"]}
# Options the engine uses when it calls the method: FinerCAM's comparison strength and how
# many similar classes it compares with (see engine.most_similar).
CALL_OPTIONS = {"finercam": ["alpha", "comparisons"]}


def _number(kind: type, low: float, high: float, none_ok: bool = False):
    def check(value: Any) -> Any:
        if value is None and none_ok:
            return None
        ok = isinstance(value, kind) and not isinstance(value, bool) if kind is int else \
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not low <= value <= high:
            what = "a whole number" if kind is int else "a number"
            raise ValueError(f"must be {what} from {low:g} to {high:g}"
                             f"{' or null' if none_ok else ''}")
        return value
    return check


def _choice(*allowed: Any):
    def check(value: Any) -> Any:
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}")
        return value
    return check


def _scales(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= 64:
        raise ValueError("must be a list of 1 to 64 scale factors or null")
    return [_number(float, 0.01, 100)(v) for v in value]


def _base_method(value: Any) -> str:
    name = value.lower() if isinstance(value, str) else None
    if name not in SHARED_PASS:
        raise ValueError(f"must name a gradient method ({', '.join(sorted(SHARED_PASS))})")
    return name


# The options a config may set, with their checks: plain values only, checked before use.
OPTION_RULES = {
    "batch_size": _number(int, 1, 4096),
    "ratio_channels_to_ablate": _number(float, 0.001, 1.0),
    "k": _number(int, 1, 1024),
    "base_method": _base_method,
    "kernel": _choice("linear", "poly", "rbf", "sigmoid", "cosine"),
    "gamma": _number(float, 0.0, 1e6, none_ok=True),
    "scales": _scales,
    "num_scales": _number(int, 1, 64),
    "scale_step_ratio": _number(float, 0.01, 10.0),
    "window_size": _number(int, 1, 4096, none_ok=True),
    "step_size": _number(int, 1, 4096, none_ok=True),
    "pre_filter_ratio": _number(float, 0.0, 1.0),
    "theta": _number(float, -1e6, 1e6),
    "pool": _choice("mean", "max"),
    "smooth": _choice(True, False),
    "alpha": _number(float, 0.0, 10.0),
    "comparisons": _number(int, 1, 20),
    "use_softmax_scores": _choice(True, False),
}


def check_option(key: str, value: Any) -> Any:
    """The checked value of one method option; ValueError saying what it must be."""
    return OPTION_RULES[key](value)

"""The CAM methods of pytorch-grad-cam, by lower-case name.

Every class the library exports that is called as ``cam(input_tensor, targets)`` is listed,
so a new library release adds its methods here without code changes. Methods whose maps
follow from one set of activations and gradients are marked ``shared_pass``: the engine
computes those from a single forward/backward with the library's own per-method code.
"""

from __future__ import annotations

import difflib
import inspect
from functools import lru_cache

import pytorch_grad_cam
from pytorch_grad_cam.base_cam import BaseCAM

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


def method_names() -> list[str]:
    return list(registry())


def suggest(name: str, choices: list[str]) -> str:
    """' — did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else ""


def method_options(name: str) -> list[str]:
    """Constructor keywords a method accepts besides model/target_layers/reshape_transform."""
    params = inspect.signature(registry()[name].__init__).parameters
    return [p for p in params if p not in ("self", "model", "target_layers", "reshape_transform")]


# Attributes the library reads from the instance rather than the constructor.
INSTANCE_OPTIONS = {"scorecam": ["batch_size"]}

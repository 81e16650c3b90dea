"""The CAM methods of pytorch-grad-cam, by lower-case name, and what explain knows of each.

Every class the library exports that is called as ``cam(input_tensor, targets)`` is listed,
so a new library release adds its methods here without code changes. What explain knows of a
method (how the engine computes it, its per-channel term, whether its map ignores the class,
its cost, a hand-written reference, its options, special targets) is ONE entry of ``TABLE``;
every other module reads it there. A method the table does not name (a new library release)
gets the default ``MethodTraits()``: called the library's normal way, nothing special.

Adding a method is one call: ``register(name, cls, MethodTraits(...))`` with a class called as
the library's are (a ``BaseCAM`` subclass overriding ``get_cam_weights``, say). The config
accepts the name from then on, in this process.

Nothing here imports torch or the library at import time: the config checks method names
with ``method_names()`` before torch is loaded.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

from explain.names import quote, suggest


@dataclass(frozen=True)
class ChannelTerm:
    """One channel's term of a channel-sum method's map (ReLU of the sum over channels), as
    the channel figures name it, and its units."""
    term: str
    units: str


@dataclass(frozen=True)
class PerChannelCost:
    """A method that runs one forward pass per channel of the target layers, per image x
    class. ``unit``: what each pass works on ('channel', 'ablated channel'); ``ratio_option``:
    the method option giving the share of channels run (AblationCAM's), if any."""
    unit: str = "channel"
    ratio_option: Optional[str] = None


@dataclass(frozen=True)
class MethodTraits:
    """Everything explain knows of one method. The defaults describe a method called the
    library's normal way with per-image class targets and the target layers."""
    # The map is a function of one forward/backward's activations and gradients at the target
    # layers: the engine computes it from its shared pass with the method's own get_cam_image.
    shared_pass: bool = False
    # Channel-sum methods (ReLU(sum over channels of a per-channel term)): the term, for the
    # channel views (explain.channels). Needs shared_pass: the term comes from the same arrays.
    channel_term: Optional[ChannelTerm] = None
    class_agnostic: Optional[str] = None  # what the map is made of, when it ignores the class
    per_channel: Optional[PerChannelCost] = None  # one forward pass per channel (estimate)
    reference: bool = False  # explain.reference has a hand-written version (compare.enabled)
    instance_options: tuple[str, ...] = ()  # options set as attributes of the library object
    call_options: tuple[str, ...] = ()  # options the engine uses itself when it calls the method
    comparison_targets: bool = False  # FinerCAM: each class against its most similar classes
    target_layers: bool = True  # False: the method takes no target layers (FullGrad: all biases)
    token_ablation: bool = False  # token layers need the library's AblationLayerVit
    note: str = ""  # for readers of the report, beside the method's name
    # Where the library's formula departs from the paper's, which explain.reference follows:
    # said beside a "differ" verdict of --compare.
    paper_note: str = ""

    def __post_init__(self) -> None:
        if self.channel_term is not None and not self.shared_pass:
            raise ValueError("a channel term is computed from the shared pass's activations "
                             "and gradients: set shared_pass too")
        if self.per_channel is not None and self.shared_pass:
            raise ValueError("a shared-pass method runs no forward pass per channel")

    def reader_note(self) -> Optional[str]:
        """What a reader should know about the method's maps, or None."""
        if self.class_agnostic:
            return (f"class-agnostic ({self.class_agnostic}): the map is the same for every "
                    f"class, so it cannot tell the classes apart")
        if self.per_channel is not None:
            return (f"one forward pass per {self.per_channel.unit} of the target layer for "
                    f"each image (shared by its classes)")
        return self.note or None


def _sum_of(term: str, units: str = "logit units", reference: bool = False,
            paper_note: str = "") -> MethodTraits:
    """A channel-sum method of the shared pass (dy/dA * A is in class-score, logit, units)."""
    return MethodTraits(shared_pass=True, channel_term=ChannelTerm(term, units),
                        reference=reference, paper_note=paper_note)


# Traits of the library's methods, by name; the order is the order of listings (channel methods).
TABLE: dict[str, MethodTraits] = {
    "gradcam": _sum_of("w_k * A_k, w_k = mean of dy/dA_k", reference=True),
    "gradcamplusplus": _sum_of("w_k * A_k, w_k = Grad-CAM++ weight", "arbitrary units",
                               reference=True, paper_note=(
                                   "the library adds 1e-6 to the denominator of the paper's "
                                   "alpha = g^2 / (2 g^2 + sum(A) g^3); where gradients are "
                                   "about 1e-3 or smaller that term outweighs the formula's, "
                                   "and the hand-written map follows the paper")),
    "xgradcam": _sum_of("w_k * A_k, w_k = XGrad-CAM weight"),
    "layercam": _sum_of("ReLU(dy/dA_k) * A_k", reference=True),
    "hirescam": _sum_of("dy/dA_k * A_k"),
    "gradcamelementwise": _sum_of("ReLU(dy/dA_k * A_k)"),
    "eigengradcam": MethodTraits(shared_pass=True),
    "eigencam": MethodTraits(class_agnostic="principal component of the activations"),
    "kpcacam": MethodTraits(class_agnostic="kernel principal component of the activations"),
    "fem": MethodTraits(class_agnostic="activations above their mean + k std"),
    "randomcam": MethodTraits(class_agnostic="random weights: a baseline, not an explanation"),
    "scorecam": MethodTraits(per_channel=PerChannelCost("channel"),
                             instance_options=("batch_size",)),
    "ablationcam": MethodTraits(per_channel=PerChannelCost("ablated channel",
                                                           "ratio_channels_to_ablate"),
                                token_ablation=True),
    # alpha: the comparison's strength; comparisons: how many similar classes (engine.most_similar)
    "finercam": MethodTraits(call_options=("alpha", "comparisons"), comparison_targets=True),
    "fullgrad": MethodTraits(target_layers=False),
}
DEFAULT = MethodTraits()

# Exported names that are helpers, not CAM methods.
_NOT_METHODS = frozenset({"ActivationsAndGradients", "GuidedBackpropReLUModel",
                          "DeepFeatureFactorization"})
_ADDED: dict[str, type] = {}  # methods added in this process by register()
_NAME = re.compile(r"[a-z][a-z0-9]{0,39}")  # as config writes a method name, normalised


def traits(name: str) -> MethodTraits:
    """The method's table entry; the defaults for a method the table does not name."""
    return TABLE.get(name, DEFAULT)


def having(trait: str, among: Optional[Sequence[str]] = None) -> tuple[str, ...]:
    """Names of methods whose ``trait`` is set (``having('channel_term')``: the channel-sum
    methods): of ``among`` in its order, or of the table in table order."""
    names = TABLE if among is None else among
    return tuple(name for name in names if getattr(traits(name), trait))


def method_note(name: str) -> Optional[str]:
    """What a reader should know about a method's maps, or None (see MethodTraits)."""
    return traits(name).reader_note()


def register(name: str, cls: type, entry: MethodTraits = DEFAULT) -> None:
    """Add a method under ``name`` (lower-case letters and digits, as a config names it):
    ``cls`` is called as the library's methods are, ``cls(model, target_layers,
    reshape_transform=..., **options)(input_tensor=x, targets=targets)``; a ``BaseCAM``
    subclass overriding ``get_cam_weights`` is one. From then on, in this process, configs
    accept the name and every part of explain reads ``entry``. ``unregister`` undoes it."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"method name {name!r}: lower-case letters and digits, first a letter")
    if name in method_names() or name in TABLE:
        raise ValueError(f"method '{name}' exists already")
    _ADDED[name] = cls
    TABLE[name] = entry


def unregister(name: str) -> None:
    """Remove a method ``register`` added (the library's own cannot be removed)."""
    if name not in _ADDED:
        raise ValueError(f"method '{name}' was not added by register()")
    del _ADDED[name]
    del TABLE[name]


def _method_name(attr: str) -> Optional[str]:
    """The method name of a class the library exports (``canonical``), or None for a helper
    (``_NOT_METHODS``, the AblationLayer classes)."""
    if attr in _NOT_METHODS or (attr.startswith("Ablation") and attr != "AblationCAM"):
        return None
    return canonical(attr)


@lru_cache(maxsize=1)
def _library() -> dict[str, type]:
    import pytorch_grad_cam
    from pytorch_grad_cam.base_cam import BaseCAM
    found: dict[str, type] = {}
    for attr, obj in vars(pytorch_grad_cam).items():
        name = _method_name(attr)
        if not inspect.isclass(obj) or name is None:
            continue
        wraps_cam = callable(getattr(obj, "forward", None)) and \
            "target_layers" in inspect.signature(obj.__init__).parameters  # FinerCAM, SESS, ...
        is_cam = issubclass(obj, BaseCAM) or wraps_cam
        if is_cam:
            found[name] = obj
    return found


def registry() -> dict[str, type]:
    """Map lower-case method names ('gradcam', 'scorecam', ...) to classes: the library's,
    and any added by ``register``."""
    return dict(sorted({**_library(), **_ADDED}.items()))


def constructor_options(spec: Any) -> dict[str, Any]:
    """The options of a method's spec its library class is made with: all but those explain
    sets on the object (``instance_options``, ``set_instance_options``) or passes to its
    call (``call_options``); a ``base_method`` named by text becomes the class it names, the
    library's EigenCAM by explain's thin SVD as the method itself would be (explain.eigen)."""
    from explain.eigen import thin
    entry = traits(spec.name)
    options = {k: v for k, v in spec.options.items()
               if k not in entry.instance_options + entry.call_options}
    if isinstance(options.get("base_method"), str):
        options["base_method"] = thin(registry()[options["base_method"].lower()])
    return options


def set_instance_options(cam: Any, spec: Any) -> None:
    """The spec's options the method's object holds as attributes (``instance_options``)."""
    for key in set(traits(spec.name).instance_options) & set(spec.options):
        setattr(cam, key, spec.options[key])


@lru_cache(maxsize=1)
def _library_names() -> tuple[str, ...]:
    spec = importlib.util.find_spec("pytorch_grad_cam")
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (AttributeError, TypeError, OSError, SyntaxError, ValueError):
        return tuple(_library())
    names = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    return tuple(_method_name(n) for n in names if n[:1].isupper() and _method_name(n))


def method_names() -> list[str]:
    """The names ``registry()`` has, the library's read from its ``__init__.py`` without
    importing it (that would import torch: seconds before a config error could be shown).
    Same filters, by name; tests/test_methods.py checks the two lists are equal. Falls back
    to the registry when the file cannot be read."""
    return sorted({*_library_names(), *_ADDED})


def canonical(name: str) -> str:
    """A method name as the table keys it: lower case, '+' read as 'plus', no '-' or '_'."""
    return name.lower().replace("+", "plus").replace("-", "").replace("_", "")


def unknown_method(given: str) -> str:
    """Why ``given`` names no method: several names in one string ('gradcam layercam', as
    typed on a command line) are said to be a list; else the closest name and all of them."""
    parts = [canonical(p) for p in re.split(r"[\s,]+", given.strip()) if p]
    if len(parts) > 1 and all(p in method_names() for p in parts):
        return (f"{quote(given)} is {len(parts)} methods in one name: write a list, "
                f"methods: [{', '.join(parts)}] (on the command line --methods "
                f"{','.join(parts)})")
    return (f"unknown method {quote(given)}{suggest(canonical(given), method_names())} "
            f"(valid: {', '.join(method_names())})")


def method_options(name: str) -> list[str]:
    """Options a config may set for a method: its constructor keywords that take plain values
    (not objects such as reshape_transform or ablation_layer), plus the table's instance and
    call options."""
    params = inspect.signature(registry()[name].__init__).parameters
    entry = traits(name)
    return [p for p in params if p in OPTION_RULES] + list(entry.instance_options) + \
        list(entry.call_options)


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
    shared = having("shared_pass")
    if name not in shared:
        raise ValueError(f"must name a gradient method ({', '.join(sorted(shared))})")
    return name


# The options a config may set, with their checks: plain values only, checked before use.
OPTION_RULES = {
    "batch_size": lambda v: v if v == "auto" else _number(int, 1, 4096)(v),
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

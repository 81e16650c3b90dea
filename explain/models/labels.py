"""The class names a model carries (torchvision weight enums, timm label info, Hugging Face
``id2label``, a ``class_names`` attribute), made safe and unique."""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any, Optional, Sequence

from torch import nn

from explain.config import ModelSpec
from explain.names import fitted, fold, name_problem, safe_slug


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
        name, count = base, next_suffix.get(fold(base), 2)
        while fold(name) in taken or name_problem(name):
            suffix = f"_{count}"
            name = fitted(base, suffix)
            count += 1
        next_suffix[fold(base)] = count
        taken.add(fold(name))
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

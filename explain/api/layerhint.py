"""The layers a notebook call can use, named in its errors. A run's lines about a layer a CAM
cannot use point at ``explain layers CONFIG`` (the table of a config's model); a call of
``explain.cam`` or ``explain.channel_maps`` has no config, so there the pointer names the
layers instead, as ``target_layers: auto`` would find them on the call's first image.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from explain.names import quote

if TYPE_CHECKING:
    from torch import nn

    from explain.config import Config
    from explain.images import Prepared

POINTER = re.compile(r"\(explain layers CONFIG[^)]*\)")
SHOWN = 5  # layers named; the rest counted


def usable_layers(model: "nn.Module", cfg: "Config", first: "Prepared") -> list[str]:
    """The layers 'auto' may pick, the last first (explain.layers.candidates), from a survey of
    ``model`` on ``first``; [] when the model cannot be surveyed (its error is the one the
    call already raises, or a device the image is not on)."""
    from explain.layers import candidates, survey
    from explain.models.heads import Classifier, Head
    from explain.plan import reshape_mode
    try:
        device = next(model.parameters()).device
        rows = survey(model, Classifier.of(model, cfg), first.tensor[None].to(device),
                      Head(cfg.model.head, cfg.model.target), mode=reshape_mode(cfg, model))
    except Exception:  # only a hint: the call's own error stands without it
        return []
    return [row.name for row in candidates(rows)]


def layers_named(message: str, names: list[str]) -> str:
    """``message`` with its '(explain layers CONFIG ...)' in a call's words: the usable layers
    by name, or what layer='auto' does when none was found."""
    if names:
        more = len(names) - SHOWN
        shown = ", ".join(quote(n) for n in names[:SHOWN]) + (f" and {more} more"
                                                              if more > 0 else "")
        said = (f"(the layers a CAM can use here, the last first: {shown}; layer='auto' takes "
                f"{quote(names[0])})")
    else:
        said = "(layer='auto' takes the last layer a CAM can use)"
    return POINTER.sub(lambda _: said, message, count=1)

"""What the engine's passes give, as plain records: the layers a run hooks (``LayerInfo``),
the preflight pass (``Probe``), one layer's pass (``LayerPass``), a batch's maps
(``BatchResult``, ``MapSlot``, made once by ``map_slots``), and ``watching``, the one place
explain puts hooks on a model. Below the engine (explain.engine, which hands these names on),
so that its helpers (batching, shared passes) and the layer survey read them without
importing the engine."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from explain.models.layouts import Layout


@dataclass
class LayerPass:
    """What one forward/backward saw at one layer: activations and, per slot, gradients."""
    activations: np.ndarray  # (B, C, h, w)
    gradients: list[np.ndarray]  # one (B, C, h, w) per target slot


@dataclass(frozen=True)
class LayerInfo:
    """One layer the run hooks, as the preflight pass saw it (explain.plan keeps these)."""
    label: str  # how messages name it: "target_layers[0] 'features.10'", "channels.layer"
    module: nn.Module
    shape: tuple[int, ...]  # the output's shape without the batch
    layout: Layout
    name: str = ""  # the dotted name in the user's network (set by explain.plan)

    def named(self, name: str) -> "LayerInfo":
        return replace(self, name=name)

    @property
    def channels(self) -> int:
        """Channels of the layer seen as (B, C, h, w): a ViT token layer's embedding size, a
        channels-last map's last axis, not the raw ``shape[0]``."""
        return self.layout.channels((1, *self.shape))


@dataclass
class Probe:
    """The preflight pass: the logits of one image, every hooked layer, the pass's time."""
    logits: torch.Tensor  # (1, outputs), detached
    layers: list[LayerInfo]
    seconds: float
    blind: list[str] = field(default_factory=list)  # target layers the top score never reaches

    def info(self, module: nn.Module) -> LayerInfo:
        return next(layer for layer in self.layers if layer.module is module)


@dataclass
class MapSlot:
    """One map of a batch: image row, slot, class, method; ``record`` is its MapRecord (set
    by the runner). Made once per batch by the engine; writers read these, never rebuild
    which slot holds which class."""
    row: int
    slot: int
    class_index: int
    class_name: str
    method: str
    cam: np.ndarray  # (H, W) float32 in 0..1, a view into BatchResult.maps
    record: Any = None


@dataclass
class BatchResult:
    logits: np.ndarray  # (B, outputs)
    classes: np.ndarray  # (B, S): class index explained in slot s of image b
    maps: dict[str, np.ndarray]  # method -> (B, S, H, W) float32 in 0..1
    probe: Optional[LayerPass] = None  # the channel layer, when asked for
    # method -> (B, S): the map's maximum before scaling to 0..1 (after the ReLU, at feature
    # resolution, the largest over target layers); only for the shared-pass methods
    raw_max: dict[str, np.ndarray] = field(default_factory=dict)
    # per image: its maps, each class once (a class two slots name, as label and prediction,
    # at its first slot), classes in slot order, methods in config order
    per_image: list[list[MapSlot]] = field(default_factory=list)
    # per target layer: its output as the maps read it, (B, C, h, w) float32 (the baselines'
    # RandomCAM weighs these channels: no second pass)
    activations: list[np.ndarray] = field(default_factory=list)


def map_slots(classes: np.ndarray, names: dict[int, str], maps: dict[str, np.ndarray]
              ) -> list[list[MapSlot]]:
    """Every image's MapSlots (see BatchResult.per_image)."""
    out = []
    for b, row in enumerate(classes):
        first: dict[int, int] = {}  # class -> its first slot
        for s, c in enumerate(row):
            first.setdefault(int(c), s)
        seen = list(first)
        out.append([MapSlot(b, first[c], c, names.get(c, str(c)), method, cams[b, first[c]])
                    for c in seen for method, cams in maps.items()])
    return out


@contextlib.contextmanager
def watching(modules: Sequence[nn.Module], record: Callable[[int, Any], Any]):
    """Forward hooks on ``modules`` for the block: ``record(i, output)`` gets module i's output
    (what it returns replaces the output, None keeps it). The one place explain hooks a
    model: the engine's passes and the layer survey (explain.layers) both come through here."""
    handles = [m.register_forward_hook(lambda _m, _in, out, i=i: record(i, out))
               for i, m in enumerate(modules)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

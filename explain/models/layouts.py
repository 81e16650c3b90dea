"""Where a layer keeps its channels, and how to see its output as (B, C, h, w) maps.

CNN layers give (B, C, h, w). Vision transformers give token sequences (B, prefix + h*w, C):
a class token (ViT), a distillation token (DeiT) or register tokens first, then one token per
image patch. Swin and ConvNeXt-style blocks give channels-last maps (B, h, w, C). A ``Layout``
turns any of these into (B, C, h, w); it is what pytorch-grad-cam calls a
``reshape_transform``, and the engine applies the same object to activations and gradients,
so its maps equal the library's called with that transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

MAX_PREFIX = 16  # class + distillation + register tokens searched by 'auto'
ASPECT_TOLERANCE = 1.35  # a map's h/w may differ this much from the input's (rounding strides)


@dataclass(frozen=True)
class Layout:
    """How one layer's output maps to (B, C, h, w); callable as a reshape_transform."""
    kind: str  # nchw | nhwc | tokens
    prefix: int = 0  # tokens before the patch tokens (tokens only)
    grid: Optional[tuple[int, int]] = None  # (h, w) of the patch tokens (tokens only)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.kind == "nchw":
            return tensor
        if self.kind == "nhwc":
            return tensor.permute(0, 3, 1, 2)
        h, w = self.grid
        return tensor[:, self.prefix:, :].reshape(tensor.size(0), h, w, tensor.size(2)) \
            .permute(0, 3, 1, 2)

    def channels(self, shape: Sequence[int]) -> int:
        """The channel count of an output of ``shape`` (batch first) seen through the layout."""
        return int(shape[1] if self.kind == "nchw" else shape[-1])


class LayoutError(ValueError):
    """The output shape fits no layout the setting allows; the message says why."""


@dataclass(frozen=True)
class TokenSpec:
    """An explicit token layout from the config: prefix tokens and, optionally, the grid."""
    prefix: int
    grid: Optional[tuple[int, int]] = None


# 'auto' | 'vit' | 'swin' | 'none' | TokenSpec; and 'nhwc': 'auto' for a model whose 4-d outputs
# are all channels-last (Keras), where a tie (h == C) must not read as (B, C, h, w)
Mode = Union[str, TokenSpec]


def model_mode(net: Any, mode: Mode = "auto") -> Mode:
    """``mode`` (the config's reshape), where 'auto' on a model whose maps are all channels-last
    (a Keras model: its ``explain_reshape``) is that model's own ('nhwc')."""
    return getattr(net, "explain_reshape", "auto") if mode == "auto" else mode


def _fits(h: int, w: int, input_hw: Sequence[int]) -> bool:
    """h x w could be a feature map of an input_hw image: not larger, same aspect ratio."""
    H, W = input_hw
    if h < 1 or w < 1 or h > H or w > W:
        return False
    return abs(math.log((h / w) / (H / W))) <= math.log(ASPECT_TOLERANCE)


def token_grid(tokens: int, input_hw: Sequence[int], prefixes: Sequence[int]) -> Optional[Layout]:
    """The first prefix count that leaves a patch grid of exactly the input's aspect ratio
    (patches are square); failing that, the first within ASPECT_TOLERANCE (rounded sizes)."""
    H, W = input_hw
    for exact in (True, False):
        for prefix in prefixes:
            n = tokens - prefix
            if n < 2:
                break
            h = max(1, round(math.sqrt(n * H / W)))
            for cand in (h, h - 1, h + 1):
                if cand < 1 or n % cand:
                    continue
                w = n // cand
                if (cand * W == w * H) if exact else _fits(cand, w, input_hw):
                    return Layout("tokens", prefix, (cand, w))
    return None


def infer_layout(shape: Sequence[int], input_hw: Sequence[int], mode: Mode = "auto") -> Layout:
    """The layout of an output of ``shape`` for an input of ``input_hw`` (H, W) under ``mode``;
    LayoutError when none fits."""
    shape = tuple(int(s) for s in shape)
    H, W = int(input_hw[0]), int(input_hw[1])
    where = f"output shape {shape} for a {H}x{W} input"
    if isinstance(mode, TokenSpec):
        if len(shape) != 3:
            raise LayoutError(f"{where} is not a token sequence (B, tokens, C), as "
                              f"reshape: {{prefix: ...}} expects")
        if mode.grid is not None:
            if mode.prefix + mode.grid[0] * mode.grid[1] != shape[1]:
                raise LayoutError(f"{where}: {shape[1]} tokens, but reshape says "
                                  f"{mode.prefix} + {mode.grid[0]}x{mode.grid[1]}")
            return Layout("tokens", mode.prefix, tuple(mode.grid))
        found = token_grid(shape[1], (H, W), [mode.prefix])
        if found is None:
            raise LayoutError(f"{where}: {shape[1]} - {mode.prefix} tokens make no grid of the "
                              f"input's shape; add reshape.grid: [h, w]")
        return found
    if mode == "none":
        if len(shape) != 4:
            raise LayoutError(f"{where} is not a feature map (B, C, h, w) (reshape: none); "
                              f"for a transformer layer set reshape: auto")
        return Layout("nchw")
    if len(shape) == 4:
        nchw, nhwc = _fits(shape[2], shape[3], (H, W)), _fits(shape[1], shape[2], (H, W))
        if mode in ("swin", "nhwc"):  # nhwc: a model whose maps are all channels-last (Keras)
            if not nhwc:
                raise LayoutError(f"{where} is not a channels-last map (B, h, w, C)"
                                  f"{' (reshape: swin)' if mode == 'swin' else ''}")
            return Layout("nhwc")
        if mode == "vit":
            raise LayoutError(f"{where} is not a token sequence (B, tokens, C) (reshape: vit)")
        if not nchw and not nhwc:  # e.g. attention heads (B, heads, tokens, dim)
            raise LayoutError(f"{where} fits neither a feature map (B, C, h, w) nor a "
                              f"channels-last map (B, h, w, C) of the input's shape; pick "
                              f"another layer (explain layers CONFIG marks the usable ones), "
                              f"or set reshape: none to read it as (B, C, h, w) anyway")
        if nchw:  # (B, C, h, w) wins a tie, and is the CNN default
            return Layout("nchw")
        return Layout("nhwc")
    if len(shape) == 3:
        prefixes = [0] if mode == "swin" else range(0, MAX_PREFIX + 1)
        found = token_grid(shape[1], (H, W), prefixes)
        if found is None:
            raise LayoutError(f"{where}: {shape[1]} tokens make no patch grid of the input's "
                              f"shape after 0..{prefixes[-1]} prefix tokens; set "
                              f"reshape: {{prefix: P, grid: [h, w]}}")
        return found
    raise LayoutError(f"{where} is neither a feature map (B, C, h, w), a channels-last map "
                      f"(B, h, w, C) nor a token sequence (B, tokens, C)")


def usable_layout(shape: Sequence[int], input_hw: Sequence[int],
                  mode: Mode = "auto") -> Optional[Layout]:
    """The layout 'auto' gives, when it makes a map of more than one position; else None.
    Used to mark the layers a CAM can use."""
    if len(shape) not in (3, 4):
        return None
    try:
        layout = infer_layout(shape, input_hw, mode)
    except LayoutError:
        return None
    if layout.kind == "nchw":
        h, w = shape[2], shape[3]
        ok = _fits(h, w, input_hw)
    elif layout.kind == "nhwc":
        h, w = shape[1], shape[2]
        ok = True
    else:
        h, w = layout.grid
        ok = True
    return layout if ok and h * w > 1 else None


def positions_reached(grad: torch.Tensor, layout: Layout) -> int:
    """How many map positions of the first image a gradient (the layer's output shape)
    touches: fewer than 2 makes a blank gradient CAM (a ViT's final norm, read only through
    the class token; a 1 x 1 map)."""
    maps = layout(grad[:1].detach())  # (1, C, h, w)
    return int((maps.abs().sum(1) > 0).sum())

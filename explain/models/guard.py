"""The run's hold on the model: the inplace guard (inplace modules made non-inplace for the
run, so hooked activations stay the layer's true output), the model's state put back after
the run, and the device."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from explain.errors import ExplainError


@contextlib.contextmanager
def non_inplace(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Switch every ``inplace=True`` module off for the duration; yields how many were switched.

    An inplace activation after the target layer overwrites the stored activation on CPU,
    so CAMs would mix post-activation values with pre-activation gradients. Turning inplace
    off changes no output.
    """
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True] if enabled else []
    for m in switched:
        m.inplace = False
    try:
        yield len(switched)
    finally:
        for m in switched:
            m.inplace = True


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore train/eval flags and requires_grad of every parameter afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


@contextlib.contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """``requires_grad`` off for the block on ``params``, then as it was: a pass that needs
    gradients of activations only records nothing for the weights."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ExplainError("device: 'cuda' was asked for but no CUDA device is available "
                           "(use 'auto' or 'cpu')")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)

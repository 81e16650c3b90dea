"""``precision: fp32 | bf16 | fp16``: the model's forward passes under torch.autocast.

Only the forward passes change: the engine's shared pass (whose gradients autograd takes back
through the autocast graph) and ScoreCAM's / AblationCAM's per-channel passes. Activations,
gradients and scores are turned to float32 before any CAM math, so the library's math runs in
fp32 as before. Other library methods (EigenCAM, FullGrad, ...) run in fp32: their math reads
the layer's output as numpy, which has no bfloat16. fp16 runs on CUDA only; bf16 on CPU and on
CUDA cards that support it.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable

import torch

from explain.errors import ExplainError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: torch.device) -> None:
    """One-line ExplainError when ``precision`` cannot run on ``device``."""
    if precision not in DTYPES:
        raise ExplainError(f"precision: '{precision}' is not one of fp32, bf16, fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ExplainError(f"precision: fp16 runs on CUDA only (the device is {device.type}); "
                           f"use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ExplainError("precision: bf16 is not supported by this CUDA card; use fp16 or "
                           "fp32")


def autocast(precision: str, device: torch.device
             ) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context the forward passes run in (a no-op for fp32)."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def failed(precision: str, exc: BaseException) -> ExplainError:
    """The one line for a model whose forward fails under ``precision``'s autocast."""
    from explain.errors import first_line
    return ExplainError(f"precision: the model fails under {precision} autocast "
                        f"({type(exc).__name__}: {first_line(exc)}); set precision: fp32")

"""Helpers of the CAM engine (explain.engine re-exports the public ones): the seeded and quiet
blocks around the library's calls, one reshape transform for several layers, FinerCAM's
comparison classes, the checks on what a forward pass gives, and the library's map scaling
done for a whole batch at once (the same numbers)."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Optional

import cv2
import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image

from explain.errors import ExplainError
from explain.models.layouts import Layout
from explain.names import a_type


@contextlib.contextmanager
def seeded(seed: int):
    """Seed numpy's and torch's global generators (the library draws from them) for the
    block, then put back the state they had, so a run leaves no trace on them."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if
                               torch.cuda.is_available() else []):
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


@contextlib.contextmanager
def quiet_library_bars():
    """Silence the progress bars ScoreCAM and AblationCAM draw per image (one per channel
    batch) under the run's own bar: tqdm writes to sys.stderr as it is when a bar is made, so
    bars made inside the block go nowhere, and the run's bar, made before, is unaffected."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield


class ByShape:
    """One reshape_transform for several target layers: each tensor gets the layout of the
    layer whose output has its shape (the library takes a single transform for all layers)."""

    def __init__(self, layouts: list[Layout], shapes: list[tuple[int, ...]]):
        self.by_shape = dict(zip(shapes, layouts))

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.by_shape.get(tuple(tensor.shape[1:]), Layout("nchw"))(tensor)


def most_similar(scores: np.ndarray, main: int, among: list[int], count: int) -> list[int]:
    """The ``count`` classes of ``among`` whose score is closest to class ``main``'s (FinerCAM's
    comparison classes: what the model could most easily confuse ``main`` with)."""
    others = [c for c in among if c != main]
    return sorted(others, key=lambda c: (abs(scores[c] - scores[main]), c))[:count]


def check_finite(values: torch.Tensor, what: str) -> None:
    """One-line ExplainError when ``values`` (batch first) hold NaN or infinite numbers: maps
    and probabilities made from them would be NaN, written as if they were results."""
    values = values.detach()
    if values.is_floating_point() and bool(torch.isfinite(values.sum())):
        return  # a finite sum has no NaN or infinite term (one reduction, not a mask)
    bad = ~torch.isfinite(values).flatten(1).all(dim=1) if values.ndim > 1 else \
        ~torch.isfinite(values)
    if bool(bad.any()):
        raise ExplainError(f"{what}, for {int(bad.sum())} of {len(bad)} image(s) in the batch; "
                           f"the model's weights (or what it computes) are not finite, so no "
                           f"map or probability can be made")


def check_output(label: str, output: Any, again: bool) -> None:
    """A hooked layer's output must be one feature map or token sequence, made once."""
    if not isinstance(output, torch.Tensor):
        raise ExplainError(f"{label}: the layer outputs {a_type(output)}, not a "
                           f"tensor; pick a layer whose output is a feature map (explain "
                           f"layers CONFIG lists them)")
    if output.ndim not in (3, 4):
        raise ExplainError(f"{label}: the layer outputs shape {tuple(output.shape)}, not a "
                           f"feature map (N, C, H, W) or a token sequence; pick a layer before "
                           f"the classifier (explain layers CONFIG lists them)")
    if again:
        raise ExplainError(f"{label}: the layer runs more than once in one forward pass (a "
                           f"shared module), so it has no single output to explain; name a "
                           f"layer that runs once (explain layers CONFIG marks them)")


def scale_maps(cams: np.ndarray, size: Optional[tuple[int, int]] = None,
               out: Optional[np.ndarray] = None) -> np.ndarray:
    """The library's ``scale_cam_image(cams, size)`` with the same numbers: each map minus its
    minimum, over (1e-7 + its new maximum), resized to ``size`` (width, height) with cv2's
    default (bilinear); minima, maxima and arithmetic for all maps at once, the resize per map
    (OpenCV's several-channel resize rounds differently). Other shapes and types: the library.
    ``out``: a float32 array of the result's shape to write into (it may be ``cams``)."""
    if cams.ndim != 3 or not len(cams) or cams.dtype not in (np.float32, np.float64):
        return _into(out, scale_cam_image(cams, size))
    if size is None and out is not None and cams.dtype == np.float32:
        np.subtract(cams, cams.min(axis=(1, 2), keepdims=True), out=out)
        out /= 1e-7 + out.max(axis=(1, 2), keepdims=True)
        return out
    scaled = cams - cams.min(axis=(1, 2), keepdims=True)
    scaled /= 1e-7 + scaled.max(axis=(1, 2), keepdims=True)
    scaled = scaled.astype(np.float32, copy=False)
    if size is None:
        return _into(out, scaled)
    resized = np.empty((len(scaled), size[1], size[0]), np.float32) if out is None else out
    for i, one in enumerate(scaled):
        cv2.resize(one, size, dst=resized[i])
    return resized


def _into(out: Optional[np.ndarray], result: np.ndarray) -> np.ndarray:
    if out is None:
        return result
    out[...] = result
    return out


def aggregate_layers(math: BaseCAM, per_layer: list[np.ndarray],
                     out: Optional[np.ndarray] = None) -> np.ndarray:
    """``math.aggregate_multi_layers(per_layer)`` with the same numbers: the ReLU of the
    layers' mean, scaled (``scale_maps``); the library's own call when the method changes it.
    ``out``: a float32 array of the result's shape to write into."""
    if type(math).aggregate_multi_layers is not BaseCAM.aggregate_multi_layers:
        return _into(out, math.aggregate_multi_layers(per_layer))
    if len(per_layer) == 1:  # the mean of one map is the map itself (x / 1)
        one = per_layer[0][:, 0]
        if out is None or one.dtype != np.float32:
            return _into(out, scale_maps(np.maximum(one, 0)))
        return scale_maps(np.maximum(one, 0, out=out), out=out)
    return _into(out, scale_maps(np.mean(np.maximum(np.concatenate(per_layer, axis=1), 0),
                                         axis=1)))

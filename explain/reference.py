"""Hand-written Grad-CAM, LayerCAM and Grad-CAM++, from the papers' formulas.

Nothing here imports pytorch_grad_cam: these are the independent yardstick the library's maps
are compared with. The math is pure numpy on activations A (B, C, h, w) and gradients
G = dy_c/dA of the same shape; ``capture`` gets A and G with our own hooks, the classic
hand-written way (a tensor hook on the layer output and ``backward()``), so it shares no
code path with the engine either.

The weights are the papers' formulas as they stand (Grad-CAM++: no guard added to alpha's
denominator, where the library adds 1e-6). Post-processing, chosen to match the library's
step for step:
- the map is ReLU(sum_k contribution_k), computed at feature resolution;
- it is min-max scaled there, as (m - min) / (max - min + 1e-7), then resized to the input
  size with OpenCV bilinear interpolation (cv2.INTER_LINEAR, half-pixel centres), then min-max
  scaled again the same way: scaling before the resize keeps the epsilon's effect identical,
  and the second scaling restores a peak of ~1 that interpolation can shave off.
"""

from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np
import torch
from torch import nn

from explain.models.guard import non_inplace

EPS_SCALE = 1e-7  # min-max denominator guard


def gradcam_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM: w_k = (1/Z) sum_ij dy/dA_k(i,j), one weight per channel -> (B, C)."""
    return grads.mean(axis=(2, 3))


def gradcampp_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM++ (Chattopadhyay et al., eq. 19 with the exponential-output simplification):
    alpha_kij = g^2 / (2 g^2 + sum_ab A_k(a,b) g^3), 0 where that denominator is 0 (g = 0);
    w_k = sum_ij alpha_kij ReLU(g_kij) -> (B, C). The paper's formula as it stands: the
    library adds 1e-6 to the denominator, which outweighs it where gradients are small
    (``compare`` shows that difference and says why: the method table's ``paper_note``)."""
    g2 = grads ** 2
    g3 = g2 * grads
    total = acts.sum(axis=(2, 3), keepdims=True)
    denominator = 2 * g2 + total * g3
    safe = np.where(denominator != 0, denominator, 1.0)
    alpha = np.where(denominator != 0, g2 / safe, 0.0)
    return (alpha * np.maximum(grads, 0)).sum(axis=(2, 3))


def contributions(method: str, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Each channel's term of the CAM sum, before the sum: (B, C, h, w).

    Grad-CAM / Grad-CAM++: w_k * A_k; LayerCAM: ReLU(dy/dA_k(i,j)) * A_k(i,j).
    """
    if method == "layercam":
        return np.maximum(grads, 0) * acts
    return CHANNEL_WEIGHTS[method](acts, grads)[:, :, None, None] * acts


# The methods written here are those with ``reference`` in explain.methods.TABLE (a test
# checks the two agree): the weight x activation ones by their weights, and LayerCAM.
CHANNEL_WEIGHTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "gradcam": gradcam_weights, "gradcamplusplus": gradcampp_weights}


def min_max(m: np.ndarray) -> np.ndarray:
    m = m - m.min()
    return m / (m.max() + EPS_SCALE)


def finish(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Feature-resolution sum (h, w) -> the displayed map (H, W) = size, float32 in 0..1."""
    scaled = min_max(np.maximum(raw, 0).astype(np.float32))
    resized = cv2.resize(scaled, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return min_max(resized).astype(np.float32)


def reference_cam(method: str, acts: np.ndarray, grads: np.ndarray,
                  size: tuple[int, int]) -> np.ndarray:
    """The textbook map for a batch: (B, H, W) float32 in 0..1."""
    summed = contributions(method, acts, grads).sum(axis=1)
    return np.stack([finish(m, size) for m in summed])


def capture(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: list[int], *,
            layout: Optional[Callable] = None, head=None) -> tuple[np.ndarray, np.ndarray]:
    """Activations of ``layer`` and d(score[b, classes[b]])/d(activations), the classic way.
    ``layout`` turns token / channels-last outputs into (B, C, h, w) (explain.models.layouts);
    ``head`` gives the scores from the logits (explain.models.heads.Head; default: the logits)."""
    store: dict[str, torch.Tensor] = {}
    shape = layout or (lambda t: t)

    def keep(module, inputs, output):
        store["acts"] = shape(output.detach().clone())
        output.register_hook(lambda g: store.__setitem__("grads", shape(g.detach().clone())))

    was_training = model.training
    handle = layer.register_forward_hook(keep)
    try:
        with non_inplace(model), torch.enable_grad():
            model.eval()
            logits = model(x.detach().requires_grad_(True))
            scores = head.scores(logits) if head is not None else logits
            picked = scores[torch.arange(len(x)), torch.as_tensor(classes)]
            picked.sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return store["acts"].float().cpu().numpy(), store["grads"].float().cpu().numpy()

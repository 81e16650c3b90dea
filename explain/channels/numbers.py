"""Per-channel numbers of one layer: each channel's term of a CAM, its weight, shares, stats.

Contributions come from pytorch-grad-cam's own per-method code, for the channel-sum methods
(those with a ``channel_term`` in explain.methods.TABLE): none of these methods mixes
channels, so the library's ``get_cam_image`` run on the channels as a batch of one-channel
maps gives each channel's term of the CAM sum. Arrays in, arrays out.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM

from explain.measures import significant
from explain.methods import ChannelTerm, having, registry, traits


def check_stack(stack: np.ndarray) -> None:
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"expected a (C, H, W) array, got shape {stack.shape}")


def _library_math(method: str) -> BaseCAM:
    """The library's CAM object for ``method``, lent only for its math (its hooks are removed)."""
    if traits(method).channel_term is None:
        raise ValueError(f"'{method}' is not a per-channel sum; channel methods: "
                         f"{', '.join(having('channel_term'))}")
    return _lent(registry()[method])


@lru_cache(maxsize=None)
def _lent(cls: type) -> BaseCAM:
    anchor = torch.nn.Conv2d(1, 1, 1)  # BaseCAM wants a model and a layer; neither is used
    cam = cls(anchor, [anchor])
    cam.activations_and_grads.release()
    return cam


def term_and_units(method: Optional[str]) -> tuple[str, str]:
    """The method's per-channel term and its units (a generic one for no method)."""
    found = (traits(method).channel_term if method else None) or \
        ChannelTerm("contribution", "arbitrary units")
    return found.term, found.units


def _pair(acts: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    check_stack(acts)
    if grads.shape != acts.shape:
        raise ValueError(f"gradients {grads.shape} and activations {acts.shape} differ in shape")
    return np.asarray(acts, np.float32), np.asarray(grads, np.float32)


def channel_contributions(method: str, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Each channel's term of the method's CAM sum for one image: (C, h, w) float32.

    acts, grads: (C, h, w) activations and d(class score)/d(activations). ReLU(sum over k),
    min-max scaled and resized, is the method's map. Computed by pytorch-grad-cam's own
    ``get_cam_image`` (its table entry's ``channel_term`` names the term); ``method`` is a
    channel-sum method (explain.methods.having('channel_term')).
    """
    acts, grads = _pair(acts, grads)
    cam = _library_math(method)  # channels as a batch of one-channel maps: one term each
    out = cam.get_cam_image(None, None, None, acts[:, None], grads[:, None], False)
    return np.asarray(out, np.float32)


def channel_weights(method: str, acts: np.ndarray, grads: np.ndarray) -> Optional[np.ndarray]:
    """The library's per-channel weights w_k (C,) for weight x activation methods (GradCAM,
    GradCAM++, XGradCAM); None for the elementwise ones (LayerCAM, HiResCAM, ...)."""
    acts, grads = _pair(acts, grads)
    cam = _library_math(method)
    if type(cam).get_cam_image is not BaseCAM.get_cam_image:
        return None
    return np.asarray(cam.get_cam_weights(None, None, None, acts[None], grads[None])[0], np.float32)


def channel_totals(contrib: np.ndarray) -> np.ndarray:
    """Each channel's contribution summed over positions: (C,) float64."""
    return contrib.sum(axis=(1, 2), dtype=np.float64)


def channel_shares(totals: np.ndarray) -> np.ndarray:
    """share_k = total_k / (sum of the positive totals); all zeros when nothing is positive."""
    pos_sum = totals[totals > 0].sum()
    return totals / pos_sum if pos_sum > 0 else np.zeros_like(totals)


def cumulative_share(totals: np.ndarray) -> np.ndarray:
    """Share of the positive contribution held by the n largest channels, n = 1, 2, ...:
    (number of positive channels,), rising to 1."""
    positive = np.sort(totals[totals > 0])[::-1]
    return np.cumsum(positive) / positive.sum() if len(positive) else positive


def channels_needed(cumulative: np.ndarray, fraction: float) -> int:
    """How few channels hold ``fraction`` of the positive contribution (0 when none is positive)."""
    return int(np.searchsorted(cumulative, fraction - 1e-12) + 1) if len(cumulative) else 0


def channel_stats(method: str, acts: np.ndarray, grads: np.ndarray) -> tuple[list[dict], dict]:
    """Per-channel rows (sorted by share, largest first) and a summary for one image and class.

    share_k = sum_ij contribution_k / (sum of the positive channel totals): positive shares add
    up to 1, a channel that works against the class has a negative share. ``channels_50`` /
    ``channels_90``: how few channels hold 50% / 90% of the total positive contribution.
    """
    totals = channel_totals(channel_contributions(method, acts, grads))
    shares = channel_shares(totals)
    weights = channel_weights(method, acts, grads)
    zero_grad = ~np.any(grads != 0, axis=(1, 2))
    zero_list = zero_grad.tolist()
    means = acts.reshape(len(acts), -1).mean(axis=1).tolist()  # one call, not one per channel
    weight_list = None if weights is None else np.asarray(weights).tolist()
    share_list = np.asarray(shares).tolist()
    rows = [{"channel": k, "mean_activation": significant(means[k]),
             "weight": None if weight_list is None else significant(weight_list[k]),
             "share": round(share_list[k], 6),
             "zero_gradient": zero_list[k]} for k in range(len(totals))]
    rows.sort(key=lambda r: (-r["share"], r["channel"]))
    cumulative = cumulative_share(totals)
    summary = {"channels": int(len(totals)), "nonzero_gradient": int((~zero_grad).sum()),
               "channels_50": channels_needed(cumulative, 0.5),
               "channels_90": channels_needed(cumulative, 0.9)}
    return rows, summary


def top_channels(totals: np.ndarray, k: int) -> np.ndarray:
    """The k channels with the largest |total|, largest first (ties: lower channel first)."""
    order = np.lexsort((np.arange(len(totals)), -np.abs(totals)))
    return order[:k]

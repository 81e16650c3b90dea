"""EigenCAM and EigenGradCAM with the principal component found by a thin SVD.

The library projects each image's centred (positions x channels) activations on their first
right singular vector, from ``np.linalg.svd(..., full_matrices=True)``: that also makes the
positions x positions matrix U, which the projection never reads. On an early layer it is
most of the method's time and memory (a 64 x 96 layer of 8 channels: 2 s and 300 MB an
image; 16 GiB at 256 x 256 positions). ``full_matrices=False`` gives the same right singular
vectors without U, so the maps are the library's (tests/test_eigen.py compares them to the
library's classes); everything else (targets, scaling, layers) is the library's own code.
SegEigenCAM's sign-corrected projection (of |gradients| x activations) likewise. Another
method given ``eigen_smooth`` still makes the library's full SVD (explain.pace sizes it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pytorch_grad_cam import EigenCAM, EigenGradCAM, SegEigenCAM


def principal_projection(batch: np.ndarray, signed: bool = False) -> np.ndarray:
    """(B, C, H, W) -> (B, H, W) float32: each image's activations, NaN read as 0, centred
    over its positions and projected on their first principal direction; ``signed``: turned
    so its largest magnitude is positive (SegEigenCAM's sign correction)."""
    batch = np.nan_to_num(batch, nan=0.0, posinf=np.inf, neginf=-np.inf)
    out = []
    for acts in batch:
        rows = acts.reshape(acts.shape[0], -1).T  # positions x channels
        rows = rows - rows.mean(axis=0)
        direction = np.linalg.svd(rows, full_matrices=False)[2][0]
        projection = rows @ direction
        if signed and abs(projection.min()) > abs(projection.max()):
            projection = -projection
        out.append(projection.reshape(acts.shape[1:]))
    return np.float32(out)


class ThinEigenCAM(EigenCAM):
    """The library's EigenCAM, its projection by ``principal_projection``."""

    def get_cam_image(self, *args: Any) -> np.ndarray:
        """``args`` as the library passes them: input, layer, targets, activations, gradients,
        eigen_smooth."""
        return principal_projection(args[3])


class ThinEigenGradCAM(EigenGradCAM):
    """The library's EigenGradCAM (gradients x activations), projected likewise."""

    def get_cam_image(self, *args: Any) -> np.ndarray:
        """``args`` as ThinEigenCAM's."""
        return principal_projection(args[4] * args[3])


class ThinSegEigenCAM(SegEigenCAM):
    """The library's SegEigenCAM (|gradients| x activations, sign corrected), projected
    likewise: its full SVD made the same n x n U on every call, unsized by explain.pace."""

    def get_cam_image(self, *args: Any) -> np.ndarray:
        """``args`` as ThinEigenCAM's."""
        return principal_projection(np.abs(args[4]) * args[3], signed=True)


THIN: dict[type, type] = {EigenCAM: ThinEigenCAM, EigenGradCAM: ThinEigenGradCAM,
                          SegEigenCAM: ThinSegEigenCAM}


def thin(cls: type) -> type:
    """The thin-SVD version of the library's own EigenCAM, EigenGradCAM or SegEigenCAM; any
    other class (a registered subclass too, which keeps its own behaviour) as it is."""
    return THIN.get(cls, cls)


def svd_of(cls: object) -> str:
    """The SVD a method class makes of each image's activations, as explain runs it: 'thin'
    for the library's own EigenCAM, EigenGradCAM and SegEigenCAM (``thin`` swaps them),
    'full' for a subclass of them that inherits the library's ``get_cam_image`` (``thin``
    leaves it as it is), '' for any other class (whatever eigen_smooth asks: explain.pace)."""
    if cls in THIN:
        return "thin"
    library = {base.get_cam_image for base in THIN}
    if isinstance(cls, type) and issubclass(cls, tuple(THIN)) and cls.get_cam_image in library:
        return "full"
    return ""

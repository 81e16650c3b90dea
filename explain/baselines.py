"""Baseline maps: maps that know nothing, measured as the methods' maps are, so that a method's
numbers can be read against them (pytorch-grad-cam's metrics tutorial compares with RandomCAM
and a Sobel-edge map; TorchRay's pointing-game benchmark reports a centre baseline).

For every image x class a run explains, and only when the run measures something (faithfulness
``metrics:`` or ground-truth ``annotations``), the metrics writer makes one map per baseline,
on the same input and for the same class, and scores it with the same metrics (the faithfulness
metrics in one library call per image and metric, beside the call on the image's real maps:
ROAD draws its noise map after map, so sharing a call would change the real maps' scores).
Cost: with ``metrics``, the baselines triple the faithfulness work of a run with one method
(3 baseline maps per image x class); without ``metrics``, only the localisation numbers of
the images with boxes (no model pass: the engine's activations). Baselines are numbers,
not pictures: no file is written for them. Their records are ``ImageEntry.baselines``
(explain.evidence.BaselineMap); the report's methods table shows them as baseline rows, and a
method that does not beat every baseline on a metric is marked there.

- ``random``: pytorch-grad-cam's ``RandomCAM`` on the run's target layers: the layers'
  activations weighted by random numbers in -1..1 per channel, ReLU, scaled to 0..1, mean over
  the layers, as the library computes it; one map per class, drawn from numpy's generator
  seeded with ``seed_for(run seed, image id)`` (the same map for a given image on every run,
  whatever the batch). From the activations of the engine's own pass (RandomCAM ignores
  gradients): no pass of its own.
- ``centre``: a Gaussian centred on the image, sigma ``CENTRE_SIGMA`` (a quarter) of each side,
  scaled to 1 at its peak; the same map for every class.
- ``edges``: the Sobel edge magnitude of the photo at model input size (the library's
  ``sobel_cam``), scaled to 0..1; the same map for every class.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from explain.plan import RunPlan

CENTRE_SIGMA = 0.25  # of the image's height (vertically) and width (horizontally)


@dataclass(frozen=True)
class Baseline:
    """One baseline: its label in the report and what it is."""
    label: str
    description: str


BASELINES: dict[str, Baseline] = {
    "random": Baseline("RandomCAM", "pytorch-grad-cam's RandomCAM on the target layers: the "
                       "activations weighted by random numbers (seeded per image)"),
    "centre": Baseline("centre", f"a Gaussian centred on the image, sigma {CENTRE_SIGMA:g} of "
                       f"each side"),
    "edges": Baseline("edges", "the Sobel edge magnitude of the photo (the library's sobel_cam)"),
}


def seed_for(seed: int, image_id: str) -> int:
    """The random baseline's seed for one image: the run's seed and the image's id, so a map
    depends on neither the batch nor the order of the images."""
    return (seed + zlib.crc32(image_id.encode("utf-8"))) % (2 ** 32)


def centre_map(height: int, width: int) -> np.ndarray:
    """The centre baseline: exp(-(dy² + dx²) / 2) with dy, dx the pixel centre's distance from
    the image's centre in units of CENTRE_SIGMA x the side; float32, 1 at the peak."""
    dy = (np.arange(height) + 0.5 - height / 2) / (CENTRE_SIGMA * height)
    dx = (np.arange(width) + 0.5 - width / 2) / (CENTRE_SIGMA * width)
    out = np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / 2)
    return (out / out.max()).astype(np.float32)


def edge_map(rgb: np.ndarray) -> np.ndarray:
    """The edge baseline: the library's ``sobel_cam`` of the photo (RGB, float 0..1 or uint8),
    scaled to 0..1 (all zero for a flat photo)."""
    from pytorch_grad_cam.sobel_cam import sobel_cam
    from explain.render import as_uint8
    img = as_uint8(rgb)
    edges = sobel_cam(np.ascontiguousarray(img)).astype(np.float32)
    peak = float(edges.max())
    return edges / peak if peak > 0 else edges


def random_maps(plan: "RunPlan", acts: list[np.ndarray], size: tuple[int, int],
                draws: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """RandomCAM maps from the target layers' activations (the engine's pass's,
    BatchResult.activations, (B, C, h, w) each): for each
    (row, count, seed) of ``draws``, ``count`` maps (count, H, W) of that image of the batch,
    each with its own random channel weights, drawn with numpy seeded with ``seed``; ``size``
    is (H, W). The library's own RandomCAM call on ``count`` copies of the image, with numpy
    seeded the same, gives the same maps (tests/test_trust_section.py)."""
    from pytorch_grad_cam import RandomCAM
    from pytorch_grad_cam.utils.image import scale_cam_image

    from explain.engine import seeded
    modules = [layer.module for layer in plan.target_layers]
    math = RandomCAM(plan.model, modules)
    math.activations_and_grads.release()  # only its arithmetic is used: no hooks stay
    out = []
    for row, count, seed in draws:
        per_layer = []
        with seeded(seed):  # the library draws the weights layer by layer, as here
            for module, act in zip(modules, acts):
                copies = np.repeat(act[row:row + 1], count, axis=0)
                cam = math.get_cam_image(None, module, None, copies, copies, False)
                per_layer.append(scale_cam_image(np.maximum(cam, 0), (size[1], size[0]))[:, None])
        out.append(np.asarray(math.aggregate_multi_layers(per_layer), dtype=np.float32))
    return out


def batch_maps(plan: "RunPlan", acts: list[np.ndarray],
               images: list[tuple[int, str, np.ndarray, int]]) -> dict[int, dict[str, np.ndarray]]:
    """Every baseline's maps for images of a batch: per (row, image id, photo at input size,
    classes) of ``images``, baseline name -> (classes, H, W) float32 maps, in the order of
    ``BASELINES``; ``acts``: the target layers' activations of the engine's pass over the
    batch (the random baseline's channels: no pass of its own)."""
    height, width = images[0][2].shape[:2]
    randoms = random_maps(plan, acts, (height, width),
                          [(row, count, seed_for(plan.cfg.seed, image_id))
                           for row, image_id, _, count in images])
    centre = centre_map(height, width)
    out = {}
    for (row, _, rgb, count), random in zip(images, randoms):
        out[row] = {"random": random, "centre": np.repeat(centre[None], count, axis=0),
                    "edges": np.repeat(edge_map(rgb)[None], count, axis=0)}
    return out

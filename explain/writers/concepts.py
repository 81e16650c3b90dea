"""concepts/: Deep Feature Factorization of each image at the concept layer.

Per image, the library's ``DeepFeatureFactorization`` splits the layer's activations into
``concepts.n_components`` non-negative factors (sklearn NMF, ``random_state=0``: the same
image gives the same concepts). Each concept has a map over the image and a vector over the
layer's channels; where the network ends in an ``nn.Linear`` reading those channels (ResNet
``fc``, ViT ``head``), that Linear scores the concept vectors (``computation_on_concepts``) and
the head turns the scores into class probabilities.

``concepts/<image>.png``: the photo, the photo with each concept's region (the pixels where its
map is highest) in its own colour, and a legend: share of the image, top classes.
``concepts/<image>.json``: per concept its colour, share of the image and top classes with
probabilities. With ``output.save_arrays``: ``concepts/<image>.npy``, the (k, H, W) maps.
Concepts are numbered by the share of the image they cover, largest first.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Sequence

import cv2
import matplotlib
import numpy as np
import torch
from pytorch_grad_cam import DeepFeatureFactorization
from pytorch_grad_cam.utils.image import show_factorization_on_image
from torch import nn

from explain.render import Text, draw_text, text_width
from explain.batches import BatchContext
from explain.writers import RunContext, Writer

TEXT_SIZE = 13  # title and legend text, pixels (explain.render's text path)
LINE = 22  # legend line height, pixels
MARGIN = 10
GAP = 10
SWATCH = 14
MIN_PANEL = 224  # panels smaller than this are enlarged (whole multiples, nearest pixel)
IMAGE_WEIGHT = 0.3  # the photo's weight under the concept colours
BACKGROUND = 255

ConceptLabels = list[list[tuple[str, float]]]


# ---- arrays in, arrays out ----------------------------------------------------------------
def concept_shares(maps: np.ndarray) -> np.ndarray:
    """(k,) share of the image's pixels where each concept's map (k, H, W) is the highest:
    the regions the figure colours. Sums to 1."""
    winner = maps.argmax(axis=0)
    return np.bincount(winner.ravel(), minlength=maps.shape[0]) / winner.size


def concept_order(shares: np.ndarray) -> np.ndarray:
    """Concept indices by share, largest first (ties: factorization order)."""
    return np.argsort(-np.asarray(shares), kind="stable")


def top_classes(probs: np.ndarray, classes: dict[int, str], top_k: int) -> ConceptLabels:
    """Per concept (a row of ``probs``, (k, classes)), the ``top_k`` named classes by
    probability, highest first, as (name, probability)."""
    named = sorted(i for i in classes if i < probs.shape[1])
    out = []
    for row in probs:
        best = sorted(named, key=lambda i: (-row[i], i))[:top_k]
        out.append([(classes[i], float(row[i])) for i in best])
    return out


def concept_colours(k: int) -> np.ndarray:
    """(k, 3) RGB in 0..1: gist_rainbow at 0, 1/k, 2/k, ... (the library's default colours)."""
    cmap = matplotlib.colormaps["gist_rainbow"]
    return np.array([cmap(i / k)[:3] for i in range(k)], dtype=np.float64)


def concept_overlay(rgb: np.ndarray, maps: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The library's ``show_factorization_on_image``: each pixel in the colour of its highest
    concept, as bright as that concept's map there, over the photo; uint8 RGB (H, W, 3)."""
    return show_factorization_on_image(rgb.astype(np.float32), maps.astype(np.float32).copy(),
                                       colors=list(colours), image_weight=IMAGE_WEIGHT)


def legend_lines(shares: np.ndarray, labels: Optional[ConceptLabels]) -> list[str]:
    """One legend line per concept: number, share of the image, top classes."""
    lines = []
    for i, share in enumerate(shares):
        text = f"{i + 1}. {share:.0%} of the image"
        if labels is not None:
            text += ": " + ", ".join(f"{name} {p:.2f}" for name, p in labels[i])
        lines.append(text)
    return lines


def panel_scale(hw: tuple[int, int]) -> int:
    """Whole-number enlargement of an (H, W) panel so its longer side reaches MIN_PANEL."""
    return max(1, math.ceil(MIN_PANEL / max(hw)))


def panel_boxes(hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Where ``concept_figure`` puts the photo and the concept overlay: (x0, y0, x1, y1)."""
    s = panel_scale(hw)
    h, w = hw[0] * s, hw[1] * s
    top = MARGIN + LINE
    return [(MARGIN, top, MARGIN + w, top + h),
            (MARGIN + w + GAP, top, MARGIN + 2 * w + GAP, top + h)]


def concept_figure(photo: np.ndarray, overlay: np.ndarray, lines: Sequence[str],
                   colours: np.ndarray, title: str) -> np.ndarray:
    """uint8 RGB figure: title, photo and overlay side by side (``panel_boxes``), then a
    legend line per concept with its colour swatch; text by ``explain.render.draw_text``."""
    hw = overlay.shape[:2]
    s = panel_scale(hw)
    boxes = panel_boxes(hw)
    widest = max(text_width(t, TEXT_SIZE) for t in (title, *lines))
    width = max(boxes[1][2] + MARGIN, MARGIN + SWATCH + 8 + widest + MARGIN)
    height = boxes[1][3] + GAP + LINE * len(lines) + MARGIN
    fig = np.full((height, width, 3), BACKGROUND, np.uint8)
    for (x0, y0, x1, y1), img in zip(boxes, (photo, overlay)):
        fig[y0:y1, x0:x1] = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST) \
            if s > 1 else img
    texts = [Text(title, MARGIN, MARGIN + 2, TEXT_SIZE)]
    for i, (text, colour) in enumerate(zip(lines, colours)):
        y = boxes[1][3] + GAP + i * LINE
        rgb = tuple(int(round(255 * c)) for c in colour[:3])
        cv2.rectangle(fig, (MARGIN, y + 3), (MARGIN + SWATCH, y + 3 + SWATCH), rgb, -1)
        texts.append(Text(text, MARGIN + SWATCH + 8, y + 2, TEXT_SIZE))
    return draw_text(fig, texts)


def hex_colour(colour: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in colour[:3])


# ---- the model ------------------------------------------------------------------------------
def concept_head(net: nn.Module, channels: int, outputs: int) -> Optional[nn.Linear]:
    """The network's last ``nn.Linear`` reading ``channels`` features and giving the model's
    ``outputs`` logits (ResNet ``fc``, ViT ``head``), or None."""
    found = None
    for module in net.modules():
        if isinstance(module, nn.Linear) and module.in_features == channels \
                and module.out_features == outputs:
            found = module
    return found


def on_device(linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """``linear`` as DFF's ``computation_on_concepts``: DFF hands over CPU float32 concept
    vectors (k, C); they are moved to the Linear's device and dtype first."""
    def apply(concepts: torch.Tensor) -> torch.Tensor:
        return linear(concepts.to(linear.weight.device, linear.weight.dtype)).float()
    return apply


def factorize(model: nn.Module, module: nn.Module, x: torch.Tensor, n_components: int, *,
              layout: Optional[Callable] = None, head: Optional[nn.Linear] = None
              ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The library's DeepFeatureFactorization of one image ``x`` (1, C, H, W) at ``module``
    (seen through ``layout``, its reshape_transform): (k, H, W) concept maps, each scaled to
    0..1, and the Linear's (k, outputs) scores of the concept vectors (None without one)."""
    dff = DeepFeatureFactorization(model=model, target_layer=module, reshape_transform=layout,
                                   computation_on_concepts=on_device(head) if head else None)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NMF's ConvergenceWarning, sklearn's FutureWarnings
            out = dff(x, n_components)
    finally:
        dff.activations_and_grads.release()
    maps = np.asarray(out[1][0], dtype=np.float32)
    return maps, (np.asarray(out[2], dtype=np.float64) if head else None)


# ---- the writer -------------------------------------------------------------------------------
class ConceptWriter(Writer):
    def __init__(self) -> None:
        self._head: Optional[nn.Linear] = None

    def start(self, ctx: RunContext) -> None:
        """The Linear that labels concepts (its input is the concept layer's channels, its
        output the model's), or a note that there is none."""
        channels = ctx.plan.concept_layer.channels
        outputs = int(ctx.plan.probe.logits.shape[1])
        self._head = concept_head(ctx.plan.net, channels, outputs)
        if self._head is None:
            ctx.summary.notes.append(
                f"concepts: the network has no nn.Linear({channels}, {outputs}) reading the "
                f"concept layer's {channels} channels, so concepts have no class labels")

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        spec, plan = ctx.cfg.concepts, ctx.plan
        layer = plan.concept_layer
        layer_name = layer.name
        for view in batch.images:
            x = batch.x[view.row:view.row + 1].to(plan.device)
            maps, scores = factorize(plan.model, layer.module, x, spec.n_components,
                                     layout=layer.layout, head=self._head)
            order = concept_order(concept_shares(maps))
            maps = maps[order]
            shares = concept_shares(maps)
            labels = None if scores is None else \
                top_classes(plan.head.probabilities(scores[order]), ctx.classes, spec.top_k)
            colours = concept_colours(len(maps))
            image = view.entry.id
            photo = np.uint8(np.clip(view.item.rgb, 0, 1) * 255)
            figure = concept_figure(photo, concept_overlay(view.item.rgb, maps, colours),
                                    legend_lines(shares, labels), colours,
                                    f"{image}: {len(maps)} concepts at {layer_name}")
            files = view.entry.files
            files.concepts_figure = f"concepts/{image}.png"
            ctx.run.write_image(files.concepts_figure, figure)
            view.entry.concepts = f"concepts/{image}.json"
            ctx.run.write_json(view.entry.concepts,
                               self._json(image, layer_name, shares, labels, colours))
            if ctx.cfg.output.save_arrays:
                files.concepts_array = f"concepts/{image}.npy"
                ctx.run.write_npy(files.concepts_array, maps)

    @staticmethod
    def _json(image: str, layer: str, shares: np.ndarray, labels: Optional[list],
              colours: np.ndarray) -> dict:
        """concepts/<image>.json: per concept its colour, share and top classes."""
        concepts = []
        for i, share in enumerate(shares):
            item = {"concept": i + 1, "colour": hex_colour(colours[i]),
                    "share": round(float(share), 6)}
            if labels is not None:
                item["classes"] = [{"class": n, "probability": round(p, 6)} for n, p in labels[i]]
            concepts.append(item)
        return {"image": image, "layer": layer, "n_components": len(shares),
                "labelled": labels is not None, "concepts": concepts}

"""ScoreCAM and AblationCAM with their forward passes shared across the classes explained.

The library's ScoreCAM runs the model once per channel of the target layer on the image masked
by that channel, and AblationCAM once per channel with that channel ablated; then it reads ONE
target's score from each pass. Those passes do not depend on the class: only the score read
from their outputs does. Called once per class (per target slot), the library repeats every
pass K times for K classes. ``SharedScoreCAM`` and ``SharedAblationCAM`` are thin subclasses
that make each pass once, keep its outputs, and read every slot's score from them; the rest
(the channel weights, ``get_cam_image``, ``scale_cam_image``, ``aggregate_multi_layers``, the
augmentation smoothing) is the library's own, so each slot's map equals the library's call for
that slot alone (tests/test_shared_passes.py). They also make their masked inputs one inner
batch at a time (the library builds all B x C masked copies of the batch at once), and can run
their passes under autocast (``explain.precision``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from pytorch_grad_cam import AblationCAM, ScoreCAM
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.image import scale_cam_image

from explain import batching
from explain.enginedata import watching

Targets = Sequence[Callable]  # one library target per image of the batch


class SlotPasses:
    """The shared part: one forward with the library's hooks, then per target layer every
    slot's weights from one set of passes (``slot_weights``), then the library's math.
    ``precision``: a context manager factory for the per-channel passes (autocast)."""

    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    setting = "batch_size"  # how an out-of-memory message names the inner batch
    memory_budget: Optional[int] = None  # bytes for batch_size 'auto' (else: explain.batching)
    _given: Optional[np.ndarray] = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The library's hooks would store the layer's output of every masked or ablated pass:
        # the one forward that needs them hooks the layers itself (_slot_forward).
        self.activations_and_grads.release()

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        if self._given is not None:  # weights already read from the shared passes
            return self._given
        return super().get_cam_weights(input_tensor, target_layer, targets, activations, grads)

    def slot_weights(self, x: torch.Tensor, layer: torch.nn.Module, slots: list[Targets],
                     activations: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def slot_maps(self, input_tensor: torch.Tensor, slots: list[Targets],
                  aug_smooth: bool = False, eigen_smooth: bool = False) -> np.ndarray:
        """(B, S, H, W): slot s's maps, each as ``cam(input_tensor, slots[s])`` makes them."""
        if not aug_smooth:
            return self._slot_forward(input_tensor, slots, eigen_smooth)
        cams = []
        for transform in self.tta_transforms:  # the library's forward_augmentation_smoothing
            cam = self._slot_forward(transform.augment_image(input_tensor), slots, eigen_smooth)
            cams.append(transform.deaugment_mask(torch.from_numpy(cam)).numpy())
        return np.mean(np.float32(cams), axis=0)

    def _slot_forward(self, x: torch.Tensor, slots: list[Targets],
                      eigen_smooth: bool) -> np.ndarray:
        x = x.to(self.device)
        grab = ActivationsAndGradients(self.model, self.target_layers, self.reshape_transform)
        try:
            with torch.no_grad():
                self.outputs = grab(x)
            activations = [a.cpu().data.numpy() for a in grab.activations]
        finally:
            grab.release()
        size = self.get_target_width_height(x)
        per_slot: list[list[np.ndarray]] = [[] for _ in slots]
        for i, layer in enumerate(self.target_layers):
            weights = self.slot_weights(x, layer, slots, activations[i])
            for s, targets in enumerate(slots):
                self._given = weights[s]
                try:
                    cam = self.get_cam_image(x, layer, targets, activations[i], None,
                                             eigen_smooth)
                finally:
                    self._given = None
                per_slot[s].append(scale_cam_image(np.maximum(cam, 0), size)[:, None, :])
        return np.stack([self.aggregate_multi_layers(p) for p in per_slot], axis=1)

    def inner_batch(self, x: torch.Tensor, default: int) -> int:
        """The inner batch: the ``batch_size`` set, or for 'auto' the rows of no-grad passes
        that fit the memory budget."""
        size = getattr(self, "batch_size", default)
        return batching.resolved(size, lambda: batching.bytes_per_row(self.model, x[:1], False),
                                 x.device, self.memory_budget)

    def _scores(self, batch: torch.Tensor, rows: list[Callable]) -> list[list[float]]:
        """The model on ``batch`` once; per slot, its target's score of every output row (the
        library's ``target(o).cpu().item()``)."""
        with self.precision():
            outputs = self.model(batch)
        outputs = outputs.float()
        return [[target(o).cpu().item() for o in outputs] for target in rows]


class SharedScoreCAM(SlotPasses, ScoreCAM):
    """ScoreCAM: one pass per channel of each image, every slot's score read from it."""

    def slot_weights(self, x, layer, slots, activations):
        size = self.inner_batch(x, 16)
        scores: list[list[float]] = [[] for _ in slots]
        with torch.no_grad():
            for b in range(x.shape[0]):  # one image's (C, H, W) masks at a time
                masks = self._masks(torch.from_numpy(activations[b:b + 1]), x.shape[-2:])
                rows = [t[b] for t in slots]
                found = batching.retrying(lambda n: self._image(x[b], masks, rows, n), size,
                                          self.setting)
                for s in range(len(slots)):
                    scores[s].extend(found[s])
        shape = activations.shape[:2]
        return [torch.nn.Softmax(dim=-1)(torch.Tensor(s).view(*shape)).numpy() for s in scores]

    def _image(self, image: torch.Tensor, masks: torch.Tensor, rows: list[Callable],
               size: int) -> list[list[float]]:
        """One image's scores per slot, its masked copies in batches of ``size``."""
        scores: list[list[float]] = [[] for _ in rows]
        for start in range(0, masks.size(0), size):
            batch = image[None] * masks[start:start + size, None]
            for s, found in enumerate(self._scores(batch, rows)):
                scores[s].extend(found)
        return scores

    def _masks(self, activations: torch.Tensor, size) -> torch.Tensor:
        """(C, H, W): one image's channels upsampled to the input and scaled to 0..1 (the
        library's ScoreCAM, per image)."""
        upsampled = torch.nn.UpsamplingBilinear2d(size=size)(activations.to(self.device))[0]
        flat = upsampled.view(upsampled.size(0), -1)
        maxs, mins = flat.max(dim=-1)[0][:, None, None], flat.min(dim=-1)[0][:, None, None]
        return (upsampled - mins) / (maxs - mins + 1e-8)


class SharedAblationCAM(SlotPasses, AblationCAM):
    """AblationCAM: one pass per ablated channel of each image, every slot's score read
    from it; the target layer is put back even when a pass fails."""

    def slot_weights(self, x, layer, slots, activations):
        with watching([layer], lambda _i, out: self.save_activation(layer, None, out)), \
                torch.no_grad(), self.precision():  # the scores compared at one precision
            outputs = self.model(x).float()
        original = [np.float32([t(o).cpu().item() for t, o in zip(targets, outputs)])
                    for targets in slots]
        ablation = self.ablation_layer
        replace_layer_recursive(self.model, layer, ablation)
        try:
            size = self.inner_batch(x, 32)
            with torch.no_grad():
                weights = [batching.retrying(
                    lambda n: self._ablated(x, b, slots, activations, original, size=n), size,
                    self.setting) for b in range(x.shape[0])]
        finally:
            replace_layer_recursive(self.model, ablation, layer)
        out = []
        for s in range(len(slots)):
            w = np.float32([weights[b][s] for b in range(x.shape[0])])
            w = w.reshape(activations.shape[:2])
            out.append((original[s][:, None] - w) / original[s][:, None])
        return out

    def _ablated(self, x, b: int, slots: list[Targets], activations: np.ndarray,
                 original: list[np.ndarray], *, size: int) -> list[list[float]]:
        """Image ``b``: per slot, the score with each channel ablated (the library's loop,
        in batches of ``size``)."""
        ablation = self.ablation_layer
        scores: list[list[float]] = [[] for _ in slots]
        batch = x[b].repeat(size, 1, 1, 1)
        channels = ablation.activations_to_be_ablated(activations[b, :],
                                                      self.ratio_channels_to_ablate)
        count = len(channels)
        for start in range(0, count, size):
            if start + size > count:
                batch = batch[:count - start]
            ablation.set_next_batch(input_batch_index=b, activations=self.activations,
                                    num_channels_to_ablate=batch.size(0))
            for s, found in enumerate(self._scores(batch, [t[b] for t in slots])):
                scores[s].extend(found)
            ablation.indices = ablation.indices[batch.size(0):]
        return [self.assemble_ablation_scores(scores[s], original[s][b], channels,
                                              activations.shape[1])
                for s in range(len(slots))]


SHARED: dict[type, type] = {ScoreCAM: SharedScoreCAM, AblationCAM: SharedAblationCAM}


def sharing(cls: type) -> Optional[type]:
    """The shared-pass version of a library method class, or None (only the library's own
    ScoreCAM and AblationCAM have one: a registered subclass keeps its own behaviour)."""
    return SHARED.get(cls)

"""guided/: guided backpropagation per image x class, and Guided Grad-CAM per method.

``guided/<image>__<class>.png``: the library's ``GuidedBackpropReLUModel`` run on
``ScoreModel(classifier, head)`` with ``target_category`` = the class index, so the gradient is
that of the score a map explains (logit or probability; binary and multi-label heads too).
``guided_cam/<method>/<image>__<class>.png``: that gradient image times the method's CAM, per
pixel (Guided Grad-CAM). Both are shown with the library's ``deprocess_image``; with
``output.save_arrays`` the raw float32 arrays go alongside as .npy.

The library swaps every ``nn.ReLU`` of the model for its own module and afterwards puts fresh
``nn.ReLU()`` objects back, leaves parameter gradients filled and sets eval mode;
``preserved_model`` undoes all of that, even when the pass fails. Only ``nn.ReLU`` is guided:
GELU, SiLU, ReLU6 and functional activations pass plain gradients (noted once per run).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator, Optional

import numpy as np
import torch
from pytorch_grad_cam import GuidedBackpropReLUModel
from pytorch_grad_cam.utils.image import deprocess_image
from torch import nn

from explain.models.heads import ScoreModel
from explain.batches import BatchContext
from explain.writers import RunContext, Writer

# Activations other than nn.ReLU that a classifier may use: guided backprop leaves them plain.
OTHER_ACTIVATIONS = (nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.SELU,
                     nn.CELU, nn.Mish, nn.PReLU, nn.Softplus, nn.Tanh)


def relu_slots(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Every place an ``nn.ReLU`` (or subclass) is registered, as (parent, name, module): the
    slots the library's ``replace_all_layer_type_recursive`` swaps. A ReLU object registered in
    several places appears once per place."""
    slots: list[tuple[nn.Module, str, nn.Module]] = []

    def walk(parent: nn.Module) -> None:
        for name, child in parent._modules.items():
            if isinstance(child, nn.ReLU):
                slots.append((parent, name, child))
            if child is not None:
                walk(child)

    walk(model)
    return slots


@contextlib.contextmanager
def preserved_model(model: nn.Module) -> Iterator[None]:
    """Within the block parameters need no gradient; afterwards, even on error, every ReLU slot
    holds its original module object again (inplace flag and hooks with it), every module has
    its training flag back and every parameter its ``.grad`` and ``requires_grad``."""
    slots = relu_slots(model)
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    try:
        for p, _, _ in params:
            p.requires_grad_(False)  # the input's gradient only: nothing lands in .grad
        yield
    finally:
        for parent, name, module in slots:
            parent._modules[name] = module
        for module, mode in modes:
            module.training = mode
        for p, grad, needs in params:
            p.requires_grad_(needs)
            p.grad = grad


def guided_gradient(model: nn.Module, x: torch.Tensor, category: int) -> np.ndarray:
    """Guided backpropagation by the library: d model(x)[0, category] / d x with guided ReLUs,
    as float32 (H, W, C). ``x`` is one image (C, H, W) or (1, C, H, W); ``model`` gives
    (N, classes) scores and is left exactly as it was."""
    image = x.detach().clone()
    if image.ndim == 3:
        image = image[None]
    with preserved_model(model), torch.enable_grad():
        guided = GuidedBackpropReLUModel(model, device=None)
        out = guided(image, target_category=int(category))
    return np.asarray(out, dtype=np.float32)


def guided_cam(guided: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Guided Grad-CAM: the guided image (H, W, C) times the CAM (H, W), pixel by pixel."""
    if guided.shape[:2] != cam.shape:
        raise ValueError(f"guided image {guided.shape[:2]} and CAM {cam.shape} differ in size")
    return (guided * cam[..., None]).astype(np.float32)


def display(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) for a PNG, by the library's ``deprocess_image``: mean at grey 0.5, one
    standard deviation = 0.1, clipped."""
    return deprocess_image(np.asarray(image, dtype=np.float32))


def relu_note(model: nn.Module) -> Optional[str]:
    """A line for the run's notes when some activations of ``model`` are not guided: none
    when every activation module is an ``nn.ReLU``."""
    relus = sum(isinstance(m, nn.ReLU) for m in model.modules())
    others = Counter(type(m).__name__ for m in model.modules()
                     if isinstance(m, OTHER_ACTIVATIONS) and not isinstance(m, nn.ReLU))
    found = ", ".join(f"{name} x{n}" for name, n in sorted(others.items()))
    if relus == 0:
        return (f"guided: the model has no nn.ReLU module{f' ({found})' if found else ''}, so "
                f"the guided images are plain input gradients (only nn.ReLU is guided)")
    if others:
        return (f"guided: {relus} nn.ReLU module(s) guided; {found} pass plain gradients "
                f"(only nn.ReLU is guided)")
    return None


class GuidedWriter(Writer):
    def start(self, ctx: RunContext) -> None:
        note = relu_note(ctx.plan.model)
        if note:
            ctx.summary.notes.append(note)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        scorer = ScoreModel(ctx.plan.model, ctx.plan.head)
        save = ctx.cfg.output.save_arrays
        for view in batch.images:
            files: dict[str, str] = {}
            guided = None
            for one in view.maps:  # class by class, each class once
                stem = f"{view.entry.id}__{one.class_name}"
                if one.class_name not in files:
                    guided = guided_gradient(scorer, batch.x[view.row], one.class_index)
                    files[one.class_name] = f"guided/{stem}{ctx.ext}"
                    array = self._save(ctx, files[one.class_name], guided, save)
                    if array:
                        view.entry.files.guided_arrays[one.class_name] = array
                one.record.guided_file = f"guided_cam/{one.method}/{stem}{ctx.ext}"
                one.record.files.guided_array = self._save(ctx, one.record.guided_file,
                                                           guided_cam(guided, one.cam), save)
            view.entry.guided = files

    @staticmethod
    def _save(ctx: RunContext, rel: str, image: np.ndarray, save: bool) -> Optional[str]:
        """The picture, and with ``save_arrays`` the float32 array next to it (returned)."""
        ctx.run.write_image(rel, display(image))
        if not save:
            return None
        array = rel.rsplit(".", 1)[0] + ".npy"
        ctx.run.write_npy(array, image)
        return array

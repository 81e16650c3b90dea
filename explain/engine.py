"""The CAM engine: one forward pass per batch explains every class and every gradient method.

For each batch the engine runs the model once with forward hooks on the target layers, then,
per target slot (one class per image), takes ``torch.autograd.grad`` of the summed class
scores with respect to the hooked activations only: no parameter gradients, no second
forward. The maps of all gradient methods (GradCAM, LayerCAM, GradCAM++, XGradCAM, HiResCAM,
GradCAMElementWise, EigenGradCAM) are then made from those arrays by the library's own
``get_cam_image``, ``scale_cam_image`` and ``aggregate_multi_layers``. Methods that need
passes of their own (ScoreCAM, AblationCAM, FullGrad, EigenCAM, smoothing) are called the
library's normal way on the whole batch with per-image targets.

Inplace safety: the hooks keep the layer's output and hand a copy downstream, so an inplace
activation after the layer cannot overwrite what was stored; inplace modules are also turned
off for the run so the library's own hooks (used by the other methods) are safe too.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from explain.config import MethodSpec
from explain.errors import ExplainError
from explain.methods import SHARED_PASS, registry
from explain.model import non_inplace, preserved_state


@dataclass
class LayerPass:
    """What one forward/backward saw at one layer: activations and, per slot, gradients."""
    activations: np.ndarray  # (B, C, h, w)
    gradients: list[np.ndarray]  # one (B, C, h, w) per target slot


@dataclass
class BatchResult:
    logits: np.ndarray  # (B, outputs)
    classes: np.ndarray  # (B, S): class index explained in slot s of image b
    maps: dict[str, np.ndarray]  # method -> (B, S, H, W) float32 in 0..1
    probe: Optional[LayerPass] = None  # the channel layer, when asked for
    notes: list[str] = field(default_factory=list)


def _targets(classes: np.ndarray) -> list[ClassifierOutputTarget]:
    return [ClassifierOutputTarget(int(c)) for c in classes]


class CamEngine:
    """Explains batches with a fixed model, target layers and methods. Use as a context manager:
    on entry the model is moved to the device and made inplace-safe; on exit it is restored."""

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], methods: list[MethodSpec],
                 device: torch.device, *, layer_names: Optional[list[str]] = None,
                 probe_layer: Optional[nn.Module] = None, aug_smooth: bool = False,
                 eigen_smooth: bool = False, guard_inplace: bool = True, seed: int = 0,
                 check_outputs: Optional[Callable[[int], None]] = None):
        self.model = model
        self.target_layers = list(target_layers)
        self.layer_names = layer_names or [f"#{i}" for i in range(len(target_layers))]
        self.hooked = self.target_layers + ([probe_layer] if probe_layer is not None and
                                            all(probe_layer is not t for t in target_layers) else [])
        self.probe_index = None if probe_layer is None else \
            next(i for i, layer in enumerate(self.hooked) if layer is probe_layer)
        self.device = device
        self.aug_smooth, self.eigen_smooth = aug_smooth, eigen_smooth
        self.guard_inplace = guard_inplace
        self.seed = seed
        self.check_outputs = check_outputs  # called with the model's output count, before any gradient
        self.shared = [m for m in methods if m.name in SHARED_PASS and not aug_smooth]
        self.separate = [m for m in methods if m not in self.shared]
        self.order = [m.name for m in methods]
        self.inplace_switched = 0
        self._stack: Optional[contextlib.ExitStack] = None

    # ---- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> "CamEngine":
        stack = contextlib.ExitStack()
        home = next(self.model.parameters(), torch.empty(0)).device
        stack.callback(self.model.to, home)
        stack.enter_context(preserved_state(self.model))
        self.inplace_switched = stack.enter_context(non_inplace(self.model, self.guard_inplace))
        self.model.to(self.device).eval()
        # Shared-pass methods only lend their per-method math: their hooks are removed at once.
        self._math = {}
        for m in self.shared:
            cam = self._make(m)
            cam.activations_and_grads.release()
            self._math[m.name] = cam
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        self._math = {}
        if self._stack is not None:
            self._stack.close()

    def _make(self, spec: MethodSpec):
        cls = registry()[spec.name]
        options = dict(spec.options)
        instance_opts = {k: options.pop(k) for k in list(options) if k == "batch_size" and
                         "batch_size" not in inspect.signature(cls.__init__).parameters}
        if isinstance(options.get("base_method"), str):
            options["base_method"] = registry()[options["base_method"].lower()]
        layers = [] if spec.name == "fullgrad" else self.target_layers
        cam = cls(self.model, layers, **options)
        for key, value in instance_opts.items():
            setattr(cam, key, value)
        return cam

    # ---- one batch ------------------------------------------------------------------------
    def run(self, x: torch.Tensor, targets: Optional[list[int]], named: list[int]) -> BatchResult:
        """Explain a batch. ``targets``: class indices for every image, or None for each
        image's predicted class among ``named``."""
        x = x.to(self.device)
        logits, acts = self._forward(x)
        out_np = logits.detach().float().cpu().numpy()
        if targets is None:
            best = out_np[:, named].argmax(axis=1)
            classes = np.asarray(named)[best][:, None]
        else:
            classes = np.tile(np.asarray(targets), (x.shape[0], 1))
        grads = self._gradients(logits, acts, classes)
        acts_np = [a.detach().float().cpu().numpy() for a in acts]
        del logits, acts
        size = (x.shape[-1], x.shape[-2])
        maps = {}
        for m in self.shared:
            maps[m.name] = np.stack([self._shared_map(m.name, x, acts_np, g, classes[:, s], size)
                                     for s, g in enumerate(grads)], axis=1)
        for m in self.separate:
            maps[m.name] = self._library_map(m, x, classes)
        probe = None
        if self.probe_index is not None:
            probe = LayerPass(acts_np[self.probe_index], [g[self.probe_index] for g in grads])
        return BatchResult(out_np, classes, {k: maps[k] for k in self.order}, probe)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        captured: list[Optional[torch.Tensor]] = [None] * len(self.hooked)

        def hook_for(i: int):
            def hook(module, inputs, output):
                if not isinstance(output, torch.Tensor):
                    raise ExplainError(f"{self._name(i)}: the layer outputs a "
                                       f"{type(output).__name__}, not a tensor; pick a layer "
                                       f"whose output is a feature map")
                captured[i] = output
                # A copy goes downstream, so an inplace op there cannot change what we keep.
                return output.clone() if self.guard_inplace else None
            return hook

        handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(self.hooked)]
        try:
            with torch.enable_grad():
                logits = self.model(x.detach().requires_grad_(True))
        finally:
            for h in handles:
                h.remove()
        self._check_logits(logits, x.shape[0])
        if self.check_outputs is not None:
            self.check_outputs(logits.shape[1])
        for i, act in enumerate(captured):
            if act is None:
                raise ExplainError(f"{self._name(i)}: the layer is not used in the model's "
                                   f"forward pass; pick one that is (see model.named_modules())")
        return logits, captured

    def _name(self, i: int) -> str:
        if i < len(self.target_layers):
            return f"target_layers[{i}] '{self.layer_names[i]}'"
        return "channels.layer"

    def _check_logits(self, logits, batch: int) -> None:
        if isinstance(logits, (tuple, list, dict)):
            raise ExplainError(f"model: forward returns a {type(logits).__name__}, not an "
                               f"(N, classes) logits tensor; wrap the model so forward returns "
                               f"the logits only (e.g. out[0] or out['logits'])")
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ExplainError(f"model: forward returns shape {shape}, expected (N, classes) logits")

    def _gradients(self, logits, acts, classes: np.ndarray) -> list[list[np.ndarray]]:
        """Per slot, d(sum_b logit[b, class[b, s]]) / d(activations) for every hooked layer."""
        if not self.shared and self.probe_index is None:
            return [[] for _ in range(classes.shape[1])]
        out = []
        for s in range(classes.shape[1]):
            index = torch.as_tensor(classes[:, s:s + 1], device=logits.device)
            score = logits.gather(1, index).sum()
            grads = torch.autograd.grad(score, acts, retain_graph=s < classes.shape[1] - 1,
                                        allow_unused=True)
            for i, g in enumerate(grads):
                if g is None:
                    raise ExplainError(f"{self._name(i)}: the class scores do not depend on "
                                       f"this layer; pick a layer before the classifier output")
            out.append([g.detach().float().cpu().numpy() for g in grads])
        return out

    def _shared_map(self, name, x, acts, grads, classes, size) -> np.ndarray:
        """The library's compute_cam_per_layer + aggregate_multi_layers, on our arrays."""
        cam_math: BaseCAM = self._math[name]
        per_layer = []
        for i, layer in enumerate(self.target_layers):
            cam = cam_math.get_cam_image(x, layer, _targets(classes), acts[i], grads[i],
                                         self.eigen_smooth)
            per_layer.append(scale_cam_image(np.maximum(cam, 0), size)[:, None, :])
        return cam_math.aggregate_multi_layers(per_layer)

    def _library_map(self, spec: MethodSpec, x, classes: np.ndarray) -> np.ndarray:
        """A method that needs passes of its own: the library's normal call, per slot."""
        slots = []
        for s in range(classes.shape[1]):
            np.random.seed(self.seed)
            torch.manual_seed(self.seed)
            cam = self._make(spec)
            try:
                kwargs = {"eigen_smooth": self.eigen_smooth}
                if "aug_smooth" in inspect.signature(cam.__call__).parameters:
                    kwargs["aug_smooth"] = self.aug_smooth
                slots.append(cam(input_tensor=x, targets=_targets(classes[:, s]), **kwargs))
            finally:
                handles = getattr(cam, "activations_and_grads", None) or \
                    getattr(getattr(cam, "base_cam", None), "activations_and_grads", None)
                if handles is not None:
                    handles.release()
        return np.stack(slots, axis=1).astype(np.float32)

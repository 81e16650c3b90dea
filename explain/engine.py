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
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from explain.config import MethodSpec
from explain.errors import ExplainError
from explain.methods import INSTANCE_OPTIONS, SHARED_PASS, registry
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
    # method -> (B, S): the map's maximum before scaling to 0..1 (after the ReLU, at feature
    # resolution, the largest over target layers); only for the shared-pass methods
    raw_max: dict[str, np.ndarray] = field(default_factory=dict)


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


def _targets(classes: np.ndarray) -> list[ClassifierOutputTarget]:
    return [ClassifierOutputTarget(int(c)) for c in classes]


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs, beyond model, layers, methods and device."""
    layer_names: Optional[list[str]] = None  # for error messages; default '#0', '#1', ...
    probe_layer: Optional[nn.Module] = None  # the channel-view layer, kept in BatchResult.probe
    aug_smooth: bool = False
    eigen_smooth: bool = False
    guard_inplace: bool = True  # see explain.model.non_inplace
    seed: int = 0  # for methods that draw random numbers; global generators are left as found


class CamEngine:
    """Explains batches with a fixed model, target layers and methods. Use as a context manager:
    on entry the model is moved to the device and made inplace-safe; on exit it is restored."""

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], methods: list[MethodSpec],
                 device: torch.device, options: EngineOptions = EngineOptions()):
        self.model = model
        self.target_layers = list(target_layers)
        self.options = options
        self.layer_names = options.layer_names or [f"#{i}" for i in range(len(target_layers))]
        probe = options.probe_layer
        self.hooked = self.target_layers + ([probe] if probe is not None and
                                            all(probe is not t for t in target_layers) else [])
        self.probe_index = None if probe is None else \
            next(i for i, layer in enumerate(self.hooked) if layer is probe)
        self.device = device
        self.shared = [m for m in methods if m.name in SHARED_PASS and not options.aug_smooth]
        self.separate = [m for m in methods if m not in self.shared]
        self.order = [m.name for m in methods]
        self.inplace_switched = 0
        self._math: dict[str, BaseCAM] = {}
        self._stack: Optional[contextlib.ExitStack] = None

    # ---- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> "CamEngine":
        stack = contextlib.ExitStack()
        home = next(self.model.parameters(), torch.empty(0)).device
        stack.callback(self.model.to, home)
        stack.enter_context(preserved_state(self.model))
        self.inplace_switched = stack.enter_context(non_inplace(self.model,
                                                                self.options.guard_inplace))
        self.model.to(self.device).eval()
        # Shared-pass methods only lend their per-method math: their hooks are removed at once.
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
        instance_opts = {k: options.pop(k) for k in INSTANCE_OPTIONS.get(spec.name, [])
                         if k in options}
        if isinstance(options.get("base_method"), str):
            options["base_method"] = registry()[options["base_method"].lower()]
        layers = [] if spec.name == "fullgrad" else self.target_layers
        cam = cls(self.model, layers, **options)
        for key, value in instance_opts.items():
            setattr(cam, key, value)
        return cam

    # ---- one batch ------------------------------------------------------------------------
    def outputs(self, x: torch.Tensor) -> int:
        """One forward pass with the hooks, before any work: checks that every hooked layer
        gives a feature map and that the model gives (N, classes) logits; returns classes."""
        logits, _ = self._forward(x.to(self.device))
        return int(logits.shape[1])

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
        maps, raw_max = {}, {}
        for m in self.shared:
            peaks: list[list[np.ndarray]] = [[] for _ in grads]
            maps[m.name] = np.stack([self._shared_map(m.name, x, acts_np, g, classes[:, s],
                                                      peaks=peaks[s])
                                     for s, g in enumerate(grads)], axis=1)
            raw_max[m.name] = np.stack([np.max(p, axis=0) for p in peaks], axis=1)
        for m in self.separate:
            maps[m.name] = self._library_map(m, x, classes)
        probe = None
        if self.probe_index is not None:
            probe = LayerPass(acts_np[self.probe_index], [g[self.probe_index] for g in grads])
        return BatchResult(out_np, classes, {k: maps[k] for k in self.order}, probe,
                           raw_max=raw_max)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        captured: list[Optional[torch.Tensor]] = [None] * len(self.hooked)

        def hook_for(i: int):
            def hook(module, inputs, output):
                if not isinstance(output, torch.Tensor):
                    raise ExplainError(f"{self._name(i)}: the layer outputs a "
                                       f"{type(output).__name__}, not a tensor; pick a layer "
                                       f"whose output is a feature map")
                if output.ndim != 4:
                    raise ExplainError(f"{self._name(i)}: the layer outputs shape "
                                       f"{tuple(output.shape)}, not a feature map (N, C, H, W); "
                                       f"pick a convolutional layer before the classifier")
                captured[i] = output
                # A copy goes downstream, so an inplace op there cannot change what we keep.
                return output.clone() if self.options.guard_inplace else None
            return hook

        handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(self.hooked)]
        try:
            with torch.enable_grad():
                logits = self.model(x.detach().requires_grad_(True))
        finally:
            for h in handles:
                h.remove()
        self._check_logits(logits, x.shape[0])
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

    def _shared_map(self, name, x, acts, grads, classes, *,
                    peaks: Optional[list] = None) -> np.ndarray:
        """The library's compute_cam_per_layer + aggregate_multi_layers, on our arrays.
        ``peaks`` gets each layer's per-image maximum before scaling."""
        size = (x.shape[-1], x.shape[-2])
        cam_math: BaseCAM = self._math[name]
        per_layer = []
        for i, layer in enumerate(self.target_layers):
            cam = cam_math.get_cam_image(x, layer, _targets(classes), acts[i], grads[i],
                                         self.options.eigen_smooth)
            positive = np.maximum(cam, 0)
            if peaks is not None:
                peaks.append(positive.reshape(len(positive), -1).max(axis=1))
            per_layer.append(scale_cam_image(positive, size)[:, None, :])
        return cam_math.aggregate_multi_layers(per_layer)

    def _library_map(self, spec: MethodSpec, x, classes: np.ndarray) -> np.ndarray:
        """A method that needs passes of its own: the library's normal call, per slot."""
        slots = []
        for s in range(classes.shape[1]):
            cam = self._make(spec)
            try:
                kwargs = {"eigen_smooth": self.options.eigen_smooth}
                if "aug_smooth" in inspect.signature(cam.__call__).parameters:
                    kwargs["aug_smooth"] = self.options.aug_smooth
                with seeded(self.options.seed), quiet_library_bars():
                    slots.append(cam(input_tensor=x, targets=_targets(classes[:, s]), **kwargs))
            finally:
                handles = getattr(cam, "activations_and_grads", None) or \
                    getattr(getattr(cam, "base_cam", None), "activations_and_grads", None)
                if handles is not None:
                    handles.release()
        return np.stack(slots, axis=1).astype(np.float32)

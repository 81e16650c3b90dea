"""The CAM engine: one forward pass per batch explains every class and every gradient method.

For each batch the engine runs the model once with forward hooks on the target layers, then,
per target slot (one class per image), takes ``torch.autograd.grad`` of the summed class
scores with respect to the hooked activations only: no parameter gradients, no second
forward. The pass is lean: the weights are frozen for it and each hooked output becomes a
leaf, so autograd records only what follows the layer (the network before it runs as in
inference: on the demo network 1.05-1.6x faster, depending on how quickly the allocator serves
the plain pass's memory, and 4.7x less memory held at 16 images of 224 x 448), with the same
gradients. The maps of the shared-pass methods (``shared_pass`` in explain.methods.TABLE:
GradCAM, LayerCAM, GradCAM++, ...) are then made from those arrays by the library's own
``get_cam_image``, ``scale_cam_image`` and ``aggregate_multi_layers``. Other methods (ScoreCAM,
FullGrad, EigenCAM, smoothing, ...) are called the library's normal way on the whole batch
with per-image targets; their table entries say what else the call needs.

Layers of any layout: a transformer's token sequence (B, prefix + h*w, C) or a channels-last
map (B, h, w, C) is seen as (B, C, h, w) through an ``explain.models.layouts.Layout``, applied to the
activations and to the gradients, the same object the library gets as ``reshape_transform``.
The score differentiated for a class comes from ``explain.models.heads.Head`` (softmax, binary or
multi-label; logit or probability), the same score as the library target it hands out.

Inplace safety: the hooks keep the layer's output and hand a copy downstream, so an inplace
activation after the layer cannot overwrite what was stored; inplace modules are also turned
off for the run so the library's own hooks (used by the other methods) are safe too.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn

from explain.config import MethodSpec
from explain.errors import ExplainError, first_line
from explain.models.heads import Head, not_logits
from explain.models.layouts import Layout, LayoutError, Mode, infer_layout, positions_reached
from explain.enginehelp import (ByShape, aggregate_layers, check_finite, check_output,  # noqa: F401
                                most_similar, quiet_library_bars, scale_maps, seeded)
from explain.methods import constructor_options, registry, set_instance_options, traits
from explain.models.guard import frozen, non_inplace, preserved_state
from explain import batching, precision
from explain.eigen import thin
from explain.sharedpasses import SlotPasses, sharing
from explain.enginedata import (BatchResult, LayerInfo, LayerPass, Probe,  # noqa: F401
                               map_slots, watching)


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs, beyond model, layers, methods and device."""
    layer_names: Optional[list[str]] = None  # for error messages; default '#0', '#1', ...
    probe_layer: Optional[nn.Module] = None  # the channel-view layer, kept in BatchResult.probe
    # layers only the preflight probe looks at (label, module): the concepts layer
    watch_layers: tuple[tuple[str, nn.Module], ...] = ()
    aug_smooth: bool = False
    eigen_smooth: bool = False
    guard_inplace: bool = True  # see explain.models.guard.non_inplace
    head: Head = Head()  # which score a map explains
    reshape: Mode = "auto"  # how layer outputs map to (B, C, h, w): explain.models.layouts
    seed: int = 0  # for methods that draw random numbers; global generators are left as found
    precision: str = "fp32"  # autocast of the forward passes: explain.precision
    # rows per pass (larger batches given to run are split): a number, 'auto' (explain.batching:
    # what fits memory_budget bytes, else the free memory), or None (as given)
    batch_size: Union[int, str, None] = None
    memory_budget: Optional[int] = None


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
        self.labels = [f"target_layers[{i}] '{name}'" for i, name in enumerate(self.layer_names)]
        self.labels += ["channels.layer"] * (len(self.hooked) - len(self.target_layers))
        self.watched = [(label, m) for label, m in options.watch_layers
                        if all(m is not h for h in self.hooked)]
        self.device = device
        # with the inplace guard off every method is the library's own call: its bug as it is
        # (on a CPU, activations the next inplace ReLU overwrote, gradients from before it)
        self.shared = [m for m in methods if traits(m.name).shared_pass and not options.aug_smooth
                       and options.guard_inplace]
        self.separate = [m for m in methods if m not in self.shared]
        self.order = [m.name for m in methods]
        self.inplace_switched = 0
        self.head = options.head
        self.named: list[int] = []  # class indices the config names (FinerCAM compares them)
        self.layouts: list[Layout] = []  # per hooked layer, from the last forward pass
        self.shapes: list[tuple[int, ...]] = []
        self._math: dict[str, BaseCAM] = {}
        self._params: list[nn.Parameter] = []
        self._autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.seconds: dict[str, float] = {}  # per method with passes of its own: time spent
        self.rows: Optional[int] = None  # rows per pass (options.batch_size, resolved)
        self._stack: Optional[contextlib.ExitStack] = None
        self._threads: Optional[ThreadPoolExecutor] = None  # the shared maps' math (_each)

    # ---- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> "CamEngine":
        if next(self.model.parameters(), None) is None:
            raise ExplainError("model: has no parameters (weights); the CAM methods need a "
                               "trained network")
        precision.check(self.options.precision, self.device)
        self._autocast = precision.autocast(self.options.precision, self.device)
        stack = contextlib.ExitStack()
        home = next(self.model.parameters(), torch.empty(0)).device
        stack.callback(self.model.to, home)
        stack.enter_context(preserved_state(self.model))
        self.inplace_switched = stack.enter_context(non_inplace(self.model,
                                                                self.options.guard_inplace))
        self.model.to(self.device).eval()
        self._params = list(self.model.parameters())
        # Shared-pass methods only lend their per-method math: their hooks are removed at once.
        for m in self.shared:
            cam = self._make(m)
            cam.activations_and_grads.release()
            self._math[m.name] = cam
        threads = min(torch.get_num_threads(), os.cpu_count() or 1)
        if threads > 1 and self.shared:
            self._threads = ThreadPoolExecutor(threads, thread_name_prefix="explain-math")
            stack.callback(self._threads.shutdown)
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        self._math, self._threads = {}, None
        if self._stack is not None:
            self._stack.close()

    def _make(self, spec: MethodSpec, cls: Optional[type] = None):
        cls, entry = cls or thin(registry()[spec.name]), traits(spec.name)  # (explain.eigen)
        options = constructor_options(spec)
        layers = self.target_layers if entry.target_layers else []
        n = len(self.target_layers)
        if any(layout.kind != "nchw" for layout in self.layouts[:n]):
            options["reshape_transform"] = ByShape(self.layouts[:n], self.shapes[:n])
            if entry.token_ablation:
                options["ablation_layer"] = self._ablation_layer(spec.name)
        cam = cls(self.model, layers, **options)
        if isinstance(cam, SlotPasses):  # per-channel passes: precision, inner batch
            cam.precision, cam.setting = self._autocast, f"methods.{spec.name}.batch_size"
            cam.memory_budget = self.options.memory_budget
        set_instance_options(cam, spec)
        return cam

    # ---- one batch ------------------------------------------------------------------------
    def _ablation_layer(self, method: str):
        from pytorch_grad_cam.ablation_layer import AblationLayerVit
        kinds = {layout.kind for layout in self.layouts[:len(self.target_layers)]}
        if kinds != {"tokens"}:
            raise ExplainError(f"{method}: the library ablates channels of (B, C, h, w) maps "
                               f"or of token sequences, not of channels-last layers; pick "
                               f"another method or layer")
        return AblationLayerVit()

    def probe(self, x: torch.Tensor) -> Probe:
        """The preflight pass, before any work: one forward pass of ``x`` (one image) with every
        layer the run hooks (target, channel and concepts layers), checking that each gives a
        map of a known layout and that the model gives (N, outputs) logits with a gradient.
        Returns the logits, each layer's shape, layout and channel count, and the pass's time."""
        x = x.to(self.device)
        t0 = time.perf_counter()
        logits, captured, layouts = self._forward(x, watch=True)
        seconds = time.perf_counter() - t0
        problem = self.head.check_outputs(int(logits.shape[1]))
        if problem:
            raise ExplainError(f"model.{problem}")
        if not logits.requires_grad:
            from explain.layers import NO_GRADIENT
            raise ExplainError(NO_GRADIENT)
        modules = self.hooked + [m for _, m in self.watched]
        labels = self.labels + [label for label, _ in self.watched]
        layers = [LayerInfo(label, module, tuple(int(n) for n in act.shape[1:]), layout)
                  for label, module, act, layout in zip(labels, modules, captured, layouts)]
        n = len(self.hooked)
        return Probe(logits.detach(), layers, seconds,
                     _blind(self.head.scores(logits), captured[:n], layouts[:n], self.labels))

    def run(self, x: torch.Tensor, targets, names: Mapping[int, str] | Sequence[int],
            top: int = 1) -> BatchResult:
        """Explain a batch. ``names``: the named classes (output index -> name; a list of
        indices names each by its number). ``targets``: class indices for every image (a
        list), per image (a (B, S) array; -1 = the image's most likely named class), or None
        for each image's ``top`` most likely named classes. Split in passes of ``rows``
        images (options.batch_size); a pass out of memory is tried again as two halves."""
        if not isinstance(names, Mapping):
            names = {int(i): str(i) for i in names}
        if self.rows is None and self.options.batch_size is not None:
            self.rows = batching.resolved(self.options.batch_size, lambda: self.row_bytes(x),
                                          self.device, self.options.memory_budget)
        rows = self.rows or len(x)

        def part(start: int, stop: int) -> BatchResult:
            picked = targets[start:stop] if isinstance(targets, np.ndarray) else targets
            return self._run(x[start:stop].to(self.device), picked, names, top)
        parts = []
        for i in range(0, len(x), rows):
            n = min(rows, len(x) - i)
            parts.append(batching.halving(lambda a, b: part(i + a, i + b), n, "batch_size",
                                          lambda found: batching.merged(found, names)))
        return batching.merged(parts, names)

    def row_bytes(self, x: torch.Tensor) -> int:
        """What one image of ``x`` costs this engine's pass (explain.batching.bytes_per_row:
        the lean pass records only from the target layers on)."""
        lean_at = self.hooked if self.options.guard_inplace else []
        return batching.bytes_per_row(self.model, x[:1].to(self.device), True, lean_at)

    def _run(self, x: torch.Tensor, targets, names: Mapping[int, str], top: int) -> BatchResult:
        """``run`` on one pass's rows."""
        named = sorted(names)
        self.named = named
        logits, acts, _ = self._forward(x)
        out_np = logits.detach().float().cpu().numpy()
        scores_np = self.head.ranking(logits.detach())
        if targets is None or isinstance(targets, np.ndarray):
            ranked = np.asarray(named)[np.argsort(-scores_np[:, named], axis=1, kind="stable")]
        if targets is None:
            classes = ranked[:, :top]
        elif isinstance(targets, np.ndarray):
            classes = np.where(targets < 0, ranked[:, :1], targets)
        else:
            classes = np.tile(np.asarray(targets), (x.shape[0], 1))
        grads = self._gradients(logits, acts, classes)
        acts_np = [layout(a.detach()).float().cpu().numpy() for layout, a in zip(self.layouts, acts)]
        del logits, acts
        maps, raw_max, peaks = {}, {}, {}
        for m in self.shared:  # each slot's maps made in place, a (method, slot) per job
            maps[m.name] = np.empty((len(x), len(grads), *x.shape[-2:]), np.float32)
            peaks[m.name] = [[] for _ in grads]

        def make(job: tuple[str, int]) -> None:
            name, s = job
            self._shared_map(name, x, acts_np, grads[s], classes[:, s], peaks=peaks[name][s],
                             out=maps[name][:, s])
        self._each(make, [(m.name, s) for m in self.shared for s in range(len(grads))])
        for m in self.shared:
            raw_max[m.name] = np.stack([np.max(p, axis=0) for p in peaks[m.name]], axis=1)
        for m in self.separate:
            t0 = time.perf_counter()
            maps[m.name] = self._library_map(m, x, classes, scores_np)
            self.seconds[m.name] = self.seconds.get(m.name, 0.0) + time.perf_counter() - t0
        probe = None
        if self.probe_index is not None:
            probe = LayerPass(acts_np[self.probe_index], [g[self.probe_index] for g in grads])
        ordered = {k: maps[k] for k in self.order}
        return BatchResult(out_np, classes, ordered, probe, raw_max=raw_max,
                           per_image=map_slots(classes, names, ordered),
                           activations=acts_np[:len(self.target_layers)])

    def _forward(self, x: torch.Tensor, watch: bool = False
                 ) -> tuple[torch.Tensor, list[torch.Tensor], list[Layout]]:
        """The model on ``x`` with the hooked layers (and, with ``watch``, the probe-only
        layers) captured: logits, each layer's output and layout (checked). The hooked
        layers' layouts and shapes are kept for the library calls of this batch."""
        modules = self.hooked + ([m for _, m in self.watched] if watch else [])
        labels = self.labels + [label for label, _ in self.watched]
        # Lean pass: only what follows the first hooked layer is recorded for autograd (the
        # weights are frozen for the pass and each hooked output that nothing recorded yet
        # becomes a leaf), so the network before the layer runs as in inference. Same
        # gradients; a model that gives no gradient this way gets the full pass.
        lean = self.options.guard_inplace
        logits, captured = self._pass(x, modules, labels, lean)
        if lean and isinstance(logits, torch.Tensor) and not logits.requires_grad:
            logits, captured = self._pass(x, modules, labels, False)
        if isinstance(logits, torch.Tensor) and logits.is_floating_point():
            logits = logits.float()  # scores and their gradients from fp32 logits
        self._check_logits(logits, x.shape[0])
        for i, act in enumerate(captured):
            if act is None:
                raise ExplainError(f"{labels[i]}: the layer is not used in the model's "
                                   f"forward pass; pick one that is (explain layers CONFIG)")
        for i, act in enumerate(captured):  # the earliest trouble first: layers, then outputs
            check_finite(act, f"{labels[i]}: NaN or infinite values in the layer's output")
        check_finite(logits, "model: NaN or infinite values in the outputs (logits)")
        layouts = []
        for i, act in enumerate(captured):
            try:
                layouts.append(infer_layout(act.shape, x.shape[-2:], self.options.reshape))
            except LayoutError as exc:
                raise ExplainError(f"{labels[i]}: {exc}") from None
        n = len(self.hooked)
        self.layouts = layouts[:n]
        self.shapes = [tuple(act.shape[1:]) for act in captured[:n]]
        return logits, captured, layouts

    def _pass(self, x: torch.Tensor, modules: list[nn.Module], labels: list[str], lean: bool
              ) -> tuple[Any, list[Optional[torch.Tensor]]]:
        """One forward pass with ``modules`` hooked: the model's output and theirs. (Not
        channels-last, though on a CPU it is up to 1.7x faster on some networks: its rounding
        moved XGradCAM maps of a small AlexNet 2e-4 away from the library's.)"""
        captured: list[Optional[torch.Tensor]] = [None] * len(modules)

        def keep(i: int, output: Any) -> Optional[torch.Tensor]:
            check_output(labels[i], output, captured[i] is not None)
            if lean and not output.requires_grad:
                output = output.detach().requires_grad_(True)
            captured[i] = output
            # A copy goes downstream, so an inplace op there cannot change what we keep.
            return output.clone() if self.options.guard_inplace else None

        with watching(modules, keep), torch.enable_grad(), self._autocast(), \
                frozen(self._params if lean else []):
            try:
                logits = self.model(x.detach() if lean else x.detach().requires_grad_(True))
            except ExplainError:
                raise
            except Exception as exc:
                if self.options.precision == "fp32" or batching.out_of_memory(exc):
                    raise
                raise precision.failed(self.options.precision, exc) from None
        return logits, captured

    def _check_logits(self, logits, batch: int) -> None:
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
            raise not_logits(logits)

    def _gradients(self, logits, acts, classes: np.ndarray) -> list[list[np.ndarray]]:
        """Per slot, d(sum_b score[b, class[b, s]]) / d(activations) for every hooked layer
        (``score``: the head's explained scores, ``Head.scores``)."""
        if not self.shared and self.probe_index is None:
            return [[] for _ in range(classes.shape[1])]
        out = []
        scores = self.head.scores(logits)
        for s in range(classes.shape[1]):
            index = torch.as_tensor(classes[:, s:s + 1], device=logits.device)
            score = scores.gather(1, index).sum()
            grads = torch.autograd.grad(score, acts, retain_graph=s < classes.shape[1] - 1,
                                        allow_unused=True)
            for i, g in enumerate(grads):
                if g is None:
                    raise ExplainError(f"{self.labels[i]}: the class scores do not depend on "
                                       f"this layer; pick a layer before the classifier output")
                check_finite(g, f"{self.labels[i]}: NaN or infinite values in the gradient of the "
                                f"class scores at the layer")
            out.append([layout(g.detach()).float().cpu().numpy()
                        for layout, g in zip(self.layouts, grads)])
        return out

    def _shared_map(self, name, x, acts, grads, classes, *, peaks: Optional[list] = None,
                    out: Optional[np.ndarray] = None) -> np.ndarray:
        """The library's compute_cam_per_layer + aggregate_multi_layers, on our arrays, into
        ``out`` when given. ``peaks`` gets each layer's per-image maximum before scaling."""
        size = (x.shape[-1], x.shape[-2])
        cam_math: BaseCAM = self._math[name]
        per_layer = []
        for i, layer in enumerate(self.target_layers):
            cam = cam_math.get_cam_image(x, layer, self._targets(classes), acts[i], grads[i],
                                         self.options.eigen_smooth)
            positive = np.maximum(cam, 0)
            if peaks is not None:
                peaks.append(positive.reshape(len(positive), -1).max(axis=1))
            # one layer: scaled straight into ``out`` (no full-size temporary: fresh pages
            # cost the kernel more than the arithmetic on them), aggregated there in place
            into = out if len(self.target_layers) == 1 else None
            per_layer.append(scale_maps(positive, size, out=into)[:, None, :])
        return aggregate_layers(cam_math, per_layer, out)

    def _each(self, fn: Callable[[Any], None], jobs: list) -> None:
        """``fn`` on every job: on the engine's threads while the model is idle (numpy and
        OpenCV release the GIL, and each job writes only its own slot: the same numbers as in
        order), in order without them. AlexNet, 5 methods x 2 classes, 16 images, 2 cores:
        26 -> 20 ms a batch."""
        if self._threads is None or len(jobs) < 2:
            for job in jobs:
                fn(job)
            return
        for _ in self._threads.map(fn, jobs):  # the first error is raised here
            pass

    def _targets(self, classes: np.ndarray) -> list:
        return [self.head.library_target(int(c)) for c in classes]

    def _finer_targets(self, spec: MethodSpec, classes: np.ndarray, scores: np.ndarray) -> list:
        """FinerCAM's targets: each class against the named classes the model scores most
        like it (``comparisons`` of them), weighted by their probability, ``alpha`` strong."""
        from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget
        if self.head.kind != "softmax" or self.head.target != "logit" or len(self.named) < 2:
            raise ExplainError(f"{spec.name}: compares a class's logit with its most similar "
                               f"classes' under a softmax head (model.head: softmax, "
                               f"model.target: logit) and needs at least two named classes")
        opts = spec.options
        return [FinerWeightedTarget(int(c), most_similar(scores[b], int(c), self.named,
                                                         opts.get("comparisons", 3)),
                                    opts.get("alpha", 1.0))
                for b, c in enumerate(classes)]

    def _library_map(self, spec: MethodSpec, x, classes: np.ndarray,
                     scores: np.ndarray) -> np.ndarray:
        """A method that needs passes of its own: the library's normal call, per slot; for
        ScoreCAM and AblationCAM one call for every slot, whose passes all slots share
        (explain.sharedpasses)."""
        # an engine that makes its library objects its own way (detection) calls them per slot
        shared = sharing(registry()[spec.name]) if type(self)._make is CamEngine._make else None
        if shared is not None and not traits(spec.name).comparison_targets:
            slots = [self._targets(classes[:, s]) for s in range(classes.shape[1])]
            return self._call_library(spec, lambda cam, kwargs: cam.slot_maps(
                x, slots, kwargs.get("aug_smooth", False), kwargs["eigen_smooth"]), shared)
        maps = []
        for s in range(classes.shape[1]):
            targets = self._finer_targets(spec, classes[:, s], scores) \
                if traits(spec.name).comparison_targets else self._targets(classes[:, s])
            maps.append(self._call_library(spec, lambda cam, kwargs: cam(
                input_tensor=x, targets=targets, **kwargs)))
        return np.stack(maps, axis=1).astype(np.float32)

    def _call_library(self, spec: MethodSpec, call: Callable, cls: Optional[type] = None
                      ) -> np.ndarray:
        """``call(cam, kwargs)`` on a fresh library object of the method (or of ``cls``),
        seeded and without progress bars; its hooks are released afterwards and a failure of
        the library is one line."""
        cam = self._make(spec) if cls is None else self._make(spec, cls)
        try:
            kwargs = {"eigen_smooth": self.options.eigen_smooth}
            if "aug_smooth" in inspect.signature(cam.__call__).parameters:
                kwargs["aug_smooth"] = self.options.aug_smooth
            with seeded(self.options.seed), quiet_library_bars():
                return np.asarray(call(cam, kwargs), dtype=np.float32)
        except ExplainError:
            raise
        except Exception as exc:  # the library cannot run this method on this model
            if batching.out_of_memory(exc):  # run() halves the batch
                raise
            text = first_line(exc)
            raise ExplainError(f"{spec.name}: the library failed on this model/layer "
                               f"({type(exc).__name__}: {text})") from None
        finally:
            handles = getattr(cam, "activations_and_grads", None) or \
                getattr(getattr(cam, "base_cam", None), "activations_and_grads", None)
            if handles is not None:
                try:
                    handles.release()
                except RuntimeError:  # the library's release fails on view gradients
                    for handle in handles.handles:
                        handle.remove()


def _blind(scores: torch.Tensor, acts: Sequence[torch.Tensor], layouts: Sequence[Layout],
           labels: Sequence[str]) -> list[str]:
    """The target layers where the first image's top score reaches fewer than 2 map positions
    (as ``explain layers`` marks 'zero grad': a ViT's final norm, read only through the class
    token): a gradient method's map there is blank, whatever the class. ``scores``: the
    head's explained scores, (N, classes) (a segmentation head's: a class's score map summed
    over its region, not one pixel's score). Empty when the gradient cannot be taken (the run
    says so later)."""
    try:
        grads = torch.autograd.grad(scores[0].max(), list(acts), allow_unused=True)
    except RuntimeError:
        return []
    return [label for label, g, layout in zip(labels, grads, layouts)
            if g is None or positions_reached(g, layout) < 2]

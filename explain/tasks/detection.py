"""task: detection. A detector returns, in eval mode, one ``{boxes, labels, scores}`` dict per
image (torchvision's Faster R-CNN, RetinaNet, FCOS, SSD, Mask R-CNN). Every detection of a
named class scoring at least ``detection.score_threshold`` (the ``max_boxes`` best per image)
is one target, explained by the library's own call with ``FasterRCNNBoxScoreTarget([label],
[box])``: the detections of the re-run that match the box (same label, IoU above
``detection.iou_threshold``) score their IoU plus their score.

A target layer may output a tensor (a backbone stage, an FPN level's convolution) or a dict
of feature maps (a detector's ``backbone`` with its FPN): those are merged as the library's
tutorial does, with ``fasterrcnn_reshape_transform`` (every level's absolute value resized to
the 'pool' level and stacked; levels without 'pool' are resized to the coarsest with at least
2 x 2 positions). The library takes gradients of tensor outputs only, so gradient methods
need a tensor layer; gradient-free EigenCAM, the default, works on either. A class-agnostic
method (EigenCAM) runs once per batch; the others once per detection slot.
"""

from __future__ import annotations

import time
from typing import Any, Container, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from explain.engine import CamEngine, LayerInfo, Probe, watching
from explain.eigen import thin
from explain.errors import ExplainError
from explain.layers import LayerRow, auto_layer
from explain.methods import constructor_options, registry, set_instance_options, traits
from explain.models.layouts import Layout, LayoutError, infer_layout
from explain.tasks.base import Task
from explain.models.heads import looks_like_detections
from explain.tasks.common import mismatch, output_part
from explain.tasks.records import DetectionNames
from explain.names import a_type

DETECTIONS = "a list with one {boxes, labels, scores} dict per image (a detector in eval mode)"
NO_CLASS_COUNT = 1_000_001  # a detector whose class count explain cannot read: no check


def check_detections(out: Any, batch: int, whole: Any = None) -> list:
    """``out`` when it is one detections dict per image, else the one-line mismatch."""
    if not (looks_like_detections(out) and len(out) == batch):
        raise mismatch("detection", DETECTIONS, out if whole is None else whole)
    for one in out:
        for key in ("boxes", "scores"):
            if not bool(torch.isfinite(one[key].detach()).all()):
                raise ExplainError(f"model: NaN or infinite detection {key}; the model's "
                                   f"weights (or what it computes) are not finite")
    return list(out)


class DetectorNet(nn.Module):
    """The user's detector, its forward checked to give one detections dict per image (the
    part ``model.output`` names, when set)."""

    def __init__(self, net: nn.Module, output: Union[int, str, None] = None):
        super().__init__()
        self.net = net
        self.output = output

    def forward(self, x: torch.Tensor) -> list:
        out = self.net(x)
        return check_detections(output_part(out, self.output), x.shape[0], out)


class DetectionHead:
    """The survey's score for a detector: the sum of every detection's score, per image."""
    kind = "detection"
    target = "box"

    def classes(self, outputs: int) -> int:
        return outputs

    def check_outputs(self, outputs: int) -> Optional[str]:
        return None

    def scores(self, detections: list) -> torch.Tensor:
        return torch.stack([one["scores"].sum() for one in detections])[:, None]


def class_count(net: nn.Module) -> Optional[int]:
    """How many classes a torchvision detector scores (background included), when it says."""
    predictor = getattr(getattr(net, "roi_heads", None), "box_predictor", None)
    score = getattr(predictor, "cls_score", None)
    if isinstance(score, nn.Linear):
        return int(score.out_features)
    head = getattr(getattr(net, "head", None), "classification_head", None)
    count = getattr(head, "num_classes", None)
    return int(count) if isinstance(count, int) else None


def fpn_levels(levels: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A dict of (B, C, h, w) feature maps as one (B, sum C, h, w) map: the library's
    fasterrcnn_reshape_transform when there is a 'pool' level; else the same merge onto the
    coarsest level with at least 4 positions."""
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform
    if "pool" in levels:
        return fasterrcnn_reshape_transform(levels)
    sizes = [tuple(v.shape[-2:]) for v in levels.values()]
    size = min([s for s in sizes if s[0] * s[1] >= 4] or sizes, key=lambda s: s[0] * s[1])
    return torch.cat([nn.functional.interpolate(torch.abs(v), size, mode="bilinear")
                      for v in levels.values()], dim=1)


def is_levels(out: Any, batch: int) -> bool:
    """A dict of floating (batch, C, h, w) tensors: a backbone's feature pyramid."""
    return isinstance(out, Mapping) and bool(out) and all(
        isinstance(v, torch.Tensor) and v.ndim == 4 and v.shape[0] == batch
        and v.is_floating_point() for v in out.values())


class Reshape:
    """The reshape_transform of a detection run's target layers: feature pyramids merged by
    ``fpn_levels``, tensors through the layout the probe found for their shape."""

    def __init__(self, by_shape: dict[tuple[int, ...], Layout]):
        self.by_shape = by_shape

    def __call__(self, out: Any) -> torch.Tensor:
        if isinstance(out, Mapping):
            return fpn_levels(out)
        return self.by_shape.get(tuple(out.shape[1:]), Layout("nchw"))(out)


class DetectionEngine(CamEngine):
    """Detections, then every method through the library's own call with one
    FasterRCNNBoxScoreTarget per detection (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        methods = {m.name: m for m in self.shared + self.separate}
        self.separate = [methods[name] for name in self.order]
        self.shared = []
        self.iou = 0.5
        self.transform: Optional[Reshape] = None
        self.pyramids: list[bool] = []  # per target layer: its output is a dict of maps
        self.found: list[list[tuple[np.ndarray, int]]] = []

    def probe(self, x: torch.Tensor) -> Probe:
        """One forward pass with the target layers watched: each must give a feature map or
        a dict of them, once; the model must give detections; a gradient method needs tensor
        layers. The probe's logits are zeros of the detector's class count (for the class
        index check)."""
        x = x.to(self.device)
        seen: list[list[Any]] = [[] for _ in self.hooked]
        t0 = time.perf_counter()
        with watching(self.hooked, lambda i, out: seen[i].append(out)), torch.no_grad():
            self.model(x)
        seconds = time.perf_counter() - t0
        layers, by_shape, self.pyramids = [], {}, []
        for label, module, outs in zip(self.labels, self.hooked, seen):
            out = _once(label, outs)
            self.pyramids.append(is_levels(out, x.shape[0]))
            if self.pyramids[-1]:
                layers.append(LayerInfo(label, module, tuple(fpn_levels(out).shape[1:]),
                                        Layout("nchw")))
                continue
            layout = self._layout(label, out, x)
            by_shape.setdefault(tuple(out.shape[1:]), layout)
            layers.append(LayerInfo(label, module, tuple(out.shape[1:]), layout))
        self.transform = Reshape(by_shape)
        for spec in self.separate:  # a gradient method on a dict layer: one line, now
            try:
                _release(self._make(spec))
            except ExplainError:
                raise
            except Exception as exc:  # the library cannot build it on this model
                raise ExplainError(f"{spec.name}: the library cannot run it on this model "
                                   f"({type(exc).__name__}: {str(exc)[:160]})") from None
        count = class_count(self.model.net) or NO_CLASS_COUNT
        return Probe(torch.zeros(1, count), layers, seconds)

    def _layout(self, label: str, out: Any, x: torch.Tensor) -> Layout:
        if not isinstance(out, torch.Tensor) or out.ndim not in (3, 4):
            raise ExplainError(f"{label}: the layer outputs {_what(out)}, not a feature map "
                               f"or a dict of feature maps; pick another (explain layers "
                               f"CONFIG)")
        try:
            return infer_layout(out.shape, x.shape[-2:], self.options.reshape)
        except LayoutError as exc:
            raise ExplainError(f"{label}: {exc}") from None

    def detect(self, x: torch.Tensor) -> list[dict[str, np.ndarray]]:
        """The detector's boxes, labels and scores per image (no gradient)."""
        with torch.no_grad():
            out = self.model(x.to(self.device))
        return [{k: one[k].detach().float().cpu().numpy() if k != "labels" else
                 one[k].detach().cpu().numpy().astype(np.int64)
                 for k in ("boxes", "labels", "scores")} for one in out]

    def explain(self, x: torch.Tensor, found: list[list[tuple[np.ndarray, int]]]
                ) -> dict[str, np.ndarray]:
        """Method -> (B, S, H, W) maps, slot s of image b explaining its detection
        ``found[b][s]`` ((box, label)); slots an image lacks are left zero."""
        x = x.to(self.device)
        self.found = found
        slots = max((len(f) for f in found), default=0)
        rows = np.full((len(found), slots), -1, dtype=np.int64)
        for b, boxes in enumerate(found):
            rows[b, :len(boxes)] = np.arange(len(boxes))
        maps = {}
        for spec in self.separate:
            if not slots:
                maps[spec.name] = np.zeros((len(found), 0, *x.shape[-2:]), np.float32)
            elif traits(spec.name).class_agnostic:  # one call: the map ignores the target
                maps[spec.name] = np.repeat(self._library_map(spec, x, rows[:, :1], None),
                                            slots, axis=1)
            else:
                maps[spec.name] = self._library_map(spec, x, rows, None)
        return maps

    def _targets(self, column: np.ndarray) -> list:
        from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
        targets = []
        for b, j in enumerate(column):
            box, label = self.found[b][j] if j >= 0 else (None, None)
            targets.append(FasterRCNNBoxScoreTarget([] if box is None else [label],
                                                    [] if box is None else [box], self.iou))
        return targets

    def _make(self, spec: Any) -> Any:
        """The library's method object on the target layers, with the detection reshape; a
        method that takes gradients at a layer whose output is a dict is one line."""
        entry = traits(spec.name)
        if self.transform is None:
            raise ExplainError("detection: the engine was used before its preflight pass")
        cam = thin(registry()[spec.name])(  # EigenCAM by a thin SVD (explain.eigen)
            self.model, self.target_layers if entry.target_layers else [],
            reshape_transform=self.transform, **constructor_options(spec))
        set_instance_options(cam, spec)
        pyramid = next((label for label, p in zip(self.labels, self.pyramids) if p), None)
        if pyramid and getattr(cam, "uses_gradients", True):
            _release(cam)
            raise ExplainError(
                f"methods: {spec.name}: needs the gradient at {pyramid}, whose output is a "
                f"dict of feature maps; the library takes gradients of tensor outputs only: use "
                f"eigencam there, or name a tensor layer for {spec.name}, such as "
                f"{_tensor_level(self.model.net)}")
        return cam


def _tensor_level(net: nn.Module) -> str:
    """A layer a gradient method can use in a detector: its finest FPN level's convolution
    (torchvision's, 'backbone.fpn.layer_blocks.0', with the option that names it), or words."""
    name = next((n for n, _ in net.named_modules() if n.endswith("fpn.layer_blocks.0")), None)
    return f"'{name}' (--layer {name}; explain layers CONFIG lists the others)" if name else \
        "one FPN level's convolution (explain layers CONFIG lists them)"


def _release(cam: Any) -> None:
    """Remove the hooks a library method object put on the model."""
    handles = getattr(cam, "activations_and_grads", None)
    if handles is not None:
        for handle in handles.handles:
            handle.remove()
        handles.handles.clear()


def _once(label: str, outs: list) -> Any:
    """The one output a watched layer gave in the pass; one line when it ran 0 or 2+ times."""
    if not outs:
        raise ExplainError(f"{label}: the layer is not used in the model's forward pass; "
                           f"pick one that is (explain layers CONFIG)")
    if len(outs) > 1:
        raise ExplainError(f"{label}: the layer runs {len(outs)} times in one forward pass "
                           f"(once per feature level?), so it has no single output to "
                           f"explain; name a layer that runs once (explain layers CONFIG)")
    return outs[0]


def _what(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"shape {tuple(out.shape)}"
    return a_type(out)


def pyramid_layers(net: nn.Module, model: nn.Module, x: torch.Tensor) -> list[tuple[str, Any]]:
    """(name, output) of every module whose output is a dict of feature maps (explain.layers'
    survey cannot read those), one per output object (the outermost module that returned
    it), in the order the outputs were made."""
    from explain.engine import watching
    named = [(n, m) for n, m in net.named_modules() if n]
    made: dict[int, list] = {}  # id(output) -> [first firing, output, names]
    order = [0]

    def record(i: int, out: Any) -> None:
        order[0] += 1
        if is_levels(out, x.shape[0]):
            made.setdefault(id(out), [order[0], out, []])[2].append(named[i][0])

    with watching([m for _, m in named], record), torch.no_grad():
        model(x)
    found = sorted(made.values(), key=lambda entry: entry[0])
    return [(min(names, key=lambda n: (n.count("."), len(n))), out) for _, out, names in found]


class DetectionTask(Task):
    name = "detection"
    engine_class = DetectionEngine

    def wrap(self, net: nn.Module) -> tuple[nn.Module, DetectionHead]:
        return DetectorNet(net, self.cfg.model.output), DetectionHead()

    def auto_layer(self, net: nn.Module, model: nn.Module, x: torch.Tensor,
                   rows: list[LayerRow]) -> LayerRow:
        """The last feature pyramid (a detector's ``backbone``), as the library's tutorial
        explains Faster R-CNN; without one, the last usable layer. Pyramid rows get a note
        for ``explain layers``."""
        pyramids = pyramid_layers(net, model, x)
        by_name = {row.name: row for row in rows}
        for name, out in pyramids:
            merged = tuple(fpn_levels(out).shape[1:])
            row = by_name[name]
            row.note = f"pyramid {len(out)} levels -> {merged[0]}x{merged[1]}x{merged[2]}"
            row.output = f"dict of {len(out)} maps"
        if not pyramids:
            return auto_layer(rows)
        return by_name[pyramids[-1][0]]

    def record_names(self, plan: Any) -> Container[str]:
        return DetectionNames(set(plan.classes.values()))

    def explain_batch(self, ctx: Any, engine: DetectionEngine, group: list) -> Any:
        from explain.tasks.boxes import explain_boxes
        return explain_boxes(self.cfg, ctx, engine, group)

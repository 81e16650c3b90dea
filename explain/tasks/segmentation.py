"""task: segmentation. A model returns (N, classes, H, W) score maps; a map explains one class
over one region: the pixels the model predicts as that class (``segmentation.region:
predicted``, the default) or the class's pixels in the image's ground-truth label map
(``region: label``). The score is the library's ``SemanticSegmentationTarget(class, region)``:
the class's scores summed over the region.

The engine's shared pass serves the gradient methods (``RegionHead.scores`` is that sum for
every class at once, with the region fixed from the same forward pass, so its gradients are
the target's); every other method gets ``SemanticSegmentationTarget`` objects for the
library's own call. A class whose region is empty in an image is not kept for that image (its
map would be blank); the image's record lists it.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from explain import measures
from explain.engine import CamEngine
from explain.errors import ExplainError, model_failed
from explain.layers import LayerRow, auto_layer
from explain.results import ImageEntry, MapRecord
from explain.tasks.base import Task
from explain.measures import peak_inside
from explain.tasks.common import mismatch, output_part, share_inside, thresholded_iou
from explain.tasks.masks import read_truth, to_size
from explain.tasks.records import UNNAMED_VALUES, RegionNumbers, SegmentationImage

SCORE_MAPS = "(N, classes, H, W) score maps"


def check_score_maps(maps: Any, batch: int, out: Any = None) -> torch.Tensor:
    """``maps`` when it is a (batch, classes, H, W) float tensor, else the one-line mismatch
    (naming ``out``, the whole of what forward returned, when given)."""
    if not (isinstance(maps, torch.Tensor) and maps.ndim == 4 and maps.shape[0] == batch
            and maps.is_floating_point()):
        raise mismatch("segmentation", SCORE_MAPS, maps if out is None else out)
    return maps


class SegmentationNet(nn.Module):
    """The user's network with a forward giving (N, classes, H, W) score maps: the part
    ``model.output`` names (torchvision's models: ``out``), checked."""

    def __init__(self, net: nn.Module, output: Union[int, str, None] = None):
        super().__init__()
        self.net = net
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return check_score_maps(output_part(out, self.output), x.shape[0], out)


class RegionHead:
    """The head of a segmentation run: class c's score is its score map summed over its
    region (SemanticSegmentationTarget's score), for every class at once. ``truth``: the
    batch's ground-truth label maps, (B, H, W) integers, set by the task for region: label;
    None: each class's region is where the model predicts it (argmax, no gradient)."""
    kind = "segmentation"
    target = "region"

    def __init__(self) -> None:
        self.truth: Optional[torch.Tensor] = None

    def classes(self, outputs: int) -> int:
        return outputs

    def check_outputs(self, outputs: int) -> Optional[str]:
        return None

    def regions(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, h, w) class index per pixel at the maps' size: the truth (resized nearest
        when the maps are smaller) or the prediction."""
        if self.truth is None:
            return maps.detach().argmax(1)
        truth = self.truth.to(maps.device)
        if tuple(truth.shape[-2:]) != tuple(maps.shape[-2:]):
            truth = nn.functional.interpolate(truth[:, None].float(), size=maps.shape[-2:],
                                              mode="nearest")[:, 0].long()
        return truth

    def scores(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, classes): each class's scores summed over its region (differentiable); -inf
        for a class without a pixel in its region (nothing to explain: its map is not kept,
        and the layer survey's top class is one the model predicts somewhere)."""
        regions = self.regions(maps)
        index = torch.arange(maps.shape[1], device=maps.device)[None, :, None, None]
        inside = (regions[:, None] == index).to(maps.dtype)
        sums = (maps * inside).sum(dim=(2, 3))
        return torch.where(inside.sum(dim=(2, 3)) > 0, sums, sums.new_tensor(float("-inf")))

    def ranking(self, maps: torch.Tensor) -> np.ndarray:
        """(B, classes): each class's share of the pixels the model predicts as it (ranks
        'predicted', 'top<K>': the model's classes, also where region: label explains them
        over the ground truth's pixels; the image's 'predicted' is the same class)."""
        regions = maps.detach().argmax(1)
        index = torch.arange(maps.shape[1], device=maps.device)[None, :, None, None]
        return (regions[:, None] == index).float().mean(dim=(2, 3)).cpu().numpy()


class SegmentationEngine(CamEngine):
    """The engine on score maps: the shared pass differentiates RegionHead's scores; the
    library's own calls get SemanticSegmentationTarget(class, region) per image, with the
    regions of this batch's pass (``regions``, (B, h, w) at the maps' size)."""

    regions: Optional[np.ndarray] = None

    def _check_logits(self, logits: Any, batch: int) -> None:
        check_score_maps(logits, batch)

    def _forward(self, x: torch.Tensor, watch: bool = False):
        logits, captured, layouts = super()._forward(x, watch)
        self.regions = self.head.regions(logits).cpu().numpy()
        return logits, captured, layouts

    def _targets(self, classes: np.ndarray) -> list:
        from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
        return [SemanticSegmentationTarget(int(c), (self.regions[b] == int(c)).astype(np.float32))
                for b, c in enumerate(classes)]


class SegmentationTask(Task):
    name = "segmentation"
    engine_class = SegmentationEngine

    def wrap(self, net: nn.Module) -> tuple[nn.Module, RegionHead]:
        return SegmentationNet(net, self.cfg.model.output), RegionHead()

    def auto_layer(self, net: nn.Module, model: nn.Module, x: torch.Tensor,
                   rows: list[LayerRow]) -> LayerRow:
        """The last usable layer before the score maps: layers with as many channels as the
        model has classes (the classifier convolutions and their sum) count as the head."""
        with torch.no_grad():
            count = int(model(x).shape[1])
        return auto_layer(rows, skip=lambda row: row.layout.channels(row.shape) == count)

    def explain_batch(self, ctx: Any, engine: SegmentationEngine, group: list) -> Any:
        from explain.batches import TaskBatch
        plan, spec = ctx.plan, self.cfg.segmentation
        t0 = time.perf_counter()
        x = torch.stack([item.tensor for item in group])
        truths = [read_truth(self.cfg, item) for item in group]
        if spec.region == "label":
            engine.head.truth = torch.as_tensor(np.stack(truths)).long()
        try:
            result = engine.run(x, plan.targets([item.ref for item in group]),
                                dict(plan.classes), self.cfg.top_k())
            # every row's regions (engine.regions holds the last pass's: out of memory, the
            # batch ran as two halves)
            targets = engine.head.regions(torch.from_numpy(result.logits)).numpy()
        except ExplainError:
            raise
        except Exception as exc:  # the model's own code failed on this batch: one line
            raise model_failed(exc, ", ".join(item.ref.id for item in group[:3]),
                               size=x.shape[-2:]) from None
        finally:
            engine.head.truth = None
        ctx.summary.durations_s["cams"] += time.perf_counter() - t0
        size = tuple(x.shape[-2:])
        labels = [to_size(result.logits[b].argmax(0), size) for b in range(len(group))]
        views = [self._view(ctx, result, b, (item, labels[b], truths[b]), targets[b])
                 for b, item in enumerate(group)]
        return TaskBatch(x, result, views, labels=labels, truths=truths)

    def _view(self, ctx: Any, result: Any, b: int, seen: tuple, target: np.ndarray) -> Any:
        """One image's entry and kept maps; ``seen``: (the decoded image, its predicted label
        map and ground truth at input size); ``target``: the region map the targets used."""
        from explain.batches import ImageView
        item, labels, truth = seen
        plan, spec = ctx.plan, self.cfg.segmentation
        shares = {name: round(float((labels == idx).mean()), 6)
                  for idx, name in sorted(plan.classes.items())}
        best = max(sorted(plan.classes), key=lambda i: shares[plan.classes[i]])
        entry = ImageEntry(id=item.ref.id, path=str(item.ref.path),
                           input_size=[int(labels.shape[0]), int(labels.shape[1])],
                           probabilities=shares, predicted=plan.classes[best],
                           segmentation=unnamed_pixels(truth, result.logits.shape[1]))
        regions = truth if spec.region == "label" else labels
        kept = []
        for one in result.per_image[b]:
            region = regions == one.class_index
            if not region.any():
                if one.class_name not in entry.segmentation.absent:
                    entry.segmentation.absent.append(one.class_name)
                continue
            score = float((result.logits[b, one.class_index] * (target == one.class_index)).sum())
            one.record = self._record(ctx, entry, one, (region, labels, truth))
            one.record.segment.score = round(score, 6)
            raw = result.raw_max.get(one.method)
            one.record.raw_max = None if raw is None else \
                measures.significant(float(raw[b, one.slot]))
            entry.cams.append(one.record)
            kept.append(one)
        return ImageView(item, entry, b, kept)

    def _record(self, ctx: Any, entry: ImageEntry, one: Any, masks: tuple) -> MapRecord:
        """A kept map's record: its numbers against its region and the ground truth."""
        region, labels, truth = masks
        cam, c = one.cam, one.class_index
        numbers = RegionNumbers(region=self.cfg.segmentation.region,
                                region_pixels=int(region.sum()),
                                region_share=round(float(region.mean()), 6),
                                predicted_share=round(float((labels == c).mean()), 6),
                                score=0.0, energy_in_region=share_inside(cam, region))
        mask = None if truth is None else truth == c
        if mask is not None and mask.any():  # no numbers against an empty ground truth
            numbers.energy_in_mask = share_inside(cam, mask)
            numbers.mask_iou = thresholded_iou(cam, mask, self.cfg.segmentation.threshold)
            numbers.pointing_hit = peak_inside(cam, mask)
        return MapRecord(class_name=one.class_name, method=one.method,
                         file=f"cams/{one.method}/{entry.id}__{one.class_name}{ctx.ext}",
                         segment=numbers, **measures.map_stats(cam))


def unnamed_pixels(truth: Optional[np.ndarray], count: int) -> SegmentationImage:
    """An image's segmentation record so far: whether it has a ground truth, and the share and
    first values of its pixels that are no index of the model's ``count`` classes (VOC's 255
    border: in no class's mask, said in a note)."""
    if truth is None:
        return SegmentationImage()
    outside = (truth < 0) | (truth >= count)
    if not outside.any():
        return SegmentationImage(truth=True)
    values = np.unique(truth[outside])[:UNNAMED_VALUES]
    return SegmentationImage(truth=True, unnamed=max(round(float(outside.mean()), 6), 1e-6),
                             unnamed_values=[int(v) for v in values])

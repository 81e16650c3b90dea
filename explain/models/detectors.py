"""The bound on what a torchvision detector does after its backbone, read from its own
settings before any pass: the first pass on the meta device (explain.models.guard) stops at
the detector's first data-dependent operation (``nonzero`` in the RPN's box filter), so the
proposals, RoI pooling, per-class boxes, NMS and pasted masks after it were never sized.
Those are set by the builders' arguments (``rpn_post_nms_top_n_test``, ``num_classes``,
``box_detections_per_img``, ``topk_candidates``) or, in a pickled detector, by the same
attributes edited before saving (``rpn._post_nms_top_n``, a ``mask_roi_pool``'s
``output_size``): a 1 KB config of ``rpn_post_nms_top_n_test: 1000000000`` asked a ResNet-50
FPN for over 4 GB at 512 px, ``num_classes: 20000`` with ``box_score_thresh: 0`` ran past
200 s of CPU on 20 million class boxes. torchvision's defaults are far inside every bound."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch import nn

MAX_PROPOSALS = 10_000  # RPN proposals per level before NMS, and kept after it (default 1,000)
MAX_CANDIDATES = 10_000  # RetinaNet / FCOS / SSD candidates per level or class (default 1,000)
MAX_DETECTIONS = 1_000  # detections per image (default 100; 300 RetinaNet)
MAX_CLASS_BOXES = 2_000_000  # boxes scored per image: proposals x classes (1,000 x 91 COCO)
MAX_POOL_SIDE = 64  # a RoI pooler's output side (7 boxes, 14 masks)
MAX_SAMPLING = 16  # RoIAlign's sampling_ratio (2; 0: adaptive)
MASK_COPIES = 2  # masks pasted at the image's size, then stacked


def detector_problem(model: nn.Module, x: torch.Tensor, limit: int) -> Optional[str]:
    """What in a torchvision detector's settings (see the module) asks for too much on the
    input ``x``, in words naming the builder argument; None when all is within bounds."""
    for problem in _problems(model, x, limit):
        return problem
    return None


def _problems(model: nn.Module, x: torch.Tensor, limit: int) -> Iterator[str]:
    from torchvision.models.detection import fcos, retinanet, roi_heads, rpn, ssd
    from torchvision import ops
    proposals = 0
    for module in model.modules():
        if isinstance(module, rpn.RegionProposalNetwork):
            for key, arg in (("_pre_nms_top_n", "rpn_pre_nms_top_n_test"),
                             ("_post_nms_top_n", "rpn_post_nms_top_n_test")):
                yield from _over(_testing(module, key), MAX_PROPOSALS, f"{arg} (rpn.{key})",
                                 "proposals")
            proposals = max(proposals, _testing(module, "_post_nms_top_n"))
        elif isinstance(module, (retinanet.RetinaNet, fcos.FCOS, ssd.SSD)):
            yield from _over(module.topk_candidates, MAX_CANDIDATES, "topk_candidates",
                             "candidates")
            yield from _over(module.detections_per_img, MAX_DETECTIONS, "detections_per_img",
                             "detections")
            if isinstance(module, ssd.SSD):
                yield from _class_boxes(module.topk_candidates, _ssd_classes(module),
                                        "topk_candidates")
        elif isinstance(module, (ops.MultiScaleRoIAlign, ops.RoIAlign, ops.RoIPool)):
            yield from _pooler(module)
    for module in model.modules():
        if isinstance(module, roi_heads.RoIHeads):
            yield from _over(module.detections_per_img, MAX_DETECTIONS,
                             "box_detections_per_img (roi_heads.detections_per_img)",
                             "detections")
            yield from _class_boxes(proposals, _rcnn_classes(module), "rpn_post_nms_top_n_test")
            if module.has_mask():
                yield from _masks(module.detections_per_img, x, limit)


def _testing(module: nn.Module, key: str) -> Any:
    """An RPN's setting for eval mode (a dict of 'training' and 'testing')."""
    value = getattr(module, key, None)
    return value.get("testing") if isinstance(value, dict) else value


def _over(value: Any, bound: int, name: str, what: str) -> Iterator[str]:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bound:
        yield (f"its detector's {name} = {value!r} {what} is not a whole number from 0 to "
               f"{bound:,} (torchvision's default is far below)")


def _class_boxes(candidates: int, classes: int, arg: str) -> Iterator[str]:
    if candidates * classes > MAX_CLASS_BOXES:
        yield (f"its detector scores {candidates:,} boxes ({arg}) x {classes:,} classes "
               f"(num_classes) = {candidates * classes:,} per image, over {MAX_CLASS_BOXES:,}")


def _rcnn_classes(heads: nn.Module) -> int:
    score = getattr(getattr(heads, "box_predictor", None), "cls_score", None)
    return int(score.out_features) if isinstance(score, nn.Linear) else 1


def _ssd_classes(model: nn.Module) -> int:
    head = getattr(getattr(model, "head", None), "classification_head", None)
    count = getattr(head, "num_columns", 1)
    return count if isinstance(count, int) else 1


def _pooler(module: nn.Module) -> Iterator[str]:
    size = module.output_size
    sides = list(size) if isinstance(size, (tuple, list)) else [size]
    if not sides or any(isinstance(s, bool) or not isinstance(s, int)
                        or not 0 < s <= MAX_POOL_SIDE for s in sides):
        yield (f"its detector's {type(module).__name__} output_size {size!r} is not 1 to "
               f"{MAX_POOL_SIDE} a side (torchvision's: 7 for boxes, 14 for masks)")
    ratio = getattr(module, "sampling_ratio", 0)
    if isinstance(ratio, bool) or not isinstance(ratio, int) or not -1 <= ratio <= MAX_SAMPLING:
        yield (f"its detector's {type(module).__name__} sampling_ratio {ratio!r} is not "
               f"-1 to {MAX_SAMPLING} (torchvision's: 2)")


def _masks(detections: int, x: torch.Tensor, limit: int) -> Iterator[str]:
    """Mask R-CNN pastes every detection's mask at the input's size."""
    size = MASK_COPIES * 4 * len(x) * detections * x.shape[-2] * x.shape[-1]
    if size > limit:
        yield (f"its detector pastes {detections:,} masks (box_detections_per_img) at "
               f"{x.shape[-2]} x {x.shape[-1]} px for {len(x)} image(s), "
               f"{size / 2**30:.1f} GiB, over half the free memory")

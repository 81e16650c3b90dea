"""The nineteenth attack (a helper's findings): what a torchvision detector does after its
backbone. The first pass on the meta device stops at the detector's first data-dependent
operation (``nonzero`` in the RPN), so its proposals, RoI pooling, class boxes and masks were
never sized: a builder's arguments or a pickled detector's edited attributes asked for
gigabytes and minutes (explain.models.detectors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explain.errors import ExplainError
from explain.models.detectors import detector_problem
from explain.models.factories import make_model
from explain.models.guard import forward_size_problem

DETECTION = "torchvision.models.detection."
X = torch.rand(1, 3, 64, 64)
LIMIT = 2**30


def _built(arch: str, **args) -> nn.Module:
    return make_model(DETECTION + arch, args, "model.arch", False).eval()


def _tiny_rcnn(**args) -> nn.Module:
    """A Faster R-CNN of one 8-channel convolution: a 2 MB file."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign
    backbone = nn.Conv2d(3, 8, 3, stride=16)
    return FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64,
                      rpn_anchor_generator=AnchorGenerator(((32,),), ((1.0,),)),
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), **args).eval()


def test_builder_arguments_past_the_backbone_are_bounded():
    """``rpn_post_nms_top_n_test: 1000000000`` (and no NMS) had a ResNet-50 FPN's RoI
    pooling ask for over 4 GB at 512 px; ``num_classes: 20000`` with ``box_score_thresh: 0``
    ran past 200 s of CPU on 20 million class boxes; ``topk_candidates`` and the detections
    likewise. The meta pass answered None for all of them (it stops at the RPN's nonzero)."""
    net = _built("fasterrcnn_mobilenet_v3_large_fpn", num_classes=3,
                 rpn_post_nms_top_n_test=10**9)
    assert forward_size_problem(net, X, LIMIT) == (
        "its detector's rpn_post_nms_top_n_test (rpn._post_nms_top_n) = 1000000000 proposals "
        "is not a whole number from 0 to 10,000 (torchvision's default is far below)")
    net = _built("fasterrcnn_mobilenet_v3_large_fpn", num_classes=20000, box_score_thresh=0.0)
    assert detector_problem(net, X, LIMIT) == (
        "its detector scores 1,000 boxes (rpn_post_nms_top_n_test) x 20,000 classes "
        "(num_classes) = 20,000,000 per image, over 2,000,000")
    net = _built("fcos_resnet50_fpn", num_classes=3, topk_candidates=10**6)
    assert "topk_candidates = 1000000 candidates" in detector_problem(net, X, LIMIT)
    net = _built("ssdlite320_mobilenet_v3_large", num_classes=3, detections_per_img=10**6)
    assert "detections_per_img = 1000000 detections" in detector_problem(net, X, LIMIT)


def test_torchvision_defaults_pass():
    """Every allow-listed detector at torchvision's own settings (min_size 800, 1,000
    proposals, 100 to 300 detections, 91 classes) is within every bound."""
    for arch in ("fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn",
                 "fcos_resnet50_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large",
                 "maskrcnn_resnet50_fpn"):
        with torch.device("meta"):
            net = make_model(DETECTION + arch, {}, "model.arch", True)
        assert detector_problem(net, torch.rand(2, 3, 800, 1333), 2**31) is None, arch


def test_a_pickled_detector_with_edited_settings_is_refused(tmp_path):
    """A whole detector saved after its settings were edited: the proposals kept, a mask
    pooler's output side (each detection's mask features 256 x side x side) and its
    sampling ratio are read from the file's modules, as the builder's arguments are."""
    from explain.models.pickles import safe_load
    from torchvision.ops import MultiScaleRoIAlign
    net = _tiny_rcnn()
    net.rpn._post_nms_top_n = {"training": 2000, "testing": 10**8}
    path = tmp_path / "detector.pth"
    torch.save(net, path)
    loaded = safe_load(path)
    assert "rpn._post_nms_top_n) = 100000000 proposals" in forward_size_problem(loaded, X, LIMIT)
    assert forward_size_problem(_tiny_rcnn(), X, LIMIT) is None
    net = _tiny_rcnn()
    net.roi_heads.box_roi_pool = MultiScaleRoIAlign(["0"], 700, 2)
    assert "MultiScaleRoIAlign output_size (700, 700) is not 1 to 64" in \
        detector_problem(net, X, LIMIT)
    net.roi_heads.box_roi_pool = MultiScaleRoIAlign(["0"], 7, 10**6)
    assert "sampling_ratio 1000000 is not -1 to 16" in detector_problem(net, X, LIMIT)


def test_mask_rcnn_masks_pasted_at_the_input_size_are_bounded():
    """Mask R-CNN pastes each detection's mask at the input's size: 1,000 detections at
    4096 px are 128 GiB; 100 at 128 px are nothing."""
    with torch.device("meta"):
        net = _built("maskrcnn_resnet50_fpn", num_classes=3, box_detections_per_img=1000)
    big = torch.empty(1, 3, 4096, 4096, device="meta")
    assert detector_problem(net, big, LIMIT) == (
        "its detector pastes 1,000 masks (box_detections_per_img) at 4096 x 4096 px for 1 "
        "image(s), 125.0 GiB, over half the free memory")
    assert detector_problem(net, torch.empty(1, 3, 128, 128, device="meta"), LIMIT) is None


def test_a_config_with_huge_proposals_is_one_line(tmp_path):
    """Through a run's own check: the one-line refusal names the argument."""
    from explain.plan import check_forward
    net = _tiny_rcnn(rpn_pre_nms_top_n_test=10**7)

    class First:  # a decoded first image, as the run passes it
        tensor = X[0]

        class ref:
            id = "cat"
    with pytest.raises(ExplainError, match=r"^model: its forward pass on cat is too large to "
                       r"run here: its detector's rpn_pre_nms_top_n_test"):
        check_forward(net, First, 1, torch.device("cpu"))

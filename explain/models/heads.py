"""What the network returns and which score a map explains.

``Classifier`` wraps the user's network so that its forward gives an (N, outputs) logits
tensor, whatever the network returns: a tensor, a tuple or list (``model.output: 0``), a dict
or a Hugging Face-style output object (``model.output: logits``).

``Head`` says how those logits become class scores:
- ``softmax``: one logit per class (the usual classifier);
- ``binary``: one logit; class index 0 is the negative side, 1 the positive side;
- ``multilabel``: one independent logit per class (sigmoid), each class explained on its own.
and ``target`` whether a map explains the logit or the probability. ``library_target`` gives
the pytorch-grad-cam target object for a class, ``scores`` the same scores as one tensor, so
the engine's shared pass and the library's own calls differentiate the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from explain.config import GREY_WEIGHTS
from explain.errors import ExplainError
from explain.names import a_type



def describe_output(out: Any) -> str:
    """What a forward pass returned, in a few words: for error messages."""
    def one(v: Any) -> str:
        return f"tensor {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, dict):
        items = ", ".join(f"'{k}': {one(v)}" for k, v in list(out.items())[:8])
        return f"{a_type(out)} with keys {items}"
    if isinstance(out, (tuple, list)):
        items = ", ".join(f"[{i}] {one(v)}" for i, v in enumerate(out[:8]))
        return f"a {type(out).__name__} of {len(out)}: {items}"
    fields = [k for k, v in vars(out).items() if isinstance(v, torch.Tensor)] \
        if hasattr(out, "__dict__") else []
    return f"a {type(out).__name__}" + (f" with tensor fields {', '.join(fields[:8])}"
                                        if fields else "")


def looks_like_detections(out: Any) -> bool:
    """A list or tuple of dicts holding 'boxes', 'labels' and 'scores' tensors."""
    return isinstance(out, (list, tuple)) and all(
        isinstance(d, dict) and all(isinstance(d.get(k), torch.Tensor)
                                    for k in ("boxes", "labels", "scores")) for d in out)


def task_hint(out: Any, task: str) -> str:
    """'; a classifier? use task: classification' and the like: what the output looks like."""
    if isinstance(out, torch.Tensor) and out.ndim == 2 and task != "classification":
        return "; this looks like a classifier: use task: classification"
    if looks_like_detections(out) and out and task != "detection":
        return "; this looks like a detector: use task: detection"
    if isinstance(out, torch.Tensor) and out.ndim == 4 and task != "segmentation":
        return "; this looks like a segmentation model: use task: segmentation"
    if isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor):
        return "; set model.output: out (torchvision's segmentation models return {'out': ...})"
    return ""


def not_logits(out: Any) -> ExplainError:
    """A classification run's model that gives no (N, classes) logits: one line with its
    shape and, for score maps or detections, the task that reads them."""
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    return ExplainError(f"model: forward returns shape {shape}, expected (N, classes) logits"
                        f"{task_hint(out, 'classification')}")


def output_hint(out: Any) -> str:
    """'model.output: KEY' naming the part of forward's dict (or output object) that holds
    (N, classes) logits, or else (N, classes, H, W) score maps with the task that reads them
    (a torchvision segmenter's 'out', not a made-up 'logits')."""
    if isinstance(out, (tuple, list)):
        return "model.output: 0"
    parts = out if isinstance(out, dict) else vars(out) if hasattr(out, "__dict__") else {}
    dims = {k: v.ndim for k, v in parts.items()  # a key a config can name
            if isinstance(v, torch.Tensor) and isinstance(k, (str, int))}
    rows = [k for k, d in dims.items() if d == 2]  # a 'logits' first: not a (N, 512) embedding
    named = [k for k in rows if "logit" in str(k).lower()]
    if rows:
        return f"model.output: {(named or rows)[0]}"
    for k, d in dims.items():
        if d == 4:
            return (f"model.output: {k} ('{k}' holds (N, classes, H, W) score maps: add "
                    f"task: segmentation too)")
    return "model.output: logits"


def select_output(out: Any, key: Union[int, str, None]) -> torch.Tensor:
    """The logits inside what forward returned; a one-line error saying what is there."""
    if key is None:
        if isinstance(out, torch.Tensor):
            return out
        if looks_like_detections(out) and out:  # not 'model.output: 0': a detector's dicts
            raise ExplainError(f"model: forward returns {describe_output(out)}, not a logits "
                               f"tensor{task_hint(out, 'classification')}")
        raise ExplainError(f"model: forward returns {describe_output(out)}, not a logits tensor; "
                           f"set which part holds the class scores, e.g. {output_hint(out)}")
    if isinstance(out, dict):  # {0: logits} too: output: 0 names its key
        found = out.get(key)
    elif isinstance(key, int):
        ok = isinstance(out, (tuple, list)) and key < len(out)
        found = out[key] if ok else None
    else:
        found = getattr(out, key, None)
    if not isinstance(found, torch.Tensor):
        raise ExplainError(f"model.output: {key!r} is not a tensor in what forward returns "
                           f"({describe_output(out)})")
    return found


class Classifier(nn.Module):
    """The user's network (``net``) with a forward that returns (N, outputs) logits. With
    ``in_channels`` 1 (``model.in_channels``, a network for grey images) ``net`` is given the
    grey of the three prepared channels (GREY_WEIGHTS): a grey scan's own grey, a photo's as a
    grey training set made it, so every picture, metric and gradient explain makes stays on
    the RGB input."""

    def __init__(self, net: nn.Module, output: Union[int, str, None] = None,
                 in_channels: int = 3, *, bgr: bool = False):
        super().__init__()
        self.net = net
        self.output = output
        self.in_channels = in_channels
        # the prepared channels' order is B, G, R with preprocess.mode: caffe
        self.grey = GREY_WEIGHTS[::-1] if bgr else GREY_WEIGHTS

    @classmethod
    def of(cls, net: nn.Module, cfg: Any) -> "Classifier":
        """``net`` as the config says to run it (``model.output``, ``model.in_channels``; the
        channels' order of ``preprocess.mode``)."""
        return cls(net, cfg.model.output, cfg.model.in_channels,
                   bgr=cfg.preprocess.mode == "caffe")

    @staticmethod
    def grey_note(cfg: Any) -> list[str]:
        """A note when a grey network's input is normalised per colour channel (three
        ``preprocess.mean`` / ``std`` values, ImageNet's by default): the grey of the three
        normalised channels is the grey normalised by neither, which the network never saw."""
        spec = cfg.preprocess
        if cfg.model.in_channels != 1 or spec.mode != "torch" or \
                (len(set(spec.mean)) == 1 and len(set(spec.std)) == 1):
            return []
        # sum_c w_c (g - m_c) / s_c = (g - m) / s
        scale = sum(w / s for w, s in zip(GREY_WEIGHTS, spec.std))
        mean = sum(w * m / s for w, m, s in zip(GREY_WEIGHTS, spec.mean, spec.std)) / scale
        std = 1 / scale
        return [f"model.in_channels: 1 with three preprocess.mean / std values: the network "
                f"is given the grey of three differently normalised channels, the grey as if "
                f"normalised by mean {mean:.3g} and std {std:.3g}; give preprocess.mean and "
                f"std the one value the network was trained with (e.g. mean: [0.5], std: "
                f"[0.5])"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            weights = torch.tensor(self.grey, dtype=x.dtype, device=x.device)
            x = torch.einsum("nchw,c->nhw", x, weights)[:, None]
        logits = select_output(self.net(x), self.output)
        return logits[:, None] if logits.ndim == 1 else logits  # one logit per image


class _BinaryProbability:
    """sigmoid(z) for the positive class (1), 1 - sigmoid(z) for the negative (0)."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(model_output[..., 0])
        return p if self.category == 1 else 1 - p


class _SigmoidTarget:
    """sigmoid of one class's own logit (multi-label probability)."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model_output[..., self.category])


@dataclass(frozen=True)
class Head:
    kind: str = "softmax"  # softmax | binary | multilabel (config: model.head)
    target: str = "logit"  # logit | probability (config: model.target)

    def classes(self, outputs: int) -> int:
        """How many class indices a model with ``outputs`` logits has under this head."""
        return 2 if self.kind == "binary" else outputs

    def check_outputs(self, outputs: int) -> Optional[str]:
        """Why logits of this width do not fit the head, or None."""
        if self.kind == "binary" and outputs != 1:
            return (f"head: binary expects one logit per image, the model gives {outputs} "
                    f"(use head: softmax for a two-output model)")
        return None

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, classes): column c is the score explained for class c (differentiable)."""
        if self.kind == "binary":
            z = logits[:, :1]
            return torch.cat([-z, z], 1) if self.target == "logit" else \
                torch.cat([1 - torch.sigmoid(z), torch.sigmoid(z)], 1)
        if self.target == "logit":
            return logits
        return torch.softmax(logits, 1) if self.kind == "softmax" else torch.sigmoid(logits)

    def ranking(self, logits: torch.Tensor) -> np.ndarray:
        """(N, classes) as numbers: what ranks an image's classes for the 'predicted' and
        'top<K>' targets (the scores; a task's head ranks by its own: explain.tasks)."""
        return self.scores(logits).float().cpu().numpy()

    def class_logits(self, logits: np.ndarray) -> np.ndarray:
        """(N, classes) logit of each class (binary: [-z, z], the sides of the one logit)."""
        z = np.asarray(logits)
        return np.concatenate([-z[:, :1], z[:, :1]], 1) if self.kind == "binary" else z

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, classes) probabilities: softmax, or sigmoid per class (binary: [1 - p, p])."""
        z = np.asarray(logits, dtype=np.float64)
        if self.kind == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        p = 1 / (1 + np.exp(-z))
        return np.concatenate([1 - p[:, :1], p[:, :1]], 1) if self.kind == "binary" else p

    def library_target(self, category: int) -> Any:
        """The pytorch-grad-cam target object that scores ``category`` as ``scores`` does."""
        from pytorch_grad_cam.utils.model_targets import (BinaryClassifierOutputTarget,
                                                          ClassifierOutputSoftmaxTarget,
                                                          ClassifierOutputTarget)
        if self.kind == "binary":
            return BinaryClassifierOutputTarget(category) if self.target == "logit" else \
                _BinaryProbability(category)
        if self.target == "logit":
            return ClassifierOutputTarget(category)
        return ClassifierOutputSoftmaxTarget(category) if self.kind == "softmax" else \
            _SigmoidTarget(category)


class ScoreModel(nn.Module):
    """A model whose output column c is the score explained for class c: for code that
    expects plain (N, classes) outputs (guided backprop, faithfulness metrics)."""

    def __init__(self, classifier: nn.Module, head: Head):
        super().__init__()
        self.classifier = classifier
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.scores(self.classifier(x))

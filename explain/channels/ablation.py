"""Channel ablation: does zeroing the channels a method calls important lower the class score?

For each image x class x channel-sum method and each k, the class score (the head's score, as
the map explains it: logit or probability) is computed again with the channel layer's k
channels of largest contribution set to zero (``top``), k channels drawn at random (``random``:
``draws`` draws, seeded by the run's seed, the image and k, averaged) and the k of smallest
contribution (``bottom``). The drop is the unablated score minus the ablated one (positive:
the score fell). One random set serves every class and method of the image (a pass gives
every class's score).

The ablated passes run *from the channel layer on*: the layer's stored activations (the
engine's pass) are zeroed and fed to what comes after, batched (every row of a batch, all k,
in passes of up to ``MAX_ROWS`` rows). How, depends on the model, tried in this order and kept
per input size once a pass gives back the engine's logits for the unablated rows (checked on
every batch, within ``TOLERANCE``):

- ``split``: the layer is reached through nn.Sequential containers only: the modules after it
  are called on the zeroed activations; nothing before the layer runs;
- ``skip``: the model is called on a small blank stand-in input (the layer's stride per
  side, x1, x2 or x4: the smallest the model accepts) with the forward of every module that
  runs only before the layer replaced, for the pass, by the output it gave for that stand-in
  (recorded once through explain.engine.watching), and the layer's forward by the zeroed
  activations: nothing before the layer computes; what the model does between modules runs
  on the stand-in's few pixels. A model whose later layers read the input itself or an
  earlier layer (a skip around the layer) fails the check and falls through to
- ``full``: the images themselves, one row per ablation, a forward hook (explain.engine.
  watching) zeroing the channels of the layer's real output (the layers before it run once
  per row: always right, slowest).

Token layers (a ViT) have only ``full``: their stored (B, C, h, w) view drops the class token.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from explain.engine import LayerInfo, watching
from explain.errors import ExplainError
from explain.models.heads import Head, select_output

MAX_ROWS = {"split": 1024, "skip": 512, "full": 64}  # ablated rows per forward pass
TOLERANCE = 1e-4  # |logits - engine's logits| <= TOLERANCE x (1 + max |logit|): same pass
STAND_IN = (1, 2, 4)  # stand-in side: the layer's stride times these


def top_bottom(totals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k channels of largest and of smallest contribution (ties: the lower channel)."""
    index = np.arange(len(totals))
    return np.lexsort((index, -totals))[:k], np.lexsort((index, totals))[:k]


def random_channels(channels: int, k: int, draws: int, *, seed: int, key: int) -> list[np.ndarray]:
    """``draws`` sets of k distinct channels, seeded by the run's seed, the image key and k."""
    rng = np.random.default_rng([seed, key, k])
    return [np.sort(rng.choice(channels, k, replace=False)) for _ in range(draws)]


def sequential_path(net: nn.Module, name: str) -> Optional[list[tuple[nn.Sequential, int]]]:
    """For a layer reached through plain nn.Sequential containers only (the network itself
    one too): each container on the way and the position of the next step in it; else None."""
    module, path = net, []
    for part in name.split("."):
        if type(module).forward is not nn.Sequential.forward:
            return None
        names = list(module._modules)
        if part not in names:
            return None
        path.append((module, names.index(part)))
        module = module._modules[part]
    return path


@dataclass(frozen=True)
class Rows:
    """The passes' rows: which image each row copies and which channels it zeroes."""
    images: np.ndarray  # (M,) int: the image of the batch
    zeroed: list[np.ndarray]  # per row, the channels set to zero (empty: none)

    def masks(self, channels: int) -> torch.Tensor:
        mask = torch.ones(len(self.images), channels)
        for r, chosen in enumerate(self.zeroed):
            if len(chosen):
                mask[r, torch.as_tensor(chosen, dtype=torch.long)] = 0.0
        return mask


class Ablator:
    """Class scores of a batch with channels of the layer zeroed, from the layer on (see the
    module docstring). ``model``: the run's Classifier (net + output choice), ``layer``: the
    channel layer as the plan resolved it."""

    def __init__(self, model: nn.Module, layer: LayerInfo, head: Head, device: torch.device):
        self.model, self.layer, self.head, self.device = model, layer, head, device
        self.path = sequential_path(getattr(model, "net", model), layer.name) \
            if layer.name else None
        self.kept: dict[tuple[int, int], str] = {}  # input size -> the mode that passed
        self.used: set[str] = set()
        self.skipped: dict[tuple[int, int], list[tuple[nn.Module, torch.Tensor]]] = {}

    def scores(self, x: torch.Tensor, acts: np.ndarray, rows: Rows,
               reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The head's scores of the batch's B images unablated (B, classes) and of the rows
        (M, classes). The unablated pass is checked against ``reference``, the engine's logits
        of the B images; a way of passing that fails the check is not used again for the
        input size."""
        size = (int(x.shape[-2]), int(x.shape[-1]))
        base = Rows(np.arange(len(x)), [np.zeros(0, np.int64)] * len(x))
        ways = self._modes(size, acts.shape[-2:])
        if size in self.kept:
            ways = [self.kept[size]] + [w for w in ways if w != self.kept[size]]
        for mode in ways:
            try:
                logits = self._logits(mode, x, acts, base)
            except ExplainError:
                raise
            except Exception:  # noqa: BLE001 - this model cannot run this way: the next one
                if mode == "full":
                    raise
                continue
            gap = float(np.max(np.abs(logits - reference)))
            if gap <= TOLERANCE * (1 + float(np.max(np.abs(reference)))):
                self.kept[size] = mode
                self.used.add(mode.split(":")[0])
                scored = self.head.scores(torch.as_tensor(
                    np.concatenate([logits, self._logits(mode, x, acts, rows)])))
                return scored[:len(x)].double().numpy(), scored[len(x):].double().numpy()
            if mode == "full":
                raise ExplainError(
                    f"channels.ablation: the model's outputs differ between two passes over "
                    f"the same images (by {gap:.3g}); ablation compares scores, so it needs a "
                    f"model whose output a pass determines (no dropout or sampling in eval mode)")
        raise AssertionError("'full' is always tried last")

    def _modes(self, size: tuple[int, int], grid: Sequence[int]) -> list[str]:
        if self.layer.layout.kind == "tokens":
            return ["full"]
        (H, W), (h, w) = size, grid
        stand_ins = []
        for f in STAND_IN:
            sh, sw = min(H, math.ceil(H / h) * f), min(W, math.ceil(W / w) * f)
            if sh * sw * 4 <= H * W:  # smaller than the image: the glue ops run on less
                stand_ins.append(f"skip:{sh}x{sw}")
        return (["split"] if self.path else []) + stand_ins + ["full"]

    def _logits(self, mode: str, x: torch.Tensor, acts: np.ndarray, rows: Rows) -> np.ndarray:
        kind = mode.split(":")[0]
        step = MAX_ROWS[kind]
        out = []
        with torch.no_grad():
            for start in range(0, len(rows.images), step):
                part = Rows(rows.images[start:start + step], rows.zeroed[start:start + step])
                out.append(self._pass(mode, x, acts, part).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _pass(self, mode: str, x: torch.Tensor, acts: np.ndarray, rows: Rows) -> torch.Tensor:
        kind = mode.split(":")[0]
        mask = self._raw(rows.masks(acts.shape[1])[:, :, None, None]).to(self.device)
        index = torch.as_tensor(rows.images, dtype=torch.long)
        if kind == "full":
            def zero(_i: int, output: torch.Tensor) -> torch.Tensor:
                return output * _broadcast(mask, output, self.layer.layout.kind)
            with watching([self.layer.module], zero):
                return self.model(x[index].to(self.device))
        zeroed = self._raw(torch.as_tensor(acts)[index]).to(self.device) * mask
        if kind == "split":
            return self._tail(zeroed)
        sh, sw = (int(n) for n in mode.split(":")[1].split("x"))
        m = len(index)
        stubs: list[tuple[nn.Module, Callable[..., Any]]] = [
            (module, lambda *_a, _out=out, **_k: _out.expand(m, *_out.shape[1:]))
            for module, out in self._before(x.shape[1], (sh, sw))]
        stubs.append((self.layer.module, lambda *_a, **_k: zeroed))
        with substituted(stubs):
            return self.model(torch.zeros(m, x.shape[1], sh, sw, device=self.device))

    def _before(self, channels: int, size: tuple[int, int]) -> list[tuple[nn.Module, torch.Tensor]]:
        """The largest modules outside the layer that run only before it, each with its output
        for a one-image stand-in of ``size``: recorded once per size, by one pass with a
        forward hook on every module (their order of completion)."""
        if size not in self.skipped:
            named = [(n, m) for n, m in self.model.named_modules() if n]
            done: list[tuple[int, Any]] = []

            def record(i: int, out: Any) -> None:
                done.append((i, out.detach() if isinstance(out, torch.Tensor) else None))
            with torch.no_grad(), watching([m for _, m in named], record):
                self.model(torch.zeros(1, channels, *size, device=self.device))
            layer = next(n for n, m in named if m is self.layer.module)
            end = max(p for p, (i, _) in enumerate(done) if named[i][1] is self.layer.module)
            last, first = {}, {}
            for p, (i, out) in enumerate(done):
                last[i] = p
                first.setdefault(i, out)
            before = {named[i][0]: (named[i][1], first[i]) for i in last
                      if last[i] < end and isinstance(first[i], torch.Tensor) and
                      first[i].ndim and len(first[i]) == 1 and
                      not named[i][0].startswith(layer + ".")}
            self.skipped[size] = [pair for name, pair in before.items()
                                  if not any(name.startswith(other + ".") for other in before)]
        return self.skipped[size]

    def _raw(self, tensor: torch.Tensor) -> torch.Tensor:
        """A (M, C, h, w) tensor in the layer's own layout (nchw or nhwc)."""
        return tensor.permute(0, 2, 3, 1) if self.layer.layout.kind == "nhwc" else tensor

    def _tail(self, z: torch.Tensor) -> torch.Tensor:
        """The modules after the layer in each nn.Sequential on its path, innermost first,
        then the model's output choice (as explain.models.heads.Classifier does)."""
        for container, position in reversed(self.path):
            for module in list(container._modules.values())[position + 1:]:
                z = module(z)
        logits = select_output(z, getattr(self.model, "output", None))
        return logits[:, None] if logits.ndim == 1 else logits


@contextlib.contextmanager
def substituted(stubs: list[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """For the block, each module's forward is the given function (called with the module's
    arguments); put back on exit, also on an error."""
    saved = [(module, module.__dict__.get("forward")) for module, _ in stubs]
    try:
        for module, fn in stubs:
            module.forward = fn
        yield
    finally:
        for module, before in saved:
            if before is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = before


def _broadcast(mask: torch.Tensor, output: torch.Tensor, kind: str) -> torch.Tensor:
    """The (M, C, 1, 1) mask (nhwc: (M, 1, 1, C)) shaped for the layer's raw output."""
    if kind == "tokens":
        return mask.reshape(mask.shape[0], 1, -1).to(output.dtype)
    return mask.to(output.dtype)


@dataclass(frozen=True)
class Target:
    """One map to ablate: its image's row in the batch, its class's output index and each
    channel's contribution (C,)."""
    row: int
    class_index: int
    totals: np.ndarray


@dataclass(frozen=True)
class Plan:
    """What to ablate: the k's (sorted), random draws, the run's seed, the images' keys
    (explain.channels.atlas.image_key: seeds of their random channels)."""
    ks: Sequence[int]
    draws: int
    seed: int
    keys: Sequence[int]


def drops(ablator: Ablator, x: torch.Tensor, acts: np.ndarray, targets: list[Target], *,
          plan: Plan, reference: np.ndarray) -> np.ndarray:
    """Per target and k, the drop of its class score zeroing its top k channels, k random
    ones (the mean over the draws) and its k lowest: (targets, K, 3), positive = fell."""
    channels = acts.shape[1]
    images: list[int] = []
    zeroed: list[np.ndarray] = []
    seen: dict[tuple[int, bytes], int] = {}  # one row per image and set of channels

    def row(b: int, chosen: np.ndarray) -> int:
        chosen = np.sort(np.asarray(chosen, np.int64))
        key = (b, chosen.tobytes())
        if key not in seen:
            seen[key] = len(images)
            images.append(b)
            zeroed.append(chosen)
        return seen[key]
    randoms = {(b, k): [row(b, c) for c in random_channels(channels, k, plan.draws,
                                                           seed=plan.seed, key=plan.keys[b])]
               for b in sorted({t.row for t in targets}) for k in plan.ks}
    chosen = [[tuple(row(t.row, part) for part in top_bottom(t.totals, k)) for k in plan.ks]
              for t in targets]
    base, scores = ablator.scores(x, acts, Rows(np.asarray(images, np.int64), zeroed), reference)
    out = np.zeros((len(targets), len(plan.ks), 3))
    for i, t in enumerate(targets):
        before, c = base[t.row, t.class_index], t.class_index
        for j, k in enumerate(plan.ks):
            top, bottom = chosen[i][j]
            drawn = np.mean([before - scores[r, c] for r in randoms[(t.row, k)]])
            out[i, j] = (before - scores[top, c], drawn, before - scores[bottom, c])
    return out

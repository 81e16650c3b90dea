"""What the per-channel methods (ScoreCAM, AblationCAM) will cost, estimated before the run.

Their passes are shared by the classes of an image (explain.sharedpasses), so a run makes
``images x channels x ratio`` forward passes of one image per such method (x 6 with
``aug_smooth``, the library's augmentations), whatever the number of classes. The time of one
pass is measured, not taken from the preflight pass: one batch of the method's inner batch
size (at most ``TIMED_ROWS`` copies of the first image) without gradients, as the method runs
them; the preflight pass (one image, with gradients, hooks and a cold start) was 10x off.
``CamEngine.seconds`` holds the measured time of each method, for the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from explain.methods import traits

TIMED_ROWS = 8  # copies of the first image in the timed batch (bounds the estimate's cost)
AUGMENTATIONS = 6  # the library's default tta: horizontal flip (2) x multiply (3 factors)
INNER_BATCH = {"scorecam": 16, "ablationcam": 32}  # the library's defaults


@dataclass(frozen=True)
class PassCost:
    """One per-channel method's estimate: forward passes of one image, and seconds."""
    method: str
    channels: int  # passes per image: the target layers' channels (those ablated)
    passes: int
    seconds: float


def inner_batch(spec) -> int:
    """The method's inner batch (its ``batch_size`` option, else the library's default)."""
    size = spec.options.get("batch_size", INNER_BATCH.get(spec.name, 16))
    return size if isinstance(size, int) and size > 0 else INNER_BATCH.get(spec.name, 16)


def seconds_per_pass(model: torch.nn.Module, x: torch.Tensor, rows: int) -> float:
    """Seconds per image of a no-grad forward of ``rows`` copies of ``x`` (C, H, W), timed
    once after an untimed warm-up of one copy."""
    batch = x[None].expand(rows, *x.shape).contiguous()
    with torch.no_grad():
        model(batch[:1])
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        t0 = time.perf_counter()
        model(batch)
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
    return (time.perf_counter() - t0) / rows


def per_channel_costs(plan, per_pass: Optional[float] = None,
                      images: Optional[int] = None) -> list[PassCost]:
    """A PassCost per per-channel method of the plan's config (``per_pass``: seconds of one
    image's pass; measured on the plan's first image when None) for ``images`` images (the
    plan's when None; fewer when --resume keeps some)."""
    cfg = plan.cfg
    slow = [m for m in cfg.methods if traits(m.name).per_channel is not None]
    if not slow:
        return []
    channels = sum(layer.channels for layer in plan.target_layers)
    images = len(plan.images) if images is None else images
    out = []
    for spec in slow:
        ratio_option = traits(spec.name).per_channel.ratio_option
        ratio = float(spec.options.get(ratio_option, 1.0)) if ratio_option else 1.0
        # the library ablates the int(C x ratio) channels most and as many least inside its
        # objectness mask (2 x int(C x ratio) passes), all C at ratio 1
        per_image = channels if ratio == 1.0 else max(1, 2 * int(channels * ratio))
        passes = images * per_image * (AUGMENTATIONS if cfg.aug_smooth else 1)
        # per slot when the targets compare classes; the passes are shared otherwise
        passes *= plan.slots if traits(spec.name).comparison_targets else 1
        seconds = per_pass
        if seconds is None:
            x = plan.first.tensor.to(plan.device)
            seconds = seconds_per_pass(plan.model, x, min(inner_batch(spec), TIMED_ROWS))
        out.append(PassCost(spec.name, per_image, passes, passes * seconds))
    return out


def cost_line(cost: PassCost, layers: list[str], slots: int) -> str:
    """The console's 'estimate:' line for one per-channel method."""
    shared = f", shared by its {slots} classes" if slots > 1 else ""
    return (f"estimate: {cost.method} runs one forward pass per channel ({cost.channels} in "
            f"{', '.join(layers)}) for each image{shared}: {cost.passes:,} passes, about "
            f"{duration(cost.seconds)}")


def duration(seconds: float) -> str:
    """Seconds as the console shows them: '40 s', '12 min', '1.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

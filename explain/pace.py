"""What the per-channel methods (ScoreCAM, AblationCAM) will cost, estimated before the run.

Their passes are shared by the classes of an image (explain.sharedpasses), so a run makes
``images x channels x ratio`` forward passes of one image per such method (x 6 with
``aug_smooth``, the library's augmentations), whatever the number of classes. The time of one
pass is measured, not taken from the preflight pass: the fastest of two to five batches of
the method's inner batch size (at most ``TIMED_ROWS`` copies of the first image) without
gradients, as the method runs them (``timed_pass``); the preflight pass (one image, with
gradients, hooks and a cold start) was 10x off.
``CamEngine.seconds`` holds the measured time of each method, for the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from explain.errors import ExplainError
from explain.methods import traits

# copies of the first image in the timed batch (bounds the estimate's cost): ScoreCAM's inner
# batch; at 8, AlexNet's pass per image was 1.45x its time in batches of 16 (40 ms against 28:
# its classifier's weights are read once a batch), and the estimates as much too long
TIMED_ROWS = 16
AUGMENTATIONS = 6  # the library's default tta: horizontal flip (2) x multiply (3 factors)
INNER_BATCH = {"scorecam": 16, "ablationcam": 32}  # the library's defaults


@dataclass(frozen=True)
class PassCost:
    """One per-channel method's estimate: forward passes of one image, and seconds."""
    method: str
    channels: int  # passes per image: the target layers' channels (those ablated)
    passes: int
    seconds: float
    layer_channels: int = 0  # the target layers' channels (more than ``channels`` at a ratio)


def inner_batch(spec) -> int:
    """The method's inner batch (its ``batch_size`` option, else the library's default)."""
    size = spec.options.get("batch_size", INNER_BATCH.get(spec.name, 16))
    return size if isinstance(size, int) and size > 0 else INNER_BATCH.get(spec.name, 16)


def seconds_per_pass(model: Callable[[torch.Tensor], Any], x: torch.Tensor,
                     rows: int) -> float:
    """Seconds per image of a no-grad forward of ``rows`` copies of ``x`` (C, H, W), timed
    once after an untimed warm-up of one copy (``model``: a module, or a caller of one such
    as explain.road.Forward)."""
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


TIMING_BUDGET = 0.1  # seconds a pass is timed again for, when it is short
MAX_TIMINGS = 5
WAITING = 0.5  # a timing whose CPU time is below this share of its wall time: mostly waiting


def timed_pass(plan, rows: int) -> float:
    """Seconds per image of a pass without gradients over ``rows`` copies of the plan's first
    image, the fastest of its timings, measured once per plan and ``rows`` (``RunPlan.timed``:
    the run's estimate and the sanity estimate both ask for ScoreCAM's). At least two (one on
    a busy machine was 4x off), and again (up to MAX_TIMINGS) while the pass is short
    (TIMING_BUDGET not yet spent) or the last timing was mostly waiting: a 5 ms pass of a
    small ViT timed while the process waited for a core said 0.7 s, twice, and the sanity
    estimate 5 min for 2 s. Waiting shows on a CPU as wall time without the process's CPU
    time (a GPU's pass waits for the device: not counted there)."""
    found = plan.timed.get(rows)
    if found is None:
        x = plan.first.tensor.to(plan.device)
        times, start, waited = [], time.perf_counter(), False
        while len(times) < 2 or (len(times) < MAX_TIMINGS and (
                waited or time.perf_counter() - start < TIMING_BUDGET)):
            wall, cpu = time.perf_counter(), time.process_time()
            times.append(seconds_per_pass(plan.model, x, rows))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            waited = plan.device.type == "cpu" and wall > 0.05 and cpu < WAITING * wall
        found = plan.timed[rows] = min(times)
    return found


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
            seconds = timed_pass(plan, min(inner_batch(spec), TIMED_ROWS))
        out.append(PassCost(spec.name, per_image, passes, passes * seconds, channels))
    return out


BACKWARD = 3  # a forward and a backward pass, in forward passes (the backward about twice)


def detection_cost(plan, images: int, per_pass: Optional[float] = None) -> tuple[str, float]:
    """The console's estimate for a detection run and its seconds (explain.tasks.detection):
    a pass that finds each image's boxes, then per method and box slot one library call on
    the batch (a forward and a backward pass of the detector per image), a class-agnostic
    method once per image, a per-channel one a pass per channel and box (a detector's boxes
    share none). Up to ``detection.max_boxes`` boxes an image; ``per_pass``: seconds of one
    image's forward pass, timed on the plan's first image when None."""
    cfg, boxes = plan.cfg, plan.cfg.detection.max_boxes
    # a per-channel method feeds the detector its masked copies in batches, cheaper per image
    # than one: timed at its batch (ScoreCAM at 192 px: 21 s, estimated 43 s at one a pass)
    channel = {c.method: c for c in per_channel_costs(plan, per_pass, images)}
    if per_pass is None:
        per_pass = timed_pass(plan, 1)
    smooth = AUGMENTATIONS if cfg.aug_smooth else 1
    passes, parts = images, []
    for spec in cfg.methods:
        if traits(spec.name).class_agnostic:
            passes += images * smooth
            parts.append(f"{spec.name} a pass per image")
        elif spec.name in channel:
            passes += channel[spec.name].seconds * boxes / per_pass
            parts.append(f"{spec.name} {channel[spec.name].channels} passes per box")
        else:
            passes += images * boxes * BACKWARD * smooth
            parts.append(f"{spec.name} a forward and a backward pass per box")
    seconds = passes * per_pass
    return (f"estimate: detection: up to {boxes} box(es) in each of {images} image(s); "
            f"{', '.join(parts)}: {about(seconds)}"), seconds


def cost_line(cost: PassCost, layers: list[str], slots: int) -> str:
    """The console's 'estimate:' line for one per-channel method."""
    shared = f", shared by its {slots} classes" if slots > 1 else ""
    where = ", ".join(layers)
    each = f"one forward pass per channel ({cost.channels} in {where})" \
        if cost.channels >= cost.layer_channels else \
        (f"{cost.channels} forward passes, ablating the {cost.channels // 2} channels that "
         f"matter most and as many that matter least of the {cost.layer_channels} in {where},")
    return (f"estimate: {cost.method} runs {each} for each image{shared}: "
            f"{cost.passes:,} passes, {about(cost.seconds)}")


def about(seconds: float) -> str:
    """An estimate as the console says it: 'about 40 s', 'about 12 min', 'under a second'."""
    return "under a second" if seconds < 0.5 else f"about {duration(seconds)}"


def duration(seconds: float) -> str:
    """Seconds as the console shows them: '40 s', '12 min', '1.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


MAX_SESS_PIXELS = 2**26  # SESS keeps every scaled copy of the image: 67 M pixels, 800 MB
MAX_SESS_WINDOWS = 10_000  # one CAM per window, per image and class
# KPCA-CAM's float64 kernel, positions x positions (made, centred, decomposed: 3 copies)
KPCA_CELL = 3 * 8
# pytorch-grad-cam's SVD of an image's (positions x channels) activations with
# full_matrices=True makes an n x n U and a c x c V: 16 bytes a cell as numpy's SVD holds
# them (the float32 matrix and its work copies, measured). AblationCAM ablating a share of
# the channels and any method with eigen_smooth make it; explain's EigenCAM, EigenGradCAM and
# SegEigenCAM take a thin SVD (explain.eigen): none; a registered subclass of them keeps the
# library's full one (explain.eigen.svd_of)
FULL_SVD_CELL = 16
# an SVD's work, max(n, c)^2 min(n, c) (thin: max x min^2): 3.7e10 is the library's full SVD
# of a DeepLabV3's 65 x 65 layer of 2,048 channels, 40 s an image on 2 cores
MAX_SVD_WORK = 5e10


def check_sizes(methods: Sequence[Any], layers: Sequence[Any], input_hw: Sequence[int],
                free: int, eigen_smooth: bool = False) -> None:
    """ExplainError when a method's options ask for more than a run can hold, worked out from
    the input and the target layers before the first batch: SESS's scaled copies and windows
    (each option was within its range, their product was not: 6 GB at num_scales 5 and
    scale_step_ratio 10), KPCA-CAM's n x n kernel over an early layer's n positions, and an
    SVD's matrices and work (``svd_kind``) against the ``free`` bytes and MAX_SVD_WORK."""
    h, w = int(input_hw[0]), int(input_hw[1])
    for spec in methods:
        if spec.name == "sess":
            pixels, windows, largest = sess_size(spec.options, h, w)
            if pixels > MAX_SESS_PIXELS or windows > MAX_SESS_WINDOWS:
                raise ExplainError(
                    f"methods.sess: its options make scaled copies of the {h} x {w} input up "
                    f"to {largest} px ({pixels:,} pixels kept) and {windows:,} windows per "
                    f"image and class, over {MAX_SESS_PIXELS:,} and {MAX_SESS_WINDOWS:,}; lower "
                    f"num_scales or scale_step_ratio, or raise step_size")
        kind = svd_kind(spec, eigen_smooth)
        for layer in layers if kind or spec.name == "kpcacam" else []:
            _check_matrices(spec.name, kind, layer, free)


def svd_kind(spec: Any, eigen_smooth: bool) -> str:
    """'thin' or 'full': the SVD a method makes of each image's activations ('' for none),
    its own or its ``base_method``'s (SESS, FinerCAM: an EigenCAM named there runs too)."""
    from explain.eigen import svd_of
    from explain.methods import registry
    known = registry()
    own = svd_of(known.get(spec.name))  # an EigenCAM's own projection: eigen_smooth or not
    if own:
        return own
    base = spec.options.get("base_method")
    base = svd_of(known.get(base.lower())) if isinstance(base, str) else ""
    ablates_some = spec.name == "ablationcam" and \
        float(spec.options.get("ratio_channels_to_ablate", 1.0)) < 1.0
    if base == "full" or ablates_some or (eigen_smooth and spec.name != "kpcacam"):
        return "full"
    return base


def _check_matrices(name: str, kind: str, layer: Any, free: int) -> None:
    """``check_sizes`` for one method (its SVD ``kind``) at one layer."""
    maps = layer.layout(torch.empty((1, *layer.shape), device="meta"))
    n, c = int(maps.shape[-2]) * int(maps.shape[-1]), int(maps.shape[1])
    square = f"{n:,} x {n:,}"
    need = KPCA_CELL * n * n if name == "kpcacam" else 0
    if kind == "full":
        need, square = FULL_SVD_CELL * (n * n + c * c), f"{n:,} x {n:,} and {c:,} x {c:,}"
    if need > free:
        raise ExplainError(
            f"methods.{name}: {layer.label} has {n:,} positions of {c:,} channels, and the "
            f"method's {square} matrices need {need / 2**30:.1f} GiB, more than the "
            f"{free / 2**30:.1f} GiB free; pick a later layer or a smaller input")
    small, large = sorted((n, c))
    work = large * small * (large if kind == "full" else small) if kind else 0
    if work > MAX_SVD_WORK:
        raise ExplainError(
            f"methods.{name}: {layer.label} has {n:,} positions of {c:,} channels, and the "
            f"method's SVD of them takes {work:.1e} steps an image and class, over "
            f"{MAX_SVD_WORK:.0e} (minutes on a CPU); pick a later layer or a smaller input")


def sess_size(options: dict, h: int, w: int) -> tuple[int, int, int]:
    """(pixels of every scaled copy, windows, the largest scale) of pytorch-grad-cam's SESS on
    an h x w input, as it makes them: the ``scales`` given, else window + round(window x
    ratio) x i, the shorter side resized to each, square windows every step_size pixels."""
    window = int(options.get("window_size") or min(h, w))
    step = int(options.get("step_size") or window)
    ratio = float(options.get("scale_step_ratio", 2.0 / 7.0))
    scales = [max(1, int(v)) for v in options["scales"]] if options.get("scales") else \
        [window + int(round(window * ratio)) * i for i in range(int(options.get("num_scales", 12)))]
    pixels = windows = 0
    for scale in scales:
        sh, sw = (scale, round(w * scale / h)) if h <= w else (round(h * scale / w), scale)
        pixels += sh * sw
        windows += (-(-max(sh - window, 0) // step) + 1) * (-(-max(sw - window, 0) // step) + 1)
    return pixels, windows, max(scales)


def busy_machine(device: torch.device) -> Optional[str]:
    """A line for a CPU run on a machine already busier than its cores: torch's threads then
    wait on each other at every operation (a small ViT's sanity check took 2 s on one thread
    and 2 to 13 s on two, with two other jobs on 2 cores), and one thread is the cure. None
    when idle enough, on a GPU, with one thread, or where the load is not known."""
    import os
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2:
        return None
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average (Windows)
        return None
    cores = os.cpu_count() or 1
    if load < cores or not others_running():  # the minute's average: also a run just ended
        return None
    return (f"note: this machine is busy (load average {load:.1f} on {cores} cores): torch's "
            f"{threads} threads then wait on each other and a run can take several times "
            f"longer; OMP_NUM_THREADS=1 before the command runs it on one thread")


def others_running(samples: int = 5) -> bool:
    """Whether other work runs now: the median of a few readings of the machine's runnable
    threads (Linux's /proc/loadavg) less this process's own (torch's threads may still spin
    after a pass; this reading is one of them) is above 0. False where it cannot be read."""
    import statistics
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                runnable = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return False
        counts.append(runnable - max(1, _own_running()))
        time.sleep(0.005)
    return statistics.median(counts) > 0


def _own_running() -> int:
    """This process's threads that are running or runnable now (/proc/self/task/*/stat)."""
    import os
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat", encoding="ascii", errors="replace") as f:
                running += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return running

"""The run's hold on the model: the inplace guard (inplace modules made non-inplace for the
run, so hooked activations stay the layer's true output), the model's state put back after
the run, the device and its free memory, and the bound on a first pass (sized on the meta
device before any real one)."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
import weakref
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from explain.errors import ExplainError


@contextlib.contextmanager
def non_inplace(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Switch every ``inplace=True`` module off for the duration; yields how many were switched.

    An inplace activation after the target layer overwrites the stored activation on CPU,
    so CAMs would mix post-activation values with pre-activation gradients. Turning inplace
    off changes no output.
    """
    switched = [m for m in model.modules()
                if enabled and getattr(m, "inplace", False) is True]
    for m in switched:
        m.inplace = False
    try:
        yield len(switched)
    finally:
        for m in switched:
            m.inplace = True


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore train/eval flags and requires_grad of every parameter afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


@contextlib.contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """``requires_grad`` off for the block on ``params``, then as it was: a pass that needs
    gradients of activations only records nothing for the weights."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ExplainError("device: 'cuda' was asked for but no CUDA device is available "
                           "(use 'auto' or 'cpu')")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


MAX_MODULE_CALLS = 10_000  # module calls in one forward pass (a ViT-H makes about 500)
# Work of one image's pass: multiply-adds of convolutions and linear layers, and a pooling
# window's reads x POOL_WEIGHT (torch's CPU pooling sums each window, about 1e9 reads a second a
# core: a 4 KB file's AvgPool2d(1024, stride=1) after an Upsample to 2048^2 ran for hours in
# one kernel Ctrl-C cannot stop). ConvNeXt-XL at 1024 px is about 1.3e12.
MAX_WORK = 4e12
POOL_WEIGHT = 10


KERAS_COPIES = 4  # an output, its gradient, and the channels-last <-> first copies of a layer
MAX_OPERATIONS = 30_000  # tensor operations in one forward pass (a Swin-V2-B makes about 3,000)


def module_work(module: nn.Module, output: torch.Tensor) -> float:
    """A pooling module's window reads x POOL_WEIGHT for the ``output`` it made (its window:
    ``kernel_size`` over the spatial dimensions). Convolutions, matrix products and attention
    are counted per tensor operation instead (``_Operations``), from the shapes torch
    multiplies: a model file sets a module's ``kernel_size`` or ``in_features`` to anything
    (a Conv2d of 63 x 63 kernels saved as ``kernel_size=(1, 1)``), and attention is no
    module's weight (a TransformerEncoderLayer over every pixel of a 512 x 512 photo)."""
    kernel = _window(module)
    if kernel is None:
        return 0.0
    spatial = max(output.dim() - 2, 1)
    sizes = kernel if isinstance(kernel, (tuple, list)) else (kernel,) * spatial
    window = float(math.prod(int(k) for k in sizes))
    return float(output.numel()) * window * POOL_WEIGHT


def _window(module: nn.Module) -> Any:
    """A pooling module's window: torch's ``kernel_size`` (not of a convolution or a linear
    layer: counted per operation), a Keras layer's ``pool_size`` (its convolutions are
    counted per operation too)."""
    if type(module).__module__.startswith("keras."):
        return getattr(module, "pool_size", None)
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return None
    return getattr(module, "kernel_size", None)


class _Operations(TorchDispatchMode):
    """The tensor operations of a shapes-only pass: counted (over MAX_OPERATIONS: _TooLarge;
    an nn.LSTM over every pixel of a photo makes about 15 a step per layer and direction,
    the meta device taking its steps one by one), with the multiply-adds of matrix
    products, convolutions and attention among them from torch's own formulas over their
    operands' shapes (half their flops). Their outputs are bounded too (``bound`` bytes):
    one over it, or those alive at once over it at some point, is a problem. Made inside
    a module, an output is no module's: a 17 KB file's TransformerEncoderLayer over every
    pixel asked 161 GB for its attention weights at 224 px, a Keras op node
    (keras.ops.tile) 60 GB at 32 px, 8 tiles each under the bound held 0.9 GB."""

    def __init__(self, bound: float = math.inf, alone: bool = True) -> None:
        super().__init__()
        self.count, self.multiply_adds, self.problem, self.bound = 0, 0.0, None, bound
        self.alone = alone  # one output over the bound is refused as it is made (else: at
        # the module's end, where a torch model's module outputs are said in their words)
        self.held = self.peak = 0  # bytes of the outputs alive, the most so far
        self.storages: dict[int, list[int]] = {}  # a storage alive: [bytes, its tensors alive]
        self.watched: list = []  # weak references to the tensors counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.count += 1
        if self.count > MAX_OPERATIONS:
            self.problem = f"over {MAX_OPERATIONS} tensor operations in one forward pass"
            raise _TooLarge(self.problem)
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.layout is torch.strided:
                self._hold(func, t)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.multiply_adds += formula(*args, **kwargs, out_val=out) / 2
        return out

    def _hold(self, func: Any, t: torch.Tensor) -> None:
        """Count an output's memory while a tensor on it is alive: a new storage once (over
        ``bound`` alone: _TooLarge, when ``alone``), a view or an op made in place on one
        counted already adds no bytes; a view of a weight or the input is no output's memory."""
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self.storages:
            self.storages[key][1] += 1
        elif t._base is None:
            size = storage.nbytes()
            if size > self.bound and self.alone:
                self.problem = (f"one tensor operation's output ({func._overloadpacket.__name__}"
                                f", {tuple(t.shape)}) with its gradient passes the free memory")
                raise _TooLarge(self.problem)
            self.storages[key] = [size, 1]
            self.held += size
            self.peak = max(self.peak, self.held)
        else:
            return
        self.watched.append(weakref.ref(t, lambda _, key=key: self._free(key)))

    def _free(self, key: int) -> None:
        entry = self.storages[key]
        entry[1] -= 1
        if not entry[1]:
            self.held -= entry[0]
            del self.storages[key]

    def check_held(self, where: str = "") -> None:
        """_TooLarge when the outputs alive at once, with their gradients, passed the free
        memory (``bound``, half of it) at some point of the pass (``where``: the module that
        just ended)."""
        if self.peak > self.bound:
            self.problem = (f"its tensor operations' outputs held at once, {self.peak / 2**30:.1f}"
                            f" GiB with their gradients, pass the free memory{where}")
            raise _TooLarge(self.problem)


def _images(n: int) -> str:
    return "one image" if n == 1 else f"a batch of {n} images"


class _TooLarge(Exception):
    """Raised inside a shape-only pass to stop it at the first module over the bounds."""


def forward_size_problem(model: nn.Module, x: torch.Tensor, limit: int) -> Optional[str]:
    """What would make the model's forward pass on ``x`` more than the machine holds, found on
    torch's meta device (shapes only: nothing allocated, no weight read): module outputs
    adding up to over ``limit`` bytes (half the device's free memory: the pass with its
    gradients holds about twice its outputs), or over MAX_MODULE_CALLS module calls. A model
    file holds no code, but its modules' settings are data: a pickled
    nn.Upsample(size=(16384, 16384)) asked for 55 GB, one Conv2d listed 20,000 times in a
    Sequential for 17 GB. None when the pass is within bounds, or cannot run on the meta
    device (the real pass then runs as before). Also over MAX_WORK multiply-adds an image,
    MAX_OPERATIONS tensor operations in the pass, or tensor operations' outputs over ``limit``
    alone or alive at once (attention weights made inside a module are no module's output)."""
    from explain.models.detectors import detector_problem
    problem = detector_problem(model, x, limit)  # what the meta pass stops before sizing
    if problem:
        return problem
    if any(getattr(type(m), "explain_fake_pass", False) for m in model.modules()):
        return _measured(model, x, limit, fake=True)  # a Keras model: see _measured
    memo: dict[int, Any] = {id(p): nn.Parameter(torch.empty_like(p, device="meta"),
                                                p.requires_grad) for p in model.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in model.buffers()})
    try:  # the modules copied, every tensor a shape only: the model itself is never touched
        shapes = copy.deepcopy(model, memo)
    except Exception:
        return None
    for module in shapes.modules():  # a user's hook on the copy is the user's function: off
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                      "_backward_pre_hooks", "_forward_hooks_with_kwargs",
                      "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            getattr(module, hooks, {}).clear()
    return _measured(shapes, x, limit, fake=False)


def _measured(shapes: nn.Module, x: torch.Tensor, limit: int, fake: bool) -> Optional[str]:
    """forward_size_problem's pass of ``shapes`` on ``x``: on the meta device, or (``fake``)
    the model itself under torch's FakeTensorMode, every tensor it makes a shape only: a
    Keras model (explain.models.keras) cannot be copied to the meta device, where Keras
    takes its tensors for symbolic ones, and its symbolic shapes leave open what the input
    size or a layer called many times makes (a 23 KB file of an UpSampling2D over an input
    of open size took 3.7 GB at 96 px)."""
    modules, said = list(shapes.modules()), []  # said: the problem (Keras rewords errors)
    copies = KERAS_COPIES if fake else 2  # an output and its gradient (Keras: more)
    calls, total, work, operations = [0], [0], [0.0], _Operations(limit, alone=fake)

    def measure(i: int, output: Any) -> None:
        try:
            _measure(modules[i], output)
        except _TooLarge as exc:
            said.append(str(exc))
            raise

    def _measure(module: nn.Module, output: Any) -> None:
        calls[0] += 1
        if calls[0] > MAX_MODULE_CALLS:
            raise _TooLarge(f"over {MAX_MODULE_CALLS} module calls in one forward pass")
        for t in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()
                work[0] += module_work(module, t)
            if work[0] + operations.multiply_adds > MAX_WORK * len(x):
                raise _TooLarge(f"over {MAX_WORK:.0e} multiply-adds for one image (hours on "
                                f"a CPU), at {type(module).__name__}")
            if total[0] * copies > 2 * limit:
                over = "twice" if copies == 2 else f"{copies} times"
                raise _TooLarge(f"its modules' outputs for {_images(len(x))}, {over} over "
                                f"with their gradients, pass the {2 * limit / 2**30:.1f} "
                                f"GiB free, at {type(module).__name__} "
                                f"({tuple(t.shape) if isinstance(t, torch.Tensor) else ''})")
        operations.check_held(f", at {type(module).__name__}")

    from explain.enginedata import watching  # the one place explain hooks a model
    from torch._subclasses.fake_tensor import FakeTensorMode
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    try:
        with torch.no_grad(), watching(modules, measure), mode:
            shaped = torch.empty(x.shape, dtype=x.dtype, device=x.device) if fake else x.to("meta")
            with operations:
                shapes(shaped)
            operations.check_held()
    except _TooLarge as exc:  # Keras rewords it (in an op's call): said by whom raised it
        return said[0] if said else operations.problem or str(exc)
    except Exception:  # an op without a meta kernel, a model that reads its data: no answer
        return said[0] if said else operations.problem  # (Keras rewords what it passes on)
    return None


_UNVETTED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def mark_unvetted(model: nn.Module) -> nn.Module:
    """Remember that ``model`` came from a file or arguments nobody vouched for (explain.api's
    load_model): explain.cam bounds its pass before the first real one, as a run does."""
    _UNVETTED.add(model)
    return model


def unvetted(model: Any) -> bool:
    return isinstance(model, nn.Module) and model in _UNVETTED


def meta_warm_up() -> threading.Thread:
    """torch's first operation on the meta device sets up its shape functions (about a second
    of imports): done on a thread, so ``forward_size_problem`` finds them ready. Not a daemon:
    a config error found meanwhile ends the process, and a daemon thread still inside torch
    at exit printed a traceback or aborted it ("terminate called", 4 of 15 runs); the exit
    waits for it instead (a second at most)."""
    thread = threading.Thread(target=lambda: torch.empty(1, device="meta") + 1,
                              name="explain-meta-warm-up")
    thread.start()
    return thread


def available(device: torch.device) -> int:
    """Bytes free on ``device``: the free GPU memory, or the system's available RAM (half the
    physical memory where /proc is missing, 4 GiB when neither can be read)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        free = info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        free = 0
    if not free:  # no /proc (macOS): the physical memory, where the system says it
        try:
            free = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        except (AttributeError, ValueError, OSError):
            free = 0
    return int(free or 4 << 30)

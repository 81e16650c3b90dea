"""Which layers of a network a CAM can use, and the one ``target_layers: auto`` picks.

``survey`` runs one forward pass with a hook on every module and one backward pass of the top
class's score, and describes each module: its output shape, whether that output can be seen
as (B, C, h, w) maps (explain.models.layouts), how often it ran, and whether the explained score
reaches more than one of its positions at all. ``auto_layer`` picks the last such layer before
the head, ``find_layer`` resolves a layer name (``features.-1`` -> ``features.12``) with hints
that point at usable layers, and ``format_table`` is what ``explain layers CONFIG`` prints.
"""

from __future__ import annotations


import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from explain.enginedata import watching  # the one place hooks are put on a model
from explain.errors import ExplainError, channel_hint, first_line
from explain.models.heads import Head, not_logits
from explain.models.layouts import Layout, Mode, model_mode, positions_reached, usable_layout
from explain.models.guard import non_inplace, preserved_state
from explain.names import NAME_LIMIT, a_type, close_match, printable, quote, suggest

# Modules that only pool, copy, drop or flatten what they get: their output is no better a
# representation than their input (pooling is worse: it blurs or removes the positions).
PASS_TYPES = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
              nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
              nn.modules.pooling._LPPoolNd, nn.modules.dropout._DropoutNd, nn.Identity,
              nn.Flatten, nn.Unflatten)
# The same kinds from other libraries, by class name (timm: SelectAdaptivePool2d, DropPath...;
# Keras: MaxPooling2D, Dropout, Flatten...).
PASS_NAMES = re.compile(r"(Pool(\dd)?|Pooling\dD|Dropout\w*|DropPath|DropBlock\w*|Flatten|Identity)$")


@dataclass
class LayerRow:
    """What the survey saw of one module."""
    name: str  # dotted, as net.named_modules() prints it
    type: str  # class name
    output: str  # the output's shape as text, its type name when not a tensor, '-' when not run
    shape: Optional[tuple[int, ...]] = None  # output shape of the first call (tensor outputs)
    layout: Optional[Layout] = None  # how the output maps to (B, C, h, w); None: no usable map
    fired: tuple[tuple[int, int], ...] = ()  # (firing order, output group) of each call
    passthrough: bool = False  # a pooling, dropout, identity or flatten module
    linear: bool = False  # an nn.Linear
    degenerate: bool = False  # the explained score reaches fewer than 2 positions of the map
    note: str = ""  # how a task reads an output the survey cannot (a detector's FPN levels)

    @property
    def calls(self) -> int:
        return len(self.fired)

    @property
    def group(self) -> int:
        """Modules whose first output is the same tensor object share a group (-1: not run)."""
        return self.fired[0][1] if self.fired else -1

    @property
    def usable(self) -> bool:
        """A CAM can use this layer: run once, its output seen as maps of 2+ positions."""
        return self.calls == 1 and self.layout is not None

    @property
    def problem(self) -> Optional[str]:
        """Why this layer makes no useful CAM, in a few words; None when it does."""
        if self.calls == 0:
            return "it did not run in the forward pass"
        if self.calls > 1:
            return (f"it runs {self.calls} times in one forward pass (a CAM keeps one output "
                    f"per layer); name a layer that runs once")
        if self.layout is None:
            return f"its output ({self.output}) is not a map or token grid of the image"
        if self.degenerate:
            return ("the explained score does not reach its positions (zero gradient: a CAM "
                    "would be blank)")
        return None


def _passthrough(module: nn.Module) -> bool:
    return isinstance(module, PASS_TYPES) or bool(PASS_NAMES.search(type(module).__name__))


def passthrough_note(net: nn.Module, name: str, module: nn.Module) -> str:
    """A note for a target layer that only pools, drops or copies its input (AlexNet's
    ``features.12``, a MaxPool2d, for the last conv ``features.10``), naming the last module
    with weights before it in its parent; "" for any other layer."""
    if not _passthrough(module):
        return ""
    parent_name, _, key = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    before = ""
    for child, sub in parent.named_children():
        if child == key:
            break
        if any(True for _ in sub.parameters()) and not _passthrough(sub):
            before = f"{parent_name}.{child}" if parent_name else child
    where = f"; the last layer with weights before it is {quote(before)}" if before else ""
    return (f"target_layers: {quote(name)} is {a_type(module)}: it only pools, drops "
            f"or copies its input, so its maps are that input's (coarser after pooling), not "
            f"a layer's of its own{where}")


def survey(net: nn.Module, classifier: nn.Module, x: torch.Tensor, head: Head, *,
           mode: Optional[Mode] = None) -> list[LayerRow]:
    """Describe every module of ``net`` (``classifier`` wraps it) from one forward pass of the
    image batch ``x`` and one backward pass of the first image's top class score.

    Inplace modules are off for the pass; train/eval flags and requires_grad are restored."""
    named = [(n, m) for n, m in net.named_modules() if n]
    rows = [LayerRow(n, type(m).__name__, "-", passthrough=_passthrough(m),
                     linear=isinstance(m, nn.Linear)) for n, m in named]
    outputs: dict[int, torch.Tensor] = {}  # row index -> first output (kept alive: ids stay unique)
    groups: dict[int, int] = {}  # id(output tensor) -> group number
    kept: list[Any] = []  # every output, so no id is reused during the pass
    counter = [0]
    input_hw, batch = tuple(x.shape[-2:]), x.shape[0]
    mode = model_mode(net, "auto" if mode is None else mode)  # a Keras model's own 'nhwc'

    def record(index: int, out: Any) -> None:
        row = rows[index]
        kept.append(out)
        group = groups.setdefault(id(out), len(groups)) if isinstance(out, torch.Tensor) else -1
        row.fired += ((counter[0], group),)
        counter[0] += 1
        if row.calls > 1:
            return
        if not isinstance(out, torch.Tensor):
            row.output = type(out).__name__
            return
        row.shape = tuple(int(s) for s in out.shape)
        row.output = "(" + ", ".join(str(s) for s in row.shape) + ")"
        if out.is_floating_point() and out.ndim >= 3 and row.shape[0] == batch:
            row.layout = usable_layout(row.shape, input_hw, mode)  # not the windows of a Swin
            outputs[index] = out

    with preserved_state(classifier), non_inplace(classifier), torch.enable_grad():
        classifier.eval()
        try:
            with watching([module for _, module in named], record):
                out = classifier(x.detach().clone().requires_grad_(True))
                scores = head.scores(out)
        except ExplainError:
            raise
        except Exception as exc:  # shapes that do not fit the network, mostly
            text = first_line(exc)
            raise ExplainError(f"model: the forward pass failed on a {input_hw[0]}x{input_hw[1]} "
                               f"input ({type(exc).__name__}: {text}); "
                               + (channel_hint(exc) or "check preprocess.size and the model's "
                                  "input size")) from None
        if scores.ndim != 2 or scores.shape[0] != batch:  # score maps given to a classifier
            raise not_logits(out)
        if not scores.requires_grad:
            raise ExplainError(NO_GRADIENT)
        _mark_degenerate(rows, outputs, scores[0, _top_class(head, out, scores)])
    return rows


def _top_class(head: Head, out: Any, scores: torch.Tensor) -> int:
    """The first image's top class as 'predicted' ranks it (a segmenter's: by its pixels, not
    by its sum of scores, the lowest over the most pixels where its logits are negative)."""
    ranking = getattr(head, "ranking", None)
    if ranking is None:  # a detector's head: its scores rank
        return int(scores[0].argmax())
    with torch.no_grad():
        return int(ranking(out)[0].argmax())


NO_GRADIENT = ("model: the class scores carry no gradient (the forward pass detaches them or "
               "runs under no_grad), so no gradient CAM can be made")


def _mark_degenerate(rows: list[LayerRow], outputs: dict[int, torch.Tensor],
                     score: torch.Tensor) -> None:
    """Mark the usable layers where the top class's gradient is non-zero at < 2 positions."""
    wanted = [i for i in outputs if rows[i].usable]
    tensors = [outputs[i] for i in wanted if outputs[i].requires_grad]
    for i in wanted:
        rows[i].degenerate = not outputs[i].requires_grad  # not reached from the image at all
    if not tensors:
        return
    grads = torch.autograd.grad(score, tensors, allow_unused=True)
    for i, grad in zip([i for i in wanted if outputs[i].requires_grad], grads):
        if grad is None:
            rows[i].degenerate = True
            continue
        rows[i].degenerate = positions_reached(grad, rows[i].layout) < 2


def candidates(rows: list[LayerRow]) -> list[LayerRow]:
    """The layers 'auto' may pick, last first: one per output tensor (the outermost module that
    returned it), leaving out tensors made by pooling / dropout / identity / flatten modules,
    token outputs of a Linear (a qkv projection is no representation), and unusable or
    zero-gradient outputs."""
    members: dict[int, list[tuple[int, LayerRow]]] = {}
    for row in rows:
        for order, group in row.fired:
            if group >= 0:
                members.setdefault(group, []).append((order, row))
    found = []
    for group, events in sorted(members.items(), key=lambda kv: -max(o for o, _ in kv[1])):
        events.sort(key=lambda e: e[0])
        producer = events[0][1]  # the module that made the tensor; the others passed it on
        once = [row for _, row in events if row.calls == 1]
        if not once or producer.passthrough:
            continue
        rep = min(once, key=lambda r: (r.passthrough, r.name.count("."), len(r.name)))
        if not rep.usable or rep.degenerate:
            continue
        if producer.linear and rep.layout.kind == "tokens":
            continue
        found.append(rep)
    return found


def auto_layer(rows: list[LayerRow], skip: Optional[Callable[[LayerRow], bool]] = None
               ) -> LayerRow:
    """The layer ``target_layers: auto`` uses: the last one in forward order whose output a CAM
    can use, before the head (``skip``: layers a task counts as its head); ExplainError when
    there is none."""
    found = [row for row in candidates(rows) if skip is None or not skip(row)]
    if not found:
        raise ExplainError(f"target_layers: auto found no layer whose output is a feature map or "
                           f"token grid the class score depends on (of {len(rows)} modules); "
                           f"name one (explain layers CONFIG lists them)")
    return found[0]


def find_layer(net: nn.Module, dotted: str, field: str = "target_layers",
               rows: Optional[list[LayerRow]] = None) -> tuple[str, nn.Module]:
    """The sub-module named as named_modules() prints it, and that name with negative indexes
    (counting from the end) resolved: ``features.-1`` -> ('features.12', MaxPool2d). A name
    that is not there is a one-line ExplainError; with ``rows`` (a survey) its hint names
    layers a CAM can use."""
    module, resolved = net, []
    for part in dotted.split("."):
        children = {k: m for k, m in module._modules.items() if m is not None}
        key = part if part in children else None
        if key is None and re.fullmatch(r"-\d+", part) and -int(part) <= len(children):
            key = list(children)[int(part)]
        if key is None:
            hint = _hint(net, dotted, ".".join(resolved), list(children), rows)
            raise ExplainError(f"{field}: no layer {quote(dotted)} in the model{hint}")
        module = children[key]
        resolved.append(key)
    return ".".join(resolved), module


def _good(row: LayerRow) -> bool:
    return row.usable and not row.degenerate and not row.passthrough


def _hint(net: nn.Module, dotted: str, parent: str, children: list[str],
          rows: Optional[list[LayerRow]]) -> str:
    """' — ...' pointing at what is there: an index range, a close name, the top level."""
    part = dotted[len(parent) + 1:].split(".")[0] if parent else dotted.split(".")[0]
    good = [r for r in rows if _good(r)] if rows else []
    if re.fullmatch(r"-?\d+", part) and children and all(k.isdigit() for k in children):
        where = quote(parent) if parent else "the model"
        text = f" — {where} has layers {children[0]} to {children[-1]}"
        inside = [r for r in good if not parent or r.name.startswith(parent + ".")]
        if inside:
            last = max(inside, key=lambda r: r.fired[0][0])
            text += f"; the last one a CAM can use is {quote(last.name)}"
        return text
    names = [n for n, _ in net.named_modules() if n]
    near = close_match(dotted, names, cutoff=0.5)
    inside = [r for r in good if near and r.name.startswith(near[0] + ".")]
    # the closest name is a block ('backbonee': 'backbone'), not a layer a CAM can use
    if inside and not any(r.name == near[0] for r in good):
        last = max(inside, key=lambda r: r.fired[0][0])
        return (f" — did you mean {quote(near[0])}? (the last layer in it that a CAM can "
                f"use: {quote(last.name)})")
    close = suggest(dotted, [r.name for r in good]) if good else ""
    close = close or suggest(dotted, names)
    return close or f" (top-level modules: {', '.join(list(net._modules)[:12])})"


LEGEND = ["CAM column: map = (B, C, h, w) maps; channels-last = (B, h, w, C);",
          "  tokens P+hxw = P class/extra tokens, then an h x w grid of patch tokens;",
          "  zero grad = the explained score does not reach these positions (a blank CAM);",
          "  runs Nx = runs N times per forward pass: no target (a CAM keeps one output)"]


def _mark(row: LayerRow, auto: Optional[LayerRow]) -> str:
    if row.note:
        return row.note + ("  (auto)" if row is auto else "")
    if row.calls == 0:
        return "not run"
    if row.calls > 1:
        return f"runs {row.calls}x"
    if row.layout is None:
        return ""
    layout = row.layout
    if layout.kind == "nchw":
        text = f"map {row.shape[2]}x{row.shape[3]}"
    elif layout.kind == "nhwc":
        text = f"channels-last {row.shape[1]}x{row.shape[2]}"
    else:
        grid = f"{layout.grid[0]}x{layout.grid[1]}"
        text = f"tokens {layout.prefix}+{grid}" if layout.prefix else f"tokens {grid}"
    if row.degenerate:
        text += ", zero grad"
    return text + ("  (auto)" if row is auto else "")


def _cut(text: str, width: int) -> str:
    """``text`` for a table cell of ``width``: escaped (explain.names.printable), then cut."""
    text = printable(text, NAME_LIMIT)
    return text if len(text) <= width else text[:width - 3] + "..."


def format_table(rows: list[LayerRow],
                 pick: Optional[Callable[[list[LayerRow]], LayerRow]] = None) -> str:
    """The text ``explain layers`` prints: one line per module (name, type, output shape, how
    a CAM can read it), the auto pick (``pick``, default ``auto_layer``) marked, then a short
    legend. Names and types from the model are escaped (explain.names.printable): each row
    stays one line."""
    try:
        auto: Optional[LayerRow] = (pick or auto_layer)(rows)
    except ExplainError:
        auto = None
    table = [("layer", "type", "output", "CAM")] + \
        [(printable(r.name, NAME_LIMIT), _cut(r.type, 24), _cut(r.output, 28), _mark(r, auto))
         for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line[:3], widths)) + "  " + line[3]
             for line in table]
    lines = [line.rstrip() for line in lines]
    lines.append("")
    lines.append(f"auto: {printable(auto.name, NAME_LIMIT)} (the last layer before the head a "
                 f"CAM can use)" if auto
                 else "auto: no layer a CAM can use; see the CAM column")
    lines += LEGEND
    return "\n".join(lines)

"""The one exception type users see: caught once in the CLI and printed as one line; and
``first_line``, how another exception's text is quoted inside such a line."""

from __future__ import annotations

import re
from typing import Iterable, Optional, Sequence

FIRST_LINE_LIMIT = 200
# How an error's details (the problems of a config) are shown: on lines of their own, indented
# under its message; any line break inside a message or detail is shown escaped.
DETAIL = "\n  "
# Where a quoted text may be cut: at a space, else after a separator that is not part of a
# number ('2.00', '1,024' keep their '.' and ',').
_BREAKS = (re.compile(r"\s"), re.compile(r"[;:/()\[\]{}<>=|]"))


class ExplainError(Exception):
    """A problem the user can fix (bad config, missing file, unknown layer...).

    The message names the file and the field or key involved; the CLI prints it
    as a single line and exits with code 2. ``details`` (the problems of a config with
    several) are printed on lines of their own, indented under it. Its text is terminal-safe
    wherever it is shown (a traceback in a script or notebook too): the message and each
    detail pass explain.names.printable, for the names in them may come from a shared file,
    so a line break inside one (even a DETAIL) is shown escaped, never as a line of its own.
    """

    def __init__(self, message: object = "", *, details: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(str(d) for d in details)

    @property
    def message(self) -> str:
        """The first line's text, unescaped."""
        return str(self.args[0]) if self.args else ""

    def lines(self) -> list[str]:
        """The message, then each detail, each escaped: what the CLI prints."""
        from explain.names import printable
        return [printable(self.message), *(printable(d) for d in self.details)]

    def __str__(self) -> str:
        return DETAIL.join(self.lines())


def relayed(text: str, suffix: str = "") -> ExplainError:
    """The error another process described as ``text`` (``str`` of an ExplainError, or one
    line), ``suffix`` added to its message: its text is escaped already, so each DETAIL in it
    is a detail break the error had, never one from a file."""
    first, *details = text.split(DETAIL)
    return ExplainError(first + suffix, details=details)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C once a run has started claiming its folder: the message says what the folder
    holds (nothing, some finished images, complete results) and how to go on; the CLI prints
    it instead of its plain 'interrupted' line."""


def first_line(exc: BaseException, limit: int = FIRST_LINE_LIMIT) -> str:
    """The first non-blank line of an exception's text (its type name when it has none), with
    runs of spaces made one and at most ``limit`` characters: a longer line is cut between
    words and ends in ' ...', so no number or word is cut in half (an allocation error keeps
    its byte count whole, or leaves it out)."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ of a model's own exception
        text = ""
    line = next((" ".join(part.split()) for part in text.splitlines() if part.strip()), "")
    line = line or type(exc).__name__
    if len(line) <= limit:
        return line
    room = max(limit - 4, 1)
    for pattern in _BREAKS:
        ends = [m.start() if pattern is _BREAKS[0] else m.end()
                for m in pattern.finditer(line, 0, room + 1)]
        ends = [end for end in ends if end >= room // 2]
        if ends:
            return line[:ends[-1]].rstrip() + " ..."
    return line[:room] + " ..."


def model_failed(exc: Exception, image: str, size: Optional[Sequence[int]] = None
                 ) -> ExplainError:
    """The model's own code failed on an image (of ``size``, H x W, as fed): one line saying
    where and what to check (mostly an input size the network does not take: a ViT's)."""
    fed = f" (a {size[0]}x{size[1]} input)" if size is not None else ""
    hook = users_hook(exc)
    if hook:
        return ExplainError(f"model: the forward pass failed on {image}{fed} in {hook}, a "
                            f"hook on the model that is not explain's ({type(exc).__name__}: "
                            f"{first_line(exc)}); remove your own hooks (handle.remove()) "
                            f"before explain runs the model")
    return ExplainError(f"model: the forward pass failed on {image}{fed} "
                        f"({type(exc).__name__}: {first_line(exc)}); " + (channel_hint(exc) or
                        "if the model takes one input size, check preprocess.size ([H, W] "
                        "feeds every image at that size)"))


_CHANNELS = re.compile(r"to have (\d+) channels, but got (\d+) channels")


def channel_hint(exc: BaseException) -> str:
    """What to set when the model's first layer wants another number of colour channels
    than it was fed (a grey network, Conv2d(1, ...), given RGB said 'check preprocess.size');
    "" for any other failure."""
    found = _CHANNELS.search(str(exc))
    if not found:
        return ""
    wanted, fed = found.groups()
    if wanted == "1":
        return (f"the network takes 1 channel (grey) and was fed {fed}: set model.in_channels: "
                f"1 (it is then given their grey, as Pillow's convert('L')), and preprocess.mean "
                f"and std the one value it was trained with (e.g. [0.5])")
    if fed == "1":  # only model.in_channels: 1 feeds one channel
        return (f"the network's first layer takes {wanted} channels and was fed 1, the grey "
                f"channel model.in_channels: 1 asks for; remove model.in_channels (or set 3) "
                f"for a network that takes RGB")
    return (f"the network's first layer takes {wanted} channels and was fed {fed}; explain "
            f"feeds 3 (RGB), or 1 with model.in_channels: 1")


def users_hook(exc: BaseException) -> str:
    """Where ``exc`` was raised, when in a forward (pre-)hook on one of the model's modules
    that explain did not put there (a student's own Grad-CAM hook left on the model, which
    fails under explain's no-grad pass): "fwd (my_cam.py:25)"; "" otherwise."""
    import os
    ours = os.path.dirname(os.path.abspath(__file__))
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        module, code = tb.tb_frame.f_locals.get("self"), tb.tb_next.tb_frame.f_code
        hooks = [*getattr(module, "_forward_hooks", {}).values(),
                 *getattr(module, "_forward_pre_hooks", {}).values()] \
            if tb.tb_frame.f_code.co_name in ("_call_impl", "inner") else []
        if any(getattr(h, "__code__", None) is code for h in hooks) and \
                "pytorch_grad_cam" not in code.co_filename and \
                not os.path.abspath(code.co_filename).startswith(ours + os.sep):
            return f"{code.co_name} ({os.path.basename(code.co_filename)}:" \
                   f"{tb.tb_next.tb_lineno})"
        tb = tb.tb_next
    return ""

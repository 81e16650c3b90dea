"""Model files recognised by their first bytes, not by their names:

- safetensors (8-byte little-endian header length, then a JSON header): tensors only, so
  nothing in it can run; the header is bounded and checked against the file size first;
- TorchScript archives (torch.jit.save): a zip holding its own compiled program (refused).
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import torch

from explain.errors import ExplainError, first_line
from explain.names import quote
from explain.models.pickles import is_zip


MAX_SAFETENSORS_HEADER = 32 * 1024 * 1024  # a header lists names, dtypes, shapes: a ViT-H's is ~100 KB


def looks_like_safetensors(path: Path) -> bool:
    """Whether the file starts like a safetensors file: an 8-byte little-endian header length
    followed by the JSON header's '{' (no torch file starts so: a zip has 'PK', a pickle 0x80)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and \
        struct.unpack("<Q", head[:8])[0] <= MAX_SAFETENSORS_HEADER


def _bad_safetensors(path: Path, why: str) -> ExplainError:
    return ExplainError(f"{path}: not a valid safetensors file: {why}")


def _safetensors_data_size(path: Path) -> int:
    """Check the header's bounds and entries (nothing is allocated from its numbers); returns
    how many data bytes the tensors cover."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad_safetensors(path, f"{size} bytes, too short for the 8-byte header length")
        length = struct.unpack("<Q", head)[0]
        if length > MAX_SAFETENSORS_HEADER:
            raise _bad_safetensors(path, f"its header would be {length} bytes (at most "
                                         f"{MAX_SAFETENSORS_HEADER})")
        if 8 + length > size:
            raise _bad_safetensors(path, f"truncated: its header needs {length} bytes, the file "
                                         f"has {size - 8} after the length")
        raw = f.read(length)
    from explain.readback import container_problem
    problem = container_problem(raw)  # '[[],[],...]': 25x its 32 MiB in memory once parsed
    if problem:
        raise _bad_safetensors(path, f"its header holds {problem}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad_safetensors(path, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _bad_safetensors(path, "its header is not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and
                all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise _bad_safetensors(path, f"tensor {quote(name, 60)} has no valid data_offsets")
        end = max(end, offsets[1])
    data = size - 8 - length
    if end != data:
        raise _bad_safetensors(path, f"truncated or padded: its tensors cover {end} bytes of data, "
                                     f"the file holds {data}")
    return end


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a safetensors file (tensors only, by design: nothing in it can run).
    The header is bounded and checked against the file size first; any fault is one line."""
    _safetensors_data_size(path)
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise ExplainError(f"{path}: reading safetensors files needs the safetensors package, "
                           f"which is not installed: pip install explain[timm] "
                           f"(or safetensors)") from None
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, ValueError, TypeError, RuntimeError, OSError) as exc:
        raise _bad_safetensors(path, first_line(exc)) from None
    if not tensors:
        raise _bad_safetensors(path, "it holds no tensors")
    return tensors


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (torch.jit.save): a zip whose top folder holds
    the compiled program ('code/') or 'constants.pkl'; torch.save never writes either."""
    if not is_zip(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                parts = name.split("/")
                if len(parts) >= 2 and (parts[1] == "code" or parts[1] == "constants.pkl"):
                    return True
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return False

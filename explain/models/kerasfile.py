"""A Keras file checked before Keras opens it (explain.models.keras): its size, a .keras
archive's members (count, sizes, compression ratio, config.json), an HDF5 file's datasets, and
the model config's layer calls (each on a model tensor); a file over any bound is refused in
one line naming it and model.keras."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

from explain.errors import ExplainError, first_line
from explain.names import quote, short

FIELD = "model.keras"
SUFFIXES = (".keras", ".h5", ".hdf5")
MAX_H5_OBJECTS = 100_000  # groups, datasets and links in an HDF5 file (VGG16's: ~100)
WEIGHTS_H5 = "model.weights.h5"  # in a .keras archive (not .npz: model.save never writes it)
MAX_CONFIG_BYTES = 64 * 1024 * 1024  # config.json in a .keras archive (a VGG16's is ~20 KB)
MAX_FILE_BYTES = 4 * 2**30  # a .keras or .h5 file (Keras' own bomb floor; VGG16's is 528 MB)
MAX_MEMBERS = 256  # members of a .keras archive (config, metadata, weights, a few assets)
MAX_RATIO = 100  # a member's unpacked / stored bytes, past its first SLACK_BYTES
SLACK_BYTES = 2**20


def check_file(path: Path) -> None:
    """A readable .keras archive or .h5 file at ``path``, of bounded size and content, before
    keras sees it (keras treats some names as remote or as folders)."""
    try:
        found = path.is_file()
    except OSError as exc:
        raise ExplainError(f"{FIELD}: {short(path)}: {exc.strerror}") from None
    if not found:
        what = "a folder, not a model file" if path.is_dir() else "model file not found"
        raise ExplainError(f"{short(path)}: {what} ({FIELD}): save the model with "
                           f"model.save(\"model.keras\") and put the file there")
    if path.suffix.lower() not in SUFFIXES:
        raise ExplainError(f"{short(path)}: not a Keras model file ({FIELD} takes a .keras "
                           f"archive from model.save(\"model.keras\") or a legacy .h5 file)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ExplainError(f"{short(path)}: cannot read the model file ({FIELD}): "
                           f"{exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise refused(path, f"the file holds {gb(size)}, over the {gb(MAX_FILE_BYTES)} "
                             f"explain reads as a Keras model")
    if path.suffix.lower() == ".keras":
        _check_archive(path, size)
    elif head != b"\x89HDF\r\n\x1a\n":
        raise ExplainError(f"{short(path)}: not an HDF5 file ({FIELD}; a legacy Keras .h5 "
                           f"model starts with the HDF5 signature)")
    elif importlib.util.find_spec("h5py") is None:
        raise ExplainError(f"{short(path)}: reading a legacy .h5 Keras model needs h5py, which "
                           f"is not installed: pip install h5py (or save the model as .keras)")
    else:
        _check_h5(path, path.name, size, path)
        check_calls(_h5_config(path), "model_config", path)


def gb(count: int) -> str:
    return (f"{count / 2**30:.2f} GiB" if count >= 2**30 else
            f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count} bytes")


def refused(path: Path, why: str) -> ExplainError:
    return ExplainError(f"{short(path)}: refused ({FIELD}): {why}")


def _check_members(archive: zipfile.ZipFile, size: int, path: Path) -> None:
    """The members of a .keras archive of ``size`` bytes, bounded as the module says."""
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise refused(path, f"it holds {len(members)} members (a Keras model's archive holds "
                             f"a few; explain reads at most {MAX_MEMBERS})")
    unpacked = 0
    for info in members:
        name = quote(info.filename, 60)
        if info.filename.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", info.filename):
            raise refused(path, f"member {name} has a path outside the archive")
        if info.header_offset + info.compress_size > size:
            raise refused(path, f"member {name} declares more stored bytes "
                                 f"({info.compress_size}) than the archive holds ({size})")
        if info.file_size > SLACK_BYTES + MAX_RATIO * info.compress_size:
            raise refused(path, f"member {name} declares {gb(info.file_size)} "
                                 f"unpacked from {gb(info.compress_size)} stored (over "
                                 f"{MAX_RATIO} times: a decompression bomb)")
        unpacked += info.file_size
    if unpacked > unpacked_bound(size):
        raise refused(path, f"the members unpack to {gb(unpacked)} from "
                             f"{gb(size)} (explain unpacks at most {gb(unpacked_bound(size))} "
                             f"from an archive this size)")


def unpacked_bound(size: int) -> int:
    """The most bytes explain lets Keras unpack or read from ``size`` bytes of model file."""
    return SLACK_BYTES * 64 + 2 * size


def _check_archive(path: Path, size: int) -> None:
    """A .keras file is a zip archive of bounded members holding config.json (of a sane
    size) and weights whose declared sizes fit the archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(archive, size, path)
            info = {i.filename: i for i in archive.infolist()}
            config = info.get("config.json")
            if config is None:
                raise ExplainError(f"{short(path)}: not a .keras archive ({FIELD}): it holds "
                                   f"no config.json")
            if config.file_size > MAX_CONFIG_BYTES:
                raise refused(path, f"its config.json unpacks to {config.file_size} bytes (a "
                                     f"model's takes well under {MAX_CONFIG_BYTES // 2**20} MiB)")
            check_calls(archive.read(config), "config.json", path)
            if WEIGHTS_H5 not in info:  # Keras reads them from an .npz only when made so
                raise refused(path, f"it holds no {WEIGHTS_H5} (the weights model.save writes)")
            with _member(archive, info[WEIGHTS_H5], path) as member:
                _check_h5(member, WEIGHTS_H5, info[WEIGHTS_H5].file_size, path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ExplainError(f"{short(path)}: not a .keras archive ({FIELD}): it is not a "
                           f"readable zip file ({first_line(exc, 80)})") from None


def check_calls(text: Any, where: str, path: Path) -> None:
    """Every layer call (node) of the model config ``text`` takes a model tensor. Keras makes
    each call as it loads the file: one on constants only runs then and there, on real
    tensors, before any pass explain bounds (a 20 KB file's `Arange` op node called on (0,
    2**30) took 4 GiB, the meta-device load none)."""
    try:
        stack = [json.loads(text)]
    except (TypeError, ValueError, RecursionError):  # none, or not JSON: Keras says so
        return
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            nodes = item.get("inbound_nodes", [])
            for node in nodes if isinstance(nodes, list) else [None]:  # Keras iterates it
                if not (node and isinstance(node, list) or _has_tensor(node)):
                    raise refused(path, f"{where}: the layer {quote(str(item.get('name')), 60)} "
                                        f"is called on constants, not on a model tensor (Keras "
                                        f"would run that call as it loads the file)")
            stack.extend(item.values())


def _h5_config(path: Path) -> Any:
    """A legacy .h5 model's model_config attribute (JSON text), or None."""
    import h5py
    try:
        with h5py.File(path, "r") as handle:
            return handle.attrs.get("model_config")
    except Exception:  # noqa: BLE001 (read already by _check_h5: Keras fails on it too)
        return None


def _has_tensor(node: Any) -> bool:
    """Whether a node's args / kwargs hold a symbolic tensor where Keras looks for one:
    in plain lists and mappings (an object's config hides it in the object)."""
    stack = [node.get("args"), node.get("kwargs")] if isinstance(node, dict) else []
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, dict):
            continue
        elif "class_name" in item and "config" in item:  # else a mapping, not an object
            if item["class_name"] == "__keras_tensor__":
                return True
        else:
            stack.extend(item.values())
    return False


class _Window(io.RawIOBase):
    """Bytes ``start`` .. ``start + length`` of an open file, as a seekable file (an archive
    member stored as it is, read in place)."""

    def __init__(self, f: Any, start: int, length: int):
        super().__init__()
        self.f, self.start, self.length, self.pos = f, start, length, 0

    def readable(self) -> bool:  # noqa: D102
        return True

    seekable = readable  # tell(): io's own, seek(0, 1)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self.pos, self.length)[whence]
        self.pos = max(0, min(self.length, base + offset))
        return self.pos

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.length - self.pos)
        self.f.seek(self.start + self.pos)
        data = self.f.read(count)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


@contextlib.contextmanager
def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> Iterator[Any]:
    """A seekable file of one member (bounded already): read in place when stored as it is
    (Keras' way), else unpacked into memory (Keras reads it whole too)."""
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as f:
            yield io.BytesIO(f.read())
        return
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header of {info.filename[:60]}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        yield _Window(f, info.header_offset + 30 + name_len + extra_len, info.compress_size)


def _check_h5(source: Any, where: str, size: int, path: Path) -> None:
    """An HDF5 file (a legacy model, an archive's weights) whose datasets declare at most
    unpacked_bound(size) bytes in all, and name no other file."""
    import h5py
    seen = [0, 0]  # objects, declared bytes

    def visit(name: str, link: Any) -> Optional[str]:  # a problem stops the walk
        seen[0] += 1
        obj = handle.get(name) if isinstance(link, h5py.HardLink) else None
        if seen[0] > MAX_H5_OBJECTS:
            return f"{where} holds over {MAX_H5_OBJECTS} objects"
        if isinstance(link, h5py.ExternalLink) or isinstance(obj, h5py.Dataset) and (
                obj.is_virtual or obj.external):
            return f"{where} reads another file (from {quote(name, 60)})"
        if isinstance(obj, h5py.Dataset):
            seen[1] += math.prod(obj.shape or ()) * obj.dtype.itemsize
        if seen[1] > unpacked_bound(size):
            return (f"the datasets of {where} declare {gb(seen[1])} or more in {gb(size)} "
                    f"(explain reads at most {gb(unpacked_bound(size))} from a file this size)")
        return None

    try:
        with h5py.File(source, "r") as handle:
            problem = handle.visititems_links(visit)
    except Exception as exc:  # h5py's errors for a damaged file: Keras would fail on them too
        raise ExplainError(f"{short(path)}: Keras cannot load it ({FIELD}): {where} is not a "
                           f"readable HDF5 file ({first_line(exc, 80)})") from None
    if problem:
        raise refused(path, problem)

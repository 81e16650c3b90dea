"""What a run folder holds, read back safely: a run's arrays (.npy) and its zip state files.
A shared run folder is anyone's edit, so nothing read back may be larger in memory than the
bytes on disk: a .npy header's claim is checked against its bytes, a zip's members must be
stored. The pictures read back go through explain.images.reading.decode_stored."""

from __future__ import annotations

import io
import zipfile
from typing import Optional, Union

import numpy as np

MIN_BYTES_PER_CONTAINER = 16  # explain's records hold a list or object every 90-130 bytes, a
# labelled list or box file one every 25 or more; a file of "[]," or "{}," holds one every 3,
# and Python makes 64 bytes of each: 16 MB took 1.3 GB before anything was checked


def container_problem(data: Union[bytes, str]) -> Optional[str]:
    """Why JSON text shared with the run (a record, a labelled list, a box file) is refused
    before it is parsed: over 1 MiB and a list or object every MIN_BYTES_PER_CONTAINER bytes
    or less (counted with '[' and '{' in strings too, so never fewer than there are)."""
    if len(data) <= 1 << 20:
        return None
    opening = (b"[", b"{") if isinstance(data, bytes) else ("[", "{")
    if (data.count(opening[0]) + data.count(opening[1])) * MIN_BYTES_PER_CONTAINER > len(data):
        return (f"more lists and objects than such a file holds (one every "
                f"{MIN_BYTES_PER_CONTAINER} bytes or less)")
    return None


def stored_only(z: zipfile.ZipFile) -> None:
    """ValueError unless every member of ``z`` is stored, not compressed: the state files
    explain writes (atlas, mean maps) store theirs, so what is read back is never larger than
    the file (a compressed member could inflate a small edited file to gigabytes)."""
    for info in z.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ValueError(f"{info.filename[:80]!r} is compressed; explain stores its members")


NUMBER_KINDS = frozenset("biuf")  # numpy's kinds of the arrays explain saves


def stored_array(data: bytes) -> np.ndarray:
    """A .npy file's array, read back from a run folder: ValueError unless its header's
    shape and type account for exactly the bytes that follow (numpy allocates what the
    header claims before it reads: 16 bytes claiming 10^12 floats were a MemoryError) and
    hold numbers (booleans, integers, floats: what explain saves). A type of no bytes
    (``|V0``, ``|S0``, ``<U0``) accounts for no bytes at any shape: a 128-byte file of
    6000 x 6000 of them had a shared atlas state's heaps sized by that shape, 1.4 GB."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"version {version}")
        shape, _, dtype = read_header(buf)
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise ValueError(f"not a .npy array ({str(exc)[:80]})") from None
    if dtype.hasobject:
        raise ValueError("holds Python objects")
    if dtype.kind not in NUMBER_KINDS or dtype.itemsize == 0:
        raise ValueError(f"holds {dtype} values, not numbers")
    count = 1
    for side in shape:
        count *= int(side)
    if count * dtype.itemsize != len(data) - buf.tell():
        raise ValueError(f"its header claims {shape} {dtype}, {count * dtype.itemsize} bytes, "
                         f"but {len(data) - buf.tell()} follow")
    return np.load(io.BytesIO(data), allow_pickle=False)

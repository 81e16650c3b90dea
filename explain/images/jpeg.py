"""A JPEG's structure walked before it is decoded, in bounded reads: where its image data starts
(``first_scan``), whether it ends (``jpeg_complete``), and whether it is one to refuse
(``jpeg_problem``: no end-of-image marker, or more scans or segments than a photo has).
``read(offset, count)`` gives the bytes, from a file or from memory."""

from __future__ import annotations

import re
from functools import partial
from typing import Callable, Optional

JPEG_START, TRUNCATED = b"\xff\xd8", "truncated JPEG (no end-of-image marker after the image data)"


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's image data ends with its end-of-image marker (FFD9).

    The marker is looked for after the first start-of-scan segment, so an EXIF thumbnail's
    own marker does not count, and bytes a phone appends after the end are allowed."""
    read = bytes_at(data)
    first = first_scan(read)
    return first is not None and _ends_after(read, len(data), first)


# Two-byte markers, as libjpeg and Pillow read them: a stuffed zero (FF00, junk there), TEM
# and the restarts. Read as a length, 'FF00 FFE0' hid 65 KB from the walk, the image libjpeg
# decodes included: 5,400 repeats of a scan in a 65 KB file, 26 s of CPU at 36 MP.
NO_LENGTH = frozenset([0x00, 0x01, *range(0xD0, 0xD8)])
MAX_JPEG_STEPS, TAIL_CHUNK = 10_000, 2**20  # segments before the scan, and after (a photo: dozens)
JPEG_JUNK = 4096  # bytes that are no marker between two segments (an old editor's padding)
# Scans in one JPEG: a progressive photo has about 10 (libjpeg's script), and the decoder
# makes a pass over the whole image for each one, so a small file repeating a 14-byte scan
# 2,000 times took 50 s of CPU to decode at 40 MP. An appended preview adds one or two.
MAX_JPEG_SCANS = 100


def jpeg_problem(read: Callable[[int, int], bytes], size: int) -> Optional[str]:
    """Why a JPEG of ``size`` bytes, read through ``read(offset, count)``, is refused before
    decoding (no end marker, or more than MAX_JPEG_SCANS scans), or None."""
    first = first_scan(read)
    if first is None or not _ends_after(read, size, first):
        return TRUNCATED
    scans, segments = _scans(read, size, first)
    if scans > MAX_JPEG_SCANS:
        return (f"more than {MAX_JPEG_SCANS} scans in one JPEG (a progressive photo has about "
                f"10, and decoding makes a pass over the image for each); re-encode it")
    if segments > MAX_JPEG_STEPS:
        return (f"more than {MAX_JPEG_STEPS} segments after the first scan (a photo has a few "
                f"dozen); re-encode it")
    return None


def first_scan(read: Callable[[int, int], bytes]) -> Optional[int]:
    """Where the first start-of-scan marker is, after the segment headers (at most
    MAX_JPEG_STEPS of them); None when the headers are broken or never reach a scan. Bytes
    that are no marker between two segments are skipped up to the next FF, as libjpeg (with a
    'Corrupt JPEG data: extraneous bytes' warning) and Pillow do: up to JPEG_JUNK at a time;
    a marker of NO_LENGTH is its two bytes."""
    return _headers(read)[0]


def without_padding(data: bytes) -> bytes:
    """A JPEG's bytes with those that are no marker between its segments cut out (as
    ``first_scan`` skips them): libjpeg decodes the same pixels from it without printing
    'Corrupt JPEG data: N extraneous bytes' on the terminal at every decode."""
    first, padding = _headers(bytes_at(data))
    if first is None or not padding:
        return data
    kept, at = [], 0
    for start, end in padding:
        kept.append(data[at:start])
        at = end
    return b"".join(kept) + data[at:]


def _headers(read: Callable[[int, int], bytes]) -> tuple[Optional[int], list[tuple[int, int]]]:
    """(first_scan's answer, the (start, end) of each run of padding skipped on the way)."""
    pos, padding = 2, []
    for _ in range(MAX_JPEG_STEPS):
        head = read(pos, 4)
        if len(head) < 4:
            return None, padding
        if head[0] != 0xFF:
            skip = read(pos, JPEG_JUNK).find(b"\xff")
            if skip < 0:
                return None, padding
            padding.append((pos, pos + skip))
            pos += skip
            continue
        if head[1] == 0xFF:  # fill byte
            pos += 1
            continue
        if head[1] in NO_LENGTH:
            pos += 2
            continue
        if head[1] == 0xDA:  # start of scan: entropy-coded data follows
            return pos, padding
        pos += 2 + int.from_bytes(head[2:4], "big")
    return None, padding


# A marker with a length, or the end (D9): FF then not 00 (a data byte FF), FF (fill), a
# restart (D0-D7), TEM (01) or a start of image (D8)
_MARKER = re.compile(rb"\xff[\x02-\xcf\xd9-\xfe]")


def _scans(read: Callable[[int, int], bytes], size: int, start: int) -> tuple[int, int]:
    """(scans, segments) of the image, counted from its first scan (at ``start``) to its
    end-of-image marker, stopping once past MAX_JPEG_SCANS scans or MAX_JPEG_STEPS segments.
    Markers are found in C by a regular expression and a segment's header is skipped by its
    length, so neither what follows the image (a phone's appended video) nor the bytes inside
    a segment count. The file is read a chunk at a time, each chunk once, and the segments
    walked are bounded, so a file of millions of tiny segments is refused in milliseconds."""
    count, segments, pos, base, chunk = 0, 0, start, start, b""
    while count <= MAX_JPEG_SCANS and segments <= MAX_JPEG_STEPS and pos < size:
        if not base <= pos < base + TAIL_CHUNK or not chunk:
            base, chunk = pos, read(pos, TAIL_CHUNK + 4)  # + a marker's own 4 bytes
        found = _MARKER.search(chunk, pos - base)
        if found is None or found.start() >= TAIL_CHUNK:
            pos = base + TAIL_CHUNK
            continue
        at = found.start()
        if chunk[at + 1] == 0xD9:  # the end of the image
            break
        count += chunk[at + 1] == 0xDA
        segments += 1
        pos = base + at + 2 + int.from_bytes(chunk[at + 2:at + 4], "big")
    return count, segments


def _ends_after(read: Callable[[int, int], bytes], size: int, pos: int) -> bool:
    """Whether an end marker follows the first scan (at ``pos``) in ``size`` bytes read through
    ``read(offset, count)``: looked for backwards from the end, so a complete file is decided
    by its tail without reading it all."""
    end = size
    while end > pos:
        start = max(pos, end - TAIL_CHUNK)
        if b"\xff\xd9" in read(start, end - start + 1):  # one byte more: a marker across
            return True
        end = start
    return False


def bytes_at(data: bytes) -> Callable[[int, int], bytes]:
    """``read(offset, count)`` over bytes in memory, as the walks here (and a PNG's) read."""
    return partial(_slice, data)


def _slice(data: bytes, at: int, count: int) -> bytes:
    return data[at:at + count]

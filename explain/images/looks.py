"""What a photo looks like, in 128 bits, to find the images of a run that are flips, shifts or
copies of one another: "which map to trust" resamples images as independent draws, and such
images are not new evidence (report.photo_separator counts them as one photo; a run that
does not say so is told which images look alike).

A look is the difference hash of the photo and of its mirror image: the photo in grey,
shrunk to 9 x 8 pixels, one bit per pair of horizontal neighbours (is the right one
brighter?), 64 bits each, written as 32 hex digits. Two images look alike when either of one's
hashes is at most ``NEAR_BITS`` bits from the other's first. On the repository's three
photos: a mirror image is 0 bits from its photo, a copy 1.7 times as large, a half-size
JPEG at quality 40 and a shift of 7 pixels 0 to 3, the three photos 22 or more from each
other (tests/test_photos.py); crops are not found (5% of each side: 11 bits, 10%: 14 to
23)."""

from __future__ import annotations

import re
from typing import Callable, Optional

import cv2
import numpy as np

NEAR_BITS = 8  # at most this many different bits: alike
MAX_LOOKED = 5000  # images compared pairwise (25 million pairs at most); the rest not
LOOK = re.compile(r"[0-9a-f]{32}")


def _bits(small: np.ndarray) -> int:
    """The 64-bit difference hash of a 9 x 8 grey picture."""
    return int.from_bytes(np.packbits((small[:, 1:] > small[:, :-1]).ravel()).tobytes(), "big")


def look(rgb: np.ndarray) -> str:
    """The look of an RGB photo (any size, uint8 or float): 32 hex digits, its difference
    hash and its mirror image's."""
    # bilinear to 72 x 64 first, then areas of 8 x 8: within 2 bits of the areas of the
    # whole photo on the repository's photos and their variants, at a tenth of the time (30
    # us against 300 for 224 x 448 floats: a run's critical path)
    pixels = np.ascontiguousarray(rgb, dtype=np.float32)  # uint8 would round: other bits
    shrunk = cv2.resize(pixels, (72, 64), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(shrunk, (9, 8), interpolation=cv2.INTER_AREA)
    grey = small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return f"{_bits(grey):016x}{_bits(grey[:, ::-1]):016x}"


def alike(looks: dict[str, Optional[str]], unit: Callable[[str], str]) -> list[list[str]]:
    """Groups of images (ids, in the order given) that look alike and yet are different
    units (``unit``: an image's photo, or the image), biggest first; images without a look,
    and those after the first MAX_LOOKED, are not compared."""
    ids = [i for i, v in looks.items() if v and LOOK.fullmatch(v)][:MAX_LOOKED]
    if len(ids) < 2:
        return []
    first = np.array([int(looks[i][:16], 16) for i in ids], dtype=np.uint64)
    mirror = np.array([int(looks[i][16:], 16) for i in ids], dtype=np.uint64)
    codes: dict[str, int] = {}  # each unit a number (not a numpy array of the ids' text)
    units = np.array([codes.setdefault(unit(i), len(codes)) for i in ids])
    label = np.arange(len(ids))  # each image's group; merged groups take the lowest label
    # vectorised: a Python union per near pair took 5.5 s for 5,000 images of one look
    for a in range(len(ids) - 1):
        near = np.minimum(np.bitwise_count(first[a + 1:] ^ first[a]),
                          np.bitwise_count(first[a + 1:] ^ mirror[a])) <= NEAR_BITS
        near &= units[a + 1:] != units[a]
        if not near.any():
            continue
        joined = np.union1d(label[a + 1:][near], label[a:a + 1])
        if len(joined) > 1:
            label[np.isin(label, joined)] = joined[0]
    groups: dict[int, list[str]] = {}
    for k, i in enumerate(ids):
        groups.setdefault(int(label[k]), []).append(i)
    found = [g for g in groups.values() if len({unit(i) for i in g}) > 1]
    return sorted(found, key=lambda g: -len(g))

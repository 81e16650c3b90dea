"""Rebuild images/cat.jpg and images/both.jpg from the committed sources.

cat.jpg  : Chelsea the cat (scikit-image sample data, CC0), re-encoded as JPEG from chelsea.png.
both.jpg : cat left, dog right. Each photo is centre-cropped to a square and resized to
           224x224, then the two squares are put side by side (448x224), so the right answer
           of a localisation test is known: cat in the left half, dog in the right half.

Usage: python scripts/make_images.py CHELSEA_PNG   (writes into images/)
"""

import sys
from pathlib import Path

import cv2
import numpy as np

IMAGES = Path(__file__).resolve().parent.parent / "images"


def square(img: np.ndarray, side: int = 224) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return cv2.resize(img[top:top + s, left:left + s], (side, side), interpolation=cv2.INTER_AREA)


def main(chelsea_png: str) -> None:
    cat = cv2.imread(chelsea_png, cv2.IMREAD_COLOR)
    dog = cv2.imread(str(IMAGES / "dog.jpg"), cv2.IMREAD_COLOR)
    cv2.imwrite(str(IMAGES / "cat.jpg"), cat, [cv2.IMWRITE_JPEG_QUALITY, 95])
    both = np.hstack([square(cat), square(dog)])
    cv2.imwrite(str(IMAGES / "both.jpg"), both, [cv2.IMWRITE_JPEG_QUALITY, 95])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(IMAGES / "cat.jpg"))

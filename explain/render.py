"""Pictures: CAM overlays (OpenCV) and per-class panels (matplotlib). Arrays in, arrays out;
saving happens in ``explain.outputs``."""

from __future__ import annotations

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402


def colormap_code(name: str) -> int:
    """'jet' -> cv2.COLORMAP_JET."""
    return getattr(cv2, f"COLORMAP_{name.upper()}")


def overlay(rgb: np.ndarray, cam: np.ndarray, colormap: str = "jet",
            image_weight: float = 0.5) -> np.ndarray:
    """The CAM coloured with an OpenCV colormap over the photo; uint8 RGB (H, W, 3)."""
    return show_cam_on_image(rgb.astype(np.float32), cam.astype(np.float32), use_rgb=True,
                             colormap=colormap_code(colormap), image_weight=image_weight)


def panel(rows: list[tuple[str, np.ndarray, list[np.ndarray]]], methods: list[str],
          title: str) -> plt.Figure:
    """One figure: a row per image (label, photo, overlays), a column per method.
    ``cell_boxes(fig)`` says where each picture landed."""
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.4 * len(rows)), squeeze=False)
    for r, (label, photo, overlays) in enumerate(rows):
        for c, img in enumerate([photo, *overlays]):
            ax = axes[r][c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else methods[c - 1], fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def cell_boxes(fig: plt.Figure, dpi: int = 100) -> list[list[tuple[int, int, int, int]]]:
    """Per row and column of a panel, the picture's pixel box (x0, y0, x1, y1) in the PNG that
    ``outputs.RunFolder.write_figure`` saves (dpi 100, y from the top)."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    height = fig.canvas.get_width_height()[1]
    axes = [ax for ax in fig.axes if ax.images]
    cols = axes[0].get_gridspec().get_geometry()[1]
    boxes: list[list[tuple[int, int, int, int]]] = []
    for i, ax in enumerate(axes):
        if i % cols == 0:
            boxes.append([])
        box = ax.images[0].get_window_extent()
        boxes[-1].append((round(box.x0), round(height - box.y1), round(box.x1), round(height - box.y0)))
    return boxes

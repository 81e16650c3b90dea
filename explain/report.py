"""Numbers about each map (peak, where its mass lies) and the run summary (JSON, CSV, console)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def map_stats(cam: np.ndarray) -> dict[str, Any]:
    """Peak location (x, y in input pixels) and the share of the map's mass in each half.

    An all-zero map has no peak and its shares are reported as 0.
    """
    h, w = cam.shape
    total = float(cam.sum())
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)

    def share(part: np.ndarray) -> float:
        return round(float(part.sum()) / total, 4) if total > 0 else 0.0

    return {
        "peak_x": int(x), "peak_y": int(y), "peak_value": round(float(cam.max()), 4),
        "mass_left": share(cam[:, : w // 2]), "mass_right": share(cam[:, w - w // 2:]),
        "mass_top": share(cam[: h // 2]), "mass_bottom": share(cam[h - h // 2:]),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("explain", "grad-cam", "torch", "torchvision", "numpy", "opencv-python-headless"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def csv_rows(summary: dict) -> list[dict]:
    """One row per image x class x method, with the image's prediction alongside."""
    rows = []
    for image in summary["images"]:
        for item in image["cams"]:
            rows.append({"image": image["id"], "predicted": image["predicted"],
                         **{f"p_{k}": v for k, v in image["probabilities"].items()}, **item})
    return rows


def console_lines(summary: dict) -> list[str]:
    lines = [f"explain: {summary['name']} -> {summary['output_dir']}"]
    for note in summary["notes"]:
        lines.append(f"  note: {note}")
    for image in summary["images"]:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in image["probabilities"].items())
        lines.append(f"  {image['id']}: predicted {image['predicted']} ({probs})")
    for image in summary["skipped_images"]:
        lines.append(f"  skipped {image['path']}: {image['reason']}")
    for verdict in summary.get("compare", {}).get("verdicts", []):
        lines.append(f"  compare {verdict}")
    d = summary["durations_s"]
    lines.append(f"  {summary['counts']['maps']} maps in {d['total']:.1f}s "
                 f"(model load {d['model_load']:.1f}s, CAMs {d['cams']:.1f}s, figures {d['figures']:.1f}s)")
    return lines

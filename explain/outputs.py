"""The results folder: choosing it without clobbering earlier runs, and atomic file writes.

Every file is written under a temporary name in the same folder and renamed into place, so a
run killed at any moment leaves only complete files. PNGs carry no timestamps, so two runs of
the same config give byte-identical pictures.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from explain.errors import ExplainError

RUN_MARKER = ".explain-run"


def choose_run_dir(root: Path, name: str, overwrite: bool = False, resume: bool = False) -> Path:
    """results/<name>; if taken, results/<name>-2, -3, ... unless overwriting or resuming."""
    first = root / name
    if resume:
        if not (first / RUN_MARKER).exists():
            raise ExplainError(f"--resume: no earlier explain run at {first}")
        for stale in first.rglob(".*.part"):  # temporaries of writes the interruption cut short
            stale.unlink()
        return first
    if overwrite and first.exists():
        if not (first / RUN_MARKER).exists():
            raise ExplainError(f"--overwrite: {first} was not written by explain; refusing to delete it")
        shutil.rmtree(first)
    candidate, n = first, 2
    while candidate.exists() and any(candidate.iterdir()):
        candidate, n = root / f"{name}-{n}", n + 1
    candidate.mkdir(parents=True, exist_ok=True)
    (candidate / RUN_MARKER).write_text("written by explain\n")
    return candidate


def write_bytes(path: Path, data: bytes) -> None:
    """Write atomically: temporary file in the same folder, fsync-free rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_png(path: Path, rgb: np.ndarray) -> None:
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ExplainError(f"{path}: could not encode PNG")
    write_bytes(path, buf.tobytes())


def write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())


def write_figure(path: Path, fig) -> None:
    """Save a matplotlib figure as PNG without date/software metadata (reproducible bytes)."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_bytes(path, buf.getvalue().encode())

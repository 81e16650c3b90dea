"""The twenty-second attack (a helper's findings): what a shared reference map, a shared
training checkpoint and a shared run folder ask of the newest features (docs/trust.md)."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import torch

from explain import referencefiles
from explain.config import load_config
from explain.models.loading import load_model
from explain.runner import RunOptions, run
from helpers import CAT, explain_error, memory_peak, tiny_config, tiny_net


def _colour_png(path, side: int, grey: bool) -> None:
    """A 16-bit colour PNG of ``side`` x ``side`` zeros (a few KB), one pixel coloured
    unless ``grey``."""
    picture = np.zeros((side, side, 3), np.uint16)
    picture[-1, -1] = (0, 0, 0) if grey else (0, 0, 60000)
    cv2.imwrite(str(path), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def test_a_colour_reference_png_is_checked_in_bounded_memory(tmp_path):
    """The colour check of a reference PNG took the channels' spread with numpy's max and min
    over the last axis of 3, as int64: a 392 KB 16-bit 8192 x 8192 PNG took 12.6 s and held
    1 GB before it was refused (its grey decoding alone: 1.5 s, 640 MB). Here 2048 x 2048
    (24 MiB decoded in colour; the int64 spread held 72 MiB more): the check holds a few
    rows at a time."""
    _colour_png(tmp_path / "jet.png", 2048, grey=False)
    assert (tmp_path / "jet.png").stat().st_size < 100_000
    line = explain_error(referencefiles.read_reference, tmp_path / "jet.png")
    assert "a colour picture (its red, green and blue differ" in line
    colour = cv2.imread(str(tmp_path / "jet.png"), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    with memory_peak() as peak:
        line = explain_error(referencefiles._grey_or_refused, colour, tmp_path / "jet.png")
    assert "a colour picture (its red, green and blue differ" in line
    assert peak[0] < 8 * 2**20


def test_a_grey_colour_reference_png_still_reads_as_its_values(tmp_path):
    """A colour PNG whose channels are one grey reads as its grey values."""
    _colour_png(tmp_path / "grey.png", 64, grey=True)
    m = referencefiles.read_reference(tmp_path / "grey.png")
    assert m.shape == (64, 64) and float(m.max()) == 0.0


def test_a_checkpoint_whose_weights_have_no_names_is_one_line(tmp_path):
    """A training checkpoint's weights under 'model_state_dict' keyed by numbers, not names
    (a weights-only pickle holds any key): the hint on the last layer's outputs called
    ``endswith`` on the int, and the run stopped in an AttributeError traceback."""
    weights = tiny_net().state_dict()
    torch.save({"epoch": 3, "model_state_dict": dict(enumerate(weights.values()))},
               tmp_path / "m.pth")
    cfg = load_config(tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}))
    line = explain_error(load_model, cfg)
    assert line.startswith(f"model.file: {tmp_path / 'm.pth'}: is a state_dict (weights only); "
                           f"add 'model.arch'"), line


def test_a_report_shows_no_absolute_path_in_its_notes_and_reasons(tmp_path):
    """The report shows paths from the config's folder (or by their last folder and name), so
    a shared page does not carry the sharer's home folder; but a labelled tree's stray file
    was 'not in a class folder of /home/alice/...' and its links' note named the tree and a
    link whole, in the Skipped files and Notes sections of report.html."""
    tree = tmp_path / "home" / "alice" / "pets"
    for cls in ("cat", "dog"):
        (tree / cls).mkdir(parents=True)
        shutil.copy(CAT, tree / cls / "one.jpg")
    (tree / "README.txt").write_text("x")
    os.symlink(CAT, tree / "cat" / "linked.jpg")
    here = tmp_path / "course" / "week1" / "lab"
    here.mkdir(parents=True)
    torch.save(tiny_net(), here / "m.pth")
    path = tiny_config(here, {"file": "m.pth"}, name="a", classes={"cat": 0, "dog": 1},
                       images=[{"labelled": str(tree)}])
    summary = run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    assert any(str(tree) in note for note in summary.notes)  # summary.json keeps them whole
    page = (here / "results" / "a" / "report.html").read_text()
    assert "not in a class folder" in page and "symbolic link(s) in" in page
    assert str(tmp_path) not in page
    assert ".../alice/pets" in page

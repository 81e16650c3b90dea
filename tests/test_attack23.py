"""The twenty-third attack (a helper's findings): what a shared run folder's summary.json asks
of today's report features: the paths rewritten in its notes and skipped files' reasons
(explain.shownpaths), ``explain report --photo-separator``, and the warnings read from its
records (docs/trust.md)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from explain.shownpaths import shown_path, shown_text
from explain.writers.report import rebuild
from helpers import finished_tiny_run, tampered


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (the cat photo, two classes), copied by each test to tamper."""
    return finished_tiny_run(tmp_path_factory.mktemp("base"))


def _shared(finished: Path, where: Path, **changes) -> Path:
    """A copy of the finished run whose summary.json has ``changes``."""
    return tampered(finished, where, lambda summary: summary.update(changes))


def test_the_paths_of_a_note_are_shown_in_work_bounded_by_the_summary(finished, tmp_path,
                                                                       monkeypatch):
    """Each absolute path of a note was shown from the config's folder with os.path.relpath,
    which parsed the (shared, any length) ``config_file`` again for every path: a 50 KB
    summary.json of a 40 KB config_file and a note of 2,000 paths (' /x /x ...') took 22 s to
    rebuild its report, and twice the both took four times as long. The folder is worked out
    once: the characters normalised stay within a few times the summary's."""
    config_file = "/" + "a/" * 20_000 + "exp.yaml"
    folder = _shared(finished, tmp_path / "run", config_file=config_file,
                     notes=[" /x" * 500, "C:\\Users\\alice\\x.jpg"])
    size = (folder / "summary.json").stat().st_size
    work = [0]
    normpath, relpath = os.path.normpath, os.path.relpath

    def counted(call):
        def wrapped(path, *rest):
            work[0] += len(os.fspath(path)) + sum(len(os.fspath(r)) for r in rest)
            return call(path, *rest)
        return wrapped
    monkeypatch.setattr(os.path, "normpath", counted(normpath))
    monkeypatch.setattr(os.path, "relpath", counted(relpath))
    rebuild(folder)
    monkeypatch.undo()
    assert work[0] < 4 * size, (work[0], size)
    page = (folder / "report.html").read_text()
    assert ".../x" in page and config_file not in page


def test_a_windows_path_in_a_note_does_not_show_the_readers_folder(finished, tmp_path,
                                                                   monkeypatch):
    """A Windows path (C:\\...) in a note or a reason, read on POSIX beside a POSIX config
    file, was taken as absolute and given to os.path.relpath, which joined it to the working
    folder of whoever rebuilt the report: report.html showed
    '../../reader/secret-project/C:\\Users\\alice\\x.jpg'. It is shown by its last folder and
    name, as a path of another drive is."""
    assert shown_path("C:\\Users\\alice\\x.jpg", "/home/u/exp.yaml") == ".../alice/x.jpg"
    assert shown_text("see C:\\Users\\alice\\x.jpg.", "/home/u/exp.yaml") == \
        "see .../alice/x.jpg."
    summary = json.loads((finished / "summary.json").read_text())
    config_file = Path(summary["config_file"])
    reader = config_file.parent.parent / "secret-project"
    reader.mkdir(exist_ok=True)
    monkeypatch.chdir(reader)
    folder = _shared(finished, tmp_path / "run", notes=["read C:\\Users\\alice\\x.jpg"],
                     skipped_files=[{"path": "C:\\Users\\alice\\y.txt",
                                     "reason": "not a picture: C:\\Users\\alice\\y.txt"}])
    rebuild(folder)
    page = (folder / "report.html").read_text()
    assert "secret-project" not in page and "alice\\" not in page
    assert ".../alice/x.jpg" in page and ".../alice/y.txt" in page


def test_shown_paths_keep_their_meaning(tmp_path):
    """The paths a run reads are shown as before: from the config's folder, up to two folders
    above it, else by their last folder and name."""
    cfg = "/home/u/course/lab/exp.yaml"
    assert shown_path("/home/u/course/lab/pics/cat.jpg", cfg) == "pics/cat.jpg"
    assert shown_path("/home/u/course/lab", cfg) == "."
    assert shown_path("/home/u/course/models/m.pth", cfg) == "../models/m.pth"
    assert shown_path("/home/u/data/x/cat.jpg", cfg) == "../../data/x/cat.jpg"
    assert shown_path("/srv/data/x/cat.jpg", cfg) == ".../x/cat.jpg"
    assert shown_path("../models/m.pth", cfg) == "../models/m.pth"
    assert shown_path("/home/u/course/lab/../lab/pics/a.jpg", cfg) == "pics/a.jpg"
    assert shown_path("/home/u/x.jpg", "exp.yaml") == ".../u/x.jpg"


def test_huge_numbers_of_a_summary_are_shown_in_a_few_characters(finished, tmp_path):
    """A probability or a duration of 1e306 in a shared summary.json (JSON: 5 characters) was
    printed with '%.1f' and '%.2f': 300 digits in each card's bar width and percentage and in
    the durations row. 50 images of 1,000 such probabilities, 788 KB, made a 40 MB report
    (0.001 in their place: 9 MB), and 50,000 durations of 1e308, 800 KB, 16 MB. Such numbers
    are shown in 3 significant digits, and a bar is at most the bar's width."""
    summary = json.loads((finished / "summary.json").read_text())
    entry = summary["images"][0]
    entry["probabilities"] = {"cat": 1e306, "dog": -1e306}
    folder = _shared(finished, tmp_path / "run", images=[entry],
                     durations_s={"cams": 1e308, "figures": -1e308, "total": float("nan"),
                                  "model_load": 2.5})
    rebuild(folder)
    page = (folder / "report.html").read_text()
    assert re.search(r"\d{12}", page) is None
    assert "1.00e308%" in page and "model load 2.5 s" in page
    assert "width: 100.00%" in page and "width: 0.00%" in page


def test_a_card_draws_at_most_card_classes_bars(finished, tmp_path):
    """A shared summary.json listing 998 classes' probabilities per image drew 998 bars
    on each card (a 738 KB summary, a 9 MB page); a run lists at most 25. A card draws the
    30 likeliest, in the record's order, and says how many the record lists."""
    from explain.writers.pageformat import CARD_CLASSES
    summary = json.loads((finished / "summary.json").read_text())
    entry = summary["images"][0]
    entry["probabilities"] = {f"c{i}": i / 1e6 for i in range(998)}
    entry["probabilities"]["c3"] = float("nan")
    config = dict(summary["config"], classes={**summary["config"]["classes"],
                                              **{f"c{i}": i + 2 for i in range(998)}})
    folder = _shared(finished, tmp_path / "run", images=[entry], config=config)
    rebuild(folder)
    page = (folder / "report.html").read_text()
    names = re.findall(r'<span class="prob-name">(c\d+)</span>', page)
    assert names == [f"c{i}" for i in range(998 - CARD_CLASSES, 998)]
    assert f"the likeliest {CARD_CLASSES} of 998 classes listed (all in summary.json)" in page


def test_a_box_of_an_unknown_class_lists_a_bounded_number_of_classes():
    """A box file's row naming a class the config lacks listed every named class: one
    enormous line with 1,000 ImageNet names."""
    from explain.annotations import _box
    from explain.errors import ExplainError
    classes = [f"class{i}" for i in range(1000)]
    with pytest.raises(ExplainError) as err:
        _box({"image": "a.jpg", "class": "zebra", "x0": 0, "y0": 0, "x1": 1, "y1": 1},
             "boxes.csv: line 2", classes)
    line = str(err.value)
    assert line.startswith("boxes.csv: line 2: class 'zebra' is not a named class")
    assert line.endswith("class18, class19 (+980 more))") and len(line) < 400, line

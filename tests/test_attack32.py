"""The thirty-second attack (a helper's findings): a shared labelled list's rows and line
ends (docs/trust.md)."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from explain.errors import ExplainError
from explain.images.labelled import _label_list
from helpers import CAT, one_line


def _listed(folder: Path, rows: list[str], name: str = "list.csv") -> Path:
    shutil.copy(CAT, folder / "cat.jpg")
    for sub in ("a", "b"):
        (folder / sub).mkdir(exist_ok=True)
    path = folder / name
    path.write_text("path,label\n" + "".join(f"{row}\n" for row in rows))
    return path


def test_one_file_under_many_spellings_is_one_image_resolved_once(tmp_path):
    """Rows that differ word for word but name one file ('a/../b/../cat.jpg', 4 KB of
    them a row) were each resolved twice, in Python, a lstat per part: a 16 MB list naming
    one photo took 30 s of CPU before its first image (64 MB: two minutes). The file is
    known by its device and inode now, one stat in the kernel, and listed once."""
    rnd = random.Random(0)
    rows = ["".join(rnd.choice(("a/../", "b/../")) for _ in range(800)) + "cat.jpg,cat"
            for _ in range(200)]
    start = time.process_time()
    found = _label_list(_listed(tmp_path, rows), ["cat", "dog"], False, where="w", notes=[])
    assert len(found) == 1 and found[0][2] == "cat"
    assert time.process_time() - start < 1.0


def test_one_file_under_two_spellings_keeps_one_label(tmp_path):
    path = _listed(tmp_path, ["cat.jpg,cat", "a/../cat.jpg,dog"])
    with pytest.raises(ExplainError) as info:
        _label_list(path, ["cat", "dog"], False, where="w", notes=[])
    one_line(info, "list.csv: line 3", "labelled 'dog' here and 'cat' at", "line 2")


def test_a_list_with_carriage_returns_alone_is_read(tmp_path):
    """A list saved with old Mac line ends ('\\r' alone: Excel for Mac's 'CSV (Macintosh)')
    was one line, refused with Python's own advice ('open the file in universal-newline
    mode'); its rows are read as any list's."""
    path = _listed(tmp_path, [])
    path.write_bytes(b"path,label\rcat.jpg,cat\r")
    found = _label_list(path, ["cat", "dog"], False, where="w", notes=[])
    assert [(f.name, label) for f, _, label in found] == [("cat.jpg", "cat")]


def test_bidirectional_controls_are_shown_escaped_on_every_page(tmp_path):
    """A shared image's file name holding U+202E (right-to-left override) turned the rest of
    its line around on report.html (HTML escaping leaves it): every value a page prints, and
    the notebook's text, show it escaped; the page's own markup is left alone."""
    from markupsafe import Markup

    from explain.api import display
    from explain.writers.report import environment, rebuild
    from helpers import finished_tiny_run, tampered
    page = environment().from_string("{{ a }} {{ b }}")
    assert page.render(a="cat\u202egpj.exe", b=Markup("<b>\u2066ok</b>")) == \
        "cat\\u202egpj.exe <b>\u2066ok</b>"
    assert display.esc("x\u2067<y>") == "x\\u2067&lt;y&gt;"
    finished = finished_tiny_run(tmp_path)
    folder = tampered(finished, tmp_path / "shared",
                      lambda s: s["images"][0].update(path="/photos/cat\u202egpj.exe"))
    html = rebuild(folder).read_text(encoding="utf-8")
    assert "\u202e" not in html and "cat\\u202egpj.exe" in html

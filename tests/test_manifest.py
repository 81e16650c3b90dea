"""The typed manifest: summary.json names every file the run wrote (and only those), the
report links exactly recorded files and reads nothing else, skipped files are records, the
config is the typed Config, and an old-shape summary or item file is one line."""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

from conftest import IMAGES, make_small_alexnet, write_config
from explain.cli import main
from explain.config import Config, load_config
from explain.results import RunSummary
from explain.runner import RunOptions, run
from explain.writers.report import load_run, rebuild

ODD_TEXT = "notes (draft).txt"  # a non-image file whose name holds parentheses


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One run with every writer on (channels with grids and contrast, compare, guided,
    concepts, a labelled list, save_arrays, the report) over a folder that also holds a
    broken JPEG and a text file. Returns (config path, run folder, console lines)."""
    tmp = tmp_path_factory.mktemp("manifest")
    pics = tmp / "pics"
    pics.mkdir()
    shutil.copy(IMAGES / "both.jpg", pics / "both.jpg")
    data = (IMAGES / "dog.jpg").read_bytes()
    (pics / "broken.jpg").write_bytes(data[: len(data) // 3])
    (pics / ODD_TEXT).write_text("not a picture")
    (tmp / "list.csv").write_text(f"path,label\n{IMAGES / 'cat.jpg'},cat\n"
                                  f"{IMAGES / 'dog.jpg'},dog\n")
    torch.save(make_small_alexnet(), tmp / "small.pth")
    path = write_config(
        tmp, "all", model={"file": str(tmp / "small.pth")},
        images=[{"labelled": "list.csv"}, str(pics)], target_layers=["features.10"],
        preprocess={"size": 64}, methods=["gradcam", "layercam"],
        channels={"enabled": True, "grids": True, "top_k": 4, "tile_size": 8},
        compare={"enabled": True}, guided={"enabled": True},
        concepts={"enabled": True, "n_components": 2},
        output={"dir": str(tmp / "results"), "save_arrays": True})
    lines: list[str] = []
    run(load_config(path), RunOptions(progress=False, log=lines.append))
    return path, tmp / "results" / "all", lines


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text("utf-8"))


def recorded(summary: dict) -> set[str]:
    """Every file summary.json names, read from the JSON itself."""
    out: set[str] = set()

    def files(record: dict) -> None:  # a 'files' record: paths, or dicts of paths
        for value in record.values():
            out.update(value.values() if isinstance(value, dict) else [value])

    files(summary["files"])
    for mean in summary["dataset"]["mean_maps"]:
        out |= {mean["file"], mean["array"]}
    for image in summary["images"]:
        files(image["files"])
        out |= set(image.get("guided", {}).values()) | {image["concepts"]}
        for rec in image["cams"]:
            files(rec["files"])
            out |= {rec["file"], rec["guided_file"]}
    return out


def walk(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def frame(summary: dict) -> set[str]:
    """The files every run folder has under fixed names (not recorded)."""
    return {".explain-run", "config.json", "summary.json", "summary.csv", "report.html"} | \
        {f"items/{image['id']}.json" for image in summary["images"]}


class Links(HTMLParser):
    """Every href and src of a page (fragments alone and the empty data: icon left out), and
    the cells of the skipped-files table."""

    def __init__(self):
        super().__init__()
        self.links: set[str] = set()
        self.cells: list[str] = []
        self._table = self._cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key) and not attrs[key].startswith(("#", "data:")):
                self.links.add(unquote(attrs[key].split("#")[0]))
        self._table |= tag == "table" and attrs.get("class") == "skipped"
        self._cell = self._table and tag == "td"

    def handle_endtag(self, tag):
        self._table &= tag != "table"

    def handle_data(self, data):
        if self._cell:
            self.cells.append(data)
            self._cell = False


def page(folder: Path) -> Links:
    links = Links()
    links.feed((folder / "report.html").read_text("utf-8"))
    return links


def test_every_file_the_run_wrote_is_recorded_and_every_record_exists(study):
    _, folder, _ = study
    summary = summary_of(folder)
    files = recorded(summary)
    assert walk(folder) - frame(summary) == files
    assert all((folder / f).is_file() for f in files)
    assert set(RunSummary.model_validate(summary).written()) == files
    cat = next(i for i in summary["images"] if i["id"] == "cat")
    assert cat["files"]["contrast"] == {m: f"channels/{m}/cat__contrast.png"
                                        for m in ("gradcam", "layercam")}
    rec = next(r for r in cat["cams"] if (r["class"], r["method"]) == ("dog", "layercam"))
    assert rec["files"] == {
        "array": "cams/layercam/cat__dog.npy", "guided_array": "guided_cam/layercam/cat__dog.npy",
        "top": "channels/layercam/cat__dog__top.png",
        "contributions": "channels/layercam/cat__dog__contributions.png",
        "contributions_array": "channels/layercam/cat__dog__contributions.npy",
        "channels_csv": "channels/layercam/cat__dog__channels.csv",
        "compare": "compare/layercam/cat__dog.png"}
    assert summary["files"]["panels"] == {"cat": "panels/cat.png", "dog": "panels/dog.png"}


def test_the_report_links_exactly_the_recorded_files_it_shows(study):
    _, folder, _ = study
    summary = summary_of(folder)
    shown = {summary["files"][k] for k in ("colorbar", "confusion_csv", "per_class_csv",
                                           "disagreement_csv")}
    shown |= set(summary["files"]["panels"].values())
    shown |= {m["file"] for m in summary["dataset"]["mean_maps"]}
    for image in summary["images"]:
        shown |= {image["files"]["photo"], image["files"]["concepts_figure"],
                  image["files"]["activations"], *image["files"]["contrast"].values()}
        for rec in image["cams"]:
            shown |= {rec["file"], rec["guided_file"], rec["files"]["top"],
                      rec["files"]["contributions"], rec["files"]["compare"]}
    assert page(folder).links == shown
    assert shown <= recorded(summary)


def test_the_report_follows_the_records_not_the_file_names(study, tmp_path):
    _, folder, _ = study
    copy = tmp_path / "all"
    shutil.copytree(folder, copy)
    (copy / "channels" / "gradcam" / "cat__cat__top.png").rename(copy / "moved-top.png")
    data = summary_of(copy)
    cat = next(i for i in data["images"] if i["id"] == "cat")
    rec = next(r for r in cat["cams"] if (r["class"], r["method"]) == ("cat", "gradcam"))
    rec["files"]["top"] = "moved-top.png"
    del rec["files"]["compare"]  # the figure stays in the folder, unrecorded
    del data["files"]["panels"]["dog"]
    (copy / "summary.json").write_text(json.dumps(data))
    rebuild(copy)
    links = page(copy).links
    # a record naming another file than the one its run writes is not linked (a shared folder's
    # evil.html, explain.reportlinks); the notes say so
    assert "moved-top.png" not in links and "channels/gradcam/cat__cat__top.png" not in links
    assert load_run(copy).summary.notes[-1].startswith(
        "1 file name(s) in the records are not the names explain gives those files, so the "
        "report does not link them: 'moved-top.png' (map of 'cat' by gradcam on 'cat')")
    assert (copy / "compare" / "gradcam" / "cat__cat.png").is_file()
    assert "compare/gradcam/cat__cat.png" not in links and "compare/gradcam/cat__dog.png" in links
    assert "panels/dog.png" not in links and "panels/cat.png" in links


def test_skipped_files_are_records_in_the_summary_the_console_and_the_report(study, tmp_path):
    _, folder, lines = study
    summary = summary_of(folder)
    pics = Path(summary["config"]["images"][1])
    assert summary["skipped_files"] == [{"path": str(pics / ODD_TEXT),
                                         "reason": "not an image file"}]
    [broken] = summary["skipped_images"]
    assert broken["path"] == str(pics / "broken.jpg")
    assert broken["reason"].startswith("truncated JPEG")  # the path is the record's own field
    assert f"  skipped {pics / ODD_TEXT}: not an image file" in lines
    assert f"  skipped {pics / 'broken.jpg'}: {broken['reason']}" in lines
    assert not any("skipped" in note for note in summary["notes"])
    rows = page(folder).cells  # the page shows them from the config's folder
    from explain.shownpaths import shown_path
    assert rows == [shown_path(str(pics / "broken.jpg"), summary["config_file"]),
                    broken["reason"], shown_path(str(pics / ODD_TEXT), summary["config_file"]),
                    "not an image file"]
    assert not rows[0].startswith("/") and rows[0].endswith("broken.jpg")
    # a note that reads like an old skip note stays a note: nothing parses the notes' text
    copy = tmp_path / "all"
    shutil.copytree(folder, copy)
    data = summary_of(copy)
    data["notes"].append("skipped /data/cat.png (looks like a skip note)")
    (copy / "summary.json").write_text(json.dumps(data))
    rebuild(copy)
    html = (copy / "report.html").read_text("utf-8")
    assert page(copy).cells == rows
    notes = html[html.index('id="notes"'):]
    # (its path shown as the page shows paths, explain.shownpaths.shown_text)
    assert "<li>skipped .../data/cat.png (looks like a skip note)</li>" in notes


def test_the_summary_holds_the_typed_config(study):
    path, folder, _ = study
    data = load_run(folder)
    assert isinstance(data.summary.config, Config)
    assert data.summary.config == load_config(path).model_copy(update={"source": None})
    assert data.summary.config.output.colormap == "jet"
    assert summary_of(folder)["config"]["name"] is None  # the whole config, unset keys too


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_an_old_summary_is_one_line_saying_to_run_again(study, tmp_path, capsys):
    _, folder, _ = study
    copy = tmp_path / "all"
    shutil.copytree(folder, copy)
    data = summary_of(copy)
    for key in ("format", "files", "skipped_files"):  # the shape before the manifest
        del data[key]
    for image in data["images"]:
        del image["files"]
        for rec in image["cams"]:
            del rec["files"]
    (copy / "summary.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["report", str(copy)]) == 2
    err = one_line(capsys)
    assert str(copy / "summary.json") in err and "another version of explain" in err
    assert "run the config again" in err
    data["format"] = "x"
    (copy / "summary.json").write_text(json.dumps(data))
    assert main(["report", str(copy)]) == 2
    assert "format 'x'" in one_line(capsys)


def test_an_old_item_file_is_one_line_on_resume(study, tmp_path, capsys):
    path, folder, _ = study
    copy = tmp_path / "all"
    shutil.copytree(folder, copy)
    (copy / "summary.json").unlink()
    item = json.loads((copy / "items" / "cat.json").read_text())
    del item["format"]
    (copy / "items" / "cat.json").write_text(json.dumps(item))
    capsys.readouterr()
    assert main([str(path), "--resume", "--quiet", "--out", str(tmp_path)]) == 2
    err = one_line(capsys)
    assert str(copy / "items" / "cat.json") in err and "another version of explain" in err

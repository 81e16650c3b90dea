"""report.html: every map linked, user text escaped, rebuilt by `explain report`, paged for big
runs, and loaded in a real browser (headless Chromium) with every picture showing."""

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import pytest
import torch

from explain.cli import main
from explain.config import Config, load_config
from explain.methodtable import method_table
from explain.outputs import RunFolder
from explain.results import ImageEntry, Localisation, MapRecord, RunSummary
from explain.runner import RunOptions, run
from explain.writers.report import ReportData, load_run, rebuild, render_pages
from browser import Browser, check_page, find_browser
from conftest import IMAGES, make_small_alexnet, write_config

QUIET = dict(progress=False, log=lambda _: None)
ODD_FOLDER = "pi<c>s & co"  # a folder name that is HTML: the page must show it as text


class Links(HTMLParser):
    """Every href and src on a page, and the visible text."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href") and not attrs["href"].startswith("#"):
            self.links.append(unquote(attrs["href"]))
        if tag == "img":
            self.images.append(unquote(attrs["src"]))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def resolve(page: Path, root: Path, href: str) -> str:
    """An href of ``page`` as a path relative to the run folder (no fragment)."""
    target = (page.parent / href.split("#")[0]).resolve()
    return target.relative_to(root.resolve()).as_posix()


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """One small run with most of what a card can show: boxes, a faithfulness metric, channel
    figures, a class-agnostic method, a broken image and a non-image file (skipped), photos in
    a folder whose name is HTML. (--compare has its own one-image run below: its figures are
    the slow part.)"""
    tmp = tmp_path_factory.mktemp("report")
    pics = tmp / ODD_FOLDER
    pics.mkdir()
    for name in ("cat.jpg", "dog.jpg", "both.jpg"):
        shutil.copy(IMAGES / name, pics / name)
    data = (IMAGES / "dog.jpg").read_bytes()
    (pics / "broken.jpg").write_bytes(data[: len(data) // 3])
    (pics / "readme.txt").write_text("not a picture")
    torch.save(make_small_alexnet(), tmp / "small.pth")
    path = write_config(
        tmp, "study", model={"file": str(tmp / "small.pth")}, images=[str(pics)],
        target_layers=["features.10"], preprocess={"size": 64},
        methods=["gradcam", "eigencam"], metrics=["drop_in_confidence"],
        annotations={"boxes": {"both.jpg": {"cat": [0, 0, 224, 224], "dog": [224, 0, 448, 224]}}},
        channels={"enabled": True, "top_k": 4, "tile_size": 16, "contrast": False},
        output={"dir": str(tmp / "results")})
    summary = run(load_config(path), RunOptions(**QUIET))
    return summary, tmp / "results" / "study", path


def test_report_links_every_map_in_the_summary(small_study):
    _, run_dir, _ = small_study
    page = parse(run_dir / "report.html")
    with (run_dir / "summary.csv").open() as f:
        files = [row["file"] for row in csv.DictReader(f)]
    assert len(files) == 3 * 2 * 2  # image x class x method
    linked = {resolve(run_dir / "report.html", run_dir, h) for h in page.links}
    shown = {resolve(run_dir / "report.html", run_dir, s) for s in page.images}
    maps = {h for h in linked if h.startswith("cams/")}
    assert maps == set(files) and {s for s in shown if s.startswith("cams/")} == set(files)
    for rel in linked | shown:  # nothing points outside the folder, and everything is there
        assert (run_dir / rel).is_file(), rel
    assert "report/photos/both.jpg" in shown and "panels/cat.png" in shown
    assert "channels/gradcam/both__dog__top.png" in shown  # top channels, when present
    # the course's own pictures: every channel of the layer, every channel's contribution
    assert {"channels/both__activations.png", "channels/cat__activations.png",
            "channels/gradcam/both__dog__contributions.png",
            "channels/gradcam/cat__cat__contributions.png"} <= shown
    assert not any(s.startswith("channels/eigencam/") for s in shown)  # none for EigenCAM
    assert not any(h.startswith(("http:", "https:", "//", "/")) for h in page.links + page.images)


def test_report_content_header_methods_cards_skipped(small_study):
    summary, run_dir, _ = small_study
    html = (run_dir / "report.html").read_text()
    text = " ".join(parse(run_dir / "report.html").text)
    assert "whole model file small.pth" in text  # from the config's folder, as it names it
    assert str(run_dir.parent.parent) not in html  # no absolute path of the machine
    assert "features.10" in text and "gradcam, eigencam" in text
    assert f"grad-cam {summary.versions['grad-cam']}" in text and "cpu" in text
    # skipped files with their reasons
    assert "broken.jpg" in text and "truncated JPEG" in text
    assert "readme.txt" in text and "not an image file" in text
    assert '<a href="#skipped">Skipped files (2)</a>' in html  # the menu says how many
    # the methods table: drop in confidence (lower is better) and the localisation columns
    table = html[html.index('class="method-table"'):html.index("</table>", html.index('class="method-table"'))]
    for label in ("drop in confidence", "pointing game", "energy in box", "box IoU", "rank"):
        assert label in table
    assert "Ranking not yet meaningful" in html and "vs reference" not in table  # 3 images
    # EigenCAM's card note, and its maps are the same for both classes
    card = html[html.index('id="img-both"'):]
    assert "class-agnostic" in card
    assert card.count('class="gt-box"') == 2 * 2  # both.jpg: a box per class on each method
    assert "eigencam: identical maps for every class" in text


def test_user_text_is_escaped(small_study, tmp_path):
    summary, run_dir, _ = small_study
    html = (run_dir / "report.html").read_text()
    assert "pi&lt;c&gt;s &amp; co" in html and "<c>" not in html
    # a note and an image path carrying a script, rendered through the templates directly
    evil = summary.model_copy(deep=True)
    evil.notes.append("look: <script>alert('note')</script>")
    evil.images[0].path = "/photos/<script>alert(1)</script>/cat.jpg"
    pages = render_pages(RunFolder(run_dir), ReportData(evil))
    out = pages["report.html"]
    assert "<script>" not in out
    assert "&lt;script&gt;alert(&#39;note&#39;)&lt;/script&gt;" in out
    # the path, far from the config's folder, by its last two parts: escaped
    assert '<span class="path">.../script&gt;/cat.jpg</span>' in out


def test_explain_report_rebuilds_the_same_page(small_study, tmp_path, capsys):
    _, run_dir, _ = small_study
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = (copy / "report.html").read_bytes()
    (copy / "report.html").unlink()
    for page in (copy / "report").glob("*.*"):  # pages and colour bar come back
        page.unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.html").read_bytes() == before
    # a missing photo is not re-read from the image path the summary stores: the card says so
    (copy / "report" / "photos" / "cat.jpg").unlink()
    assert main(["report", str(copy)]) == 0
    assert not (copy / "report" / "photos" / "cat.jpg").exists()
    assert "photo not available" in (copy / "report.html").read_text()
    capsys.readouterr()
    # not a results folder: one line, exit 2; a folder of runs names them
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a results folder written by explain" in err
    assert err.endswith(f"; it holds the run(s) {copy.name}: name one, e.g. {copy}"), err


def test_an_interrupted_run_gets_a_report_from_its_items(small_study, tmp_path):
    _, run_dir, _ = small_study
    copy = tmp_path / "unfinished"
    shutil.copytree(run_dir, copy)
    (copy / "summary.json").unlink()
    (copy / "items" / "dog.json").unlink()
    data = load_run(copy)
    assert not data.finished and [i.id for i in data.summary.images] == ["both", "cat"]
    rebuild(copy)
    text = " ".join(parse(copy / "report.html").text)
    assert "unfinished run: 2 image(s) finished" in text and "--resume" in text


def test_big_runs_get_an_index_and_pages(small_study, tmp_path):
    _, run_dir, _ = small_study
    copy = tmp_path / "paged"
    shutil.copytree(run_dir, copy)
    data = json.loads((copy / "summary.json").read_text())
    data["config"]["report"]["page_size"] = 2
    (copy / "summary.json").write_text(json.dumps(data))
    rebuild(copy)
    pages = [copy / "report" / "page-1.html", copy / "report" / "page-2.html"]
    assert all(p.is_file() for p in pages) and not (copy / "report" / "page-3.html").exists()
    index = parse(copy / "report.html")
    assert not any(h.startswith("cams/") for h in index.links)  # cards are on the pages
    assert "report/page-2.html#img-dog" in index.links
    maps = set()
    for page in pages:
        links = parse(page)
        for src in links.images:
            assert (page.parent / src).resolve().is_file(), (page, src)
        maps |= {resolve(page, copy, h) for h in links.links if "cams/" in h}
        assert "../report.html" in links.links
    assert len(maps) == 12


def small_cat_run(tmp_path, **fields):
    """The small AlexNet on cat.jpg at 64 px; returns the run folder."""
    torch.save(make_small_alexnet(), tmp_path / "small.pth")
    path = write_config(tmp_path, model={"file": str(tmp_path / "small.pth")},
                        images=[str(IMAGES / "cat.jpg")], target_layers=["features.10"],
                        preprocess={"size": 64}, **fields)
    run(load_config(path), RunOptions(**QUIET))
    return tmp_path / "results" / "exp"


def test_compare_verdicts_and_difference_figures(tmp_path):
    run_dir = small_cat_run(tmp_path, compare={"enabled": True})
    html = (run_dir / "report.html").read_text()
    shown = parse(run_dir / "report.html").images
    assert "compare/gradcam/cat__cat.png" in shown and "compare/gradcam/cat__dog.png" in shown
    table = html[html.index('class="method-table"'):]
    assert "vs reference" in table and '<span class="verdict agree">agree</span>' in table
    card = html[html.index('id="img-cat"'):]
    assert '<span class="verdict agree">agree</span>' in card
    assert card.count("library vs reference: max |diff| 0") == 2


def test_method_table_ranks_by_direction():
    def rec(method, drop, road, hit):
        return MapRecord(class_name="cat", method=method, peak_x=0, peak_y=0, peak_value=1,
                         mass_left=0.5, mass_right=0.5, mass_top=0.5, mass_bottom=0.5,
                         file=f"cams/{method}/a__cat.png",
                         faithfulness={"drop_in_confidence": drop, "road_combined": road},
                         localisation=Localisation(pointing_hit=hit, energy_in_box=0.5, box_iou=0.1))
    entry = ImageEntry(id="a", path="a.jpg", input_size=[8, 8], probabilities={"cat": 1.0},
                       predicted="cat", cams=[rec("m1", 0.5, 0.2, True), rec("m2", 0.1, 0.3, True),
                                              rec("m3", 0.9, 0.1, False)])
    config = Config.model_validate({"model": {"file": "m.pth"}, "images": ["a.jpg"],
                                    "target_layers": ["x"], "methods": ["gradcam"]})
    summary = RunSummary(name="t", config_file="t.yaml", output_dir=".", device="cpu",
                         config=config, versions={}, images=[entry])
    table = method_table(summary, ["m1", "m2", "m3"])
    cols = {c.key: c for c in table.columns}
    assert cols["drop_in_confidence"].best == ["m2"]  # lower is better
    assert cols["road_combined"].best == ["m2"]  # higher is better
    assert cols["pointing_hit"].best == ["m1", "m2"] and cols["pointing_hit"].ranks["m3"] == 3
    assert cols["energy_in_box"].best == ["m1", "m2", "m3"]  # a tie: all share first place
    assert table.rank == {"m2": 1, "m1": 2, "m3": 3}


def test_report_can_be_turned_off(tmp_path):
    run_dir = small_cat_run(tmp_path, report={"enabled": False})
    assert (run_dir / "summary.json").is_file() and not (run_dir / "report.html").exists()
    assert not (run_dir / "report").exists()


# ---- a real browser --------------------------------------------------------------------------

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium here: install the Debian package 'chromium' "
                            "(CI does it in .ci/run) to run the real-browser report test")


@pytest.fixture(scope="module")
def browser():
    with Browser(BROWSER) as b:
        b.open_page()
        yield b


@needs_browser
def test_report_loads_in_chromium_with_every_picture(small_study, browser, tmp_path):
    _, run_dir, _ = small_study
    shot = tmp_path / "report.png"
    result = check_page(browser, run_dir / "report.html", screenshot=shot, shot_height=3000)
    assert result["broken"] == [] and result["errors"] == []
    expected = len(parse(run_dir / "report.html").images)
    assert result["count"] == expected > 12
    picture = cv2.imread(str(shot))
    assert picture.shape[1] == 1280 and picture.shape[0] > 900
    assert picture.std() > 10  # a rendered page, not a blank one
    shutil.copy(shot, run_dir.parent / "report-screenshot.png")  # kept with the run for a look


@needs_browser
def test_chromium_check_fails_when_a_picture_is_missing(small_study, browser, tmp_path):
    _, run_dir, _ = small_study
    copy = tmp_path / "broken"
    shutil.copytree(run_dir, copy)
    (copy / "cams" / "eigencam" / "cat__dog.png").unlink()
    result = check_page(browser, copy / "report.html")
    assert result["broken"] == ["cams/eigencam/cat__dog.png"]
    assert any("ERR_FILE_NOT_FOUND" in e for e in result["errors"])


def test_a_card_shows_the_image_s_channel_pictures_that_are_there(small_study):
    """The activation grid (labelled with the channel layer) and each method's class
    contrast, from the records, only when the file is in the folder."""
    from explain.outputs import RunFolder
    from explain.writers.cards import channel_views as _channel_views
    summary, run_dir, _ = small_study
    entry = next(e for e in summary.images if e.id == "both").model_copy(deep=True)
    assert _channel_views(RunFolder(run_dir), entry, summary.config) == [
        ("every channel of features.10", "channels/both__activations.png")]
    entry.files.contrast = {"gradcam": "channels/gradcam/both__dog__top.png",
                            "eigencam": "channels/eigencam/not_there.png"}
    assert _channel_views(RunFolder(run_dir), entry, summary.config)[1:] == [
        ("gradcam: the channels that tell the classes apart",
         "channels/gradcam/both__dog__top.png")]


def test_a_card_shows_every_class_s_probability_not_only_the_explained_ones(tmp_path):
    """With ``targets: [label, predicted]`` a cat photo explains cat alone; its card listed
    cat's probability only, where the console printed dog's 33% too."""
    from test_photos import render, summary_of
    summary = summary_of({"im0": {"gradcam": 0.2}}, None)
    entry = summary.images[0]
    entry.cams = [r for r in entry.cams if r.class_name == "cat"]
    entry.probabilities = {"cat": 0.67, "dog": 0.33}
    page = render(summary, tmp_path / "run")
    card = page[page.index('id="img-im0"'):]
    names = re.findall(r'<span class="prob-name">(\w+)</span>', card)
    assert names == ["cat", "dog"] and "33.0%" in card


def test_a_run_without_numbers_is_told_one_way_to_turn_them_on(tmp_path):
    """The page said 'metrics: [road_combined] turns it on' in the Run table and 'add metrics:
    [road_combined, drop_in_confidence]' under the Methods table (newcomer 13): one advice."""
    from test_photos import render, summary_of
    summary = summary_of({"im0": {"gradcam": 0.2}, "im1": {"gradcam": 0.3}}, None)
    summary.config = summary.config.model_copy(update={"metrics": []})
    for image in summary.images:
        image.baselines = []
        for r in image.cams:
            r.faithfulness, r.localisation = {}, None
    page = render(summary, tmp_path / "run")
    advice = re.findall(r"metrics: \[([^\]]*)\]</code>", page)
    assert len(advice) >= 2 and set(advice) == {"road_combined"}, advice

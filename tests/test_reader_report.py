"""A reader's review of the report of a labelled four-method study (the demo's cat/dog photos,
flipped and cropped into a labelled list): what the page must say and how it must fit."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import pytest
import torch

from browser import Browser, find_browser
from conftest import IMAGES, make_small_alexnet, write_config
from explain.config import load_config
from explain.runner import RunOptions, run

QUIET = dict(progress=False, log=lambda _: None)
METHODS = ["gradcam", "layercam", "gradcamplusplus", "xgradcam"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[object, Path]:
    """Six labelled images (cat.jpg and dog.jpg, flipped and cropped; one of each labelled
    the other class, so whatever the random model predicts some labels differ from it),
    four methods, no metrics: the run is quick."""
    tmp = tmp_path_factory.mktemp("reader")
    rows = ["path,label"]
    for name in ("cat", "dog"):
        img = cv2.imread(str(IMAGES / f"{name}.jpg"))
        h, w = img.shape[:2]
        for i, view in enumerate([img, img[:, ::-1], img[h // 6:, : w * 5 // 6]]):
            cv2.imwrite(str(tmp / f"{name}{i}.jpg"), view)
            label = name if i < 2 else ("dog" if name == "cat" else "cat")
            rows.append(f"{name}{i}.jpg,{label}")
    (tmp / "list.csv").write_text("\n".join(rows) + "\n")
    torch.save(make_small_alexnet(), tmp / "small.pth")
    path = write_config(tmp, "exp", model={"file": str(tmp / "small.pth")},
                        target_layers=["features.10"], preprocess={"size": [96, 96]},
                        images=[{"labelled": str(tmp / "list.csv")}], methods=METHODS,
                        metrics=[], output={"dir": str(tmp / "results")})
    summary = run(load_config(path), RunOptions(**QUIET))
    return summary, tmp / "results" / "exp"


def test_each_card_shows_the_label_beside_the_prediction(study):
    """A labelled image's card said only "predicted dog": whether that was its label was in
    the confusion table alone, so a misclassified image's maps read like any other's."""
    summary, run_dir = study
    html = (run_dir / "report.html").read_text()
    wrong = 0
    for e in summary.images:
        start = html.index(f'<section class="card" id="img-{e.id}">')
        head = html[start:html.index("</header>", start)]
        assert f"predicted <b>{e.predicted}</b>" in head
        assert f"label <b>{e.label}</b>" in head, head
        assert ("not the label" in head) == (e.label != e.predicted), head
        wrong += e.label != e.predicted
    assert wrong  # the list guarantees a wrong one


def test_the_trust_section_says_what_its_intervals_assume(study, tmp_path):
    """docs/report.md's reading of the verdict (the intervals count every image as an
    independent one, so flips and crops of one photo make them too narrow; significant is not
    large) was not on the page, where a run of 16 flips of 3 photos showed tight intervals.
    A run without any number (this study's) says in one line what would fill the section."""
    from test_photos import render, summary_of, variants
    html = render(summary_of(variants(), None), tmp_path / "ranked")
    trust = html[html.index('<section id="trust">'):html.index('<section id="run">')]
    text = re.sub(r"<[^>]+>", "", trust)
    assert "independent" in text and "flips, crops or shifts of one photo" in text
    assert "not that it is large" in text
    _, run_dir = study
    html = (run_dir / "report.html").read_text()
    text = re.sub(r"<[^>]+>", "", html[html.index('<section id="trust">'):
                                       html.index('<section id="run">')])
    assert "this section ranks the methods against baselines" in text
    assert "not that it is large" not in text


@pytest.mark.skipif(find_browser() is None, reason="no Chromium here: apt-get install chromium")
def test_four_methods_mean_maps_do_not_widen_the_page(study, tmp_path):
    """With four methods the mean-maps table (2 x 150 px a method) ran 150 px past a 1280 px
    window: the last column was cut off and the whole page scrolled sideways."""
    _, run_dir = study
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with Browser(find_browser()) as browser:
        browser.open_page(width=1280, height=900)
        browser.goto((copy / "report.html").as_uri())
        width = browser.evaluate("document.documentElement.scrollWidth")
        means = browser.evaluate("document.querySelector('table.means') !== null")
    assert means
    assert width <= 1280


def test_summary_csv_has_the_label_beside_the_prediction(study):
    """A labelled run's summary.csv had the prediction but not the label (summary.json did)."""
    import csv
    summary, run_dir = study
    with (run_dir / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    labels = {e.id: e.label for e in summary.images}
    assert rows and list(rows[0])[:3] == ["image", "predicted", "label"]
    assert all(row["label"] == labels[row["image"]] for row in rows)

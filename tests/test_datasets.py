"""Labelled datasets: ImageFolder trees and CSV/JSON lists, targets from the label, one record
per class, the dataset numbers and views (accuracy, confusion, per class, mean maps,
disagreement), --resume keeping the mean maps exact, and the report's Dataset section."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import torch

from helpers import interrupted

from explain import datasets
from explain.cli import main
from explain.config import load_config
from explain.errors import ExplainError
from explain.images import find_images
from explain.results import Skipped
from explain.runner import RunOptions, run
from explain.stats import interval, widened
from conftest import IMAGES, make_small_alexnet, write_config

QUIET = dict(progress=False, log=lambda _: None)
SIZE = [96, 96]


def make_tree(root: Path) -> Path:
    """root/cat/cat0..2.jpg, root/dog/dog0..2.jpg: the repo's photos, flipped and cropped."""
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        img = cv2.imread(str(IMAGES / f"{cls}.jpg"))
        h, w = img.shape[:2]
        for i, v in enumerate([img, img[:, ::-1], img[h // 5:, : w * 3 // 4]]):
            cv2.imwrite(str(root / cls / f"{cls}{i}.jpg"), v)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tree, a CSV list pointing outside its folder, and the small AlexNet's file. The list
    holds one photo twice, labelled cat and dog: whatever the random model predicts, one
    image is right and one wrong."""
    tmp = tmp_path_factory.mktemp("datasets")
    make_tree(tmp / "tree")
    (tmp / "extra").mkdir()
    shutil.copy(IMAGES / "both.jpg", tmp / "extra" / "both.jpg")
    shutil.copy(IMAGES / "both.jpg", tmp / "extra" / "both2.jpg")
    (tmp / "lists").mkdir()
    (tmp / "lists" / "list.csv").write_text("path,label\n../extra/both.jpg,dog\n"
                                            "../extra/both2.jpg,cat\n")
    torch.save(make_small_alexnet(), tmp / "small.pth")
    return tmp


def config(folder: Path, data: Path, name: str = "exp", **fields) -> Path:
    base = dict(model={"file": str(data / "small.pth")}, target_layers=["features.10"],
                preprocess={"size": SIZE}, batch_size=2,
                images=[{"labelled": str(data / "tree")},
                        {"labelled": str(data / "lists" / "list.csv")}])
    base.update(fields)
    return write_config(folder, name, **base)


def one_line_error(path: Path) -> str:
    with pytest.raises(ExplainError) as err:
        find_images(load_config(path))
    text = str(err.value)
    assert "\n" not in text
    return text


# ---- finding labelled images ----------------------------------------------------------------

def test_tree_and_lists_give_labelled_images(data, tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"path": str(IMAGES / "cat.jpg"),
                                                      "label": "cat"}]))
    path = config(tmp_path, data, images=[{"labelled": str(data / "tree")},
                                          {"labelled": str(data / "lists" / "list.csv")},
                                          {"labelled": str(tmp_path / "list.json")},
                                          str(IMAGES / "dog.jpg")])
    refs, notes = find_images(load_config(path))
    got = {r.id: (r.label, r.from_folder) for r in refs}
    assert got == {"cat0": ("cat", True), "cat1": ("cat", True), "cat2": ("cat", True),
                   "dog0": ("dog", True), "dog1": ("dog", True), "dog2": ("dog", True),
                   "both": ("dog", True), "both2": ("cat", True), "cat": ("cat", True),
                   "dog": (None, False)}
    assert refs[6].path == (data / "extra" / "both.jpg").resolve()  # outside the list's folder
    assert notes == []


def test_unknown_folder_label_and_missing_file_are_one_line_errors(data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    text = one_line_error(config(tmp_path, data, images=[{"labelled": str(tmp_path / "tre")}]))
    assert text.endswith(f"images[0].labelled: not found: {tmp_path / 'tre'} — did you mean "
                         f"{tree}?")
    (tree / "bird").mkdir()
    shutil.copy(IMAGES / "cat.jpg", tree / "bird" / "b.jpg")
    (tree / ".ipynb_checkpoints").mkdir()  # hidden: ignored
    (tree / "README.txt").write_text("a dataset")
    text = one_line_error(config(tmp_path, data, images=[{"labelled": str(tree)}]))
    assert str(tree / "bird") in text and "'bird' names no class" in text
    assert "classes: cat, dog" in text and "skip_unknown" in text
    refs, notes = find_images(load_config(config(
        tmp_path, data, images=[{"labelled": str(tree), "skip_unknown": True}])))
    assert len(refs) == 6 and {r.label for r in refs} == {"cat", "dog"}
    assert notes == [Skipped(path=str(tree / "README.txt"),
                             reason=f"not in a class folder of {tree}"),
                     Skipped(path=str(tree / "bird"), reason="the folder names no class")]

    lst = tmp_path / "l.csv"
    lst.write_text(f"path,label\n{IMAGES / 'cat.jpg'},cat\n{IMAGES / 'dog.jpg'},dgo\n")
    text = one_line_error(config(tmp_path, data, images=[{"labelled": str(lst)}]))
    assert text.startswith(f"{lst}: line 3: label 'dgo' is not a named class — did you mean 'dog'?")
    refs, notes = find_images(load_config(config(
        tmp_path, data, images=[{"labelled": str(lst), "skip_unknown": True}])))
    assert len(refs) == 1 and notes == [Skipped(path=str(lst), reason="1 row(s) naming no class")]
    lst.write_text("path,label\nnot_there.jpg,cat\n")
    text = one_line_error(config(tmp_path, data, images=[{"labelled": str(lst)}]))
    assert f"{lst}: line 2: image not found" in text and str(tmp_path / "not_there.jpg") in text
    lst.write_text("file,class\nx.jpg,cat\n")
    assert f"{lst}: line 1: expected a header" in one_line_error(
        config(tmp_path, data, images=[{"labelled": str(lst)}]))
    (tmp_path / "l.json").write_text(json.dumps([{"path": str(IMAGES / "cat.jpg"), "label": 3}]))
    assert f"{tmp_path / 'l.json'}: item 0: path and label must be texts" in one_line_error(
        config(tmp_path, data, images=[{"labelled": str(tmp_path / "l.json")}]))
    lst.write_text(f"path,label\n{IMAGES / 'cat.jpg'},dog\n")  # the same file, two labels
    other = _list(tmp_path, "m.csv", f"{IMAGES / 'cat.jpg'},cat")
    text = one_line_error(config(tmp_path, data, images=[{"labelled": str(lst)},
                                                         {"labelled": str(other)}]))
    assert "is listed with the labels 'dog' and 'cat'" in text


def _list(folder: Path, name: str, *rows: str) -> Path:
    path = folder / name
    path.write_text("path,label\n" + "\n".join(rows) + "\n")
    return path


def test_config_checks_labelled_entries(data, tmp_path, capsys):
    path = config(tmp_path, data, images=[{"labeled": str(data / "tree")}])
    assert main([str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}: images: entry 0: unknown key 'labeled'" in err
    assert "did you mean 'labelled'" in err
    path = config(tmp_path, data, classes={}, images=[{"labelled": str(data / "tree")}])
    assert main([str(path), "--quiet"]) == 2
    assert "images[0]: labels name classes; give 'classes'" in capsys.readouterr().err


# ---- one labelled run: numbers, files, report ---------------------------------------------

@pytest.fixture(scope="module")
def study(data):
    """[label, predicted], two methods, arrays saved, a box per class on both.jpg, channel
    contrast and guided on (each must see a class once per image); counts the guided
    backprop passes. (--compare has its own smaller run: its figures are slow.)"""
    folder = data / "study"
    folder.mkdir()
    path = config(folder, data, targets=["label", "predicted"], methods=["gradcam", "layercam"],
                  annotations={"boxes": {"both.jpg": {"cat": [0, 0, 224, 224],
                                                      "dog": [224, 0, 448, 224]},
                                         "dog0": {"dog": [0, 0, 768, 576]}}},
                  channels={"enabled": True, "top_k": 2, "tile_size": 8},
                  guided={"enabled": True},
                  output={"dir": str(folder / "results"), "save_arrays": True})
    from explain.writers import guided
    passes = []
    original = guided.guided_gradient

    def counted(model, x, category):
        passes.append(category)
        return original(model, x, category)
    with mock.patch.object(guided, "guided_gradient", counted):
        summary = run(load_config(path), RunOptions(**QUIET))
    return summary, folder / "results" / "exp", len(passes)


def test_label_and_prediction_are_one_record_when_equal(study):
    summary, run_dir, passes = study
    entries = summary.images
    assert {e.label == e.predicted for e in entries} == {True, False}  # both kinds occur
    for e in entries:
        classes = {r.class_name for r in e.cams}
        assert classes == {e.label, e.predicted}
        assert len(e.cams) == 2 * len(classes)  # one record per class x method
        contrast = run_dir / "channels" / "gradcam" / f"{e.id}__contrast.png"
        assert contrast.is_file() == (e.label != e.predicted)  # two DIFFERENT classes only
    assert passes == sum(len(e.guided) for e in entries) == sum(len(e.cams) for e in entries) // 2


def test_compare_rows_once_per_class(data, tmp_path):
    lst = _list(tmp_path, "two.csv", f"{data / 'extra' / 'both.jpg'},dog",
                f"{data / 'extra' / 'both2.jpg'},cat")  # one photo: one right, one wrong
    path = config(tmp_path, data, images=[{"labelled": str(lst)}], targets=["label", "predicted"],
                  methods=["gradcam"], compare={"enabled": True})
    summary = run(load_config(path), RunOptions(**QUIET))
    with (tmp_path / "results" / "exp" / "compare" / "compare.csv").open() as f:
        rows = [(r["image"], r["class"], r["method"]) for r in csv.DictReader(f)]
    expected = [(e.id, r.class_name, r.method) for e in summary.images for r in e.cams]
    assert {e.label == e.predicted for e in summary.images} == {True, False}
    assert len(expected) == 3 and sorted(rows) == sorted(expected)  # no row twice


def test_accuracy_confusion_and_per_class(study):
    summary, run_dir, _ = study
    d = json.loads((run_dir / "summary.json").read_text())["dataset"]
    images = json.loads((run_dir / "summary.json").read_text())["images"]
    pairs = [(i["label"], i["predicted"]) for i in images]
    assert d["labelled"] == len(pairs) == 8
    assert d["correct"] == sum(a == b for a, b in pairs)
    assert d["accuracy"] == pytest.approx(d["correct"] / 8)
    assert d["classes"] == ["cat", "dog"]
    assert d["confusion"] == [[sum(p == (a, b) for p in pairs) for b in ("cat", "dog")]
                              for a in ("cat", "dog")]
    with (run_dir / "dataset" / "confusion.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [[int(r["cat"]), int(r["dog"])] for r in table] == d["confusion"]
    with (run_dir / "dataset" / "per_class.csv").open() as f:
        per_class = {r["class"]: r for r in csv.DictReader(f)}
    for cls in ("cat", "dog"):
        row = per_class[cls]
        assert int(row["images"]) == sum(a == cls for a, _ in pairs)
        assert int(row["correct"]) == sum(a == b == cls for a, b in pairs)
        located = [r["localisation"]["pointing_hit"] for i in images for r in i["cams"]
                   if r["class"] == cls and "localisation" in r]
        assert located and int(row["pointing_maps"]) == len(located)
        assert float(row["pointing"]) == pytest.approx(sum(located) / len(located))
        assert row["pointing_low"] == row["pointing_high"] == ""  # boxes on 1 or 2 images
    assert "; 95% interval " not in (run_dir / "report.html").read_text()


def test_the_pointing_game_per_class_has_its_interval_over_images():
    """Over 5 or more images with boxes, a class's pointing game has a 95% bootstrap interval
    over the images (each image's share of hits among its maps: an image's two methods are
    not two draws), clipped to 0..1, as per_class.csv's pointing_low / pointing_high."""
    from explain.results import ImageEntry, Localisation, MapRecord

    def entry(i: int, hits: dict[str, tuple[bool, ...]]) -> ImageEntry:
        cams = [MapRecord(class_name=cls, method=m, peak_x=0, peak_y=0, peak_value=1,
                          mass_left=.5, mass_right=.5, mass_top=.5, mass_bottom=.5, file="x.png",
                          localisation=Localisation(pointing_hit=hit, energy_in_box=.5,
                                                    box_iou=.1))
                for cls, row in hits.items() for m, hit in zip(("gradcam", "layercam"), row)]
        return ImageEntry(id=f"im{i}", path="x", input_size=[8, 8], probabilities={},
                          predicted="cat", label="cat", cams=cams)
    cat = [(True, True), (True, False), (False, False), (True, True), (True, True),
           (False, True)]
    entries = [entry(i, {"cat": row, **({"dog": (True, True)} if i < 4 else {})})
               for i, row in enumerate(cat)]
    rows = {r.class_name: r for r in datasets.per_class(entries, ["cat", "dog"],
                                                        ["gradcam", "layercam"], seed=3)}
    shares = [sum(row) / 2 for row in cat]
    low, high = interval(shares, seed=3)
    assert rows["cat"].pointing == pytest.approx(8 / 12)
    assert rows["cat"].pointing_interval == pytest.approx([max(0, low), min(1, high)], abs=1e-6)
    assert 0 < low < 8 / 12 < 1 < high and rows["cat"].pointing_interval[1] == 1.0  # clipped
    # six images that all hit: no spread to resample, so the Wilson interval of 6 of 6 (the
    # bootstrap said [100%, 100%])
    hit = [entry(i, {"cat": (True, True)}) for i in range(6)]
    (row,) = datasets.per_class(hit, ["cat"], ["gradcam", "layercam"], seed=3)
    assert row.pointing == 1.0 and row.pointing_interval == pytest.approx([0.6097, 1.0], abs=1e-4)
    assert rows["dog"].pointing == 1.0 and rows["dog"].pointing_interval is None  # 4 images
    # the photos of look-alike images (report.photo_separator): im0 and its variant im0-flip
    # are one photo, their shares averaged; 5 photos still give an interval, 4 do not
    variants = entries[:5] + [entry(0, {"cat": (False, False)})]
    variants[-1] = variants[-1].model_copy(update={"id": "im0-flip", "path": "im0-flip.jpg"})
    variants = [e.model_copy(update={"path": f"{e.id}.jpg"}) for e in variants]
    per_photo = [(1.0 + 0.0) / 2, 0.5, 0.0, 1.0, 1.0]  # im0: (1 + 0) / 2; im1..im4
    low, high = widened(interval(per_photo, seed=3), float(np.mean(per_photo)), 5)
    assert datasets.pointing_intervals(variants, 3, "-")["cat"] == pytest.approx(
        [max(0.0, low), min(1.0, high)], abs=1e-6)
    assert datasets.pointing_intervals(variants, 3, "-") != \
        datasets.pointing_intervals(variants, 3, None)  # six images, not five photos
    four = variants[1:4] + variants[5:]  # im1, im2, im3 and im0's variant: 4 photos
    assert "cat" not in datasets.pointing_intervals(four, 3, "-")
    assert "cat" in datasets.pointing_intervals(four + [variants[4]], 3, "-")
    csv_row = datasets.class_rows([rows["cat"]], ["gradcam"])[0]
    assert (csv_row["pointing_low"], csv_row["pointing_high"]) == tuple(
        rows["cat"].pointing_interval)
    # how many units the interval is over (the cell read "0 / 30 ... over photos" for 9)
    assert (rows["cat"].pointing_units, rows["dog"].pointing_units) == (6, None)
    assert csv_row["pointing_units"] == 6
    by_photo = {r.class_name: r for r in datasets.per_class(
        variants, ["cat"], ["gradcam", "layercam"], seed=3, separator="-")}
    assert by_photo["cat"].pointing_units == 5 and by_photo["cat"].pointing_interval == \
        datasets.pointing_intervals(variants, 3, "-")["cat"]


def _resized(cam: np.ndarray) -> np.ndarray:
    return cv2.resize(cam.astype(np.float32), (224, 224), interpolation=cv2.INTER_LINEAR)


def test_mean_maps_are_the_mean_of_the_maps(study):
    summary, run_dir, _ = study
    records = summary.dataset.mean_maps
    assert {(m.class_name, m.outcome) for m in records} == {
        (e.label, "correct" if e.label == e.predicted else "wrong") for e in summary.images}
    for m in records:
        members = [e for e in summary.images if e.label == m.class_name and
                   (e.label == e.predicted) == (m.outcome == "correct")]
        maps = [_resized(np.load(run_dir / "cams" / m.method / f"{e.id}__{m.class_name}.npy"))
                for e in members]
        mean = np.load(run_dir / m.array)
        assert m.count == len(maps) and mean.shape == (224, 224) and mean.dtype == np.float32
        assert np.allclose(mean, np.mean(maps, axis=0), atol=1e-6)
        picture = cv2.imread(str(run_dir / m.file))
        assert picture.shape == (224, 224, 3)
        expected = cv2.applyColorMap(np.uint8(np.round(mean * 255)), cv2.COLORMAP_JET)
        assert np.array_equal(picture, expected)


def test_disagreement_ranking(study):
    summary, run_dir, _ = study
    recomputed = []
    for order, e in enumerate(summary.images):
        for cls in dict.fromkeys(r.class_name for r in e.cams):
            a, b = (np.load(run_dir / "cams" / m / f"{e.id}__{cls}.npy").ravel()
                    for m in ("gradcam", "layercam"))
            r = np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 0.0
            recomputed.append((-(1 - r), order, e.id, cls))
    ranked = [(i, c) for _, _, i, c in sorted(recomputed)]
    with (run_dir / "dataset" / "disagreement.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["class"]) for r in rows] == ranked
    values = {(i, c): -v for v, _, i, c in recomputed}
    assert all(float(r["disagreement"]) == pytest.approx(values[(r["image"], r["class"])],
                                                         abs=2e-6) for r in rows)
    assert [(r.image, r.class_name) for r in summary.dataset.disagreement] == ranked[:20]


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links, self.images, self.cells, self._in = set(), [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a":
            self.links.append(attrs.get("href", ""))
        if tag == "img":
            self.images.append(attrs["src"])
        self._in = tag

    def handle_data(self, text):
        if self._in == "td" and text.strip():
            self.cells.append(text.strip())


def test_report_shows_the_dataset_section(study, tmp_path):
    summary, run_dir, _ = study
    html = (run_dir / "report.html").read_text()
    section = html[html.index('<section id="dataset">'):html.index("</section>", html.index(
        '<section id="dataset">'))]
    page = Page()
    page.feed(section)
    d = summary.dataset
    assert f"accuracy <b>{100 * d.accuracy:.1f}%</b>" in section
    confusion = section[section.index('class="confusion"'):section.index("</table>")]
    cells = Page()
    cells.feed(confusion)
    assert [int(c) for c in cells.cells] == [n for row in d.confusion for n in row]
    assert {m.file for m in d.mean_maps} <= set(page.images)
    assert all((run_dir / src).is_file() for src in page.images)
    cases = [h for h in page.links if h.startswith("#img-")]
    assert cases and cases[0] == f"#img-{d.disagreement[0].image}"
    whole = Page()
    whole.feed(html)
    assert {h[1:] for h in cases} <= whole.ids  # each case links to its image card
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.html").read_bytes() == html.encode()


# ---- --resume -------------------------------------------------------------------------------

def _dataset_files(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in (run_dir / "dataset").rglob("*") if p.is_file()}


def _exact_mean(run_dir: Path, summary, mean) -> np.ndarray:
    """What a mean map must be, from the run's own arrays: each resized map x 2**24, rounded,
    summed as integers, divided once."""
    members = [e for e in summary.images if e.label == mean.class_name and
               (e.label == e.predicted) == (mean.outcome == "correct")]
    total = sum(np.rint(np.clip(_resized(np.load(
        run_dir / "cams" / mean.method / f"{e.id}__{mean.class_name}.npy")), 0, 1)
        .astype(np.float64) * 2**24).astype(np.int64) for e in members)
    return (total / (len(members) * 2**24)).astype(np.float32)


def test_targets_label_and_resume_keep_the_means_exact(data, tmp_path):
    path = config(tmp_path, data, targets="label", methods=["gradcam"],
                  output={"dir": str(tmp_path / "whole"), "save_arrays": True})
    whole = run(load_config(path), RunOptions(**QUIET))
    for e in whole.images:  # targets: label explains exactly the label class
        assert [r.class_name for r in e.cams] == [e.label]
    reference = _dataset_files(tmp_path / "whole" / "exp")
    assert "dataset/mean/gradcam/cat__correct.npy" in reference
    # stopped between batches: the resumed run's batches are the same, so are the bytes
    run_dir = interrupted(path, tmp_path / "batch", "batch", 3)
    assert len(list((run_dir / "items").glob("*.json"))) == 4
    resumed = run(load_config(path), RunOptions(out_root=tmp_path / "batch", resume=True, **QUIET))
    assert resumed.dataset.mean_missing == 0 and _dataset_files(run_dir) == reference
    assert not any(n.startswith("dataset:") for n in resumed.notes)  # the saved sums used
    # a shared state of means of a class the run does not explain: the saved maps instead
    run_dir = interrupted(path, tmp_path / "shared", "batch", 3)
    state = run_dir / "dataset/mean/sums.zip"
    with zipfile.ZipFile(state) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = json.loads(members["state.json"])
    header["groups"][0][0] = "m0"
    members["state.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(state, "w") as z:
        for n, value in members.items():
            z.writestr(n, value)
    resumed = run(load_config(path), RunOptions(out_root=tmp_path / "shared", resume=True,
                                                **QUIET))
    assert _dataset_files(run_dir) == reference and resumed.dataset.mean_missing == 0
    assert f"dataset: {state}: means of a class or method this run does not explain; the " \
           f"means start from the saved maps" in resumed.notes
    # stopped while the 3rd batch's item files were written: one of its images is kept, but
    # the saved sums cover only the first two batches; it comes back from cams/*.npy. (The
    # images after it are batched anew, and the engine's maps move by ~1e-6 with a batch's
    # make-up, so compare with this run's own arrays.)
    run_dir = interrupted(path, tmp_path / "item", "item", 6)
    assert len(list((run_dir / "items").glob("*.json"))) == 5
    resumed = run(load_config(path), RunOptions(out_root=tmp_path / "item", resume=True, **QUIET))
    assert resumed.dataset.mean_missing == 0
    assert [(m.class_name, m.outcome, m.count) for m in resumed.dataset.mean_maps] == \
        [(m.class_name, m.outcome, m.count) for m in whole.dataset.mean_maps]
    for mean in resumed.dataset.mean_maps:
        assert np.array_equal(np.load(run_dir / mean.array), _exact_mean(run_dir, resumed, mean))


def test_resume_without_arrays_says_what_the_means_miss(data, tmp_path):
    path = config(tmp_path, data, targets="label", methods=["gradcam"],
                  output={"dir": str(tmp_path / "r")})
    interrupted(path, tmp_path / "r", "item", 6)
    summary = run(load_config(path), RunOptions(out_root=tmp_path / "r", resume=True, **QUIET))
    assert summary.dataset.mean_missing == 1
    assert sum(m.count for m in summary.dataset.mean_maps) == 8 - 1
    assert any("1 image(s) kept from the interrupted run are not in the mean maps" in n
               for n in summary.notes)


def test_a_kept_map_of_another_shape_is_not_resized_into_the_means(data, tmp_path):
    """--resume adds a kept image's saved maps to the means: one of another shape than its
    record's input size (a tampered or foreign file) is left out and counted, not resized in."""
    path = config(tmp_path, data, targets="label", methods=["gradcam"],
                  output={"dir": str(tmp_path / "r"), "save_arrays": True})
    run_dir = interrupted(path, tmp_path / "r", "item", 6)
    kept = json.loads(sorted((run_dir / "items").glob("*.json"))[-1].read_text())["entry"]
    array = run_dir / kept["cams"][0]["files"]["array"]
    assert list(np.load(array).shape) == kept["input_size"]
    np.save(array, np.ones((5, 7), np.float32))
    summary = run(load_config(path), RunOptions(out_root=tmp_path / "r", resume=True, **QUIET))
    assert summary.dataset.mean_missing == 1
    assert sum(m.count for m in summary.dataset.mean_maps) == 8 - 1
    assert any("1 image(s) kept from the interrupted run are not in the mean maps (their maps "
               "were not saved, or not as their records say" in n for n in summary.notes)


def test_mean_sums_state_round_trip():
    sums = datasets.MeanSums((4, 4))
    sums.add(("cat", "gradcam", "correct"), np.eye(4, dtype=np.float32))
    sums.cover(["a", "b"])
    again, pending = datasets.MeanSums.from_bytes(sums.to_bytes(["c"]), "state")
    assert pending == ["c"] and again.covered == 2 and again.digest == datasets.id_digest(["b", "a"])
    assert np.array_equal(again.mean(("cat", "gradcam", "correct")), np.eye(4))
    assert sums.to_bytes(["c"]) == again.to_bytes(["c"])  # the same state, the same bytes
    with pytest.raises(ExplainError, match="not a mean-map state"):
        datasets.MeanSums.from_bytes(b"PK junk", "state")


def test_a_plain_folder_of_class_folders_says_how_to_read_it(tmp_path):
    """images: [train/] holding cat/ and dog/ finds no file in train/ itself: the line says a
    folder entry does not read subfolders and shows the labelled and glob forms, which work."""
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        shutil.copy(IMAGES / f"{cls}.jpg", tmp_path / "train" / cls / f"{cls}1.jpg")
    base = dict(model={"file": "m.pth"}, target_layers=["x"])  # no model needed to find images
    path = write_config(tmp_path, images=["train/"], **base)
    text = one_line_error(path)
    assert "images[0]: no image files in 'train/'" in text
    assert "not its subfolders 'cat', 'dog'" in text
    assert "{labelled: train}" in text and "'train/*/*'" in text
    for images in ([{"labelled": "train"}], ["train/*/*"]):  # the hint's two forms work
        refs, _ = find_images(load_config(write_config(tmp_path, "ok", images=images, **base)))
        assert sorted(r.path.name for r in refs) == ["cat1.jpg", "dog1.jpg"]
    (tmp_path / "empty").mkdir()
    assert "subfolders" not in one_line_error(write_config(tmp_path, "e", images=["empty"], **base))


def test_a_labelled_run_without_boxes_names_its_labels_as_ground_truth(tmp_path):
    """The run's table said 'ground truth: none' for a labelled run without boxes: its labels
    are ground truth."""
    import html as html_text
    from helpers import tiny_config, tiny_net
    from explain.config import load_config
    from explain.runner import RunOptions, run
    for cls, name in (("cat", "cat.jpg"), ("dog", "dog.jpg")):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        shutil.copy(IMAGES / name, tmp_path / "pics" / cls / name)
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, classes={"cat": 0, "dog": 1},
                       images=[{"labelled": "pics"}], output={"dir": str(tmp_path / "out")})
    run(load_config(path), RunOptions(progress=False, log=lambda line: None))
    page = html_text.unescape((tmp_path / "out" / "exp" / "report.html").read_text())
    assert "<th>ground truth</th><td>the images' class labels; no boxes (annotations: in " \
           "the config)" in page.replace("<code>", "").replace("</code>", "")


def test_the_per_class_table_has_pointing_columns_only_with_boxes(study, tmp_path):
    """A labelled run without boxes showed a pointing-game column per method of dashes only."""
    from explain.outputs import RunFolder
    from explain.writers.report import ReportData, render_pages
    summary = study[0].model_copy(deep=True)

    def table(name: str) -> str:
        (tmp_path / name).mkdir()
        page = dict(render_pages(RunFolder(tmp_path / name), ReportData(summary)))["report.html"]
        start = page.index('<table class="per-class">')
        return page[start:page.index("</table>", start)]
    boxed = table("boxed")
    assert "pointing game" in boxed and "<th>pointing layercam</th>" in boxed
    for row in summary.dataset.per_class:
        row.pointing_maps, row.pointing_hits, row.pointing, row.pointing_by_method = 0, 0, None, {}
    plain = table("plain")
    assert "pointing" not in plain and "<th>dog</th>" in plain and "–" not in plain


def test_the_notebook_display_carries_the_models_warnings(study, tmp_path):
    """The report's box and the console said 'the model predicts dog for every one of ...';
    a notebook's Run display did not (review 17)."""
    import explain
    run_dir = tmp_path / "copy"
    shutil.copytree(study[1], run_dir)
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    for image in summary["images"]:
        image["predicted"], image["probabilities"] = "dog", {"cat": 0.3, "dog": 0.7}
    path.write_text(json.dumps(summary))
    html = explain.load(run_dir)._repr_html_()
    assert "<b>warning</b>: the model predicts dog for every one of the 8 image(s)" in html


def test_a_list_repeating_one_row_is_read_once(data, tmp_path):
    """A labelled list naming one image 200,000 times (a shared 2.4 MB CSV) resolved every
    row's path, and again when the images got their ids (about 10 s here; 50 s for a million
    rows): a row repeated word for word is one image, checked once."""
    import time
    lst = _list(tmp_path, "many.csv", *([f"{IMAGES / 'cat.jpg'},cat"] * 200_000),
                f"{IMAGES / 'dog.jpg'},dog")
    cfg = load_config(config(tmp_path, data, images=[{"labelled": str(lst)}]))
    started = time.process_time()
    refs, _ = find_images(cfg)
    assert [(r.id, r.label) for r in refs] == [("cat", "cat"), ("dog", "dog")]
    assert time.process_time() - started < 3.0

"""Acceptance of the embedded demo: real network, real photos, known answers."""

import json

import cv2
import numpy as np
import pytest

from explain.config import load_config
from explain.runner import RunOptions, run
from conftest import REPO


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = load_config(REPO / "configs" / "demo_catdog.yaml")
    summary = run(cfg, RunOptions(out_root=out, progress=False, log=lambda _: None))
    return summary, out / "demo_catdog"


def test_classifier_is_right_on_single_photos(demo_run):
    summary, _ = demo_run
    probs = {i.id: i.probabilities for i in summary.images}
    assert probs["cat"]["cat"] >= 0.9
    assert probs["dog"]["dog"] >= 0.9
    assert {i.id: i.predicted for i in summary.images}["cat"] == "cat"


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_composite_maps_find_each_animal_in_its_half(demo_run, method):
    _, run_dir = demo_run
    cat = np.load(run_dir / "cams" / method / "both__cat.npy")
    dog = np.load(run_dir / "cams" / method / "both__dog.npy")
    assert cat.shape == dog.shape == (224, 448)  # aspect kept: fed at 224x448
    assert cat.dtype == np.float32 and 0 <= cat.min() and cat.max() <= 1
    half = cat.shape[1] // 2
    assert cat[:, :half].sum() / cat.sum() >= 0.7
    assert dog[:, half:].sum() / dog.sum() >= 0.7


def test_summary_matches_arrays_and_lists_every_item(demo_run):
    summary, run_dir = demo_run
    rows = (run_dir / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 * 2 * 2  # header + image x class x method
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["counts"] == {"images": 3, "maps": 12}
    assert on_disk["versions"]["grad-cam"].startswith("1.5")
    for image in on_disk["images"]:
        for item in image["cams"]:
            cam = np.load(run_dir / item["file"].replace(".png", ".npy"))
            y, x = np.unravel_index(cam.argmax(), cam.shape)
            assert (item["peak_x"], item["peak_y"]) == (x, y)
            assert item["mass_left"] == pytest.approx(cam[:, : cam.shape[1] // 2].sum() / cam.sum(), abs=1e-4)


def test_overlays_are_jet_coloured_maps(demo_run):
    _, run_dir = demo_run
    overlay = cv2.imread(str(run_dir / "cams" / "gradcam" / "both__dog.png"))
    cam = np.load(run_dir / "cams" / "gradcam" / "both__dog.npy")
    assert overlay.shape[:2] == cam.shape
    # jet colours the peak red: red channel beats blue there, and the reverse where the map is ~0
    y, x = np.unravel_index(cam.argmax(), cam.shape)
    assert overlay[y, x, 2] > overlay[y, x, 0]
    y0, x0 = np.unravel_index(cam.argmin(), cam.shape)
    assert overlay[y0, x0, 0] > overlay[y0, x0, 2]


def shrunk(picture: np.ndarray, longest: int = 224) -> np.ndarray:
    """A panel cell: ``picture`` with its longer side shrunk to ``longest`` (INTER_AREA)."""
    h, w = picture.shape[:2]
    scale = min(1.0, longest / max(h, w))
    size = (round(w * scale), round(h * scale))
    return picture if scale == 1 else cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def places(picture: np.ndarray, page: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``picture`` stands in ``page`` pixel for pixel."""
    h, w = picture.shape[:2]
    window = page[:page.shape[0] - h + 1, :page.shape[1] - w + 1]
    found = np.argwhere((window == picture[0, 0]).all(-1))
    for y, x in [(h // 2, w // 2), (h - 1, w - 1), (0, w - 1), (h - 1, 0)]:  # cheap filters
        found = found[(page[found[:, 0] + y, found[:, 1] + x] == picture[y, x]).all(-1)]
    return [(int(y), int(x)) for y, x in found
            if np.array_equal(page[y:y + h, x:x + w], picture)]


@pytest.mark.parametrize("cls", ["cat", "dog"])
def test_panel_cells_are_the_overlays_in_order(demo_run, cls):
    """panels/<class>.png: a row per image in the run's order, a column per method in the
    config's order, each cell exactly the overlay file it shows, shrunk to 224 px."""
    summary, run_dir = demo_run
    methods = ["gradcam", "layercam"]
    assert [i.id for i in summary.images] == ["cat", "dog", "both"]
    page = cv2.imread(str(run_dir / "panels" / f"{cls}.png"))
    assert page.shape[1] > 3 * 224  # the label, the photo and two maps side by side
    cells = []
    for image in summary.images:
        row = []
        for method in methods:
            overlay = cv2.imread(str(run_dir / "cams" / method / f"{image.id}__{cls}.png"))
            found = places(shrunk(overlay), page)
            assert len(found) == 1, (image.id, method, found)
            row.append(found[0])
        cells.append(row)
    for (y0, x0), (y1, x1) in cells:  # methods left to right, on one line
        assert y0 == y1 and x0 < x1
    tops = [row[0][0] for row in cells]  # images top to bottom, in the run's order
    assert tops == sorted(tops) and len(set(tops)) == 3
    for c in range(len(methods)):  # each method in its own column (centred in it)
        centres = {x + shrunk(cv2.imread(str(run_dir / "cams" / methods[c] /
                                              f"{image.id}__{cls}.png"))).shape[1] // 2
                   for (_, x), image in zip([row[c] for row in cells], summary.images)}
        assert max(centres) - min(centres) <= 1, centres

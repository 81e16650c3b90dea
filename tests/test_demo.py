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


def test_overlays_and_panels_are_real_pictures(demo_run):
    _, run_dir = demo_run
    overlay = cv2.imread(str(run_dir / "cams" / "gradcam" / "both__dog.png"))
    cam = np.load(run_dir / "cams" / "gradcam" / "both__dog.npy")
    assert overlay.shape[:2] == cam.shape
    # jet colours the peak red: red channel beats blue there, and the reverse where the map is ~0
    y, x = np.unravel_index(cam.argmax(), cam.shape)
    assert overlay[y, x, 2] > overlay[y, x, 0]
    y0, x0 = np.unravel_index(cam.argmin(), cam.shape)
    assert overlay[y0, x0, 0] > overlay[y0, x0, 2]
    for cls in ("cat", "dog"):
        panel = cv2.imread(str(run_dir / "panels" / f"{cls}.png"))
        assert panel is not None and panel.shape[0] > 400 and panel.shape[1] > 600


def test_panel_cells_show_the_overlays_in_order(demo_run):
    """Each panel cell is the thumbnail of the overlay (or photo) it claims to show."""
    from explain import render
    from explain.writers.panels import thumbnail
    summary, run_dir = demo_run
    methods = ["gradcam", "layercam"]
    panel = cv2.cvtColor(cv2.imread(str(run_dir / "panels" / "dog.png")), cv2.COLOR_BGR2RGB)
    rows = []
    for image in summary.images:
        overlays = [cv2.cvtColor(cv2.imread(str(run_dir / "cams" / m / f"{image.id}__dog.png")),
                                 cv2.COLOR_BGR2RGB) for m in methods]
        rows.append((image.id, thumbnail(overlays[0]), [thumbnail(o) for o in overlays]))
    boxes = render.panel(rows, methods, "layout only").boxes  # the writer's layout
    assert len(boxes) == 3 and all(len(r) == 3 for r in boxes)

    def distance(box, picture):
        x0, y0, x1, y1 = box
        crop = panel[y0 + 2:y1 - 2, x0 + 2:x1 - 2].astype(np.float32)
        want = cv2.resize(picture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        return np.abs(crop - want[2:-2, 2:-2].astype(np.float32)).mean()

    for r, (_, _, overlays) in enumerate(rows):
        for c, overlay in enumerate(overlays, start=1):
            right = distance(boxes[r][c], overlay)
            assert right < 12, (r, c, right)
            wrong = distance(boxes[r][c], rows[(r + 1) % 3][2][c - 1])  # another image's map
            assert wrong > 2 * right, (r, c, right, wrong)

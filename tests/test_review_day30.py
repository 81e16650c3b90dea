"""Review day 30 (review 24): findings in the commits of day 30 (pace, per-class pointing,
the top-channels figure of a blank map, explain diff's switched-off sections, attack 34)."""
import numpy as np


def test_a_flat_map_of_a_positive_channel_sum_is_not_called_a_sum_the_relu_cut():
    """A 1 x 1 channel layer (a ResNet's last block at 32 x 32) whose channel sum is positive:
    the library's min-max scaling makes its map 0 everywhere, and the top-channels figure said
    'its channels' sum is <= 0 at every position, so these shares are of a sum the ReLU
    removes', of a sum the ReLU left as it was."""
    from explain.channels import channel_contributions, top_channels_view
    rng = np.random.default_rng(4)
    acts = np.abs(rng.normal(size=(12, 1, 1))).astype(np.float32) + 0.1
    grads = np.abs(rng.normal(size=(12, 1, 1))).astype(np.float32) + 0.1
    assert channel_contributions("gradcam", acts, grads).sum() > 0
    flat = np.zeros((8, 8), np.float32)  # the library's map of it: (v - v) / (0 + 1e-7)
    view = top_channels_view("gradcam", acts, grads, cam=flat, k=4)
    shown = top_channels_view("gradcam", acts, grads, cam=np.ones((8, 8), np.float32), k=4)
    assert view.blank is False and view.image.shape == shown.image.shape
    # a sum the ReLU cuts everywhere is still said to be one, with or without the map
    assert top_channels_view("gradcam", acts, -grads, cam=flat, k=4).blank
    assert top_channels_view("gradcam", acts, -grads, k=4).blank


def _pointed(ident: str, hits: tuple[bool, ...]):
    """An image labelled cat with a map per method whose peak is (or not) in its box."""
    from explain.results import ImageEntry, Localisation, MapRecord
    cams = [MapRecord(class_name="cat", method=m, peak_x=0, peak_y=0, peak_value=1,
                      mass_left=.5, mass_right=.5, mass_top=.5, mass_bottom=.5,
                      file=f"cams/{m}/{ident}__cat.png",
                      localisation=Localisation(pointing_hit=hit, energy_in_box=.5, box_iou=.1))
            for m, hit in zip(("gradcam", "layercam"), hits)]
    return ImageEntry(id=ident, path=f"{ident}.jpg", input_size=[8, 8],
                      probabilities={"cat": 1.0}, predicted="cat", label="cat", cams=cams)


def test_a_report_regrouped_by_photo_gives_the_per_class_pointing_interval_over_photos(
        tmp_path):
    """``explain report RUN --photo-separator -`` of a run made without one: the dataset
    table's pointing cell read '95% interval ... over 6 photos' with the run's interval over
    its 6 images, for 5 photos (im0 and im0-flip one)."""
    import re

    from explain import datasets
    from explain.config import Config
    from explain.outputs import RunFolder
    from explain.results import RunSummary
    from explain.stats import fixed
    from explain.writers.report import ReportData, _regrouped, render_pages
    hits = [(True, True), (True, False), (False, False), (True, True), (True, True)]
    images = [_pointed(f"im{i}", row) for i, row in enumerate(hits)] + \
        [_pointed("im0-flip", (False, False))]
    config = Config.model_validate({
        "model": {"file": "m.pth"}, "images": ["a.jpg"], "target_layers": ["x"],
        "methods": ["gradcam", "layercam"], "metrics": [], "seed": 3, "classes": {"cat": 0}})
    summary = RunSummary(name="t", config_file="t.yaml", output_dir=".", device="cpu",
                         config=config, versions={}, images=images, durations_s={"cams": 1.0})
    methods = ["gradcam", "layercam"]
    summary.dataset = datasets.summarise(images, ["cat"], methods, 3, None)
    assert summary.dataset.per_class[0].pointing_units == 6  # the run's: over images
    (tmp_path / "r").mkdir()
    data = _regrouped(ReportData(summary), "-")
    page = render_pages(RunFolder(tmp_path / "r"), data)["report.html"]
    low, high = (f"{fixed(100 * v, 1)}%" for v in datasets.pointing_intervals(
        images, 3, "-")["cat"])
    cell = re.search(r"95% interval [^<]* over [^<)]*", page).group(0)
    assert cell == f"95% interval {low}–{high} over 5 photos", cell
    assert summary.dataset.per_class[0].pointing_units == 6  # the records left as they were

"""Newcomer 15: a researcher with a trained classifier and an ImageFolder of photos (flips and
crops, boxes), choosing which CAM method to believe from one page (faithfulness, sanity
checks, localisation, with intervals), then opening the run in a notebook."""

from __future__ import annotations

import json

import pytest

from helpers import one_line

from explain.errors import ExplainError
from explain.outputs import RunFolder, same_settings


def _resume_message(tmp_path, before: dict, now: dict) -> str:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(before))
    return one_line(pytest.raises(ExplainError, same_settings, RunFolder(run), "config.json",
                                  now), "--resume: the config differs")


def test_resume_names_the_list_item_that_differs(tmp_path):
    """--resume after changing a metric's percentiles said 'metrics (was [{"name":
    "road_combined", "percentil..., now [{"name": "road_combined", "percentil...)': both
    values cut at the same 40 characters, so the message showed no difference at all. A list
    of sections is compared item by item, so the setting that changed is named."""
    before = {"metrics": [{"name": "road_combined", "percentiles": [90]}],
              "methods": [{"name": "gradcam"}, {"name": "layercam"}]}
    now = {"metrics": [{"name": "road_combined", "percentiles": [10, 50, 90]}],
           "methods": [{"name": "gradcam"}, {"name": "gradcamplusplus"}]}
    text = _resume_message(tmp_path, before, now)
    assert "metrics[0].percentiles (was [90], now [10, 50, 90])" in text
    assert 'methods[1].name (was "layercam", now "gradcamplusplus")' in text
    assert "percentil..." not in text


def test_resume_shows_two_long_values_from_where_they_part(tmp_path):
    """A list that grew or shrank is one setting; when both values are longer than the 40
    characters shown and part only after them ('--methods gradcam,layercam' on a run of three
    methods), both read 'was [{"name": "gradcam"}, {"name": "layer...': they are shown from a
    little before their first difference instead."""
    before = {"methods": [{"name": "gradcam"}, {"name": "layercam"},
                          {"name": "gradcamplusplus"}]}
    now = {"methods": [{"name": "gradcam"}, {"name": "layercam"}]}
    text = _resume_message(tmp_path, before, now)
    assert 'methods (was ...{"name": "layercam"}, {"name": "gr..., now ...{"name": ' \
        '"layercam"}])' in text
    short = _resume_message(tmp_path / "b", {"methods": [{"name": "gradcam"}]},
                            {"methods": [{"name": "layercam"}]})
    assert 'methods[0].name (was "gradcam", now "layercam")' in short


def test_one_image_entry_needs_no_list(tmp_path):
    """README: 'a folder per class: [{labelled: photos}]'; a newcomer who wrote
    ``images: {labelled: photos}`` (or ``images: photos/``) got 'images: Input should be a
    valid list', which does not say to add brackets. One entry alone is a list of it."""
    from explain.config import load_config
    from explain.config.sections import LabelledImages
    config = tmp_path / "study.yaml"
    config.write_text("model: {builder: explain.demo:catdog_efficientnet_lite0}\n"
                      "classes: {cat: 0, dog: 1}\nimages: {labelled: photos}\n"
                      "target_layers: [auto]\nmethods: [gradcam]\n")
    images = load_config(config).images
    assert len(images) == 1 and isinstance(images[0], LabelledImages)
    config.write_text(config.read_text().replace("{labelled: photos}", "photos/"))
    assert load_config(config).images == ["photos/"]


def test_the_bar_ends_at_the_maps_made():
    """A labelled run explaining [label, predicted] makes one map per method where the label
    is the prediction: 12 images x 3 methods ended its bar at 'CAMs: 100% 72/72 map' above
    '36 maps in 11.6s'. A batch lowers the bar's total by the slots its images left empty."""
    import io
    from types import SimpleNamespace
    from tqdm import tqdm
    from explain.runner import _advance

    def view(maps: int) -> SimpleNamespace:
        return SimpleNamespace(entry=SimpleNamespace(cams=[object()] * maps))
    out = io.StringIO()
    bar = tqdm(total=3 * 2 * 3, unit="map", file=out, mininterval=0)  # 3 images x 2 x 3
    bar.per_image = 2 * 3
    _advance(bar, [view(3), view(6)], True)  # label = prediction, then label != prediction
    _advance(bar, [view(3)], True)
    bar.close()
    assert (bar.n, bar.total) == (12, 12)
    assert "12/12" in out.getvalue().replace("\r", "\n").splitlines()[-1]
    task = tqdm(total=2, unit="image", file=io.StringIO())
    task.per_image = 1
    _advance(task, [view(5), view(0)], False)  # a task's bar counts images
    assert (task.n, task.total) == (2, 2)

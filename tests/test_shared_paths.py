"""A shared report does not carry the sharer's folders: every path on the page (the config,
the results folder, each photo, the model file, the box file, skipped files) is shown from
the config's folder, as a config names it; records keep where the run read its inputs."""

from __future__ import annotations

from explain.results import Skipped
from explain.shownpaths import shown_path
from test_photos import render, summary_of, variants

HOME = "/home/alice/study"


def test_a_path_is_shown_from_the_config_s_folder():
    config = f"{HOME}/configs/c.yaml"
    assert shown_path(config, config) == "c.yaml"
    assert shown_path(f"{HOME}/configs/pics/cat.jpg", config) == "pics/cat.jpg"
    assert shown_path(f"{HOME}/images/cat.jpg", config) == "../images/cat.jpg"
    assert shown_path("/home/alice/x.jpg", config) == "../../x.jpg"
    # far above it (a deep config, data in the home folder), or unknown: its last two parts
    assert shown_path("/home/alice/datasets/val/x.jpg", f"{HOME}/a/b/configs/c.yaml") == \
        ".../val/x.jpg"
    assert shown_path(f"{HOME}/images/cat.jpg", "(unfinished run)") == ".../images/cat.jpg"
    assert shown_path("C:\\Users\\alice\\pics\\cat.jpg", "(unfinished run)") == \
        ".../pics/cat.jpg"


def test_the_page_holds_no_absolute_path_of_the_sharer(tmp_path):
    summary = summary_of(variants(photos=2), None)
    summary.config_file = f"{HOME}/configs/c.yaml"
    summary.output_dir = f"{HOME}/results/c"
    for image in summary.images:
        image.path = f"{HOME}/images/{image.id}.jpg"
    summary.config = summary.config.model_copy(update={"model": summary.config.model.model_copy(
        update={"file": f"{HOME}/models/net.pth"})})
    summary.skipped_files = [Skipped(path=f"{HOME}/images/broken.jpg", reason="truncated")]
    page = render(summary, tmp_path / "run")
    assert "/home/alice" not in page
    assert '<span class="path">../images/p0-flip.jpg</span>' in page
    assert '<td class="path">c.yaml</td>' in page and '<td class="path">../results/c</td>' in page
    assert "whole model file ../models/net.pth" in page
    assert '<td class="path">../images/broken.jpg</td>' in page

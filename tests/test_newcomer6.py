"""What a researcher hit following README.md and docs/ with a random-weights ResNet-18, a
labelled folder per class and a box CSV (the sixth newcomer session)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import CAT, cli, refused, tiny_config, tiny_net

from explain import annotations


def _same_names(tmp_path: Path, rows: list[str]) -> Path:
    """data/cat/0.jpg and data/dog/0.jpg (one file name in two class folders), a tiny model and
    a box CSV of ``rows``: the config's path."""
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        shutil.copy(CAT, tmp_path / "data" / cls / "0.jpg")
    (tmp_path / "boxes.csv").write_text("image,class,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    torch.save(tiny_net(), tmp_path / "net.pth")
    return tiny_config(tmp_path, {"file": "net.pth"},
                       classes={"cat": 0, "dog": 1}, images=[{"labelled": "data"}],
                       metrics=[], annotations={"file": "boxes.csv"})


def test_a_file_name_two_class_folders_share_is_refused_as_a_box_key():
    """Box rows are matched by image id or file name: '0.jpg,dog' landed on data/cat/0.jpg too
    (and '0.jpg,cat' on the dog photo), so the dog photo's cat map was scored against the cat
    photo's box, silently."""
    boxes = annotations.BoxSet([annotations.Box("0.jpg", "dog", 1, 2, 30, 40, "b.csv: line 2")])
    images = [("0", Path("data/cat/0.jpg")), ("dog_0", Path("data/dog/0.jpg"))]
    assert _refused(boxes, images) == ("b.csv: line 2: image '0.jpg' is the file name of 2 images of the run "
                       "(ids '0', 'dog_0'); name each box's image by its id (as in the report "
                       "and summary.csv) instead")
    by_id = annotations.BoxSet([annotations.Box("dog_0", "dog", 1, 2, 30, 40, "b.csv: line 2"),
                                annotations.Box("x.jpg", "dog", 1, 2, 30, 40, "b.csv: line 3")])
    by_id.check_unique(images)  # ids, and names of no image of the run, are fine
    assert by_id.for_image("dog_0", Path("data/dog/0.jpg"))["dog"][0].x1 == 30
    assert by_id.for_image("0", Path("data/cat/0.jpg")) == {}


def test_a_file_name_many_images_share_lists_five_ids_then_how_many_more():
    """The ids beyond the fifth are counted as every other list of names counts them
    (names.listed), not cut off by ' ...'."""
    boxes = annotations.BoxSet([annotations.Box("0.jpg", "dog", 1, 2, 30, 40, "b.csv: line 2")])
    images = [(f"c{i}_0", Path(f"data/c{i}/0.jpg")) for i in range(7)]
    assert "7 images of the run (ids 'c0_0', 'c1_0', 'c2_0', 'c3_0', 'c4_0' (+2 more)); " \
        in _refused(boxes, images)


def _refused(boxes, images) -> str:
    """check_unique's one line for ``images`` (id, path) a box's file name is ambiguous in."""
    with pytest.raises(annotations.ExplainError) as err:
        boxes.check_unique(images)
    return str(err.value)


def test_the_cli_stops_on_the_ambiguous_box_before_any_folder_and_takes_ids(tmp_path, capsys):
    config = _same_names(tmp_path, ["0.jpg,dog,10,10,200,200"])
    line = refused(capsys, config, "--quiet")
    assert line.endswith("boxes.csv: line 2: image '0.jpg' is the file name of 2 images of the "
                         "run (ids '0', 'dog_0'); name each box's image by its id (as in the "
                         "report and summary.csv) instead")
    assert not (tmp_path / "results").exists()
    config = _same_names(tmp_path / "ok", ["dog_0,dog,10,10,200,200"])
    assert cli(capsys, config, "--quiet")[0] == 0
    summary = json.loads((tmp_path / "ok" / "results" / "exp" / "summary.json").read_text())
    boxes = {entry["id"]: entry.get("boxes") for entry in summary["images"]}
    assert boxes["0"] is None and list(boxes["dog_0"]) == ["dog"]


def test_the_same_maps_keep_their_road_scores_in_another_method_set(tmp_path, capsys):
    """Swapping methods moved gradcam's ROAD numbers while its maps stayed the same (the
    noise was one stream over all of an image's maps): each map now draws from its own
    seed, so gradcam's scores are the same beside layercam or alone, and diff finds none
    moved."""
    torch.save(tiny_net(outputs=2, convs=2), tmp_path / "net.pth")
    configs, scores = {}, {}
    for stem, methods in (("both", ["gradcam", "layercam"]), ("one", ["gradcam"])):
        configs[stem] = tiny_config(tmp_path, {"file": "net.pth"}, stem=stem,
                                    classes={"cat": 0, "dog": 1}, methods=methods,
                                    metrics=[{"name": "road_combined", "percentiles": [50, 90]}],
                                    output={"save_arrays": True})
        assert cli(capsys, configs[stem], "--quiet")[0] == 0
        summary = json.loads((tmp_path / "results" / stem / "summary.json").read_text())
        scores[stem] = {(e["id"], r["class"]): r["faithfulness"]["road_combined"]
                        for e in summary["images"] for r in e["cams"] if r["method"] == "gradcam"}
    assert scores["both"] == scores["one"] and len(set(scores["one"].values())) > 1
    code, err, out = cli(capsys, "diff", tmp_path / "results" / "both", tmp_path / "results" / "one")
    assert code == 0, err
    assert "gradcam / cat: map r 1.000 on all" in out
    assert not any("gradcam" in line and "road_combined" in line for line in out.splitlines())


def test_run_show_names_the_label_and_draws_the_box_the_report_card_draws(tmp_path, capsys):
    """Run.show said 'dog_0 (predicted cat)' with no label and no ground-truth box, where the
    report's card of the same image shows both."""
    import explain
    from matplotlib.patches import Rectangle
    config = _same_names(tmp_path, ["dog_0,dog,10,20,200,250"])
    assert cli(capsys, config, "--quiet")[0] == 0
    run = explain.load(tmp_path / "results" / "exp")
    entry = run.entry("dog_0")
    fig = run.show("dog_0", "dog")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == f"dog_0 (predicted {entry.predicted}, label dog)"
    boxes = [p for p in fig.axes[1].patches if isinstance(p, Rectangle)]
    assert len(boxes) == 1 and not fig.axes[0].patches  # on the overlay, not the photo
    x0, y0, x1, y1 = entry.boxes["dog"][0]
    scale = fig.axes[1].images[0].get_array().shape[1] / entry.input_size[1]
    assert boxes[0].get_x() == x0 * scale - 0.5 and boxes[0].get_width() == (x1 - x0) * scale
    assert boxes[0].get_y() == y0 * scale - 0.5 and boxes[0].get_height() == (y1 - y0) * scale
    assert not explain.load(tmp_path / "results" / "exp").show("0").axes[1].patches  # no box


def test_two_target_layers_say_they_make_one_averaged_map(tmp_path, capsys):
    """target_layers: [layer3, layer4] gave one map per method with nothing saying so; a
    researcher adding a 'second layer' expected a map per layer. The note's claim holds: the
    map is the mean of the one-layer maps (each 0..1), scaled to 0..1."""
    import numpy as np
    torch.save(tiny_net(convs=2), tmp_path / "net.pth")
    maps = {}
    for stem, layers in (("both", ["1", "3"]), ("a", ["1"]), ("b", ["3"])):
        config = tiny_config(tmp_path, {"file": "net.pth"}, stem=stem, target_layers=layers,
                             classes={"cat": 0, "dog": 1}, metrics=[],
                             output={"save_arrays": True})
        assert cli(capsys, config, "--quiet")[0] == 0
        run = tmp_path / "results" / stem
        maps[stem] = np.load(run / "cams" / "gradcam" / "cat__dog.npy")
        notes = json.loads((run / "summary.json").read_text())["notes"]
        said = [n for n in notes if n.startswith("target_layers: 1, 3 give one map")]
        assert len(said) == (stem == "both")
    assert said == [] and ("target_layers: 1, 3 give one map per method and class (the mean of "
                           "the layers' maps, each scaled to 0..1); to compare layers, run once "
                           "per layer (--layer NAME)") in json.loads(
        (tmp_path / "results" / "both" / "summary.json").read_text())["notes"]
    mean = (maps["a"] + maps["b"]) / 2
    mean = (mean - mean.min()) / (mean.max() - mean.min())
    assert np.abs(maps["both"] - mean).max() < 1e-4  # the library: 1e-7 in denominators


def test_the_sanity_note_of_a_partial_cascade_says_inconclusive_as_the_trust_line(tmp_path,
                                                                                  capsys):
    """sanity.layers: 5 of a ResNet-18's 41: the console's note said 'maps that barely change:
    gradcam, ...' (a failure) while "Which map to trust" said 'inconclusive (partial
    cascade)'."""
    torch.save(tiny_net(convs=2), tmp_path / "net.pth")
    notes = {}
    for stem, layers in (("part", 1), ("all", "all")):
        config = tiny_config(tmp_path, {"file": "net.pth"}, stem=stem, metrics=[],
                             classes={"cat": 0, "dog": 1},
                             sanity={"enabled": True, "layers": layers, "threshold": -0.99})
        assert cli(capsys, config, "--quiet")[0] == 0
        data = json.loads((tmp_path / "results" / stem / "summary.json").read_text())
        notes[stem] = [n for n in data["notes"] if n.startswith("sanity: ")]
        lines = {line["method"]: line["sanity"] for line in data["trust"]["lines"]}
        assert lines == {"gradcam": "inconclusive (partial cascade)" if stem == "part"
                         else "fails"}
    assert notes["part"] == ["sanity: 1 layer(s) re-initialised from the output on 1 image(s); "
                             "maps that barely change so far: gradcam (inconclusive: 1 of 3 "
                             "layers; raise sanity.layers)"]
    assert notes["all"] == ["sanity: 3 layer(s) re-initialised from the output on 1 image(s); "
                            "maps that barely change: gradcam"]


def test_an_unmatched_box_key_close_to_an_image_without_boxes_is_named():
    """A typo in a box file ('cat_1.jpg' for cat-1.jpg) left a note naming the key alone:
    the note now names the image without boxes it is close to (a key of a shared box file
    with no such image stays as it was)."""
    from explain.results import ImageEntry
    from explain.writers.metrics import _unused_boxes

    def entry(ident: str, boxed: bool) -> ImageEntry:
        return ImageEntry(id=ident, path=f"/d/{ident}.jpg", input_size=[8, 8],
                          probabilities={"cat": 1.0}, predicted="cat",
                          boxes={"cat": [[0, 0, 4, 4]]} if boxed else None)

    images = [entry("cat-1", False), entry("dog-7", True), entry("bird", False)]
    note = _unused_boxes(["cat_1.jpg", "dog_7.jpg", "zebra-44.jpg"], images)
    assert note == ("annotations: boxes for images not in this run: cat_1.jpg (the image "
                    "'cat-1', which has no box?), dog_7.jpg, zebra-44.jpg")
    many = _unused_boxes([f"k{i}" for i in range(7)] + ["x" * 300], [])
    assert many.endswith("k4 (+3 more)")

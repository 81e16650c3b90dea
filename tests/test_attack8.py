"""The eighth attack (a review session's findings): shared run folders whose records held more
than their run could have written (2,000 made-up methods x 22,000 boxes: gigabytes for
`explain report`; made-up metric names: a quadratic diff.csv and summary table), names from a
run folder raw in the API's messages and as TeX in its figures, names two disks take for one,
and a reference array of one enormous element."""

from __future__ import annotations

import io
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import explain
from conftest import IMAGES, make_small_alexnet, write_config
from helpers import explain_error, memory_peak, one_line, refused
from explain.config import load_config
from explain.errors import DETAIL, ExplainError
from explain.runner import RunOptions, run

QUIET = dict(progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-image run (gradcam, eigencam; cat and dog; drop_in_confidence) with its
    maps saved: (its config, its folder)."""
    tmp = tmp_path_factory.mktemp("attack8")
    torch.save(make_small_alexnet(), tmp / "small.pth")
    cfg = write_config(tmp, "exp", model={"file": str(tmp / "small.pth")},
                       target_layers=["features.10"], preprocess={"size": [64, 64]},
                       images=[str(IMAGES / "cat.jpg"), str(IMAGES / "dog.jpg")],
                       methods=["gradcam", "eigencam"], metrics=["drop_in_confidence"],
                       output={"save_arrays": True})
    run(load_config(cfg), RunOptions(**QUIET))
    return cfg, tmp / "results" / "exp"


def tampered(finished, tmp_path: Path, change) -> Path:
    """A copy of the run whose summary.json's first image entry ``change`` edited."""
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    data = json.loads((copy / "summary.json").read_text())
    change(data["images"][0])
    (copy / "summary.json").write_text(json.dumps(data))
    return copy


def _many_methods_and_boxes(entry: dict) -> None:
    """The finding at a tenth of its size; 1,000 boxes (the bound) where it had 2,200, so that
    the methods are what is refused (more boxes are refused before validation: attack 10)."""
    rec = entry["cams"][0]
    entry["cams"] = [dict(rec, method=f"m{k}") for k in range(200)]
    entry["boxes"] = {rec["class"]: [[1.0, 2.0, 3.0, 4.0]] * 1000}


def _set_record(key: str, value) -> callable:
    return lambda entry: entry["cams"][0].__setitem__(key, value)


CASES = {
    "made-up methods": (_many_methods_and_boxes, "a map of 'cat' by 'm0', not a class and "
                                                 "method of its run"),
    "a made-up class": (_set_record("class", "tiger"), "a map of 'tiger' by 'gradcam'"),
    "two maps of one": (lambda e: e["cams"].append(dict(e["cams"][0])),
                        "two maps of 'cat' by 'gradcam'"),
    "a made-up metric": (_set_record("faithfulness", {"drop_in_confidence": 0.1, "made_up": 1.0}),
                         "a faithfulness number 'made_up' its run did not compute"),
    "a made-up probability": (lambda e: e["probabilities"].__setitem__("p_1", 0.5),
                              "a probability or box of 'p_1', not a class of its run"),
    "too many boxes": (lambda e: e.__setitem__("boxes", {"cat": [[1.0, 2.0, 3.0, 4.0]] * 1001}),
                       "1001 boxes, more than a run takes for one image (1000)"),
    "an unsafe image id": (lambda e: e.__setitem__("id", "cat\x1b]0;owned\x07"),
                           "an image id that may hold only letters"),
    "a TeX prediction": (lambda e: e.__setitem__("predicted", "$\\frac{$"),
                         "a prediction or label '$\\\\frac{$', not a class of its run"),
    "a made-up baseline": (lambda e: e["baselines"].append({"class": "cat", "baseline": "zzz"}),
                           "a baseline 'zzz' of 'cat' its run did not make"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_record_its_run_cannot_have_written_is_one_line_for_every_reader(
        finished, tmp_path, capsys, case):
    """explain report, explain.load and explain diff read a run through one loader: each
    refuses, in one line naming the file and the image, an entry holding what its run (the
    config it recorded) cannot have written; the made-up methods and boxes are refused before
    anything is built from them (they took 2.2 GB at 1.1 MB)."""
    change, says = CASES[case]
    copy = tampered(finished, tmp_path, change)
    with memory_peak() as peak:
        err = refused(capsys, "report", copy, needles=[f"{copy / 'summary.json'}: image ",
                                                       says, "the run folder is damaged"])
    assert "\x1b" not in err and "\x07" not in err
    assert peak[0] < 100 * 2**20, peak  # the made-up methods and boxes are never built on
    with pytest.raises(ExplainError) as caught:
        explain.load(copy).table()
    one_line(caught, says)
    refused(capsys, "diff", finished[1], copy, "--out", tmp_path / "diffs", needles=[says])


def test_the_honest_run_is_read_by_every_reader(finished, tmp_path, capsys):
    """The checks refuse nothing a run writes: its own folder reports, loads and diffs."""
    from helpers import cli
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    assert cli(capsys, "report", copy)[0] == 0
    rows = explain.load(copy).table()
    assert len(rows) == 2 * 2 * 2 and {"drop_in_confidence"} <= set(rows[0])
    code, err, _ = cli(capsys, "diff", finished[1], copy, "--out", tmp_path / "d")
    assert code == 0, err


def test_resume_refuses_an_item_file_with_a_metric_its_run_did_not_compute(finished, tmp_path,
                                                                          capsys):
    """--resume's kept images feed summary.csv: an item file carrying made-up metric names is
    refused in one line like the summary's."""
    copy = tmp_path / "results" / "exp"
    shutil.copytree(finished[1], copy)
    (copy / "summary.json").unlink()
    item = json.loads((copy / "items" / "cat.json").read_text())
    item["entry"]["cams"][0]["faithfulness"] = {"drop_in_confidence": 0.1, "made_up_1": 2.0}
    (copy / "items" / "cat.json").write_text(json.dumps(item))
    refused(capsys, finished[0], "--resume", "--quiet", "--out", copy.parent,
            needles=[str(copy / "items" / "cat.json"), "'made_up_1' its run did not compute"])


def test_the_diff_prints_a_bounded_summary_in_linear_time():
    """One line per method and class was printed (1,500 lines for a run of 1,500 classes),
    and grouping scanned every map once per group: the console keeps the 12 lowest r and the
    first 12 changes, and 60,000 maps group in one pass."""
    from explain.diff.numbers import CONSOLE_GROUPS, DiffResult, MapDiff, changes, console_lines
    from types import SimpleNamespace
    maps = [MapDiff(image=f"i{i}", class_name=f"c{c}", method="gradcam",
                    correlation=1 - (c + i) / 100_000, mean_abs_diff=0.0, max_abs_diff=0.0,
                    peak_shift=0.0, resized=False, predicted=("c0", "c0"),
                    numbers=({"probability": 0.2}, {"probability": 0.3}))
            for c in range(1500) for i in range(40)]
    side = SimpleNamespace(root=Path("A"), label="A", finished=True, summary=None)
    result = DiffResult(a=side, b=side, maps=maps, left_out=[], config_changes=[],
                        threshold=None)
    start = time.process_time()
    lines = console_lines(result)
    assert time.process_time() - start < 10
    assert len(changes(result)) == 1500
    assert sum("map r min" in line for line in lines) == CONSOLE_GROUPS == 12
    assert sum("mean change B - A" in line for line in lines) == CONSOLE_GROUPS
    assert "(1500 method / class groups: the 12 lowest r" in lines[-1]
    assert "gradcam / c1499: map r min" in lines[1]  # the lowest r first


def test_an_error_message_is_terminal_safe_wherever_it_is_shown():
    """explain.load(run).entry(...) put image ids from summary.json raw into its message, and
    a script's traceback printed the escapes. Every ExplainError's message and details are
    escaped, as the command line prints them; a shared text holding the detail break itself
    (a line break and two spaces) stays on its line (it made an indented line of its own)."""
    error = ExplainError("image 'x\x1b[2J\rexplain: all OK\n' is not in the run",
                         details=["a detail \u202eline"])
    text = str(error)
    assert text == ("image 'x\\x1b[2J\\rexplain: all OK\\n' is not in the run"
                    + DETAIL + "a detail \\u202eline")
    assert str(ExplainError(text)) == text.replace(DETAIL, "\\n  ")  # one message: one line
    forged = ExplainError("image 'a" + DETAIL + "explain: all OK' is not in the run")
    assert "\n" not in str(forged) and forged.lines() == [str(forged)]
    # another rank's error, sent as its text, keeps its details and its forged break escaped
    from explain.errors import relayed
    again = relayed(str(ExplainError("2 problems:", details=["a" + DETAIL + "b", "c"])), " (1)")
    assert again.lines() == ["2 problems: (1)", "a\\n  b", "c"]
    assert relayed(str(forged)).lines() == forged.lines()


def test_a_forged_detail_line_in_a_shared_config_stays_on_the_error_line(tmp_path, capsys):
    """A shared config naming a picture whose name holds a line break and two spaces printed
    a second, indented line under the error ('  explain: all fine.jpg'), as a config's own
    problems are listed."""
    path = write_config(tmp_path, "forged", images=["nothere" + DETAIL + "explain: all fine.jpg"],
                        model={"builder": "explain.demo:catdog_efficientnet_lite0"},
                        target_layers=["backbone._blocks.15"])
    refused(capsys, path, "--quiet", needles=["images[0]: image not found: ",
                                              "nothere\\n  explain: all fine.jpg"])


def test_names_two_disks_take_for_one_file_are_kept_apart(tmp_path):
    """macOS and Windows ignore case and Unicode normalisation in file names: image files
    named U+F900 and U+8C48 (one character twice in Unicode) got two ids that are one file
    there, and classes 'ſun' and 'sun' were both taken; 'nul' is a device on Windows."""
    from explain.images import find_images
    from explain.names import fold
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("\uf900.png", "\u8c48.png", "Cat.png", "cat.png"):
        Image.new("RGB", (8, 8)).save(pics / name)
    model = tmp_path / "m.pth"
    torch.save(make_small_alexnet(), model)
    cfg = write_config(tmp_path, "names", model={"file": str(model)}, images=["pics/"],
                       target_layers=["auto"])
    ids = [ref.id for ref in find_images(load_config(cfg))[0]]
    assert len({fold(i) for i in ids}) == 4, ids  # four files on any disk
    assert sum(i.startswith("pics_") for i in ids) == 2, ids  # the repeats: folder name first
    base = dict(model={"file": str(model)}, target_layers=["auto"])
    one_line(explain_error(load_config, write_config(tmp_path, "s", classes={"ſun": 0, "sun": 1},
                                                     **base)),
             "'ſun'", "have the same name (ignoring case and Unicode normalisation")
    one_line(explain_error(load_config, write_config(tmp_path, "d", classes={"nul": 0, "dog": 1},
                                                     **base)),
             "'nul' is a name Windows keeps for a device")


def test_figure_titles_are_plain_text():
    """A '$' in a title was TeX to matplotlib: '$\\frac{$' raised when the figure was drawn."""
    from explain.api.display import grid_figure
    fig = grid_figure([[("$\\frac{$", np.zeros((8, 8, 3), np.uint8)),
                        ("{" * 200 + "$x$", np.zeros((8, 8, 3), np.uint8))]])
    fig.savefig(io.BytesIO(), format="png")
    assert fig.axes[0].get_title() == "$\\frac{$"


def test_a_reference_array_of_one_enormous_element_is_refused_before_it_is_read(tmp_path):
    """A .npy of one element of a 2 GB structured type (a sparse file: nothing on disk) passed
    the size check and was copied into memory."""
    from explain.referencefiles import read_reference
    path = tmp_path / "cat__cat__gradcam.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|V2000000000", "fortran_order": False, "shape": (1, 1)})
        f.truncate(f.tell() + 2_000_000_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    one_line(explain_error(read_reference, path), "expected a 2-D numeric map", "V2000000000")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB


def test_boxes_given_under_an_id_and_a_file_name_are_bounded_together(tmp_path, capsys):
    """600 boxes under 'cat' and 600 under 'cat.jpg' passed the per-key bound, the run drew
    1,200, and its own folder was then 'damaged' to every reader."""
    from helpers import tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "m.pth")
    many = [[0, 0, 10, 10]] * 600
    path = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, classes={"a": 0, "b": 1},
                       annotations={"boxes": {"cat": {"a": many}, "cat.jpg": {"a": many}}})
    refused(capsys, path, "--quiet", needles=["more than 1000 boxes for the image 'cat', under "
                                              "its id and its file name together"])


def test_class_names_a_model_carries_are_kept_apart_as_the_config_compares_them():
    """'Straße' and 'STRASSE' were two names to the model's labels and one to the config."""
    from explain.models.labels import safe_class_names
    from explain.names import fold
    names = safe_class_names(["Straße", "STRASSE", "dog"])
    assert len({fold(n) for n in names}) == 3 and names[0] == "Straße", names


def test_a_class_with_many_boxes_draws_a_bounded_number_over_each_overlay(finished, tmp_path,
                                                                          capsys):
    """A shared run's 1,000 boxes of a class (its bound) were drawn over every one of the
    class's overlays (300 images x 14 methods: 364 MB of HTML): the report draws the first
    50 over each and says how many the run has."""
    from explain.writers.cards import REPORT_BOXES
    boxes = [[float(k % 40), 1.0, float(k % 40) + 5, 9.0] for k in range(1000)]
    copy = tampered(finished, tmp_path, lambda e: e.__setitem__("boxes", {"cat": boxes}))
    from explain.cli import main
    assert main(["report", str(copy)]) == 0
    html = (copy / "report.html").read_text()
    card = html[html.index('id="img-cat"'):html.index('id="img-dog"')]
    cat_cells = card.count('alt="gradcam map of cat') + card.count('alt="eigencam map of cat')
    assert cat_cells == 2
    assert card.count('class="gt-box"') == 2 * REPORT_BOXES == 100
    assert card.count(f"{REPORT_BOXES} of 1000 boxes drawn") == 2
    first = html.index('class="gt-box"')
    assert 'style="left:0.000%;top:1.562%;width:7.812%;height:12.500%"' in html[first:first + 200]

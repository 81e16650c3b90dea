"""The seventeenth attack: the side files a config names (labelled lists, box files, label
maps, reference maps) and a shared results folder read back (docs/trust.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from explain import annotations
from explain.errors import ExplainError
from explain.images import labelled
from helpers import memory_peak, one_line

CLASSES = ["cat", "dog"]


def label_list(path: Path, skip_unknown: bool = False) -> list:
    return labelled._label_list(path, CLASSES, skip_unknown, where="images[0]", notes=[])


# ---- shared CSV files: read a row at a time, bounded ------------------------------------------

@pytest.mark.parametrize("kind", ["labelled", "boxes"])
@pytest.mark.parametrize("where", ["header", "row"])
def test_a_csv_line_of_millions_of_columns_is_one_line(tmp_path, kind, where):
    """csv.DictReader filled every row out to the header's width: a 5 MB header of commas
    took 0.14 s a row (60 MB: days for a list), and one row of 63 million commas 1.3 GB."""
    header = "path,label" if kind == "labelled" else ",".join(annotations.COLUMNS)
    row = "a.jpg,cat" if kind == "labelled" else "a.jpg,cat,0,0,5,5"
    wide = "," * (2 << 20)
    text = f"{header}{wide}\n{row}\n" if where == "header" else f"{header}\n{row}{wide}\n"
    path = tmp_path / "list.csv"
    path.write_text(text)
    with pytest.raises(ExplainError) as err:
        label_list(path) if kind == "labelled" else annotations.read_box_file(path, CLASSES)
    line = 1 if where == "header" else 2
    one_line(err, f"list.csv: line {line}: over 1048576 characters; a row is a path, a label")


def test_a_list_of_more_rows_than_images_is_refused_unknown_and_blank_ones_too(tmp_path,
                                                                                monkeypatch):
    """Rows naming no class (skip_unknown) and blank rows counted for nothing: 64 MB of
    ``a,b`` rows took 2.9 GB and 42 s to be skipped, 32 million ``,`` rows 55 s."""
    monkeypatch.setattr(labelled, "MAX_IMAGES", 1000)
    for name, rows in (("unknown.csv", "a.jpg,bird\n"), ("blank.csv", ",\n")):
        path = tmp_path / name
        path.write_text("path,label\n" + rows * 1001)
        with pytest.raises(ExplainError) as err:
            label_list(path, skip_unknown=True)
        one_line(err, f"{name}: over 1000 rows; split the dataset into several runs")
    path = tmp_path / "list.json"
    path.write_text("[" + ",".join(['{"path": "a.jpg", "label": "bird"}'] * 1001) + "]")
    with pytest.raises(ExplainError) as err:
        label_list(path, skip_unknown=True)
    one_line(err, "list.json: over 1000 rows")


def test_a_box_file_of_more_lines_than_boxes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(annotations, "MAX_BOXES", 1000)
    path = tmp_path / "boxes.csv"
    path.write_text(",".join(annotations.COLUMNS) + "\n" + ",,\n" * 1001)
    with pytest.raises(ExplainError) as err:
        annotations.read_box_file(path, CLASSES)
    one_line(err, "boxes.csv: over 1000 rows; the most a run takes; split the file")


def test_a_list_stops_at_its_first_bad_row_before_reading_the_rest(tmp_path, monkeypatch):
    """The list was parsed whole into rows before the first was checked."""
    (tmp_path / "a.jpg").write_bytes(b"")
    path = tmp_path / "list.csv"
    path.write_text("path,label\na.jpg,bird\n" + "a.jpg,cat\n" * 100_000)
    text = path.read_text()  # read here: a bounded read asks for its limit (64 MiB) at first
    monkeypatch.setattr(labelled, "read_bounded_text", lambda *_, **__: text)
    with memory_peak() as peak, pytest.raises(ExplainError) as err:
        label_list(path)
    one_line(err, "list.csv: line 2: label 'bird' is not a named class")
    assert peak[0] < 8 * 2**20, peak  # the text, as StringIO holds it: 4 MB; its rows were 20


# ---- a shared run's saved states (--resume) ---------------------------------------------------

def state_zip(member: str, header: bytes) -> bytes:
    import io
    import zipfile
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(member, header)
    return out.getvalue()


@pytest.mark.parametrize("member", ["header.json", "state.json"])
def test_a_saved_state_header_of_empty_lists_is_refused_before_it_is_parsed(member):
    """The atlas and mean-map states' JSON headers (at most 64 MiB) were parsed as they came:
    63 MB of ``[],`` took 2.4 GB and 12 s (the atlas), 1.6 GB (the means), where the record
    files of the same folder were refused before parsing (the tenth attack)."""
    from explain.channels.atlas import unzip
    from explain.datasets import MeanSums
    data = state_zip(member, b"[" + b"[]," * (1 << 20) + b"[]]")
    with memory_peak() as peak, pytest.raises((ValueError, ExplainError)) as err:
        unzip(data) if member == "header.json" else MeanSums.from_bytes(data, "state.zip")
    assert f"{member}: more lists and objects than such a file holds" in str(err.value)
    assert peak[0] < 16 * 2**20, peak  # parsed: 3 MB of '[],' took 70 MB


def test_a_voc_file_of_millions_of_attributes_is_refused_before_it_is_parsed(tmp_path):
    """expat builds an element's attributes before the element bound sees it: 3 million
    attributes on one element (32 MB) took 870 MB and 6 s."""
    path = tmp_path / "a.xml"
    attributes = " ".join(f'a{i:x}=""' for i in range(100_001))
    path.write_text(f"<annotation><filename>a.jpg</filename><x {attributes}/></annotation>")
    with pytest.raises(ExplainError) as err:
        annotations.read_box_file(path, CLASSES)
    one_line(err, "a.xml: over 100000 '=' (attributes); a VOC file describes one image")


def test_a_box_files_unmatched_image_keys_are_shortened_in_the_notes(tmp_path, capsys):
    """Boxes for images the run does not have are named in the notes, at most five: each key
    shortened, not copied whole (a 32 MB key went into summary.json and the report)."""
    import json as json_module

    from helpers import cli, tiny_config, tiny_net
    torch_module = pytest.importorskip("torch")
    torch_module.save(tiny_net(), tmp_path / "net.pth")
    keys = ["k" * 50_000 + str(i) for i in range(7)]
    (tmp_path / "boxes.json").write_text(json_module.dumps(
        [{"image": key, "class": "cat", "x0": 0, "y0": 0, "x1": 5, "y1": 5} for key in keys]))
    cfg = tiny_config(tmp_path, {"file": str(tmp_path / "net.pth")}, classes={"cat": 0, "dog": 1},
                      annotations={"file": str(tmp_path / "boxes.json")}, metrics=[])
    code, err, _ = cli(capsys, cfg, "--quiet")
    assert code == 0, err
    notes = json_module.loads((tmp_path / "results" / "exp" / "summary.json").read_text())["notes"]
    note = next(n for n in notes if n.startswith("annotations: boxes for images not in this run"))
    assert len(note) < 700 and note.endswith(" (+2 more)") and note.count("...") == 5

"""The second attack's findings on inputs (issue 25, items 3, 4 and 7): links in labelled trees,
folders and globs are not followed; XML annotation files never expand entities, whatever their
encoding; image files are bounded in bytes before they are read, and read once; and oversized
CSV fields, deep JSON and huge integers are one line naming the file, not a traceback.

Big files are sparse (``truncate``); memory is measured in a child process under an
address-space limit, each case in a fresh fork of it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from explain import annotations
from explain.cli import main
from explain.config import load_config
from explain.errors import ExplainError
from explain.images import ImageError, ImageRef, find_images, jpeg_complete, precheck, prepare
from conftest import REPO
from helpers import CAPPED_CHILD, one_line, refused, tiny_config, tiny_net

CLASSES = ["cat", "dog"]


def jpeg(side: int = 40, value: int = 128) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((side, side + 8, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def write_cfg(folder: Path, **fields) -> Path:
    """tiny_config for the tiny net saved as ``folder``/tiny.pth, at layer '0', classes cat and
    dog (the images given)."""
    return tiny_config(folder, {"file": str(folder / "tiny.pth")},
                       **{"classes": {"cat": 0, "dog": 1}, "target_layers": ["0"], **fields})


class _Slow(BaseException):
    pass


def within(seconds: int, fn, *args):
    """fn(*args), stopped with _Slow after ``seconds`` (main walked '/' through a link)."""
    def stop(*_):
        raise _Slow(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- 3. links in labelled trees, folders and globs are not followed ---------------------------

@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside every input: images that must never be read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    for name in ("secret1.jpg", "secret2.jpg"):
        (folder / name).write_bytes(jpeg())
    return folder


def test_links_in_a_labelled_tree_are_skipped_with_a_note(tmp_path, outside):
    tree = tmp_path / "tree"
    (tree / "cat" / "sub").mkdir(parents=True)
    (tree / "cat" / "real.jpg").write_bytes(jpeg())
    (tree / "cat" / "sub" / "deep.jpg").write_bytes(jpeg())
    (tree / "dog").symlink_to(outside, target_is_directory=True)          # a linked class folder
    (tree / "cat" / "linked").symlink_to(outside, target_is_directory=True)  # a linked subfolder
    (tree / "cat" / "sub" / "file.jpg").symlink_to(outside / "secret1.jpg")  # a linked file
    cfg = write_cfg(tmp_path, images=[{"labelled": str(tree)}])
    refs, notes = find_images(load_config(cfg))
    assert sorted(str(r.path.relative_to(tree)) for r in refs) == ["cat/real.jpg",
                                                                   "cat/sub/deep.jpg"]
    assert [r.label for r in refs] == ["cat", "cat"]
    note = [n for n in notes if "symbolic link" in n]
    assert len(note) == 1 and note[0].startswith("skipped 3 symbolic link(s) in"), notes
    assert "not followed" in note[0]


def test_a_class_folder_linked_to_the_root_is_not_walked(tmp_path):
    tree = tmp_path / "tree"
    (tree / "dog").mkdir(parents=True)
    (tree / "dog" / "d.jpg").write_bytes(jpeg())
    (tree / "cat").symlink_to("/", target_is_directory=True)
    cfg = write_cfg(tmp_path, images=[{"labelled": str(tree)}])
    refs, notes = within(5, find_images, load_config(cfg))
    assert [(r.path.name, r.label) for r in refs] == [("d.jpg", "dog")]
    assert any("symbolic link" in n and "/cat" in n for n in notes), notes
    (tree / "dog" / "d.jpg").unlink()  # only links left: the error says why nothing was found
    with pytest.raises(ExplainError) as err:
        within(5, find_images, load_config(cfg))
    one_line(err, "no labelled image files", "symbolic links there are not followed")


def test_links_found_in_a_folder_or_by_a_glob_are_skipped(tmp_path, outside):
    pics = tmp_path / "pics"
    (pics / "real").mkdir(parents=True)
    (pics / "a.jpg").write_bytes(jpeg())
    (pics / "real" / "b.jpg").write_bytes(jpeg())
    (pics / "link.jpg").symlink_to(outside / "secret1.jpg")
    (pics / "out").symlink_to(outside, target_is_directory=True)
    for entry, expected in ((str(pics), ["a.jpg"]), (str(pics / "*.jpg"), ["a.jpg"]),
                            (str(pics / "*" / "*.jpg"), ["b.jpg"]),
                            (str(pics / "**" / "*.jpg"), ["a.jpg", "b.jpg"])):
        refs, notes = find_images(load_config(write_cfg(tmp_path, images=[entry])))
        assert sorted(r.path.name for r in refs) == expected, entry
        assert all(outside not in r.path.parents for r in refs), entry
        assert any("symbolic link" in n and "not followed" in n for n in notes), (entry, notes)


def test_links_the_config_or_a_list_names_are_used(tmp_path, outside):
    """Named explicitly, a link is the user's choice (as documented): a file, a folder, a
    labelled root and a list's row."""
    (tmp_path / "named.jpg").symlink_to(outside / "secret1.jpg")
    (tmp_path / "tree_link").symlink_to(tmp_path / "tree", target_is_directory=True)
    (tmp_path / "tree" / "cat").mkdir(parents=True)
    (tmp_path / "tree" / "cat" / "c.jpg").write_bytes(jpeg())
    (tmp_path / "list.csv").write_text("path,label\nrow.jpg,dog\n")
    (tmp_path / "row.jpg").symlink_to(outside / "secret2.jpg")
    cfg = write_cfg(tmp_path, images=[str(tmp_path / "named.jpg"), {"labelled": "tree_link"},
                                      {"labelled": "list.csv"}])
    refs, notes = find_images(load_config(cfg))
    assert sorted((r.path.name, r.label) for r in refs) == [
        ("c.jpg", "cat"), ("secret1.jpg", None), ("secret2.jpg", "dog")]
    assert notes == []


def test_a_run_over_a_tree_with_a_linked_class_copies_nothing_from_outside(tmp_path, outside,
                                                                          capsys):
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    tree = tmp_path / "tree"
    (tree / "cat").mkdir(parents=True)
    (tree / "cat" / "c.jpg").write_bytes(jpeg())
    (tree / "dog").symlink_to(outside, target_is_directory=True)
    cfg = write_cfg(tmp_path, images=[{"labelled": str(tree)}], targets=["label"])
    assert main([str(cfg), "--quiet"]) == 0, capsys.readouterr().err
    run = tmp_path / "results" / "exp"
    summary = json.loads((run / "summary.json").read_text())
    assert [Path(i["path"]).name for i in summary["images"]] == ["c.jpg"]
    assert any("symbolic link" in n for n in summary["notes"])
    copied = [p.name for p in run.rglob("*") if "secret" in p.name]
    assert copied == [] and "secret" not in (run / "report.html").read_text()


# ---- 4. XML: no entity is ever expanded, whatever the encoding -------------------------------

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-16"]  # utf-16: with a BOM


def laughs(levels: int = 9) -> str:
    """A 'billion laughs' VOC file: a few hundred bytes that expand to 10**levels characters."""
    ents = '<!ENTITY l0 "ha">' + "".join(
        f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, levels + 1))
    return (f'<?xml version="1.0"?>\n<!DOCTYPE annotation [{ents}]>\n'
            f"<annotation><filename>&l{levels};</filename></annotation>")


VOC = ("<annotation><filename>both.jpg</filename><object><name>cat</name><bndbox><xmin>1</xmin>"
       "<ymin>1</ymin><xmax>224</xmax><ymax>224</ymax></bndbox></object></annotation>")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_dtd_is_refused_by_the_parser_in_every_encoding(tmp_path, encoding):
    path = tmp_path / "laughs.xml"
    path.write_bytes(laughs().encode(encoding))
    start = time.process_time()  # CPU seconds: a busy machine does not fail it
    with pytest.raises(ExplainError) as err:
        annotations.read_box_file(path, CLASSES)
    one_line(err, "laughs.xml", "document type declaration")
    assert time.process_time() - start < 1
    # a harmless DOCTYPE is refused too: the rule is the parser's, not a text search
    path.write_bytes(('<?xml version="1.0"?>\n<!DOCTYPE annotation>\n' + VOC).encode(encoding))
    with pytest.raises(ExplainError) as err:
        annotations.read_box_file(path, CLASSES)
    one_line(err, "document type declaration")
    # and an honest VOC file reads the same in every encoding
    path.write_bytes(VOC.encode(encoding))
    box = annotations.read_box_file(path, CLASSES)
    assert [(b.image, b.class_name, b.x0, b.y0, b.x1, b.y1) for b in box] == [
        ("both.jpg", "cat", 0, 0, 224, 224)]


def test_undefined_entities_and_too_many_elements_are_one_line(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text("<annotation><filename>&x;</filename></annotation>")
    with pytest.raises(ExplainError) as err:
        annotations.read_box_file(path, CLASSES)
    one_line(err, "a.xml", "not valid XML", "undefined entity")
    path.write_text("<annotation>" + "<a/>" * (annotations.MAX_XML_ELEMENTS + 1) + "</annotation>")
    with pytest.raises(ExplainError) as err:
        annotations.read_box_file(path, CLASSES)
    one_line(err, "a.xml", "XML elements")


# ---- the child: memory and time of the big cases, each in a fresh fork under a cap -------------

CHILD = CAPPED_CHILD + r"""
from pathlib import Path
from explain import annotations
from explain.config import Preprocess
from explain.images import ImageRef, precheck, prepare


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(kind, arg):
    spec = Preprocess(size=[32, 32])
    if kind == "xml":
        return str(annotations.read_box_file(Path(arg), ["cat", "dog"]))
    if kind == "precheck":
        return str(precheck(ImageRef("x", Path(arg), False), spec))
    if kind == "prepare":
        return str(tuple(prepare(ImageRef("x", Path(arg), False), spec).tensor.shape))
    return main([arg, "--quiet"])


def alarm(*_):
    raise TimeoutError("still running after 20 s")


out = {}
for case, (kind, arg) in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fresh fork per case: its peak memory is its own
        os.close(read)
        cap_memory()
        signal.signal(signal.SIGALRM, alarm)
        err, start, before = io.StringIO(), time.process_time(), rss_mb()
        with contextlib.redirect_stderr(err):
            try:
                signal.alarm(20)
                result = dict(ok=True, value=run_case(kind, arg))
            except BaseException as exc:
                result = dict(ok=False, error=type(exc).__name__, message=str(exc)[:300])
            signal.alarm(0)
        result.update(cpu_seconds=time.process_time() - start, rss_mb=rss_mb() - before,
                      err=err.getvalue()[-2000:])
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    status = os.waitpid(pid, 0)[1]
    out[case] = json.loads(data) if data else dict(ok=False, error=f"died ({status})")
print(json.dumps(out))
"""

GB = 2**30


def sparse(path: Path, head: bytes, size: int, tail: bytes = b"") -> Path:
    """``head``, zeros (a hole, no disk space) and ``tail``: ``size`` bytes in all."""
    with open(path, "wb") as f:
        f.write(head)
        if tail:
            f.seek(size - len(tail))
            f.write(tail)
        else:
            f.truncate(size)
    return path


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attack2_big")
    # XML in UTF-16LE without a BOM: 6 MB expanding linearly (under expat's own ratio check)
    # to 580 million characters (main: 1.2 GB of memory, parsed, exit 0)
    xml = ('<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY e "' + "a" * 580 + '">]>\n'
           "<annotation><filename>" + "&e;" * 1_000_000 + "</filename></annotation>")
    (folder / "linear.xml").write_bytes(xml.encode("utf-16-le"))
    small = jpeg()
    big = sparse(folder / "big.jpg", small, int(1.5 * GB))  # a JPEG padded with zeros
    huge = sparse(folder / "huge.jpg", small, int(2.5 * GB))
    tail = sparse(folder / "tail.jpg", small[:-2], 200 * 2**20, b"\xff\xd9")  # end marker last
    pics = folder / "pics"
    pics.mkdir()
    (pics / "good.jpg").write_bytes(small)
    sparse(pics / "huge.jpg", small, int(2.5 * GB))
    torch.save(tiny_net(), folder / "tiny.pth")
    cfg = write_cfg(folder, images=[str(pics)])
    cases = {"xml": ("xml", str(folder / "linear.xml")),
             "precheck 1.5 GB": ("precheck", str(big)), "prepare 1.5 GB": ("prepare", str(big)),
             "precheck 2.5 GB": ("precheck", str(huge)), "prepare 2.5 GB": ("prepare", str(huge)),
             "precheck tail": ("precheck", str(tail)), "prepare tail": ("prepare", str(tail)),
             "folder run": ("run", str(cfg))}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), folder=folder)


def test_linear_entity_expansion_in_utf16_is_refused_fast_and_small(child):
    r = child["xml"]
    assert not r["ok"] and r["error"] == "ExplainError", r
    assert "document type declaration" in r["message"], r
    assert r["cpu_seconds"] < 2 and r["rss_mb"] < 200, r


@pytest.mark.parametrize("size", ["1.5 GB", "2.5 GB"])
@pytest.mark.parametrize("step", ["precheck", "prepare"])
def test_an_image_file_over_max_bytes_is_refused_before_reading(child, step, size):
    r = child[f"{step} {size}"]
    assert not r["ok"] and r["error"] == "ImageError", r
    assert "preprocess.max_bytes (268435456)" in r["message"], r
    assert r["cpu_seconds"] < 1 and r["rss_mb"] < 50, r


def test_precheck_reads_the_tail_and_decoding_reads_the_file_once(child):
    check, decode = child["precheck tail"], child["prepare tail"]
    assert check["ok"] and decode["ok"] and decode["value"] == "(3, 32, 32)", (check, decode)
    assert check["rss_mb"] < 50, check  # headers and the last MiB, not 200 MB
    assert decode["rss_mb"] < 300, decode  # the file's 200 MB once, not twice


def test_a_huge_file_in_a_folder_is_skipped_not_a_traceback(child):
    r = child["folder run"]
    assert r["ok"] and r["value"] == 0, r
    summary = json.loads((child["folder"] / "results" / "exp" / "summary.json").read_text())
    assert [i["id"] for i in summary["images"]] == ["good"]
    [skipped] = summary["skipped_images"]
    assert Path(skipped["path"]).name == "huge.jpg" and "max_bytes" in skipped["reason"]
    assert r["rss_mb"] < 1000, r


def test_max_bytes_is_a_bounded_setting(tmp_path):
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    (tmp_path / "a.jpg").write_bytes(jpeg())
    cfg = load_config(write_cfg(tmp_path, images=["a.jpg"], preprocess={"max_bytes": 2000}))
    ref = ImageRef("a", tmp_path / "a.jpg", False)
    if (tmp_path / "a.jpg").stat().st_size > 2000:
        with pytest.raises(ImageError, match="max_bytes"):
            precheck(ref, cfg.preprocess)
    assert load_config(write_cfg(tmp_path, images=["a.jpg"])).preprocess.max_bytes == 256 * 2**20
    with pytest.raises(ExplainError) as err:
        load_config(write_cfg(tmp_path, images=["a.jpg"], preprocess={"max_bytes": 2 * GB}))
    one_line(err, "preprocess.max_bytes")


def test_a_jpeg_is_checked_from_its_tail(tmp_path):
    data = jpeg()
    assert jpeg_complete(data) and jpeg_complete(data + b"\0" * 5000)
    assert not jpeg_complete(data[:-2]) and not jpeg_complete(data[:len(data) // 2])
    assert not jpeg_complete(b"\xff\xd8" + b"\xff" * 100_000)  # fill bytes only: no scan
    path = sparse(tmp_path / "t.jpg", data[:len(data) // 2], 5 * 2**20)  # truncated, padded
    with pytest.raises(ImageError, match="truncated JPEG"):
        precheck(ImageRef("t", path, False), load_config(write_cfg(
            tmp_path, images=["t.jpg"])).preprocess)


def test_a_link_swapped_in_after_finding_is_not_read(tmp_path, outside):
    link = tmp_path / "a.jpg"
    link.symlink_to(outside / "secret1.jpg")
    with pytest.raises(ImageError, match="cannot be read"):
        prepare(ImageRef("a", link, True), load_config(write_cfg(
            tmp_path, images=[str(outside / "secret1.jpg")])).preprocess)


# ---- 7. one line, not a traceback ---------------------------------------------------------

BIG = "9" * 400
FIELD = "x" * (130 * 1024)


@pytest.mark.parametrize("name, text, needles", [
    ("field.csv", f"image,class,x0,y0,x1,y1\nboth.jpg,cat,0,0,5,5\n{FIELD},cat,0,0,5,5\n",
     ["field.csv: line 3", "field larger than field limit"]),
    ("header.csv", f"image,class,x0,y0,x1,y1,{FIELD}\nboth.jpg,cat,0,0,5,5\n",
     ["header.csv: line 1", "field larger than field limit"]),
    ("deep.json", "[" * 100_000 + "]" * 100_000, ["deep.json", "nested too deep"]),
    ("int.json", json.dumps([{"image": "a", "class": "cat", "x0": 0, "y0": 0, "x1": int(BIG),
                              "y1": 5}]), ["int.json: item 0", "numbers"]),
    ("int5000.json", '[{"image": "a", "class": "cat", "x0": 0, "y0": 0, "x1": ' + "9" * 5000 +
     ', "y1": 5}]', ["int5000.json", "not valid JSON"]),
    ("utf16.csv", "image,class,x0,y0,x1,y1\n".encode("utf-16-le"), ["utf16.csv", "NUL"]),
], ids=["csv field", "csv header field", "deep json", "400 digits", "5000 digits", "utf-16"])
def test_bad_annotation_files_are_one_line(tmp_path, name, text, needles):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ExplainError) as err:
        annotations.read_box_file(path, CLASSES)
    one_line(err, *needles)


@pytest.mark.parametrize("name, text, needles", [
    ("field.csv", f"path,label\n{FIELD}.jpg,cat\n", ["field.csv: line 2", "field limit"]),
    ("header.csv", f"path,label,{FIELD}\n", ["header.csv: line 1", "field limit"]),
    ("deep.json", "[" * 100_000 + "]" * 100_000, ["deep.json", "nested too deep"]),
], ids=["csv field", "csv header field", "deep json"])
def test_bad_labelled_lists_are_one_line(tmp_path, name, text, needles):
    (tmp_path / name).write_text(text)
    with pytest.raises(ExplainError) as err:
        find_images(load_config(write_cfg(tmp_path, images=[{"labelled": name}])))
    one_line(err, *needles)


@pytest.mark.parametrize("fields, needles", [
    ({"preprocess": {"mean": [int(BIG), 0.4, 0.4]}}, ["preprocess.mean", "finite"]),
    ({"preprocess": {"std": [0.2, int(BIG), 0.2]}}, ["preprocess.std", "finite"]),
    ({"annotations": {"boxes": {"a": {"cat": [0, 0, int(BIG), 5]}}}},
     ["annotations.boxes", "a.cat", "finite"]),
    ({"annotations": {"boxes": {"a": {"cat": [-int(BIG), 0, 3, 5]}}}},
     ["annotations.boxes", "a.cat", "finite"]),
], ids=["mean", "std", "box", "negative box"])
def test_huge_numbers_in_a_config_are_one_line(tmp_path, fields, needles):
    with pytest.raises(ExplainError) as err:
        load_config(write_cfg(tmp_path, images=["a.jpg"], **fields))
    one_line(err, "exp.yaml", *needles)


def test_an_integer_over_the_digit_limit_in_a_config_is_one_line(tmp_path):
    path = write_cfg(tmp_path, images=["a.jpg"])
    path.write_text(path.read_text() + "seed: " + "9" * 5000 + "\n")
    with pytest.raises(ExplainError) as err:
        load_config(path)
    line = len(path.read_text().splitlines())
    one_line(err, f"exp.yaml: line {line}", "too many digits")


def test_a_csv_field_over_the_limit_stops_a_run_in_one_line(tmp_path, capsys):
    torch.save(tiny_net(), tmp_path / "tiny.pth")
    (tmp_path / "a.jpg").write_bytes(jpeg())
    (tmp_path / "boxes.csv").write_text(f"image,class,x0,y0,x1,y1\n{FIELD},cat,0,0,5,5\n")
    cfg = write_cfg(tmp_path, images=["a.jpg"], annotations={"file": "boxes.csv"})
    refused(capsys, cfg, "--quiet", needles=["boxes.csv: line 2: field larger than field limit"])

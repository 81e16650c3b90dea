"""The tenth attack (a helper's findings): a file name that is not UTF-8 in a shared image
folder, a shared run folder whose records flood the terminal, the notebook display or ``diff``
(hard links), and the report's size from a shared summary."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import torch

from explain.cli import main
from helpers import CAT, cli, tiny_config, tiny_net

LATIN1 = "caf\udce9.jpg"  # 'café.jpg' from a Latin-1 zip, as Python names it


def test_a_name_that_is_not_utf8_is_explained_and_written_escaped(tmp_path, capsys):
    """The whole run computed, then writing report.html stopped it with a traceback (strict
    UTF-8) and the folder was deleted, the earlier run too with --overwrite. Now the photo is
    explained and its name is written escaped in the pages and CSVs."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(CAT, photos / "cat.jpg")
    shutil.copy(CAT, photos / LATIN1)
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    config = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pt")}, images=[str(photos)],
                         classes={"cat": 0, "dog": 1}, metrics=[])
    for flags in ((), ("--overwrite",)):
        rc, err, out = cli(capsys, config, "--quiet", *flags)
        assert rc == 0, err
    run = tmp_path / "results" / "exp"
    summary = json.loads((run / "summary.json").read_text())
    paths = sorted(image["path"] for image in summary["images"])
    assert paths == sorted([str(photos / "cat.jpg"), str(photos / LATIN1)])
    html = "".join(p.read_text() for p in [run / "report.html", *(run / "report").glob("*.html")])
    assert "caf\\udce9.jpg" in html
    rows = list(csv.DictReader(io.StringIO((run / "summary.csv").read_text())))
    assert {r["image"] for r in rows} == {i["id"] for i in summary["images"]} and len(rows) == 4
    # a shared summary.json holding one in a note: one report, no traceback
    summary["notes"].append("a note \udce9")
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(run)]) == 0
    assert "a note \\udce9" in (run / "report.html").read_text()


def test_the_console_lists_twenty_images_and_skipped_files_and_counts_the_rest(
        tmp_path, capsys):
    """A shared folder of 100,000 files that are not images printed 100,005 lines at the end
    of the run; now the first 20 of each list, then one line counting the rest."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(23):
        shutil.copy(CAT, photos / f"p{i:02d}.jpg")
    for i in range(45):
        (photos / f"n{i:02d}.txt").write_text("not a picture")
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    config = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pt")}, images=[str(photos)],
                         classes={"cat": 0, "dog": 1}, metrics=[],
                         channels={"enabled": False}, output={"image_format": "jpg"})
    rc, err, out = cli(capsys, config)
    assert rc == 0, err
    said = (out + err).splitlines()
    images = [line for line in said if ": predicted " in line]
    skipped = [line for line in said if line.startswith("  skipped ")]
    assert [line.split(":")[0].strip() for line in images] == [f"p{i:02d}" for i in range(20)]
    assert [line.split("/")[-1].split(":")[0] for line in skipped] == \
        [f"n{i:02d}.txt" for i in range(20)]
    assert "  ... and 3 more image(s), all in summary.csv" in said
    assert "  ... and 25 more file(s) skipped, all in summary.json (skipped_files, " \
           "skipped_images)" in said
    summary = json.loads((tmp_path / "results" / "exp" / "summary.json").read_text())
    assert len(summary["images"]) == 23 and len(summary["skipped_files"]) == 45


def _many_classes(tmp_path, capsys, count: int):
    """A finished tiny run (cat photo, GradCAM and LayerCAM) whose summary.json was changed
    to hold ``count`` classes, each with a map of each method and a class panel: every picture
    a hard link to the run's own (as a shared tar keeps them)."""
    import os
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    config = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pt")}, methods=[
        "gradcam", "layercam"], classes={"cat": 0, "dog": 1}, metrics=[])
    assert cli(capsys, config, "--quiet")[0] == 0
    run = tmp_path / "results" / "exp"
    data = json.loads((run / "summary.json").read_text())
    names = ["cat", "dog"] + [f"c{i}" for i in range(2, count)]
    data["config"]["classes"] = {c: i for i, c in enumerate(names)}
    entry = data["images"][0]
    template = {r["method"]: r for r in entry["cams"] if r["class"] == "cat"}
    entry["cams"] = []
    for c in names:
        for method, record in template.items():
            rel = f"cams/{method}/cat__{c}.png"
            if c not in ("cat", "dog"):
                os.link(run / record["file"], run / rel)
            entry["cams"].append(dict(record, **{"class": c, "file": rel, "files": {}}))
        if c not in ("cat", "dog"):  # copies: a second name of one file is shown once
            shutil.copy(run / "panels" / "cat.png", run / "panels" / f"{c}.png")
            data["files"]["panels"][c] = f"panels/{c}.png"  # as a run records its panels
    (run / "summary.json").write_text(json.dumps(data))
    return run


def test_the_notebook_embeds_twelve_class_panels_and_twenty_class_columns(tmp_path, capsys):
    """A shared folder of 1,000 classes whose panels are one 2 MiB picture hard-linked made
    the display a 2.66 GB HTML string (8.1 GB at peak)."""
    import explain
    html = explain.load(_many_classes(tmp_path, capsys, 25))._repr_html_()
    assert html.count("<figure>") == 12
    assert [f"class {c}" in html for c in ("cat", "dog", "c11", "c12")] == [True] * 3 + [False]
    assert "... and 13 more class(es) in the run folder" in html
    assert "p(c19)" in html and "p(c20)" not in html
    assert "p of the first 20 of 25 classes" in html
    import os
    folder = tmp_path / "results" / "exp"
    for i in range(2, 25):
        (folder / "panels" / f"c{i}.png").unlink()
        os.link(folder / "panels" / "cat.png", folder / "panels" / f"c{i}.png")
    html = explain.load(folder)._repr_html_()
    assert html.count("<figure>") == 2  # cat and dog: the links are cat's file again


def test_the_notebook_embeds_the_panels_the_records_name_as_the_report_links_them(
        tmp_path, capsys):
    """The inline display read panels/<class>.png by name: a panel the records do not name
    (the report links none) was embedded all the same."""
    import explain
    from explain.writers.report import ReportData, render_pages
    from explain.outputs import RunFolder
    run = _many_classes(tmp_path, capsys, 3)
    data = json.loads((run / "summary.json").read_text())
    data["files"]["panels"] = {"cat": "panels/cat.png"}  # dog and c2 in the folder, unnamed
    (run / "summary.json").write_text(json.dumps(data))
    loaded = explain.load(run)
    html = loaded._repr_html_()
    page = render_pages(RunFolder(run), ReportData(loaded.summary))["report.html"]
    assert html.count("<figure>") == 1 and "class cat" in html and "class dog" not in html
    assert "panels/cat.png" in page and "panels/dog.png" not in page


def test_show_draws_at_most_sixty_maps_and_says_how_to_choose(tmp_path, capsys):
    """31 classes x 2 methods of one image: one line saying to choose (a shared summary's
    1,000 classes x 18 methods were decoded one by one: 27 minutes and 35 GB estimated)."""
    import explain
    from explain.errors import ExplainError
    loaded = explain.load(_many_classes(tmp_path, capsys, 31))
    with pytest.raises(ExplainError, match=r"image 'cat' has 31 class\(es\) x 2 method\(s\); "
                                           r"a figure shows at most 60 maps: pass cls=\.\.\. "
                                           r"or methods=\[\.\.\.\]$"):
        loaded.show("cat")
    figure = loaded.show("cat", methods=["gradcam"])
    assert len([a for a in figure.axes if a.images]) == 31 * 2  # the photo, then the map
    assert len([a for a in loaded.show("cat", cls="c30").axes if a.images]) == 3


def test_boxes_past_the_bound_are_refused_before_validation_and_skips_are_counted(
        tmp_path, capsys):
    """A shared summary of 60 MB of boxes took 1.4 GB to be refused after validation built
    them all; one of 60 MB of skipped files wrote a 97 MB report listing each."""
    from explain import recordfiles
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    config = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pt")},
                         classes={"cat": 0, "dog": 1}, metrics=[])
    assert cli(capsys, config, "--quiet")[0] == 0
    run = tmp_path / "results" / "exp"
    honest = json.loads((run / "summary.json").read_text())
    data = json.loads(json.dumps(honest))
    data["skipped_files"] = [{"path": f"/x/n{i:03d}.txt", "reason": "not an image"}
                             for i in range(250)]
    (run / "summary.json").write_text(json.dumps(data))
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    html = (run / "report.html").read_text()
    assert "/x/n199.txt" in html and "/x/n200.txt" not in html
    assert "... and 50 more, all in summary.json (skipped_files, skipped_images)." in html
    data = json.loads(json.dumps(honest))
    data["images"][0]["boxes"] = {"cat": [[1, 1, 2, 2]] * 600, "dog": [[1, 1, 2, 2]] * 401}
    (run / "summary.json").write_text(json.dumps(data))
    built = []
    original = recordfiles.validated

    def counted(model, raw):
        built.append(model)
        return original(model, raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recordfiles, "validated", counted)
        patch.setattr("explain.reportload.validated", counted)
        assert main(["report", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"explain: error: {run / 'summary.json'}: image 'cat': 1001 boxes, more than a run "
        f"takes for one image (1000); the run folder is damaged\n")
    assert built == []  # refused before pydantic built anything


def test_python_m_explain_imports_nothing_from_the_working_directory(tmp_path):
    """Run as the README says (``python -m explain``) inside a shared bundle, Python put the
    bundle first on sys.path: its yaml.py (or cv2.py, torch/) ran instead of the library, and
    its shutil.py or typing.py before explain/__main__.py (the package is imported first)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import explain
    marker = tmp_path / "SHADOW_RAN"
    for name in ("yaml", "shutil", "typing", "signal", "tempfile"):
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name} ')\n")
    (tmp_path / "exp.yaml").write_text("classes: {cat: 0}\nimages: [nowhere.jpg]\n")
    env = {**os.environ, "PYTHONPATH": str(Path(explain.__file__).parent.parent),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "explain", "exp.yaml"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert not marker.exists(), marker.read_text()
    assert proc.returncode == 2 and "exp.yaml: model: required key is missing" in proc.stderr, \
        proc.stderr


def test_a_trusted_module_is_found_in_the_working_directory_after_the_packages(
        tmp_path, capsys, monkeypatch):
    """A config's own module (model.trust) is still found where the run starts, looked for
    after the installed packages, also for what it imports only when it is called; a config
    without trust leaves sys.path as it was (an optional import of an allow-listed library
    would find a shared folder's module)."""
    import sys
    import uuid
    mod = f"mine_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text(
        f"def build():\n    from {mod}_parts import make\n    return make()\n")
    (tmp_path / f"{mod}_parts.py").write_text(
        "from helpers import tiny_net\n\ndef make():\n    return tiny_net()\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored after the test
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    config = tiny_config(tmp_path, {"builder": "torchvision.models.alexnet",
                                    "builder_args": {"num_classes": 2}}, stem="plain",
                         classes={"cat": 0, "dog": 1}, metrics=[], target_layers=["features.10"],
                         preprocess={"size": [64, 64]}, methods=["gradcam"])
    assert cli(capsys, config, "--quiet")[0] == 0
    assert sys.path == before  # no trust: nothing added
    config = tiny_config(tmp_path, {"builder": f"{mod}:build", "trust": True},
                         classes={"cat": 0, "dog": 1}, metrics=[])
    rc, err, _ = cli(capsys, config, "--quiet")
    assert rc == 0, err
    assert sys.path == before + [str(tmp_path)] and f"{mod}_parts" in sys.modules
    assert len(json.loads((tmp_path / "results" / "exp" / "summary.json").read_text())
               ["images"][0]["cams"]) == 2


def test_preprocess_mean_and_std_are_bounded_in_the_config(tmp_path, capsys):
    """mean 1e308 and std 1e-300 made every pixel inf, then NaN: a numpy warning with its
    source line, then an error blaming the model's weights. Now the config's one line."""
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    config = tiny_config(tmp_path, {"file": str(tmp_path / "tiny.pt")},
                         preprocess={"size": [32, 32], "mean": [1.0e308, 0, 0],
                                     "std": [1.0e-300, 1, 1]})
    rc, err, out = cli(capsys, config)
    assert rc == 2 and out == ""
    assert err.splitlines() == [
        f"explain: error: 2 problems in {config}:",
        f"  {config}: preprocess.mean: mean values are on the pixels' 0..1 scale (ImageNet's: "
        f"0.485, 0.456, 0.406); each must lie within +-10000",
        f"  {config}: preprocess.std: std values are on the pixels' 0..1 scale (ImageNet's: "
        f"0.229, 0.224, 0.225); each must lie within 0.0001 to 10000"]


@pytest.mark.parametrize("field", ["images", "annotations"])
def test_json_of_empty_objects_is_refused_before_it_is_parsed(tmp_path, capsys, field):
    """A 64 MiB labelled list (or a 32 MiB box file) of '{},' took 1.2 GB (0.7 GB) to be
    refused after parsing; now one line before, as a run folder's records are."""
    bomb = tmp_path / "list.json"
    bomb.write_text("[" + "{}," * 400_000 + "{}]")  # 1.2 MB
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    fields = {"images": [{"labelled": str(bomb)}]} if field == "images" else \
        {"annotations": {"file": str(bomb)}}
    config = tiny_config(tmp_path, {"file": "tiny.pt"}, classes={"cat": 0, "dog": 1},
                         metrics=[], **fields)
    rc, err, _ = cli(capsys, config, "--quiet")
    assert rc == 2 and err.endswith(f"{bomb}: more lists and objects than such a file holds "
                                    f"(one every 16 bytes or less)"), err


def _interrupted_after_two(tmp_path, **fields):
    """A tiny run over photos a, b, c (one a batch) stopped as Ctrl-C does before c's item
    file: (its config, its folder under out/)."""
    from helpers import interrupted
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(CAT, photos / f"{name}.jpg")
    torch.save(tiny_net(), tmp_path / "tiny.pt")
    config = tiny_config(tmp_path, {"file": "tiny.pt"}, images=[str(photos)], batch_size=1,
                         classes={"cat": 0, "dog": 1}, metrics=[], **fields)
    return config, interrupted(config, tmp_path / "out", "item", 3)


def test_resume_reads_the_item_files_of_its_images_and_refuses_a_hard_link(tmp_path, capsys):
    """--resume parsed every items/*.json (any count, a hard-linked 64 MiB file once per
    name): now only its own images' item files, and one with a second name is refused."""
    import os
    config, run = _interrupted_after_two(tmp_path)
    assert sorted(p.name for p in (run / "items").iterdir()) == ["a.json", "b.json"]
    (run / "items" / "zz.json").write_bytes(b"[" * 5_000_000)  # not an image of the run
    os.link(run / "items" / "a.json", run / "items" / "c.json")
    rc, err, _ = cli(capsys, config, "--resume", "--out", tmp_path / "out", "--quiet")
    assert rc == 2 and err == (
        f"explain: error: {run / 'items' / 'c.json'}: the same file as items/a.json (a hard "
        f"link); the run folder is damaged (delete this item file to compute the image again)")
    (run / "items" / "c.json").unlink()
    rc, err, _ = cli(capsys, config, "--resume", "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert [i["id"] for i in summary["images"]] == ["a", "b", "c"]
    assert "resumed: 2 image(s) kept from the interrupted run, 1 computed now" in summary["notes"]


def test_resume_keeps_only_the_compare_rows_of_its_maps_and_reads_a_snapshot(tmp_path, capsys):
    """A kept item file's compare row of a class the run does not have ended --resume, after
    all its work, in a KeyError traceback; a run folder copied with hard links (cp -al, a
    snapshot before --resume) is an honest one and resumes."""
    import os
    config, run = _interrupted_after_two(tmp_path, target_layers=["0"], compare={"enabled": True})
    item = json.loads((run / "items" / "a.json").read_text())
    item["compare"] += [dict(item["compare"][0], **{"class": "zebra"}),
                        dict(item["compare"][0], image="b")]
    (run / "items" / "a.json").write_text(json.dumps(item))
    snapshot = tmp_path / "snapshot"
    shutil.copytree(tmp_path / "out", snapshot, copy_function=os.link)
    for out in (tmp_path / "out", snapshot):
        rc, err, _ = cli(capsys, config, "--resume", "--out", out, "--quiet")
        assert rc == 0, err
        rows = (out / "exp" / "compare" / "compare.csv").read_text().splitlines()
        assert len(rows) == 1 + 3 * 2 and not any("zebra" in r for r in rows)

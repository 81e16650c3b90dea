"""The twentieth attack (a helper's findings): what two shared run folders ask of
``explain diff`` past their maps, and what a config's YAML aliases repeat (docs/trust.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from explain.cli import main
from explain.errors import ExplainError
from explain.config import load_config
from explain.runner import RunOptions, run
from helpers import CAT, memory_peak, one_line, tiny_config, tiny_net

QUIET = dict(progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny finished run with its maps saved (explain diff reads them)."""
    tmp = tmp_path_factory.mktemp("attack20")
    torch.save(tiny_net(), tmp / "m.pth")
    path = tiny_config(tmp, {"file": str(tmp / "m.pth")}, name="a", classes={"cat": 0, "dog": 1},
                       output={"dir": str(tmp / "results"), "save_arrays": True})
    run(load_config(path), RunOptions(**QUIET))
    return tmp / "results" / "a"


def _with_arch_args(src: Path, dst: Path, args: dict) -> Path:
    """A copy of the run whose summary.json records ``args`` as model.arch_args."""
    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text())
    summary["config"]["model"]["arch_args"] = args
    (dst / "summary.json").write_text(json.dumps(summary))
    return dst


def _deep(key_chars: int, depth: int, leaves: int, value: int) -> dict:
    """``leaves`` small settings under ``depth`` keys of ``key_chars`` characters each."""
    node: dict = {f"k{i}": value for i in range(leaves)}
    for level in range(depth):
        node = {chr(97 + depth - 1 - level) * key_chars: node}
    return node


def test_diff_names_settings_that_differ_in_bounded_memory_and_page(finished, tmp_path,
                                                                      capsys):
    """explain diff flattened both recorded configs into dotted names, each leaf carrying its
    whole path, and wrote every differing one on diff.html: two 615 KB summaries of one
    40,000-character key nested 15 deep above 1,000 leaves made a 600 MB diff.html and held
    3.6 GB (853 KB, 20,000 leaves: a MemoryError past 6 GB). Here 4,000 characters x 15
    above 1,000 leaves (60 MB of page before): the page names 40 settings, cut to 80
    characters, and counts the rest."""
    a = _with_arch_args(finished, tmp_path / "a", _deep(4000, 15, 1000, 0))
    b = _with_arch_args(finished, tmp_path / "b", _deep(4000, 15, 1000, 1))
    assert (a / "summary.json").stat().st_size < 200_000
    with memory_peak() as peak:
        code = main(["diff", str(a), str(b), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "config: 1000 setting(s) differ: model.arch_args.aaaa" in out
    page = next((tmp_path / "out").glob("diff-*")) / "diff.html"
    assert page.stat().st_size < 100_000
    text = page.read_text()
    assert "... and 960 more" in text
    assert f"model.arch_args.{'a' * 64}: 0 -&gt; 1" in text
    assert peak[0] < 40 * 2**20
    assert not list(tmp_path.glob("*.html"))


def test_diff_still_names_an_honest_change(finished, tmp_path, capsys):
    """Settings that differ are named whole, in key order (name and output folder aside)."""
    a = _with_arch_args(finished, tmp_path / "a", {})
    b = _with_arch_args(finished, tmp_path / "b", {"num_classes": 2, "nest": {"x": [1, 2]}})
    assert main(["diff", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert ("config: 2 setting(s) differ: model.arch_args.nest.x: (none) -> [1, 2]; "
            "model.arch_args.num_classes: (none) -> 2") in out


# ---- a config's aliases repeating one long value ----------------------------------------------

def _aliased(folder: Path, chars: int, times: int) -> Path:
    """A detector config whose builder_args (a detector takes any keyword) name one string of
    ``chars`` characters ``times`` times through a YAML alias."""
    path = folder / "det.yaml"
    path.write_text(
        "name: det\ntask: detection\nmodel:\n"
        "  builder: torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn\n"
        f"  builder_args:\n    num_classes: 3\n    a: &s \"{'x' * chars}\"\n"
        f"    b: [{', '.join(['*s'] * times)}]\n"
        f"classes: {{cat: 1, dog: 2}}\nimages: [{CAT}]\ntarget_layers: [auto]\n"
        f"output: {{dir: {folder / 'results'}}}\n")
    return path


def test_aliases_repeating_a_long_value_are_refused_before_anything_is_written(tmp_path,
                                                                                capsys):
    """Aliases were bounded by count (20,000 values), not by what they repeat: a 104 KB
    config naming one 100 KB string 1,000 times under a detector's builder_args (which takes
    any keyword) passed every check and wrote config.json and summary.json of 96 MB each,
    1.2 GB held (256 KiB: 3.5 GB a file). Values past 1 MiB of text once expanded are one
    line, before anything is read or written."""
    from explain.config import load_config
    path = _aliased(tmp_path, 100_000, 1000)
    assert path.stat().st_size < 110_000
    with memory_peak() as peak:
        with pytest.raises(ExplainError) as info:
            load_config(path)
    one_line(info, f"{path}: the YAML expands to more than 1 MiB of text (aliases "
                   f"repeating a long value); write the values out")
    assert peak[0] < 20 * 2**20
    assert main([str(path), "--quiet"]) == 2
    assert "expands to more than 1 MiB of text" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_aliases_of_short_values_still_load(tmp_path):
    """Anchors reused as configs use them (a preprocess section, a list of sizes) load."""
    from explain.config import load_config
    path = _aliased(tmp_path, 40, 1000)
    assert load_config(path).model.builder_args["b"] == ["x" * 40] * 1000


# ---- a summary's trust record ----------------------------------------------------------------

def _with_trust_metrics(src: Path, dst: Path, images: int, metrics: int) -> Path:
    """A copy of the run of ``images`` one-map images whose trust row names ``metrics``
    made-up metrics."""
    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text())
    first = summary["images"][0]
    first["files"] = {}
    cam = {**first["cams"][0], "files": {}}
    summary["images"] = [{**first, "id": f"c{i}", "cams": [{**cam, "file": f"x/c{i}.png"}]}
                         for i in range(images)]
    stat = {"mean": 0.5, "images": 1, "maps": 1}
    summary["trust"]["rows"][0]["metrics"] = {f"m{j}": stat for j in range(metrics)}
    (dst / "summary.json").write_text(json.dumps(summary, separators=(",", ":")))
    return dst


def test_a_trust_record_of_made_up_metrics_is_refused_by_every_reader(finished, tmp_path,
                                                                       capsys):
    """summary.json's ``trust`` was read back unchecked, and a notebook's ``Run.table()``
    gives every map's row its method's trust columns: 8,000 made-up metric names on one
    row with 3,000 maps (1.8 MB) made 3,000 x 24,000 cells, 2.9 GB. Here 600 x 1,000
    (0.2 MB before: 600 x 3,000 cells): one line naming the file and the field, from
    explain.load, explain report and explain diff alike."""
    import explain
    bad = _with_trust_metrics(finished, tmp_path / "bad", 600, 1000)
    with memory_peak() as peak:
        with pytest.raises(ExplainError) as info:
            explain.load(bad)
    one_line(info, f"{bad / 'summary.json'}: trust: a row's metric 'm0' its run did not "
                   f"compute; the run folder is damaged")
    assert peak[0] < 30 * 2**20
    for argv in (["report", str(bad)], ["diff", str(finished), str(bad)]):
        assert main(argv) == 2
        assert "trust: a row's metric 'm0' its run did not compute" in capsys.readouterr().err
    assert not list(tmp_path.glob("diff-*"))


def test_an_honest_trust_record_is_read(finished):
    """The run's own trust record passes: its table's rows, with their columns."""
    import explain
    rows = explain.load(finished).table()
    assert len(rows) == 2 and rows[0]["method"] == "gradcam" and "sanity" in rows[0]


def test_a_shared_sanity_record_s_methods_are_looked_up_once_each():
    """summary.csv asks the sanity record for each map's method: a shared record of 10,000
    entries was scanned once per row (rows x entries). Now a table made once; the first
    entry of a name is the one used, an unknown name has none."""
    from explain.sanity_records import SanitySummary
    entries = [{"method": f"m{i % 5000}", "verdict": "pass" if i < 5000 else "fail",
                "final": i / 10000, "cascading": []} for i in range(10000)]
    record = SanitySummary.model_validate({
        "measure": "spearman", "threshold": 0.5, "logit_threshold": 0.5, "seed": 0,
        "layers": [], "not_randomised": 0, "maps": [], "methods": entries})
    assert record.method("m4999").final == 0.4999 and record.method("m4999").verdict == "pass"
    assert record.method("gradcam") is None and record.columns("gradcam") == {}
    assert record.columns("m7") == {"sanity_spearman": 0.0007}
    assert "_by_name" not in record.model_dump()

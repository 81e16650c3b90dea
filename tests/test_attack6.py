"""The sixth attack (a review session's findings): shared run folders and configs that asked for
unbounded memory or time: a PNG bomb or a JPEG of repeated scans read back from a run folder,
a .npy header claiming a huge shape, a report of one page per image, 1,100 nested folders,
a glob of repeated '**', thousands of unknown metric names."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import explain_error
from test_attack5 import _progressive
from test_trust_section import METRIC, synthetic
from explain.images.jpeg import MAX_JPEG_SCANS
from explain.images.reading import decode_stored
from explain.methodtable import MAX_UNKNOWN, method_table
from explain.outputs import MAX_RUN_DEPTH, RunFolder, _files_below
from explain.readback import stored_array


@functools.lru_cache(maxsize=None)
def png_bomb(side: int) -> bytes:
    """A black side x side RGB PNG, a few hundred KB for side 8192 (compressed rows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    comp = zlib.compressobj(9)
    rows = b"".join(comp.compress(b"\x00" * (1 + 3 * side)) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0,
                                                              0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_pictures_read_back_get_the_checks_an_input_image_gets(tmp_path):
    ok, small = cv2.imencode(".png", np.full((8, 12, 3), 200, np.uint8))
    assert decode_stored(small.tobytes()).shape == (8, 12, 3)
    bomb = png_bomb(12000)  # 144 M pixels: over the 134 M a run folder's picture may have
    assert len(bomb) < 1_000_000 and decode_stored(bomb) is None
    scans = _progressive(tmp_path, MAX_JPEG_SCANS + 1).path.read_bytes()
    assert decode_stored(scans) is None
    assert decode_stored(_progressive(tmp_path, 0).path.read_bytes()).shape == (64, 64, 3)
    assert decode_stored(b"not a picture") is None


def test_the_notebook_display_of_a_shared_folder_does_not_decode_a_bomb():
    from explain.api.display import file_uri
    assert file_uri(png_bomb(12000), "panels/cat.png") is None


def test_a_npy_header_claiming_more_than_its_bytes_is_refused_before_allocation():
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    data = buf.getvalue()
    assert stored_array(data).tolist() == [[0, 1, 2], [3, 4, 5]]
    huge = data.replace(b"(2, 3)", b"(999999999, 99999)")
    with pytest.raises(ValueError, match=r"claims \(999999999, 99999\) float32"):
        stored_array(huge)
    with pytest.raises(ValueError, match="holds Python objects"):
        buf = io.BytesIO()
        np.save(buf, np.array([1, "a"], dtype=object), allow_pickle=True)
        stored_array(buf.getvalue())
    with pytest.raises(ValueError, match="not a .npy array"):
        stored_array(b"\x93NUMPY\x09\x00garbage")


def test_a_run_folder_nested_deeper_than_explain_writes_is_refused(tmp_path):
    run = tmp_path / "results" / "base"
    deep = run.joinpath(*["d"] * (MAX_RUN_DEPTH + 2))
    deep.mkdir(parents=True)
    (deep / ".x.png.part").write_bytes(b"")
    (run / "cams").mkdir()
    (run / "cams" / "a.png").write_bytes(b"")
    assert _files_below(run / "cams", "--resume") == [run / "cams" / "a.png"]
    text = explain_error(_files_below, run, "--resume")
    assert text == (f"--resume: {run} holds folders nested more than {MAX_RUN_DEPTH} deep, "
                    f"which explain never writes; refusing to touch it")


def test_a_labelled_tree_nested_too_deep_is_cut_with_a_note(tmp_path):
    from explain.images.labelled import MAX_TREE_DEPTH, labelled_files
    root = tmp_path / "data"
    deep = root.joinpath("cat", *["d"] * (MAX_TREE_DEPTH + 5))
    deep.mkdir(parents=True)
    photo = (Path(__file__).parent.parent / "images" / "cat.jpg").read_bytes()
    (root / "cat" / "top.jpg").write_bytes(photo)
    (deep / "deep.jpg").write_bytes(photo)
    from explain.config import Config
    cfg = Config.model_validate({"model": {"file": "m.pth"}, "target_layers": ["x"],
                                 "methods": ["gradcam"], "classes": {"cat": 0},
                                 "images": [{"labelled": str(root)}]})
    notes: list = []
    found = labelled_files(cfg, cfg.images[0], "images[0]", notes)
    names = [Path(f[0]).name for f in found]
    assert names == ["top.jpg"]
    assert any(f"nested more than {MAX_TREE_DEPTH} folders deep" in getattr(n, "reason", "")
               for n in notes)


def test_a_glob_of_repeated_double_stars_is_refused_or_walked_once(tmp_path):
    from explain.images.finding import MAX_DOUBLE_STARS, _matches
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(b"")
    once = _matches(str(tmp_path / "**" / "*.jpg"), "images[0]", [])
    assert _matches(str(tmp_path / "**" / "**" / "**" / "*.jpg"), "images[0]", []) == once
    assert once == [tmp_path / "a" / "b" / "x.jpg"]
    text = explain_error(_matches, str(tmp_path / "**" / "a" / "**" / "b" / "**" / "*.jpg"),
                         "images[0]", [])
    assert text.startswith(f"images[0]: the pattern has 3 '**' parts, over {MAX_DOUBLE_STARS}")


def test_unknown_metric_names_in_shared_records_make_a_bounded_table():
    summary = synthetic({"gradcam": [0.1, 0.2, 0.3]})
    for image in summary.images:
        for rec in image.cams:
            rec.faithfulness.update({f"made_up_{k}": 0.5 for k in range(200)})
    table = method_table(summary, ["gradcam"])
    keys = [c.key for c in table.columns]
    assert METRIC in keys and len([k for k in keys if k.startswith("made_up_")]) == MAX_UNKNOWN


def test_a_report_is_at_most_200_pages_whatever_page_size_says(tmp_path):
    from explain.writers.report import MAX_PAGES, ReportData, render_pages
    summary = synthetic({"gradcam": [0.1] * 450})
    summary.config = summary.config.model_copy(
        update={"report": summary.config.report.model_copy(update={"page_size": 1})})
    (tmp_path / "run").mkdir()
    pages = render_pages(RunFolder(tmp_path / "run"), ReportData(summary))
    assert MAX_PAGES == 200 and len(pages) == 1 + 150  # 3 cards a page
    index = pages["report.html"]
    assert "report/page-150.html" in index and "report/page-151.html" not in index


def test_method_options_whose_product_is_too_large_are_refused_before_the_run():
    from types import SimpleNamespace
    from torch import nn
    from explain.enginedata import LayerInfo
    from explain.models.layouts import Layout
    from explain.pace import MAX_SESS_WINDOWS, check_sizes, sess_size
    free = 8 * 2**30
    assert sess_size({}, 224, 224) == (4567040, 122, 928)  # the library's defaults
    # window 1, ratio 10, 8 scales: 1, 11, ..., 71 px: the windows the library slides
    assert sess_size({"num_scales": 8, "scale_step_ratio": 10, "window_size": 1,
                      "step_size": 1}, 224, 224)[1] == sum((s ** 2) for s in range(1, 72, 10))
    sess = SimpleNamespace(name="sess", options={"num_scales": 5, "scale_step_ratio": 10})
    text = explain_error(check_sizes, [sess], [], (224, 224), free)
    assert text.startswith("methods.sess: its options make scaled copies of the 224 x 224 "
                           "input up to 9184 px")
    given = SimpleNamespace(name="sess", options={"window_size": 8, "step_size": 1,
                                                  "scales": [100] * 64})  # sizes, as given
    assert sess_size(given.options, 224, 224)[1] == 64 * 93 ** 2
    assert "553,536 windows" in explain_error(check_sizes, [given], [], (224, 224), free)
    check_sizes([SimpleNamespace(name="sess", options={})], [], (224, 224), free)
    early = LayerInfo("target_layers[0] 'layer1'", nn.Identity(), (64, 256, 256), Layout("nchw"))
    late = LayerInfo("target_layers[0] 'layer4'", nn.Identity(), (512, 16, 16), Layout("nchw"))
    # 65,536^2 cells: KPCA-CAM 3 float64 copies; any method with eigen_smooth makes the
    # library's full SVD, U and V at 16 bytes a cell. explain's EigenCAM and EigenGradCAM take
    # a thin SVD (explain.eigen): no such matrix, eigen_smooth or not
    for name in ("eigencam", "eigengradcam"):
        for smooth in (False, True):
            check_sizes([SimpleNamespace(name=name, options={})], [early], (1024, 1024), free,
                        smooth)
    for name, gib, smooth, square in (("kpcacam", 96.0, False, ""),
                                      ("gradcam", 64.0, True, " and 64 x 64")):
        method = SimpleNamespace(name=name, options={})
        check_sizes([method], [late], (1024, 1024), free, smooth)
        text = explain_error(check_sizes, [method], [early], (1024, 1024), free, smooth)
        assert text == (f"methods.{name}: target_layers[0] 'layer1' has 65,536 positions of 64 "
                        f"channels, and the method's 65,536 x 65,536{square} matrices need "
                        f"{gib} GiB, more than the 8.0 GiB free; pick a later layer or a "
                        f"smaller input")
    check_sizes([SimpleNamespace(name="gradcam", options={})], [early], (1024, 1024), free)
    assert MAX_SESS_WINDOWS == 10_000


def test_a_model_whose_pass_outgrows_the_machine_is_refused_on_the_meta_device():
    import torch
    from torch import nn
    from explain.models.guard import MAX_MODULE_CALLS, forward_size_problem
    x = torch.rand(1, 3, 32, 32)
    up = nn.Sequential(nn.Upsample(size=(16384, 16384)), nn.Conv2d(3, 8, 3, padding=1),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    problem = forward_size_problem(up, x, 4 * 2**30)
    assert problem.startswith("its modules' outputs for one image, twice over with their "
                              "gradients, pass the 8.0 GiB free, at Conv2d ((1, 8, 16384, "
                              "16384))")
    conv = nn.Conv2d(3, 3, 3, padding=1)
    repeated = nn.Sequential(*[conv] * (MAX_MODULE_CALLS + 5))
    assert forward_size_problem(repeated, x, 2**40) == \
        f"over {MAX_MODULE_CALLS} module calls in one forward pass"
    # the models themselves are untouched: their weights are real, their passes run
    assert conv.weight.device.type == "cpu" and repeated[:3](x).shape == (1, 3, 32, 32)
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    seen = []  # a user's hook on the real model never sees the shapes-only pass
    small[0].register_forward_hook(lambda module, inputs, output: seen.append(output))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    assert forward_size_problem(small, x, 2**30) is None
    assert seen == [] and small[0]._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())
    out = small(x)
    assert len(seen) == 1 and seen[0].device.type == "cpu" and out.shape == (1, 4 * 30 * 30)

"""The seventh attack (a review session's findings): shared model files, run folders and masks
that still asked for unbounded time or memory past the earlier checks: a module hidden in an
attribute, a tampered atlas state, one array named by many records, a label map of repeated
JPEG scans, a whole read buffer for a small file, library warnings on the terminal."""

from __future__ import annotations

import functools

import numpy as np

import pytest
import torch
from PIL import Image
from torch import nn

from helpers import cli, memory_peak, refused, tiny_config, tiny_net
from explain.models.pickles import hidden_modules, safe_load, structure_problem


def _hidden(forward) -> nn.Sequential:
    """tiny_net with ``forward`` as its first module's instance attribute."""
    net = tiny_net()
    net[0].__dict__["forward"] = forward
    return net


def test_a_module_hidden_in_an_attribute_is_refused(tmp_path, capsys):
    """An Identity whose instance attribute ``forward`` is a Sequential(Upsample(32768^2)):
    Module.__call__ runs it, but no check walking ``modules()`` saw it (5 KB, 12.9 GB asked
    by the real pass). A module outside the children, or a callable in the place of the
    class's own method, is refused in a model read from a file; ordinary models are not (and
    code that builds a model, explain's Keras wrapper, may keep modules in attributes)."""
    huge = nn.Sequential(nn.Upsample(size=(32768, 32768)), nn.AdaptiveAvgPool2d(4))
    path = tmp_path / "hidden.pth"
    torch.save(_hidden(huge), path)
    loaded = safe_load(path)  # allow-listed classes only: torch's safe loader takes it
    assert structure_problem(loaded) is None  # the usual structure...
    assert hidden_modules(loaded) == \
        "'0.forward' holds a torch.nn.Module outside the module's children"
    inside = _hidden(nn.Identity())
    inside[0].__dict__.pop("forward")
    inside[0].__dict__["extras"] = [{"deep": nn.Linear(2, 2)}]  # in a container too
    assert hidden_modules(inside) == \
        "'0.extras' holds a torch.nn.Module outside the module's children"
    assert hidden_modules(_hidden(nn.ReLU)) == \
        "'0.forward' replaces the class's own 'forward' with a type"
    partial = _hidden(functools.partial(nn.Linear, 20000, 20000))
    assert "'0.forward' holds a functools.partial" in structure_problem(partial)
    activation = nn.TransformerEncoderLayer(8, 2)  # a function as a plain attribute: fine
    assert hidden_modules(activation) is None and hidden_modules(tiny_net()) is None
    refused(capsys, tiny_config(tmp_path, {"file": str(path)}), "--quiet",
            needles=["hidden.pth: refused to load", "'0.forward' holds a torch.nn.Module",
                     "model.trust: true"])


def test_an_atlas_state_of_other_settings_is_not_built(tmp_path):
    """--resume read the atlas state's header and built heaps of its ``n`` before comparing
    it with the run (n = 400,000: 2.95 GB; 10^12: a MemoryError traceback). The header is
    compared with the run's settings first; a state of other settings is one error, which
    --resume turns into a note (the atlas rebuilt from the kept images' parts)."""
    import json
    from explain.channels.atlas import AtlasState, unzip, zip_bytes
    from explain.errors import ExplainError
    run_state = AtlasState(6, 3, top_k=2, crop=1, seed=0)
    header, arrays = unzip(run_state.to_bytes())
    assert AtlasState.from_bytes(zip_bytes(header, arrays), "s", run_state).to_bytes() == \
        run_state.to_bytes()
    for field, value in (("n", 10**12), ("channels", 10**9), ("ks", [1, 2])):
        tampered = zip_bytes({**header, field: value}, arrays)
        with pytest.raises(ExplainError, match=r"^state.zip: not an atlas state of this explain "
                                               r"version \(made with other settings"):
            AtlasState.from_bytes(tampered, "state.zip", run_state)
    assert json.loads(json.dumps(run_state.settings())) == run_state.settings()


def test_a_small_file_read_back_asks_for_its_size_not_the_limit(tmp_path):
    """RunFolder.read_bytes asked read() for its whole limit (4 GiB for the atlas state), which
    Python allocates up front: a MemoryError on a 1 KB file under an 8 GB address-space cap."""
    from explain.outputs import RunFolder
    run = RunFolder(tmp_path)
    (tmp_path / "state.zip").write_bytes(b"x" * 1000)
    with memory_peak() as peak:
        assert run.read_bytes("state.zip", 256 << 20) == b"x" * 1000
    assert peak[0] < 1 << 20, peak  # was 256 MiB: the limit


def test_the_meta_warm_up_thread_is_waited_for_at_exit():
    """A config error found while torch's meta set-up ran on a daemon thread ended the
    process under it: a traceback from the thread, or an abort (exit 134, not 2)."""
    from explain.models.guard import meta_warm_up
    thread = meta_warm_up()
    assert not thread.daemon
    thread.join()


def test_a_label_map_must_be_a_png(tmp_path):
    """Label maps were opened by content with Pillow: a progressive JPEG of repeated scans named
    .png decoded every scan (2,000 scans at 4 MP: 5.6 s a map, unbounded above). A label map
    is a PNG (lossless, as class indices must be)."""
    from types import SimpleNamespace
    from test_attack5 import _progressive
    from explain.config import Preprocess
    from explain.errors import ExplainError
    from explain.tasks.masks import _opened
    cfg = SimpleNamespace(preprocess=Preprocess())
    bomb = tmp_path / "both.png"
    bomb.write_bytes(_progressive(tmp_path, 200).path.read_bytes())
    with pytest.raises(ExplainError, match=r"both.png: a JPEG file; a label map is a PNG"):
        _opened(bomb, cfg)
    good = tmp_path / "cat.png"
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(good)
    assert np.asarray(_opened(good, cfg)).tolist() == np.arange(12).reshape(3, 4).tolist()


def _tiff_of_one_strip(strip: bytes, side: int) -> bytes:
    """A grey side x side TIFF whose one strip is the JPEG ``strip`` (Compression 7)."""
    import struct
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 7), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, side), (279, 4, len(strip))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        out += struct.pack("<HHIHH", tag, kind, 1, value, 0) if kind == 3 else \
            struct.pack("<HHII", tag, kind, 1, value)
    return out + b"\x00\x00\x00\x00" + strip


def test_a_bad_tiff_is_one_line_without_the_libraries_own(tmp_path, capfd):
    """libtiff refuses a JPEG strip of 200 scans (its own limit is 100), and OpenCV printed
    five [ WARN ] / [ERROR] lines about it on the terminal: only explain's line is left."""
    from test_attack5 import _progressive
    from explain.images.reading import ImageError, read_rgb
    path = tmp_path / "scan.tif"
    path.write_bytes(_tiff_of_one_strip(_progressive(tmp_path, 200).path.read_bytes(), 64))
    capfd.readouterr()
    with pytest.raises(ImageError, match="scan.tif: corrupt or unsupported image data"):
        read_rgb(path, 10**6)
    err = capfd.readouterr().err
    assert "WARN" not in err and "ERROR" not in err and "TIFF" not in err, err


def test_a_pass_of_too_much_work_is_refused_on_the_meta_device():
    """A 4 KB file: Conv2d, Upsample to 2048^2, AvgPool2d(1024, stride=1): 70 MB of outputs
    (within the memory bound), 3.3e12 window reads, hours inside one kernel that Ctrl-C
    cannot stop. The shapes-only pass counts the work; ordinary networks are far below."""
    import torchvision
    from explain.models.guard import MAX_WORK, forward_size_problem, module_work
    x = torch.rand(1, 3, 16, 16)
    pool = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Upsample(size=(2048, 2048)),
                         nn.AvgPool2d(1024, stride=1), nn.Flatten())
    assert forward_size_problem(pool, x, 2**40) == \
        f"over {MAX_WORK:.0e} multiply-adds for one image (hours on a CPU), at AvgPool2d"
    assert module_work(nn.AvgPool2d(3), torch.empty(1, 2, 4, 4, device="meta")) == 32 * 9 * 10
    resnet = torchvision.models.resnet18()
    assert forward_size_problem(resnet, torch.rand(8, 3, 448, 448), 2**40) is None


def test_a_fixed_batch_size_is_bounded_as_a_batch(tmp_path, capsys, monkeypatch):
    """The bound sized one image while the engine runs batch_size of them (an allow-listed
    resnet50 at 768 px: 145 MB an image, 1024 allowed: about 148 GB)."""
    from explain import plan
    torch.save(tiny_net(), tmp_path / "m.pth")
    from conftest import IMAGES
    pics = [str(IMAGES / "cat.jpg")] * 1 + [str(IMAGES / "dog.jpg"), str(IMAGES / "both.jpg")]
    config = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, batch_size=64,
                         images=pics, classes={"a": 0, "b": 1})
    one = []
    real = plan.forward_size_problem
    monkeypatch.setattr(plan, "forward_size_problem",
                        lambda model, x, limit: one.append(len(x)) or real(model, x, limit))
    monkeypatch.setattr(plan, "available", lambda device: 2 * 40_000)  # ~ 2 images' outputs
    refused(capsys, config, "--quiet", needles=[
        "model: its forward pass on a batch of 3 like cat is too large to run here: its "
        "modules' outputs for a batch of 3 images", "batch_size", "model.trust: true"])
    assert one == [3]  # batch_size 64, 3 images: batches of 3
    code, err, _ = cli(capsys, config, "--quiet", "--set", "batch_size=1",
                       "--out", tmp_path / "one")
    assert code == 0 and one == [3, 1], err  # one image at a time fits


def test_a_network_explain_load_model_read_is_bounded_in_explain_cam(tmp_path, monkeypatch):
    """explain.load_model + explain.cam (the README's notebook recipe) skipped the bound the
    command line applies to the same file and config (12.9 GB asked)."""
    import explain
    from conftest import IMAGES
    from explain import plan
    monkeypatch.setattr(plan, "available", lambda device: 2 << 30)  # this machine's free: 2 GiB
    big = nn.Sequential(nn.Upsample(size=(16384, 16384)), nn.Conv2d(3, 8, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    torch.save(big, tmp_path / "big.pth")
    config = tiny_config(tmp_path, {"file": str(tmp_path / "big.pth")}, target_layers=["1"])
    net = explain.load_model(config)
    with pytest.raises(explain.ExplainError, match="model: its forward pass on cat is too "
                                                   "large to run here"):
        explain.cam(net, IMAGES / "cat.jpg", "1", ["gradcam"], preprocess={"size": [16, 16]})
    own = tiny_net()  # a network the notebook built itself is the user's own: not bounded
    assert explain.cam(own, IMAGES / "cat.jpg", "auto", ["gradcam"], preprocess={"size": [16, 16]}) is not None


def test_a_record_file_of_many_bad_elements_stops_at_the_first(tmp_path):
    """pydantic made one error, with its input, for each bad element: a 16 MB summary.json of
    empty lists took 7.3 GB and 48 s, a 4 MB item file 3.2 GB (and 48 MB aborted inside
    pydantic-core). Lists and mappings stop at their first error now, and a file that is
    mostly lists and objects is refused before it is parsed."""
    import json
    from pydantic import ValidationError
    from explain.errors import ExplainError
    from explain.recordfiles import parse_item, parse_json, validated
    from explain.results import RunSummary
    ints = {"format": 2, "notes": [1] * 200_000, "probabilities": {f"k{i}": [] for i in
                                                                   range(50_000)}}
    with pytest.raises(ValidationError) as info:
        validated(RunSummary, ints)
    assert info.value.error_count() < 20  # was 250,000
    with pytest.raises(ValidationError) as info:  # compare: validated in a validator of its own
        validated(RunSummary, {"format": 2, "compare": {"verdicts": [1] * 200_000}})
    assert info.value.error_count() < 20 and "compare.verdicts: 200000 entries" in str(info.value)
    bomb = b'{"format": 2, "notes": [' + b"[]," * 700_000 + b"[]]}"
    with pytest.raises(ExplainError, match=r"s.json: not a summary of this explain version "
                                           r"\(more lists and objects than such a file holds"):
        parse_json(bomb, "s.json", "a summary")
    with pytest.raises(ExplainError, match="more lists and objects"):
        parse_item(bomb, "items/cat.json")
    honest = json.dumps({"notes": ["a note of some length"] * 60_000}).encode()
    assert len(honest) > 1 << 20 and parse_json(honest, "s.json", "a summary")["notes"]


def test_a_later_photo_larger_than_the_first_is_bounded_before_its_batch(tmp_path, capsys,
                                                                         monkeypatch):
    """The bound sized a batch of the first image only: with the aspect kept, a later
    16 x 256 photo asks 16 times as much of the same model, and was run unchecked. Each batch
    larger than any bounded so far is sized before its pass (in the command line and in
    explain.cam for a network explain.load_model read); smaller ones are not sized again."""
    import explain
    from explain import plan
    torch.save(tiny_net(), tmp_path / "m.pth")
    small, wide = tmp_path / "small.png", tmp_path / "wide.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(small)
    Image.new("RGB", (512, 32), (40, 200, 40)).save(wide)
    config = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, batch_size=1,
                         images=[str(small), str(small), str(wide)], preprocess={"size": 16},
                         classes={"a": 0, "b": 1})
    sized = []
    real = plan.forward_size_problem

    def bound(model, x, limit):  # room for 16 x 32 inputs (a multiple of 32), not 16 x 256
        sized.append(tuple(x.shape))
        return "too wide for this test" if x[0].numel() > 3 * 16 * 64 else real(model, x, limit)
    monkeypatch.setattr(plan, "forward_size_problem", bound)
    refused(capsys, config, "--quiet", needles=[
        "model: its forward pass on wide is too large to run here: too wide for this test",
        "preprocess.size"])
    assert sized == [(1, 3, 16, 32), (1, 3, 16, 256)]  # the second small one: not again
    net = explain.load_model(config)
    with pytest.raises(explain.ExplainError, match="forward pass on wide is too large"):
        explain.cam(net, [small, wide], "auto", ["gradcam"], preprocess={"size": 16})


def test_with_batch_size_auto_and_in_explain_cam_the_batch_run_is_the_batch_bounded(
        tmp_path, capsys, monkeypatch):
    """A review found two gaps: with batch_size: auto the bound took the resolved row count
    for sized (it had sized one image), so a later wider photo ran unchecked; explain.cam
    sized one image where its pass stacks batch_size of them."""
    import explain
    from explain import plan
    torch.save(tiny_net(), tmp_path / "m.pth")
    small, wide = tmp_path / "small.png", tmp_path / "wide.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(small)
    Image.new("RGB", (96, 32), (40, 200, 40)).save(wide)
    sized = []
    real = plan.forward_size_problem

    def bound(model, x, limit):  # room for 16 x 32 inputs, not for 16 x 96
        sized.append(tuple(x.shape))
        return "too wide for this test" if x.shape[-1] > 40 else real(model, x, limit)
    monkeypatch.setattr(plan, "forward_size_problem", bound)
    config = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, batch_size="auto",
                         images=[str(small), str(small), str(wide)], preprocess={"size": 16},
                         classes={"a": 0, "b": 1})
    refused(capsys, config, "--quiet", needles=["forward pass on wide is too large"])
    assert sized[-1][:3] == (1, 3, 16) and sized[-1][3] > 40  # auto: one image of the new
    # size, as at the start
    sized.clear()
    net = explain.load_model(config)
    explain.cam(net, [small, small], "auto", ["gradcam"], preprocess={"size": 16})
    assert sized[0] == (2, 3, 16, 32)  # the two images the pass stacks

"""The third attack on explain (a review session's findings): model files that show Python's
zipfile one pickle and torch.load another, hooks smuggled in with the weights, names whose
file names pass 255 bytes, too many boxes for one image, a zip bomb in a run's atlas state,
image ids made in quadratic time and links inside the input folders."""

from __future__ import annotations

import collections
import functools
import io
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import write_config
from explain.errors import ExplainError
from explain.models.pickles import file_problem, safe_load, saved_hooks, structure_problem


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


# ---- one file, two central directories ---------------------------------------------------------

class _Builds:
    """Pickles as a call of an allow-listed class with arguments (what the scanner refuses)."""

    def __reduce__(self):
        return (nn.Linear, (5, 5))


def _local(name: bytes, data: bytes) -> bytes:
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data),
                       len(data), len(data), len(name), 0) + name + data


def _central(name: bytes, data: bytes, offset: int) -> bytes:
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(data),
                       len(data), len(data), len(name), 0, 0, 0, 0, 0, offset) + name


def two_faced(honest: bytes, hostile_pickle: bytes) -> bytes:
    """A stored (uncompressed) zip with two central directories of the same length. The end
    record points at directory A (data.pkl = ``hostile_pickle``), which a reader that trusts
    the stated offset (torch's) uses; Python's zipfile finds directory B right before the end
    record, takes the difference for bytes prepended to the archive, and reads the honest
    records through it."""
    records = [(i.filename.encode(), zipfile.ZipFile(io.BytesIO(honest)).read(i))
               for i in zipfile.ZipFile(io.BytesIO(honest)).infolist()]
    hostile = [(n, hostile_pickle if n.endswith(b"/data.pkl") else d) for n, d in records]
    body, at_hostile, at_honest = bytearray(), [], []
    for entries, offsets in ((hostile, at_hostile), (records, at_honest)):
        for name, data in entries:
            offsets.append(len(body))
            body += _local(name, data)
    dir_a = b"".join(_central(n, d, o) for (n, d), o in zip(hostile, at_hostile))
    shift = len(dir_a)  # what zipfile will add to every offset of directory B
    assert at_honest[0] >= shift
    dir_b = b"".join(_central(n, d, o - shift) for (n, d), o in zip(records, at_honest))
    assert len(dir_b) == len(dir_a)
    start_a = len(body)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records), len(dir_a),
                      start_a, 0)
    return bytes(body + dir_a + dir_b + end)


def test_the_pickle_checked_is_the_one_torch_loads(tmp_path):
    honest = io.BytesIO()
    torch.save(tiny_net(), honest)
    path = tmp_path / "two_faced.pth"
    path.write_bytes(two_faced(honest.getvalue(), pickle.dumps(_Builds(), protocol=2)))
    # the trick is real: Python's zipfile sees the honest pickle, torch's reader the other
    python_view = zipfile.ZipFile(path).read("archive/data.pkl")
    with open(path, "rb") as f:
        torch_view = torch._C.PyTorchFileReader(f).get_record("data.pkl")
    assert b"Linear" not in python_view.split(b"Sequential")[0] and b"Sequential" in python_view
    assert b"Linear" in torch_view and b"Sequential" not in torch_view
    assert file_problem(path, set()) == "calls torch.nn.modules.linear.Linear(...) while loading"
    with pytest.raises(ExplainError, match="refused to load: the file calls torch.nn.modules"):
        safe_load(path)


def test_an_honest_archive_still_loads(tmp_path):
    path = tmp_path / "honest.pth"
    torch.save(tiny_net(), path)
    assert file_problem(path, set()) is None
    model = safe_load(path)
    assert structure_problem(model) is None and saved_hooks(model) is None
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(model(x), tiny_net()(x))


# ---- hooks that come with the weights ----------------------------------------------------------

def _saved_with_parameter_hook(path: Path) -> None:
    """A PReLU weight saved with a backward hook: functools.partial(nn.Linear, 7, 7), which
    torch would call (building a layer of any size) when a gradient reaches the weight."""
    net = tiny_net()
    target = net[1].weight
    plain = nn.Parameter.__reduce_ex__

    def reduce_ex(self, protocol):
        if self is target:
            hooks = collections.OrderedDict({0: functools.partial(nn.Linear, 7, 7)})
            return (torch._utils._rebuild_parameter, (self.data, True, hooks))
        return plain(self, protocol)
    nn.Parameter.__reduce_ex__ = reduce_ex
    try:
        torch.save(net, path)
    finally:
        nn.Parameter.__reduce_ex__ = plain


def test_a_hook_saved_on_a_parameter_is_refused(tmp_path):
    path = tmp_path / "hooked.pth"
    _saved_with_parameter_hook(path)
    loaded = safe_load(path)  # torch's safe loader lets it through...
    assert loaded[1].weight._backward_hooks  # ...with the hook in place
    assert structure_problem(loaded) is None  # the usual structure
    assert saved_hooks(loaded) == "'1.weight' (parameter) carries _backward_hooks saved with " \
                                  "the model"


def test_a_hook_saved_on_a_module_is_refused():
    net = tiny_net()
    net[0]._forward_hooks[0] = functools.partial(nn.Linear, 7, 7)
    problem = structure_problem(net)
    assert problem is not None and problem.startswith("'0.") and "partial" in problem
    net = tiny_net()
    net[4]._forward_pre_hooks[3] = nn.ReLU  # an allow-listed class, not a partial
    assert structure_problem(net) is None
    assert saved_hooks(net) == "'4._forward_pre_hooks' holds hooks saved with the model"
    assert saved_hooks(tiny_net()) is None


def test_the_loader_refuses_the_hooked_file_but_not_trusted_code(tmp_path):
    from explain.config import load_config
    from explain.models.loading import load_model
    path = tmp_path / "hooked.pth"
    _saved_with_parameter_hook(path)
    config = write_config(tmp_path, model={"file": str(path)}, target_layers=["0"])
    with pytest.raises(ExplainError, match=r"hooked.pth: refused to load.*'1.weight' "
                                           r"\(parameter\) carries _backward_hooks"):
        load_model(load_config(config))
    trusted = write_config(tmp_path, "trusted", model={"file": str(path), "trust": True},
                           target_layers=["0"])
    assert load_model(load_config(trusted))[1].weight._backward_hooks  # the config trusts it


# ---- names within a file system's 255 bytes ------------------------------------------------

def test_names_are_bounded_in_bytes_too():
    from explain.names import MAX_NAME_BYTES, name_problem, safe_slug
    wide = "\U0001d552" * 64  # 64 characters, 256 bytes in UTF-8
    assert name_problem(wide) == f"is 256 bytes long in UTF-8; at most {MAX_NAME_BYTES}"
    assert name_problem("猫" * 32) is None and name_problem("猫" * 33) is not None
    slug = safe_slug(wide)
    assert slug == "\U0001d552" * 24 and len(slug.encode()) == 96


def test_a_class_name_too_long_in_bytes_is_refused_at_load(tmp_path):
    from explain.config import load_config
    wide = "\U0001d552" * 64
    config = write_config(tmp_path, classes={"cat": 0, wide: 1}, target_layers=["0"],
                          model={"file": str(tmp_path / "model.pth")})
    with pytest.raises(ExplainError, match=r"exp.yaml: classes: class name .* is 256 bytes long in UTF-8"):
        load_config(config)


def test_image_ids_from_long_names_fit_and_repeats_take_linear_time(tmp_path, monkeypatch):
    from explain.images import finding
    calls = []
    real = finding.fitted
    monkeypatch.setattr(finding, "fitted", lambda base, suffix="": calls.append(suffix) or
                        real(base, suffix))
    long_stem = "猫" * 60  # 180 bytes
    paths = [(tmp_path / "d" / f"{long_stem}{suffix}", True, None)
             for suffix in (".jpg", ".png", ".webp")]
    paths += [(tmp_path / f"q{i}" / "x" / "!#.jpg", True, None) for i in range(400)]
    refs = finding._with_ids(paths)
    ids = [r.id for r in refs]
    # a repeated name takes its folder's name first ('d_猫...'), then a number
    assert ids[:3] == ["猫" * 32, "d_" + "猫" * 31, "猫" * 31 + "-2"]
    assert all(len(i.encode()) <= 96 for i in ids)
    assert ids[3:] == ["image", "x"] + [f"image-{n}" for n in range(2, 400)]
    assert len(calls) == 1 + 398  # one name made per repeat, not one per earlier repeat


# ---- boxes, atlas state, links, lock file -------------------------------------------------------

def test_too_many_boxes_for_one_image_is_one_line(tmp_path):
    from explain.annotations import MAX_BOXES_PER_IMAGE
    from explain.config import load_config
    from explain.annotations import load_boxes
    rows = ["image,class,x0,y0,x1,y1"] + ["cat.jpg,cat,1,1,5,5"] * (MAX_BOXES_PER_IMAGE + 1)
    rows += ["dog.jpg,dog,1,1,5,5"] * MAX_BOXES_PER_IMAGE  # at the limit: fine
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("\n".join(rows) + "\n")
    config = write_config(tmp_path, annotations={"file": str(boxes)}, target_layers=["0"],
                          model={"file": str(tmp_path / "model.pth")})
    with pytest.raises(ExplainError, match=rf"boxes.csv: line {MAX_BOXES_PER_IMAGE + 2}: more "
                                           rf"than {MAX_BOXES_PER_IMAGE} boxes for the image "
                                           rf"'cat.jpg'"):
        load_boxes(load_config(config))
    boxes.write_text("\n".join(rows[:2] + rows[-MAX_BOXES_PER_IMAGE:]) + "\n")
    assert len(load_boxes(load_config(config))) == 1 + MAX_BOXES_PER_IMAGE


def test_a_compressed_atlas_member_is_refused_before_it_is_inflated():
    import numpy as np
    from explain.channels.atlas import unzip, zip_bytes
    stored = zip_bytes({"id": "x"}, {"activation": np.zeros((4, 3))})
    header, arrays = unzip(stored)
    assert header == {"id": "x"} and arrays["activation"].shape == (4, 3)
    squeezed = io.BytesIO()  # the same members, deflated: 1 MiB of zeros in about 1 KB
    with zipfile.ZipFile(squeezed, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("header.json", b'{"id": "x"}')
        buf = io.BytesIO()
        np.save(buf, np.zeros(2**17))
        z.writestr("activation.npy", buf.getvalue())
    assert len(squeezed.getvalue()) < 4096
    with pytest.raises(ValueError, match="'header.json' is compressed"):
        unzip(squeezed.getvalue())


def test_links_in_reference_and_box_folders_are_not_followed(tmp_path):
    import numpy as np
    from explain.annotations import read_box_file
    from explain.referencefiles import check_references, find_reference
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "private.npy", np.ones((4, 4)))
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "cat__cat__gradcam.npy").symlink_to(outside / "private.npy")
    np.save(refs / "dog__dog__gradcam.npy", np.ones((4, 4)))
    assert find_reference(refs, "cat", "cat", "gradcam") is None
    assert find_reference(refs, "dog", "dog", "gradcam") == refs / "dog__dog__gradcam.npy"
    (outside / "bad.npy").write_bytes(b"not an array")
    (refs / "cow__cat__gradcam.npy").symlink_to(outside / "bad.npy")
    check_references(refs, ["cat", "dog", "cow"], ["cat", "dog"], ["gradcam"])  # link skipped
    voc = tmp_path / "voc"
    voc.mkdir()
    xml = ("<annotation><filename>{}</filename><size><width>10</width><height>10</height>"
           "</size><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
           "<ymax>5</ymax></bndbox></object></annotation>")
    (outside / "secret.xml").write_text(xml.format("secret.jpg"))
    (voc / "secret.xml").symlink_to(outside / "secret.xml")
    (voc / "cat.xml").write_text(xml.format("cat.jpg"))
    assert [b.image for b in read_box_file(voc, ["cat", "dog"])] == ["cat.jpg"]


def test_a_planted_fifo_lock_is_one_line_naming_it(tmp_path):
    import os
    from explain.runlock import LOCK_FILE, RunLock
    os.mkfifo(tmp_path / LOCK_FILE)
    with pytest.raises(ExplainError, match=rf"--resume: {tmp_path / LOCK_FILE} is not a lock "
                                           rf"file explain wrote"):
        RunLock.take(tmp_path, "--resume")

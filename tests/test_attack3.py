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

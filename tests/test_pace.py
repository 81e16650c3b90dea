"""A run at the engine's pace: mixed precision (explain.precision), the per-channel methods'
estimate (explain.pace) and the engine's time per method."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from helpers import cpu_engine, engine_maps, one_line
from test_shared_passes import images, small_net

from explain.config import MethodSpec
from explain.errors import ExplainError


def test_bf16_maps_are_close_to_fp32_on_cpu():
    net = small_net()
    x = images()
    methods = ["gradcam", "layercam", {"name": "scorecam", "batch_size": 4}]
    fp32 = engine_maps(net, net[2], methods, x, [0, 1])
    bf16 = engine_maps(net, net[2], methods, x, [0, 1], precision="bf16")
    for name in fp32:
        diff = np.abs(fp32[name] - bf16[name])
        assert bf16[name].dtype == np.float32 and np.isfinite(bf16[name]).all()
        assert diff.max() < 0.15 and diff.mean() < 0.03, name
    # not vacuous: bf16 does change the gradient maps (the forward ran in bfloat16)
    assert np.abs(fp32["gradcam"] - bf16["gradcam"]).max() > 1e-6


def test_bf16_runs_the_scorecam_passes_under_autocast():
    seen = []
    net = small_net()
    net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    engine_maps(net, net[2], [{"name": "scorecam", "batch_size": 4}], images(1), [0],
                precision="bf16")
    assert torch.bfloat16 in seen and seen.count(torch.bfloat16) >= 10 // 4


def test_fp16_on_cpu_is_one_line():
    net = small_net()
    with pytest.raises(ExplainError) as err:
        with cpu_engine(net, [net[2]], ["gradcam"], precision="fp16"):
            pass
    assert one_line(err, "precision: fp16 runs on CUDA only", "bf16 or fp32")


class NumpyHead(nn.Module):
    """A model whose forward goes through numpy: it cannot run in bfloat16."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        a = self.conv(x)
        pooled = torch.from_numpy(a.mean((2, 3)).detach().numpy()) + a.mean((2, 3)) * 0
        return self.fc(pooled)


def test_a_model_that_fails_under_bf16_is_one_line():
    net = NumpyHead().eval()
    x = torch.rand(1, 3, 12, 12)
    with cpu_engine(net, [net.conv], ["gradcam"]) as engine:  # fp32: fine
        engine.probe(x)
    with pytest.raises(ExplainError) as err:
        with cpu_engine(net, [net.conv], ["gradcam"], precision="bf16") as engine:
            engine.probe(x)
    assert one_line(err, "precision: the model fails under bf16 autocast", "precision: fp32")


def fake_plan(methods, images: int, slots: int, channels: int = 10, aug: bool = False):
    cfg = SimpleNamespace(methods=[MethodSpec.model_validate(m) for m in methods],
                          aug_smooth=aug, target_layers=["2"])
    layer = SimpleNamespace(channels=channels)
    return SimpleNamespace(cfg=cfg, target_layers=[layer], images=[None] * images, slots=slots)


def test_estimate_counts_passes_shared_by_the_classes():
    from explain.pace import cost_line, per_channel_costs
    plan = fake_plan(["gradcam", "scorecam", {"name": "ablationcam",
                                              "ratio_channels_to_ablate": 0.25}], 3, 2, 320)
    costs = per_channel_costs(plan, per_pass=0.01)
    # AblationCAM at a ratio r: the library ablates 2 x int(C x r) channels
    assert [(c.method, c.channels, c.passes) for c in costs] == [
        ("scorecam", 320, 960), ("ablationcam", 160, 480)]
    assert costs[0].seconds == pytest.approx(9.6)
    assert cost_line(costs[0], ["b.15"], 2) == (
        "estimate: scorecam runs one forward pass per channel (320 in b.15) for each image, "
        "shared by its 2 classes: 960 passes, about 10 s")
    assert cost_line(costs[1], ["b.15"], 2) == (  # not 'one pass per channel (160 in b.15)'
        "estimate: ablationcam runs 160 forward passes, ablating the 80 channels that matter "
        "most and as many that matter least of the 320 in b.15, for each image, shared by its "
        "2 classes: 480 passes, about 5 s")
    assert per_channel_costs(fake_plan(["scorecam"], 3, 2, 320, aug=True), 0.01)[0].passes \
        == 6 * 960


def test_estimate_times_a_pass_of_the_first_image_and_the_engine_times_each_method():
    from explain.pace import per_channel_costs
    net = small_net()
    x = images(2)
    plan = fake_plan([{"name": "scorecam", "batch_size": 4}], 2, 2)
    plan.first, plan.device, plan.model = SimpleNamespace(tensor=x[0]), torch.device("cpu"), net
    plan.timed = {}
    cost = per_channel_costs(plan)[0]
    assert cost.passes == 20 and 0 < cost.seconds < 5
    # timed once per plan: the sanity estimate asks again and gets the same seconds
    assert list(plan.timed) == [4] and per_channel_costs(plan)[0].seconds == cost.seconds
    with cpu_engine(net, [net[2]], ["gradcam", {"name": "scorecam", "batch_size": 4}]) as engine:
        engine.run(x, [0, 1], [0, 1])
        assert set(engine.seconds) == {"scorecam"} and engine.seconds["scorecam"] > 0


def test_the_config_types_of_precision_and_batch_size():
    from pydantic import TypeAdapter, ValidationError
    from explain.config.sections import BatchSize, Precision
    assert [TypeAdapter(Precision).validate_python(v) for v in ("fp32", "bf16", "fp16")] == \
        ["fp32", "bf16", "fp16"]
    assert [TypeAdapter(BatchSize).validate_python(v) for v in (1, 64, "auto")] == [1, 64, "auto"]
    for bad, kind in (("fp8", Precision), (0, BatchSize), ("big", BatchSize), (2.0, BatchSize)):
        with pytest.raises(ValidationError):
            TypeAdapter(kind).validate_python(bad)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_bf16_per_channel_maps_are_close_to_fp32(method):
    net = small_net()
    x = images(2)
    spec = [{"name": method, "batch_size": 4}]
    fp32 = engine_maps(net, net[2], spec, x, [0, 1])[method]
    bf16 = engine_maps(net, net[2], spec, x, [0, 1], precision="bf16")[method]
    assert np.abs(fp32 - bf16).mean() < 0.05 and np.abs(fp32 - bf16).max() > 1e-6


def test_a_run_takes_precision_and_batch_size_auto_from_its_config(tmp_path, capsys):
    """Through the CLI: ``batch_size: auto`` becomes a number the summary's config lists (with
    a note), ``precision: bf16`` gives maps close to fp32's, fp16 on a CPU is one line and
    writes nothing."""
    import json

    from helpers import cli, tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "m.pth")
    model = {"file": str(tmp_path / "m.pth")}
    maps = {}
    for stem, fields in (("fp32", {}), ("bf16", {"precision": "bf16", "batch_size": "auto"})):
        path = tiny_config(tmp_path, model, stem, methods=["gradcam"], classes={"a": 0, "b": 1},
                           output={"dir": str(tmp_path / "results"), "save_arrays": True},
                           **fields)
        code, err, _ = cli(capsys, path)
        assert code == 0, err
        folder = tmp_path / "results" / stem
        summary = json.loads((folder / "summary.json").read_text())
        maps[stem] = np.load(folder / summary["images"][0]["cams"][0]["files"]["array"])
        if stem == "bf16":
            assert isinstance(summary["config"]["batch_size"], int)
            assert summary["config"]["batch_size"] >= 1
            assert summary["config"]["precision"] == "bf16"
            assert any(n.startswith("batch_size: auto chose") for n in summary["notes"])
    diff = np.abs(maps["fp32"] - maps["bf16"])
    assert diff.max() < 0.15 and diff.max() > 0  # bf16 did run, and stays close
    path = tiny_config(tmp_path, model, "fp16", precision="fp16")
    code, err, _ = cli(capsys, path)
    assert code == 2 and one_line(err, "fp16")
    assert not (tmp_path / "results" / "fp16").exists()

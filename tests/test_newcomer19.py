"""Newcomer round 19: a labelled ResNet-18 study at 64 px, single process and torchrun."""
import time
from types import SimpleNamespace

import torch
from torch import nn

from explain import metrics
from explain.config import load_config
from explain.models.heads import Head
from helpers import tiny_config


class SlowChannelsLast(nn.Module):
    """A small classifier whose channels-last batches take 20 ms a pass (as ResNet-18's took
    about twice a contiguous batch's time at 64 x 64 on a CPU), contiguous ones no time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            time.sleep(0.02)
        return self.fc(self.conv(x).mean((2, 3)))


def _estimate(tmp_path, model: nn.Module) -> tuple[str, float]:
    from explain.writers.metrics import _faithfulness_estimate
    cfg = load_config(tiny_config(tmp_path, {"file": "m.pth"}, methods=["gradcam", "layercam"],
                                  metrics=["road_combined"]))
    plan = SimpleNamespace(cfg=cfg, slots=1, model=model.eval(), head=Head(),
                           device=torch.device("cpu"),
                           first=SimpleNamespace(tensor=torch.rand(3, 16, 16)))
    return _faithfulness_estimate(plan, list(cfg.metrics), images=1)


def test_the_faithfulness_estimate_times_road_passes_channels_last_as_road_runs_them(tmp_path):
    """ROAD passes its imputed images channels-last (explain.road.Forward); the estimate timed
    contiguous batches, and said 'about 25 s' for a ResNet-18's 81 s at 64 x 64. 2 maps and 3
    baseline maps x 19 passes of a batch of 4 copies at 20 ms: at least 0.45 s."""
    line, seconds = _estimate(tmp_path, SlowChannelsLast())
    assert "; 2 maps and 3 baseline maps, " in line
    assert seconds > 0.45, (seconds, line)


def test_road_solves_on_one_thread_are_priced_twice_as_long(tmp_path):
    """torchrun gives each process one torch thread, so ROAD solves on one thread: the
    estimate's per-pixel figure is for two (at 16 x 16: 18 x 256 px, 2 ms a map on two)."""
    assert metrics.road_seconds_per_pixel(1) == 2 * metrics.ROAD_SECONDS_PER_PIXEL
    assert metrics.road_seconds_per_pixel(2) == metrics.road_seconds_per_pixel(8) \
        == metrics.ROAD_SECONDS_PER_PIXEL
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = _estimate(tmp_path, SlowChannelsLast())
        torch.set_num_threads(2)
        two, _ = _estimate(tmp_path, SlowChannelsLast())
    finally:
        torch.set_num_threads(threads)
    assert "each a sparse solve (about 5 ms per map at 16 x 16" in one, one
    assert "each a sparse solve (about 2 ms per map at 16 x 16" in two, two


def test_an_unfinished_runs_rebuilt_report_names_no_config_path(tmp_path):
    """`explain report` on an interrupted run: its Run table said 'config file
    .../(unfinished run)', a path's tail made of the placeholder; now '(unfinished run)'."""
    from explain.runner import RunOptions, run
    from explain.writers.report import rebuild
    from helpers import tiny_net
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": str(tmp_path / "m.pth")}, metrics=[],
                       classes={"a": 0, "b": 1},
                       output={"dir": str(tmp_path / "out")})
    run(load_config(path), RunOptions(progress=False, log=lambda _: None))
    folder = tmp_path / "out" / "exp"
    (folder / "summary.json").unlink()  # as an interrupted run leaves it
    rebuild(folder)
    page = (folder / "report.html").read_text()
    assert '<th>config file</th><td class="path">(unfinished run)</td>' in page
    assert ".../(unfinished run)" not in page

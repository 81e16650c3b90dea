"""The Python API: explain from a notebook or a script (exported by ``explain``).

- ``run(config, **overrides) -> Run`` and ``load(run_dir) -> Run``: a study as the command
  line runs it, or one already in a folder (explain.api.runs);
- ``cam(model, images, layer, ...)`` and ``channel_maps(model, image, layer, ...)``: the
  engine on a network already in memory (explain.api.memory, explain.api.channelmaps);
- ``load_model(config)``: the network a config names, loaded safely.

Nothing here imports torch until a function needs it, so ``import explain`` stays fast.
Every user error is an ``explain.ExplainError`` with the command line's one-line message.
"""

from explain.api.channelmaps import ChannelMaps, channel_maps
from explain.api.memory import CamBatch, CamResult, cam
from explain.api.runs import Run, load, load_model, run

__all__ = ["run", "load", "load_model", "cam", "channel_maps", "Run", "CamResult", "CamBatch",
           "ChannelMaps"]

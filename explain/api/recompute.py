"""Maps of a run made in this process, computed again when the run saved no arrays.

``Run.map`` reads the map's saved array (its record's ``files.array``) when
``output.save_arrays`` was on.
Without them, a Run that ``explain.run`` returned in this process still holds the run's
resolved config (never one read back from a folder: a summary.json names paths and code, and
is not trusted), so the map can be made again: the model is loaded once more (then kept by
the Run), the image's batch is rebuilt as the run built it (its chunk of ``batch_size``
images in config order, the images of its input size) and explained by the same engine. For
a run made in one go that is the same batch, so the same numbers as the run's; after
``resume`` or under torchrun a batch can differ, and with it a map's last float bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from explain.errors import ExplainError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from explain.config import Config


class Recomputer:
    """The maps of one run's images, made again from its config on demand (cached)."""

    def __init__(self, cfg: "Config"):
        self.cfg = cfg  # the run's resolved config (layer names, classes), its source kept
        self.net: Optional["nn.Module"] = None
        self.maps: dict[str, dict[tuple[str, str], "np.ndarray"]] = {}

    def map(self, image: str, cls: str, method: str) -> "np.ndarray":
        """The map of ``image`` x ``cls`` x ``method``, float32 (H, W) in 0..1."""
        if image not in self.maps:
            self._compute(image)
        found = self.maps[image].get((cls, method))
        if found is None:
            raise ExplainError(f"{image}: computed again, the run's engine gave no map of "
                               f"{cls!r} by {method!r}")
        return found.copy()

    def _batch(self, image: str) -> list:
        """The images that shared ``image``'s batch in the run, decoded."""
        from explain.images import ImageError, batches, find_images, group_by_shape, prepare
        refs, _ = find_images(self.cfg)
        chunk = next((c for c in batches(refs, self.cfg.batch_size)
                      if any(ref.id == image for ref in c)), None)
        if chunk is None:
            raise ExplainError(f"{image}: the config's images no longer include it, so its map "
                               f"cannot be made again; set output.save_arrays: true to keep maps")
        items = []
        for ref in chunk:
            try:
                items.append(prepare(ref, self.cfg.preprocess))
            except ImageError:
                if ref.id == image:
                    raise
        return next(group for group in group_by_shape(items)
                    if any(item.ref.id == image for item in group))

    def _compute(self, image: str) -> None:
        import numpy as np

        from explain.api.memory import explained, session
        from explain.models.loading import load_model
        if self.cfg.task != "classification":
            raise ExplainError(f"{image}: the maps of a task: {self.cfg.task} run are not made "
                               f"again in memory; run it with output.save_arrays: true")
        group = self._batch(image)
        if self.net is None:
            self.net = load_model(self.cfg)
        with session(self.net, self.cfg, group, False) as (cfg, engine, head):
            for item, result, b, _ in list(explained(engine, cfg, head, group)):
                self.maps[item.ref.id] = {(one.class_name, one.method):
                                          np.array(one.cam, dtype=np.float32)
                                          for one in result.per_image[b]}

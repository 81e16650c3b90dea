"""The ``channels:`` section: the per-channel views, the channel atlas and the ablation
(explain.channels; docs/channels.md)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import Field, StrictBool, StrictStr, field_validator, model_validator

from explain.config.sections import Int, Section
from explain.names import quote, suggest


class Atlas(Section):
    """channels.atlas: the channel layer across the whole run (explain.channels.atlas): per
    channel the ``top_n`` image regions that activate it most and, per class x channel-sum
    method, that contribute most; per class x method the ``channels`` channels that carry the
    class (its fingerprint), on report/atlas.html with a picture each. A region is a crop of
    ``crop`` x ``crop`` cells of the layer's map (a cell: the layer's stride in input pixels)
    centred on the peak."""
    enabled: StrictBool = False
    top_n: Int = Field(8, ge=1, le=64)
    channels: Int = Field(16, ge=1, le=256)
    crop: Int = Field(3, ge=1, le=16)


class Ablation(Section):
    """channels.ablation: each map's class score after zeroing its ``k`` top channels by
    contribution at the channel layer, against ``k`` random channels (``draws`` draws, seeded)
    and the ``k`` lowest (explain.channels.ablation)."""
    enabled: StrictBool = False
    k: Annotated[list[Annotated[Int, Field(ge=1, le=8192)]],
                 Field(min_length=1, max_length=8)] = Field(default_factory=lambda: [1, 4, 16])
    draws: Int = Field(3, ge=1, le=32)

    @field_validator("k")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        twice = sorted({n for n in v if v.count(n) > 1})
        if twice:
            raise ValueError(f"{twice[0]} is listed twice (each k once)")
        return sorted(v)


class Channels(Section):
    """Per-channel views of the channel layer (see explain.channels and docs/channels.md).

    Every size here is bounded before anything is drawn; the writer also scales tiles down when
    a layer has so many channels that a picture would pass its pixel budget."""
    enabled: StrictBool = False
    layer: Optional[StrictStr] = None
    shared_scale: StrictBool = True   # activation grid: one scale for all tiles (false: per tile)
    colormap: Optional[StrictStr] = None  # activation grid (matplotlib name); null: viridis,
    #                                       or PuOr_r centred at 0 when activations have both signs
    labels: StrictBool = True         # channel numbers (and weights / shares) above the tiles
    tile_size: Int = Field(48, ge=4, le=256)  # tile height in the grids, pixels
    top_k: Int = Field(16, ge=1, le=256)      # channels in the top-channels / contrast figures
    # The figures: true, false, or null: only for runs of at most 50 images (at scale they are a
    # folder nobody reads; the per-channel CSVs, the maps' channel numbers and the atlas are
    # written either way). grids: per-image activation and contribution grids; top: the
    # top-channels figure per map; contrast: the class-contrast figure when an image has two
    grids: Optional[StrictBool] = None
    top: Optional[StrictBool] = None
    contrast: Optional[StrictBool] = None
    atlas: Atlas = Field(default_factory=Atlas)  # the channels across the run (report/atlas.html)
    ablation: Ablation = Field(default_factory=Ablation)  # zeroing top / random / bottom channels

    @model_validator(mode="after")
    def _layer_on(self) -> "Channels":
        used = [f"channels.{n}" for n in ("atlas", "ablation") if getattr(self, n).enabled]
        if used and not self.enabled:
            raise ValueError(f"{' and '.join(used)} {'use' if len(used) > 1 else 'uses'} the "
                             f"channel layer: set channels.enabled: true (channels.grids: false "
                             f"skips the per-image grids)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, v: Any) -> Any:
        if isinstance(v, dict) and "overlay" in v:
            if v["overlay"] is not False:
                raise ValueError(
                    "'overlay' was removed: channel tiles are now drawn on one colour scale "
                    "with a colour bar, and the top-channels figure shows the photo and the "
                    "CAM beside the tiles; delete the line")
            v = {k: x for k, x in v.items() if k != "overlay"}  # 'overlay: false' changes nothing
        return v

    @field_validator("colormap")
    @classmethod
    def _colormap(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return None
        import matplotlib
        names = {n.lower(): n for n in matplotlib.colormaps}
        if v.lower() not in names:
            raise ValueError(f"unknown matplotlib colormap {quote(v)}"
                             f"{suggest(v.lower(), sorted(names))} (e.g. viridis, magma, gray)")
        return names[v.lower()]

"""``explain.channel_maps``: every channel of one layer for one image, as a run's channel views
see it (explain.channels; the pictures are a run's ``channels/`` pictures for the same image,
layer and options).

(The function is not called ``explain.channels``: that name is the module with the
per-channel math, ``from explain import channels``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from explain.api import display
from explain.api.inputs import (OPTIONS, VIEW_OPTIONS, ImageInput, Layer, check_model,
                                in_call_words, layer_names, prepared_images, settings,
                                split_targets)
from explain.api.memory import by_index, explained, session
from explain.errors import ExplainError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure
    from torch import nn

    from explain.channels import ViewOptions  # noqa: F401 (a string annotation below)

TOP_ROWS = 8  # channels listed per class in the inline display


@dataclass(frozen=True, eq=False, repr=False)
class ChannelMaps:
    """One image's channels at one layer, and how one method's map is built from them.

    ``activations``: the layer's output as (C, h, w) float32. Per explained class:
    ``gradients[cls]`` (C, h, w), ``contributions[cls]`` (C, h, w), each channel's term of the
    method's map (their sum, after ReLU and scaling, is ``cams[cls]``), ``channels[cls]`` one
    row per channel (channel, mean_activation, weight, share, zero_gradient; largest share
    first, as a run's ``__channels.csv``) and ``counts[cls]`` (channels, nonzero_gradient,
    channels_50, channels_90: how few channels hold 50% / 90% of the map). ``grid``: the
    activation picture (uint8 RGB, every channel a numbered tile on one colour scale with a
    colour bar), as a run's ``channels/<image>__activations.png``."""
    name: str
    layer: str
    method: str
    activations: "np.ndarray"
    gradients: dict[str, "np.ndarray"]
    contributions: dict[str, "np.ndarray"]
    channels: dict[str, list[dict[str, Any]]]
    counts: dict[str, dict[str, int]]
    cams: dict[str, "np.ndarray"]
    probabilities: dict[str, float]
    image: "np.ndarray"
    grid: "np.ndarray"
    options: "ViewOptions"
    top_k: int = 16

    @property
    def classes(self) -> list[str]:
        """The classes explained."""
        return list(self.contributions)

    def _title(self, cls: str = "") -> str:
        from explain import channels
        return channels.view_title(self.name, self.layer, cls, self.method if cls else "")

    def contribution_grid(self, cls: str) -> "np.ndarray":
        """Each channel's term for ``cls`` as tiles on one scale centred at zero (red adds to
        the map, blue takes away), uint8 RGB: a run's ``__contributions.png``."""
        from explain import channels
        return channels.contribution_view(self._of(cls), self._title(cls), method=self.method,
                                          options=self.options).image

    def top_view(self, cls: str) -> "np.ndarray":
        """The photo, the map, the cumulative share curve and the ``top_k`` channels with the
        largest contribution, uint8 RGB: a run's ``__top.png``."""
        from explain import channels
        self._of(cls)
        return channels.top_channels_view(self.method, self.activations, self.gradients[cls],
                                          photo=self.image, cam=self.cams[cls], k=self.top_k,
                                          title=self._title(cls), options=self.options).image

    def _of(self, cls: str) -> "np.ndarray":
        if cls not in self.contributions:
            raise ExplainError(f"class {cls!r} was not explained (classes: "
                               f"{', '.join(self.contributions)})")
        return self.contributions[cls]

    def show(self) -> "Figure":
        """A matplotlib figure of the activation grid."""
        return display.grid_figure([[(self._title(), self.grid)]], cell=9.0)

    def __repr__(self) -> str:
        c, h, w = self.activations.shape
        return (f"ChannelMaps({self.name!r}, layer {self.layer!r}, {self.method}, {c} channels "
                f"of {h} x {w}, classes {', '.join(self.classes)})")

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{display.esc(self.name)}</b> · layer {display.esc(self.layer)} · "
                 f"{len(self.activations)} channels of {self.activations.shape[1]} x "
                 f"{self.activations.shape[2]} · {display.esc(self.method)}</p>",
                 display.figure_html(display.picture_uri(self.grid), "activations")]
        for cls in self.classes:
            c = self.counts[cls]
            parts.append(f"<p><b>{display.esc(cls)}</b> (p {self.probabilities.get(cls, 0):.3f}):"
                         f" {c['nonzero_gradient']} of {c['channels']} channels with a gradient;"
                         f" {c['channels_50']} channels hold 50% of the map, "
                         f"{c['channels_90']} hold 90%</p>")
            parts.append(display.figure_html(display.picture_uri(self.contribution_grid(cls)),
                                             f"contributions to {cls}"))
            rows = [(r["channel"], display.number(r["mean_activation"]),
                     display.number(r["weight"]), f"{100 * r['share']:.1f}%")
                    for r in self.channels[cls][:TOP_ROWS]]
            parts.append(display.table_html(("channel", "mean activation", "weight", "share"),
                                            rows))
        return display.block("".join(parts))


def channel_maps(model: "nn.Module", image: ImageInput, layer: Layer, method: str = "gradcam",
                 targets: Any = None, **options: Any) -> ChannelMaps:
    """Every channel of ``layer`` for one image: activations, each channel's contribution to
    ``method``'s map per class, the per-channel numbers and the activation-grid picture, as a
    run's channel views (``channels.enabled``) make them.

    image, layer, targets and options as for ``explain.cam`` (one image only); ``method``: a
    method whose map is a sum over channels (gradcam, gradcamplusplus, xgradcam, layercam,
    hirescam, gradcamelementwise). Drawing options, as the config's ``channels`` keys:
    ``tile_size``, ``top_k``, ``shared_scale``, ``labels``, ``grid_colormap`` (a matplotlib
    colormap). Raises ExplainError as ``explain.cam`` does.

    >>> ch = explain.channel_maps(net, "images/cat.jpg", "features.10", "layercam",
    ...                           classes={"cat": 0, "dog": 1})
    >>> ch.activations.shape, ch.counts["cat"]["channels_50"]
    """
    from explain.methods import having
    where = "explain.channel_maps"
    with in_call_words({**OPTIONS, **VIEW_OPTIONS}):  # in_channels=1, not model.in_channels: 1
        check_model(model, where)
        wanted, indices = split_targets(targets)
        cfg = settings(where, layer_names(model, layer, where), [method], wanted, options,
                       views=True)
        name = cfg.methods[0].name
        if name not in having("channel_term"):
            raise ExplainError(f"{where}: method {name!r} is not a sum over channels, so it has no "
                               f"per-channel terms (channel methods: "
                               f"{', '.join(having('channel_term'))})")
        items, single = prepared_images(image, cfg.preprocess)
        if not single:
            raise ExplainError(f"{where}: images: one image at a time (got {len(items)})")
        with session(model, cfg, items, targets is None) as (cfg, engine, head):
            if indices is not None:
                cfg = by_index(cfg, indices)
            (item, result, _, probs), = list(explained(engine, cfg, head, items))
    return _channel_maps(item, result, probs, cfg)


def _channel_maps(item: Any, result: Any, probs: "np.ndarray", cfg: Any) -> ChannelMaps:
    """The ChannelMaps of the one image of ``result``."""
    import numpy as np

    from explain import channels
    from explain.writers.channels import fit_budget, view_options
    acts = result.probe.activations[0]
    layer = cfg.channel_layer
    opts = fit_budget(view_options(cfg.channels), acts.shape, cfg.channels.top_k)
    grads, contrib, rows, counts, cams = {}, {}, {}, {}, {}
    for one in result.per_image[0]:
        cls, grad = one.class_name, result.probe.gradients[one.slot][0]
        grads[cls] = grad
        contrib[cls] = channels.channel_contributions(one.method, acts, grad)
        rows[cls], counts[cls] = channels.channel_stats(one.method, acts, grad)
        cams[cls] = np.array(one.cam, dtype=np.float32)
    names = {i: n for n, i in cfg.classes.items()}
    grid = channels.activation_view(acts, channels.view_title(item.ref.id, layer), options=opts)
    return ChannelMaps(name=item.ref.id, layer=layer, method=cfg.methods[0].name,
                       activations=acts, gradients=grads, contributions=contrib, channels=rows,
                       counts=counts, cams=cams,
                       probabilities={names[i]: float(probs[i]) for i in sorted(names)},
                       image=item.rgb, grid=grid.image, options=opts, top_k=cfg.channels.top_k)

"""The four channel views (``activation_view``, ``contribution_view``, ``top_channels_view``,
``class_contrast_view``), built by array tiling, not one plot per channel, so a 256-channel
view with labels and colour bar takes milliseconds: a title, a number band above each tile,
one colour scale and a colour bar; each returns a ``GridLayout`` that says where every tile
and label lies in the picture."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from explain.channels.figures import (ChannelView, SharedPanels, cam_panel, captioned,  # noqa: F401
                                      curve_panel, detail_tiles, assemble_figure, format_number,
                                      grid_view, label_font_size, tile_grid, photo_panel,
                                      signed_scale)
from explain.channels.tiles import ColourScale, GridLayout, ViewOptions, grid_shape, normalise
from explain.channels.numbers import (check_stack, term_and_units, channel_contributions,
                                      channel_shares, channel_totals, channel_weights,
                                      channels_needed, cumulative_share, top_channels)


def activation_view(acts: np.ndarray, title: str = "", *,
                    options: Optional[ViewOptions] = None) -> ChannelView:
    """Every channel of a (C, h, w) activation stack, numbered, with title and colour bar.

    One scale for all tiles by default, so a strong channel and a nearly dead one look
    different: min..max of the stack (viridis), or -max|A|..+max|A| centred at 0 (PuOr_r) when
    the stack has both signs (``centre_activations``); ``shared_scale=False`` scales each tile
    alone (min..max, viridis).
    """
    opts = options or ViewOptions()
    check_stack(acts)
    values = acts.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    centre = low < 0 < high if opts.centre_activations is None else opts.centre_activations
    if opts.shared_scale and centre:
        limit = max(-low, high)
        scale = ColourScale(-limit, limit, opts.signed)
        how = "one scale for all tiles, 0 = white"
    elif opts.shared_scale:
        scale = ColourScale(low, high, opts.sequential)
        how = "one scale for all tiles"
    else:
        values = normalise(acts)
        scale = ColourScale(0.0, 1.0, opts.sequential, per_tile=True)
        how = "each tile scaled to its own min..max"
    head = [title or "activations", f"activations of {len(acts)} channels ({acts.shape[1]} x "
                                    f"{acts.shape[2]} each); {how}"]
    return grid_view(values, scale, head, "activation (layer output)", opts)


def contribution_view(contrib: np.ndarray, title: str = "", *, method: Optional[str] = None,
                      options: Optional[ViewOptions] = None) -> ChannelView:
    """Each channel's term of the CAM sum (C, h, w), numbered, on ONE scale centred at zero with
    a diverging colormap (positive red, negative blue, zero white) and a colour bar.

    method: names the term and its units on the picture (its channel_term). The scale is
    -max|contrib|..+max|contrib| unless ``options.limit`` fixes it (to compare views).
    """
    opts = options or ViewOptions()
    check_stack(contrib)
    term, units = term_and_units(method)
    head = [title or "contributions",
            f"contribution of each channel: {term}; one scale for all tiles, 0 = white"]
    return grid_view(contrib.astype(np.float32), signed_scale([contrib], opts), head,
                      f"contribution per position ({units}): red adds to the class map, "
                      f"blue takes away", opts)


@dataclass(frozen=True)
class TopChannels:
    """The top-channels figure and what it shows. ``channels``: the k channels with the largest
    |contribution|, largest first; ``totals``/``shares``/``weights`` are per channel (all C);
    ``cumulative``: share held by the n largest positive channels, n = 1, 2, ..."""
    image: np.ndarray
    layout: GridLayout
    scale: ColourScale
    channels: tuple[int, ...]
    totals: np.ndarray
    shares: np.ndarray
    weights: Optional[np.ndarray]
    cumulative: np.ndarray
    channels_50: int
    channels_90: int
    blank: bool = False  # the map is 0 everywhere: the figure says its shares are of no map


def top_channels_view(method: str, acts: np.ndarray, grads: np.ndarray, *,
                      photo: Optional[np.ndarray] = None, cam: Optional[np.ndarray] = None,
                      k: int = 16, title: str = "", options: Optional[ViewOptions] = None,
                      shared: Optional[SharedPanels] = None) -> TopChannels:
    """The k channels with the largest |contribution| for one image x class x method, largest
    first, each tile numbered with its weight and share of the map; next to the photo, the CAM
    and the cumulative share curve (how many channels make 50% / 90% of the map).

    photo: RGB (H, W, 3), uint8 or float 0..1; cam: the method's map (H, W) in 0..1 (rebuilt
    from the contributions when None). Tiles use the contribution view's signed scale.
    shared: the photo and CAM panels of the image's other figures, drawn once (SharedPanels).
    """
    opts = options or ViewOptions()
    contrib = channel_contributions(method, acts, grads)
    weights = channel_weights(method, acts, grads)
    totals = channel_totals(contrib)
    shares = channel_shares(totals)
    cumulative = cumulative_share(totals)
    marks = channels_needed(cumulative, 0.5), channels_needed(cumulative, 0.9)
    chosen = top_channels(totals, max(1, min(k, len(totals))))
    scale = signed_scale([contrib], opts)
    labels = [(f"#{r + 1}  ch {c}",
               *(() if weights is None else (f"w {format_number(float(weights[c]), True)}",)),
               f"{shares[c]:+.1%} of map") for r, c in enumerate(chosen)]
    _, cols = grid_shape(len(chosen))
    mosaic, layout = tile_grid(detail_tiles([contrib], chosen, scale, opts), chosen, labels, cols,
                             opts)
    height = opts.panel_height
    panels = photo_panel(photo, height, shared) + [
        captioned(cam_panel(contrib, cam, photo, height, shared), f"CAM ({method})"),
        captioned(curve_panel(cumulative, marks, height),
                   "cumulative share of the map vs channels")]
    term, units = term_and_units(method)
    head = [title or f"top channels, {method}",
            f"the {len(chosen)} channels with the largest |contribution| ({term}), largest first",
            f"50% of the map: {marks[0]} channels, 90%: {marks[1]} channels "
            f"(of {len(totals)}; {len(cumulative)} add to the map)"]
    blank = _blank(contrib, cam)
    if blank:  # the shares are of a sum the ReLU then cut to nothing
        head.append("the map is 0 everywhere: its channels' sum is <= 0 at every position, "
                    "so these shares are of a sum the ReLU removes, not of a map")
    caption = f"contribution per position ({units}), same scale as the contribution grid"
    image, layout = assemble_figure(head, panels, mosaic, layout, scale=scale, caption=caption)
    return TopChannels(image, layout, scale, tuple(int(c) for c in chosen), totals, shares,
                       weights, cumulative, *marks, blank=blank)


def _blank(contrib: np.ndarray, cam: Optional[np.ndarray]) -> bool:
    """Whether the method's map is 0 everywhere because the ReLU cut the contributions' sum
    (<= 0 at every position) and, where given, the map is 0 everywhere: a positive sum of one
    value (a 1 x 1 layer) is 0 after the library's min-max scaling too, and no ReLU cut it."""
    cut = bool(np.all(contrib.sum(axis=0) <= 0))
    return cut and (cam is None or float(np.max(cam)) <= 0)


@dataclass(frozen=True)
class ClassContrast:
    """The class-contrast figure and what it shows. ``channels``: the k channels whose total
    contribution differs most between the two classes, largest |difference| first;
    ``totals``: (2, C) per class; ``difference`` = totals[0] - totals[1]. Each tile holds the
    channel's contribution for class 0 (left) and class 1 (right), one shared signed scale."""
    image: np.ndarray
    layout: GridLayout
    scale: ColourScale
    channels: tuple[int, ...]
    totals: np.ndarray
    difference: np.ndarray


def class_contrast_view(method: str, acts: np.ndarray, grads_a: np.ndarray,
                        grads_b: np.ndarray, *, classes: tuple[str, str] = ("class 0", "class 1"),
                        photo: Optional[np.ndarray] = None,
                        cams: Optional[tuple[np.ndarray, np.ndarray]] = None, k: int = 16,
                        title: str = "", options: Optional[ViewOptions] = None,
                        shared: Optional[SharedPanels] = None) -> ClassContrast:
    """For a two-class question (cat vs dog) on one image: the k channels whose contribution
    differs most between the classes, each tile showing both classes' contribution maps.

    grads_a / grads_b: d(score of classes[0] / classes[1])/d(acts); cams: the two maps (H, W)
    in 0..1 (rebuilt from the contributions when None); shared: as top_channels_view's.
    """
    opts = options or ViewOptions()
    contribs = [channel_contributions(method, acts, g) for g in (grads_a, grads_b)]
    totals = np.stack([channel_totals(c) for c in contribs])
    difference = totals[0] - totals[1]
    chosen = top_channels(difference, max(1, min(k, len(difference))))
    scale = signed_scale(contribs, opts)
    _, cols = grid_shape(len(chosen))
    _, h, w = contribs[0].shape  # tile height: each half about detail_tile_size wide
    tile_h = min(opts.detail_tile_size, max(opts.tile_size, round(opts.detail_tile_size * h / w)))
    tiles = detail_tiles(contribs, chosen, scale, replace(opts, detail_tile_size=tile_h))
    numbers = [(f"#{r + 1}  ch {c}", f"diff {format_number(float(difference[c]), True)}",
                f"{classes[0]} {format_number(float(totals[0, c]), True)}",
                f"{classes[1]} {format_number(float(totals[1, c]), True)}")
               for r, c in enumerate(chosen)]
    two_lines = [(f"{a}  {b}", f"{x}  {y}") for a, b, x, y in numbers]
    fits = label_font_size(two_lines, tiles.shape[2], opts.font_size) == opts.font_size
    mosaic, layout = tile_grid(tiles, chosen, two_lines if fits else numbers, cols, opts)
    height = opts.panel_height
    panels = photo_panel(photo, height, shared) + [
        captioned(cam_panel(c, None if cams is None else cams[i], photo, height, shared),
                   f"CAM {classes[i]} ({method})") for i, c in enumerate(contribs)]
    term, units = term_and_units(method)
    head = [title or f"class contrast, {method}",
            f"the {len(chosen)} channels whose contribution ({term}) differs most between "
            f"{classes[0]} and {classes[1]}",
            f"each tile: {classes[0]} left, {classes[1]} right; numbers: the channel's total "
            f"contribution ({units}), diff = {classes[0]} - {classes[1]}"]
    caption = f"contribution per position ({units}), one scale for both classes"
    image, layout = assemble_figure(head, panels, mosaic, layout, scale=scale, caption=caption)
    return ClassContrast(image, layout, scale, tuple(int(c) for c in chosen), totals, difference)

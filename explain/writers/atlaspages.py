"""The atlas writer's end of run: fingerprints, tables, reference-region pictures, ablation
curves, and report/atlas.html, made from the records (explain.atlas_results) and the state
(explain.channels.atlas). The crops are cut from the images the config names, decoded again
one at a time (never from a path a file in the run folder holds)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from explain.atlas_results import (AblationFiles, AblationSummary, AtlasFiles, AtlasSummary,
                                   Fingerprint)
from explain.channels.atlas import AtlasState, Heaps
from explain.channels.atlasviews import TILE, Crop, ablation_curve, channel_picture
from explain.channels.fingerprints import (ablation_methods, ablation_rows, channel_rows,
                                           drawn_channels, fingerprint, overlaps, pairs,
                                           region_rows)
from explain.images import ImageError, prepare
from explain.names import encoded
from explain.render import as_uint8
from explain.results import RunSummary
from explain.writers import RunContext

PAGE = "report/atlas.html"
PICTURE_ROWS = 6  # contribution rankings in a channel's picture: the fingerprints it ranks
#                   highest in (a run of many classes could name hundreds)
Wanted = dict[int, list[tuple[str, Heaps]]]  # channel -> its rows: (label, heaps)


def finish_ablation(ctx: RunContext, atlas: AtlasState, used: list[str]) -> None:
    """summary.json's ablation, its CSV and a curve per method."""
    found = ablation_methods(atlas, ctx.methods)
    files = AblationFiles(table="channels/ablation/ablation.csv")
    ctx.run.write_csv(files.table, ablation_rows(found))
    for method, result in found.items():
        ks = list(result.k)
        lines = {name: [getattr(result.k[k], name) for k in ks]
                 for name in ("top", "random", "bottom")}
        note = "marked: at some k the top channels lower the score no more than random ones" \
            if result.marked else ""
        score = ctx.cfg.model.target
        picture = ablation_curve(f"{method}: mean drop of the class {score}", [int(k) for k in ks],
                                 lines, note)
        result.curve = f"channels/ablation/{method}{ctx.ext}"
        ctx.run.write_image(result.curve, picture)
    ctx.summary.ablation = AblationSummary(score=ctx.cfg.model.target,
                                           draws=ctx.cfg.channels.ablation.draws,
                                           forward=", ".join(used) or "none", methods=found,
                                           files=files)
    if any(r.marked for r in found.values()):
        marked = [m for m, r in found.items() if r.marked]
        ctx.summary.notes.append(
            f"channels.ablation: zeroing the top channels of {', '.join(marked)} lowers the class "
            f"score no more than zeroing random ones at some k: its contribution ranking does "
            f"not say which channels the model's output depends on (report/atlas.html)")


def finish_atlas(ctx: RunContext, atlas: AtlasState, state: str) -> None:
    """Fingerprints, overlaps, tables and pictures; summary.json's atlas."""
    cfg, run = ctx.cfg, ctx.run
    spec = cfg.channels.atlas
    classes = list(cfg.classes) or sorted({c for c, _ in atlas.contribution})
    files = AtlasFiles(regions_csv="channels/atlas/regions.csv", state=state)
    prints = []
    for cls, method in pairs(atlas, classes, ctx.methods):
        table = f"channels/atlas/{method}/{cls}.csv"
        run.write_csv(table, channel_rows(atlas, cls, method))
        files.tables[f"{method}/{cls}"] = table
        prints.append(fingerprint(atlas, cls, method, size=spec.channels, table=table))
    run.write_csv(files.regions_csv, region_rows(atlas, classes, ctx.methods))
    pictures = _pictures(ctx, atlas, prints)
    files.pictures = {str(c): rel for c, rel in pictures.items()}
    for fp in prints:
        for row in fp.channels + fp.wrong_channels:
            row.picture = pictures.get(row.channel)
    ctx.summary.atlas = AtlasSummary(layer=ctx.plan.channel_layer.name, channels=atlas.channels,
                                     images=len(atlas.covered), top_n=atlas.n,
                                     top_k=atlas.top_k, crop=atlas.crop, fingerprints=prints,
                                     overlaps=overlaps(prints), files=files)


def write_page(ctx: RunContext) -> None:
    """report/atlas.html from the records."""
    ctx.summary.files.atlas_page = PAGE
    ctx.run.write_bytes(PAGE, encoded(render_page(ctx.summary)))


def render_page(summary: RunSummary) -> str:
    """The HTML of report/atlas.html (the records only: ``explain report`` makes it too)."""
    from explain.writers.report import atlas_page
    return atlas_page(summary)


# ---- pictures -------------------------------------------------------------------------------

def _pictures(ctx: RunContext, atlas: AtlasState, prints: list[Fingerprint]) -> dict[int, str]:
    """channels/atlas/channel_<k>.<ext> for every fingerprint channel: its highest
    activations, then its highest contributions to each class whose fingerprint holds it
    (PICTURE_ROWS at most: those where it ranks highest)."""
    wanted: Wanted = {}
    for ch in drawn_channels(prints):
        serves = sorted((rank, i) for i, fp in enumerate(prints)
                        for rank, c in enumerate(fp.channels) if c.channel == ch)
        wanted[ch] = [("highest activation", atlas.activation)] + [
            (f"{prints[i].class_name} by {prints[i].method}: highest contribution",
             atlas.contribution[(prints[i].class_name, prints[i].method)])
            for _, i in serves[:PICTURE_ROWS]]
    crops = _crops(ctx, atlas, wanted)
    layer, out = ctx.plan.channel_layer.name, {}
    for ch, rows in wanted.items():
        drawn = [(label, [crops[(ch, r, j)] for j in range(atlas.n) if (ch, r, j) in crops])
                 for r, (label, _) in enumerate(rows)]
        title = f"channel {ch} of {layer}: the top {atlas.n} regions of {len(atlas.covered)} images"
        out[ch] = f"channels/atlas/channel_{ch}{ctx.ext}"
        ctx.run.write_image(out[ch], channel_picture(title, drawn))
    return out


def _crops(ctx: RunContext, atlas: AtlasState, wanted: Wanted) -> dict[tuple, Crop]:
    """(channel, row, rank) -> its crop, each image decoded once (the images in id order)."""
    by_image: dict[str, list[tuple]] = {}
    for ch, rows in wanted.items():
        for r, (_, heaps) in enumerate(rows):
            for j, (key, value, box) in enumerate(zip(heaps.keys[ch].tolist(),
                                                      heaps.values[ch].tolist(),
                                                      heaps.boxes[ch].tolist())):
                if key >= 0:
                    by_image.setdefault(atlas.names[key], []).append(((ch, r, j), value, box))
    sources, out = ctx.sources, {}
    for ident in sorted(by_image):
        rgb = _photo(ctx, ident) if ident in sources else None
        for where, value, box in by_image[ident]:
            out[where] = _crop(rgb, ident, value, box)
    return out


def _photo(ctx: RunContext, ident: str) -> Optional[np.ndarray]:
    try:
        rgb = prepare(ctx.sources[ident], ctx.cfg.preprocess).rgb
    except ImageError:
        return None
    return as_uint8(rgb)


def _crop(rgb: Optional[np.ndarray], ident: str, value: float, box: list[int]) -> Crop:
    x0, y0, x1, y1, cx0, cy0, cx1, cy1 = box
    if rgb is None or y1 > rgb.shape[0] or x1 > rgb.shape[1]:  # grey, the region's shape at
        h, w = max(1, y1 - y0), max(1, x1 - x0)                  # a tile's size at most
        scale = min(1.0, TILE / max(h, w))
        return Crop(np.full((max(1, round(h * scale)), max(1, round(w * scale)), 3), 200,
                            np.uint8), (ident, "(image not readable)"))
    return Crop(rgb[y0:y1, x0:x1], (ident, f"{value:.3g}"),
                (cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0))

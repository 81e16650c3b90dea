"""Numbers that say whether two CAMs agree, and loading reference maps made elsewhere.

Metrics between a library map L and a reference map R (same shape, values in 0..1):
- max_abs, mean_abs: of |L - R|;
- pearson: correlation of the pixel values. A constant map has no variance, so the usual
  formula is 0/0; we define it as 1.0 when both maps are constant and equal (within 1e-6),
  and 0.0 when only one is constant or both are constant but different. Never NaN.
- iou_top20: IoU of the two "top 20%" pixel sets, each the pixels at or above the map's 80th
  percentile that are also > 0. An all-zero map has an empty set; two empty sets give 1.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from explain.errors import ExplainError
from explain.methods import traits
from explain.outputs import RunFolder
from explain.referencefiles import (PNG_STEPS, find_reference, fit_reference, png_step,
                                    read_reference, reference_name, unmatched_files)
from explain.results import CompareRow

TOP_FRACTION = 0.2
MARGIN = 6  # white pixels left of and below a comparison figure's panes
SAME_SHAPE_R = 0.95  # reference maps at least this correlated: the same map, made another way
CROSSED_R = 0.9  # a reference this like another class's map (and 0.3 above its own): swapped
SAME_MAP_R = 0.999  # a reference this like another class's map is that map (swapped too)
UNMATCHED_LISTED = 100  # reference files matching no map that summary.json names (all are counted)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two maps' pixels, in float64 (see the module's note for flat maps), from
    the centred values' dot products. ``einsum``, not ``@``: a dot product this long runs on
    numpy's BLAS threads, which then spin for a while and took a core from the model's next
    pass (a 192-image run's passes 5 -> 9 s on 2 cores)."""
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    mean_a, mean_b = a.mean(), b.mean()
    a -= mean_a
    b -= mean_b
    sa = np.sqrt(np.einsum("i,i", a, a) / a.size)
    sb = np.sqrt(np.einsum("i,i", b, b) / b.size)
    if sa < 1e-12 or sb < 1e-12:
        both_flat_equal = sa < 1e-12 and sb < 1e-12 and abs(mean_a - mean_b) <= 1e-6
        return 1.0 if both_flat_equal else 0.0
    return float((np.einsum("i,i", a, b) / a.size) / (sa * sb))


def top_set(m: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    return (m >= np.quantile(m, 1 - fraction)) & (m > 0)


def iou_top(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    ta, tb = top_set(a, fraction), top_set(b, fraction)
    union = (ta | tb).sum()
    return 1.0 if union == 0 else float((ta & tb).sum() / union)


def metrics(library: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    diff = np.abs(library.astype(np.float64) - reference.astype(np.float64))
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "pearson": pearson(library, reference), "iou_top20": iou_top(library, reference)}


def without_relu(library: np.ndarray, reference: np.ndarray) -> str | None:
    """Why ``reference`` looks like the weighted channel sum scaled without its ReLU, or None:
    it has no zeros of its own (only its minimum reaches 0) and is above 0 where the library's
    map is 0 (on 1% of the pixels or more: what its ReLU cut, not its minimum alone),
    everywhere (the class's sum is <= 0 there: the absent class's blank map) or with r >= 0.95
    where the library's is above 0.05 and no higher there than where its line over the
    library's meets 0 (a ReLU'd map resized another way, align_corners=True, is above 0 beside
    the library's minimum and higher than that line). The inplace-ReLU trap's maps are ReLU'd:
    they have zeros of their own."""
    zero = library <= 1e-6
    if zero.mean() < 0.01 or (reference <= 1e-6).mean() >= 0.01 or reference.std() < 1e-6:
        return None
    if zero.all():
        return "the library's map is 0 everywhere, its weighted sum being <= 0; yours is not"
    high = library > 0.05
    outside = float(np.median(reference[zero]))
    if outside > 0.01 and high.sum() > 1 and pearson(library[high], reference[high]) >= 0.95 \
            and outside <= _level_at_zero(library[high], reference[high]):
        return f"r >= 0.95 where the library's map is above 0, yours {outside:.2f} (median) " \
               f"where it is 0"
    # a noisy sum (an untrained AlexNet's): the resize blurs the ReLU's edge over most of the
    # positive part; cut at the level where the sum was 0, yours is the library's map, and
    # the cut part lies well below that level (a ReLU'd map resized bicubically rings just
    # below its own 0, near 0.1 to 0.2 once scaled)
    cut_r, level = _best_cut(library, reference)
    if cut_r >= 0.9 and level >= 0.3 and outside <= level - 0.05:
        return f"r {cut_r:.2f} with the library's map once yours is cut at {level:.2f} (the " \
               f"sum's 0), yours {outside:.2f} (median) where the library's map is 0"
    return None


def _best_cut(library: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(r, level): the level in 0.1..0.9 where max(reference - level, 0) correlates best with
    ``library`` (the ReLU put back at the scaled sum's 0), on at most about 256 x 256 pixels."""
    step = max(1, int(np.ceil(max(library.shape) / 256)))
    lib, ref = library[::step, ::step], reference[::step, ::step]
    return max((pearson(lib, np.maximum(ref - level, 0)), float(level))
               for level in np.round(np.arange(0.1, 0.91, 0.02), 2))


def _level_at_zero(library: np.ndarray, reference: np.ndarray) -> float:
    """Where the line fitted to ``reference`` over ``library`` (least squares) meets the
    library's 0: without the ReLU, the scaled sum's value where the sum is 0, above every value
    of the cut part; the same map resized another way (align_corners=True) meets it near 0."""
    lib, ref = library.astype(np.float64), reference.astype(np.float64)
    slope = float(np.mean((lib - lib.mean()) * (ref - ref.mean())) / max(lib.var(), 1e-12))
    return float(ref.mean() - slope * lib.mean())


def verdict(max_abs_values: list[float], tolerance: float | list[float]) -> str:
    """"agree" when every map's max |diff| is within the tolerance (one, or one per map)."""
    limits = tolerance if isinstance(tolerance, list) else [tolerance] * len(max_abs_values)
    return "agree" if all(v <= t for v, t in zip(max_abs_values, limits)) else "differ"


def why_references_differ(rows: list[CompareRow], crossed: list[str] = (),
                          classes: str = "", resized: bool = False,
                          beyond: list[CompareRow] | None = None, *,
                          layercam_agrees: bool = False, resized_from: str = "") -> str:
    """What the maps' correlations say about a "differ" against reference files: near 1, the
    same map made another way (resize, scaling); a map at r = 0, one of the two constant (the
    blank maps of a hook on an inplace ReLU's input); lower, maps of another shape. ``crossed``
    (Comparison.cross_check): references that are another class's map, said first, with the
    run's ``classes`` ("cat = 0, dog = 1"). ``resized``: every reference was the layer's map,
    resized and scaled here as the library's are, so r near 1 is no resize of the user's.
    ``beyond``: the rows outside the tolerance (all when None), the maps whose cause is said
    (beside the maps without the ReLU, the others'). ``layercam_agrees``: the same files'
    LayerCAM maps agree, which the inplace-ReLU trap leaves alone and a wrong layer, input or
    training mode would not. ``resized_from``: a reference of another image size resized here
    ("300x451 -> 224x224"), not the layer's map."""
    rs = sorted(rows, key=lambda r: r.pearson)
    median = float(np.median([r.pearson for r in rs]))
    words = [f"Pearson r median {median:.2f}, lowest {rs[0].pearson:.2f} "
             f"({rs[0].image} / {rs[0].class_name})"]
    if crossed:
        words.append(f"{len(crossed)} map(s) match another class's map ({crossed[0]}): "
                     f"are the class indices in your script swapped?"
                     + (f" (the run's: {classes})" if classes else ""))
        return "; ".join(words) + "; see docs/compare.md, hand-written references"
    unrelu = [r for r in rs if r.no_relu]
    if unrelu:
        words.append(f"{len(unrelu)} map(s) look like the weighted channel sum without its "
                     f"ReLU ({unrelu[0].image} / {unrelu[0].class_name}: {unrelu[0].no_relu}): "
                     f"apply ReLU to the sum before the min-max scaling, as the library does")
    # the cause of the maps outside the tolerance (the agreeing ones at r 1 read as 'resized')
    rs = [r for r in (rs if beyond is None else beyond) if not r.no_relu]
    if unrelu and not rs:
        return "; ".join(words) + "; see docs/compare.md, hand-written references"
    flat = sum(1 for r in rs if r.pearson == 0.0)
    if flat:
        words.append(f"{flat} map(s) at r = 0, one of the two constant: a hook on a layer "
                     f"followed by ReLU(inplace=True) gives blank maps (the forward hook "
                     f"should return output.clone() and keep output itself)")
    shaped = [r.pearson for r in rs if r.pearson != 0.0]  # the shape of maps that have one
    if shaped and float(np.median(shaped)) >= SAME_SHAPE_R:
        words.append(_near_one_words(resized, resized_from))
    elif shaped:
        words.append(_shape_words(layercam_agrees, rs[0].method != "layercam"))
    return "; ".join(words) + "; see docs/compare.md, hand-written references"


def _near_one_words(resized: bool, resized_from: str) -> str:
    """Why maps at r near 1 differ: the layer's maps resized here as the library's are differ
    a little in their numbers; maps of another image size were resized twice; else the map
    was resized or scaled another way, or made from another input."""
    if resized:
        return ("r near 1 with a large |diff|, though your maps were resized and scaled here as "
                "the library's are: the weights or activations differ a little, as when a "
                "following ReLU(inplace=True) overwrites the kept output (the inplace-ReLU "
                "trap)")
    if resized_from:
        return (f"r near 1 with a large |diff|: your maps are of another image size "
                f"({resized_from}), so each was resized twice, from the layer's to yours and "
                f"here to the input's: save the layer's own map, not upsampled, or one resized "
                f"to the input size")
    return ("r near 1 with a large |diff| is the same map resized or scaled another way, or "
            "made from a slightly different input (the photo resized as 8-bit RGB, then / "
            "255: explain.cam(...).input is the very tensor; the figures in compare/ show "
            "where)")


def _layer_sized(resized: str) -> bool:
    """Whether a reference resized here ("13x13 -> 224x224") was the layer's map: at most a
    sixteenth of the input's pixels (a photo-sized map, "300x451 -> 224x224", was not)."""
    (h, w), (height, width) = [map(int, side.split("x")) for side in resized.split(" -> ")]
    return h * w * 16 <= height * width


SHAPE = ("the maps differ in shape: where they are high, not only in size or scale (the "
         "figures in compare/ show where)")
OTHER_LAYER = "a map of another layer than the run's target_layers"
TRAP = ("a forward hook that keeps the tensor it hands on (no copy returned, or the copy kept "
        "as well as returned), which a following ReLU(inplace=True) overwrites: keep output, "
        "return output.clone()")
TRAINING = ("a model left in training mode (Dropout, BatchNorm: call model.eval() before the "
            "forward pass)")


def _shape_words(layercam_agrees: bool, trap_shows: bool = True) -> str:
    """The causes of maps of another shape; with the same files' LayerCAM agreeing, the trap
    alone (a layer, an input or a training mode would move LayerCAM too); without the trap
    where it does not show (LayerCAM's own maps: ReLU(dy/dA) is 0 where the ReLU cut A)."""
    if layercam_agrees:
        return ("the maps differ in shape while your LayerCAM maps agree: if they come from the "
                "same hooks, the layer, the input and model.eval() are right, and this is the "
                f"inplace-ReLU trap, which LayerCAM does not show: {TRAP}")
    if not trap_shows:
        return f"{SHAPE}; {OTHER_LAYER}, or {TRAINING}; not the inplace-ReLU trap, which " \
               f"LayerCAM does not show"
    return f"{SHAPE}; {OTHER_LAYER}, or {TRAP} (AlexNet's features.10: the inplace-ReLU " \
           f"trap), or {TRAINING}"


# ---- figure -----------------------------------------------------------------------------------

CSV_PATH = "compare/compare.csv"


def figure_path(image: str, cls: str, method: str) -> str:
    """Where the library / reference / difference figure of one map goes in the run folder."""
    return f"compare/{method}/{image}__{cls}.png"


def _pane(values: np.ndarray, colormap: str, vmax: float, name: str) -> np.ndarray:
    """One map in a matplotlib colormap over 0..vmax, a colour bar beside it, its name above."""
    from explain.channels import colour_lut
    from explain.render import label_image
    lut = colour_lut(colormap)
    top = len(lut) - 1
    index = np.clip(np.rint(values / vmax * top), 0, top).astype(np.uint8)
    h, w = values.shape
    bar = np.take(lut, np.linspace(top, 0, h).round().astype(np.uint8), axis=0)[:, None]
    pane = np.full((h + 24, w + 70, 3), 255, np.uint8)
    pane[24:, :w] = np.take(lut, index, axis=0)
    pane[24:, w + 6:w + 18] = bar
    return label_image(pane, [(name, (0, 3), 13), (f"{vmax:.3g}", (w + 21, 22), 11),
                              ("0", (w + 21, h + 10), 11)])


def comparison_figure(library: np.ndarray, reference: np.ndarray, title: str) -> np.ndarray:
    """library | reference | |difference|, each with its colour bar (uint8 RGB, drawn with
    arrays: one figure per map of a run)."""
    diff = np.abs(library - reference)
    dmax = max(float(diff.max()), 1e-12)
    panes = [_pane(library, "jet", 1.0, "library"), _pane(reference, "jet", 1.0, "reference"),
             _pane(diff, "magma", dmax, f"|difference| (max {diff.max():.2e})")]
    gap = np.full((panes[0].shape[0], 10, 3), 255, np.uint8)
    body = np.concatenate([gap[:, :MARGIN], panes[0], gap, panes[1], gap, panes[2]], axis=1)
    head = np.full((28, body.shape[1], 3), 255, np.uint8)
    foot = np.full((MARGIN, body.shape[1], 3), 255, np.uint8)
    from explain.render import label_image
    return label_image(np.concatenate([head, body, foot]), [(title, (MARGIN, 6), 13)])


# ---- one run's comparison ---------------------------------------------------------------------

class Comparison:
    """Collects, per image x class x method, the metrics between the library map and its
    reference: hand-written (explain.reference) or, with ``reference_dir``, files made elsewhere."""

    def __init__(self, run: RunFolder, tolerance: float, reference_dir: Path | None,
                 paper_notes: bool = True):
        """``paper_notes``: a method's known departure from the paper (the method table's
        ``paper_note``) is said beside its "differ"; off when something else can make the
        maps differ more (the inplace guard off)."""
        self.run, self.tolerance, self.reference_dir = run, tolerance, reference_dir
        self.paper_notes = paper_notes
        self.missing: list[str] = []
        self.expected: set[str] = set()
        self.resized: dict[str, str] = {}  # a reference of another shape: "13x13 -> 224x224"
        self.made: dict[str, CompareRow] = {}  # this process's rows, by reference name
        self.steps: dict[str, float] = {}  # a PNG reference's rounding step (png_step)
        self.classes = ""  # the run's class indices as the "differ" note names them
        if reference_dir is not None and not reference_dir.is_dir():
            raise ExplainError(f"compare.reference_dir: folder not found: {reference_dir}")

    def reference_for(self, image: str, cls: str, method: str, size, handwritten) -> np.ndarray | None:
        """The map to compare with, or None (listed as missing / not available)."""
        if self.reference_dir is None:
            return handwritten.get(method)
        self.expected.add(reference_name(image, cls, method))
        path = find_reference(self.reference_dir, image, cls, method)
        if path is None:
            self.missing.append(reference_name(image, cls, method))
            return None
        m = read_reference(path)
        self.steps[reference_name(image, cls, method)] = png_step(path)
        if m.shape != tuple(size):
            self.resized[reference_name(image, cls, method)] = \
                f"{m.shape[0]}x{m.shape[1]} -> {size[0]}x{size[1]}"
        return fit_reference(m, size)

    def cross_check(self, image: str, method: str, pairs: dict[str, tuple]) -> None:
        """``pairs``: class -> (library map, reference) of one image and method. A reference
        that correlates with another class's library map far better than with its own (the
        class indices of the script swapped) says so in its row's ``crossed``, with the two
        r."""
        for cls, (library, ref) in pairs.items():
            own = pearson(library, ref)
            others = [(pearson(lib, ref), other) for other, (lib, _) in pairs.items()
                      if other != cls]
            r, other = max(others, default=(0.0, ""))
            # far above its own map's r, or that other map itself while its own is not (the
            # two classes' maps of one image can be alike: LayerCAM's at r 0.84 on AlexNet)
            row = self.made.get(reference_name(image, cls, method))
            if row and r >= CROSSED_R and (r - own >= 0.3 or (r >= SAME_MAP_R and
                                                               own < SAME_SHAPE_R)):
                row.crossed = f"{image}__{cls}: r {r:.2f} with the library's {other} map, " \
                              f"{own:.2f} with its {cls} map"

    def add(self, image: str, cls: str, method: str, library: np.ndarray,
            reference: np.ndarray) -> CompareRow:
        """Metrics and the library / reference / difference figure for one map."""
        numbers, name = metrics(library, reference), reference_name(image, cls, method)
        row = CompareRow(image=image, class_name=cls, method=method,
                         resized=self.resized.get(name),
                         no_relu=without_relu(library, reference) if self.reference_dir else None,
                         **{k: round(v, 8) for k, v in numbers.items()})
        self.made[name] = row
        fig = comparison_figure(library, reference, f"{image} / {cls} / {method}: max |diff| "
                                                    f"{numbers['max_abs']:.2e}, r = {numbers['pearson']:.4f}")
        self.run.write_image(figure_path(image, cls, method), fig)
        return row

    def _step(self, row: CompareRow) -> float:
        """The rounding step of the row's reference file (0: a hand-written map or an NPY), as
        kept when it was read; a row of another rank or of the run --resume continues finds
        its file again."""
        if self.reference_dir is None:
            return 0.0
        name = reference_name(row.image, row.class_name, row.method)
        if name not in self.steps:
            self.steps[name] = png_step(find_reference(self.reference_dir, row.image,
                                                       row.class_name, row.method))
        return self.steps[name]

    def cover(self, maps: list[tuple[str, str, str]], rows: list[CompareRow]) -> None:
        """Every map of the run, (image, class, method), counts as expected and, without a
        row, as missing: the images a run --resume continues kept were compared by the
        interrupted run, whose lists are gone (their reference files were said to match no
        map); a file added since was never compared. ``missing`` is then in the run's order,
        whichever process found it."""
        if self.reference_dir is None:
            return
        compared = {reference_name(r.image, r.class_name, r.method) for r in rows}
        for image, cls, method in maps:
            name = reference_name(image, cls, method)
            if name not in self.expected:
                self.expected.add(name)
                if name not in compared:
                    self.missing.append(name)
        order = {reference_name(*m): i for i, m in enumerate(maps)}
        self.missing.sort(key=lambda name: order.get(name, len(order)))

    @staticmethod
    def _of(found: dict[str, str], method: str) -> list[str]:
        """The values of ``found`` (keyed by reference_name) for one method's maps."""
        return [v for k, v in found.items() if k.endswith(f"__{method}")]

    def finish(self, rows: list[CompareRow]) -> dict:
        """compare.csv (rows in the order given) and the verdict per method."""
        by_method: dict[str, list[CompareRow]] = {}
        for row in rows:
            by_method.setdefault(row.method, []).append(row)
        steps = {m: [self._step(r) for r in v] for m, v in by_method.items()}
        beyond = {m: [r for r, q in zip(v, steps[m]) if r.max_abs > self.tolerance + q]
                  for m, v in by_method.items()}
        outside = {id(r) for v in beyond.values() for r in v}
        for row in rows:  # a map within the tolerance needs no why
            if id(row) not in outside:
                row.no_relu = None
        self.run.write_csv(CSV_PATH, [r.dump() for r in rows])
        resized = {reference_name(r.image, r.class_name, r.method): r.resized
                   for r in rows if r.resized}  # every image's: the rows keep them
        crossed = {reference_name(r.image, r.class_name, r.method): r.crossed
                   for r in rows if r.crossed}
        # a PNG's step (rounded or truncated: up to one step) adds to the float tolerance
        per_method = {m: {"verdict": verdict([r.max_abs for r in v],
                                             [self.tolerance + q for q in steps[m]]),
                          "max_abs": max(r.max_abs for r in v), "maps": len(v),
                          "r_min": min(r.pearson for r in v),
                          "r_median": float(np.median([r.pearson for r in v]))}
                      for m, v in by_method.items()}
        for m, info in per_method.items():
            if info["verdict"] != "differ":
                continue
            if self.reference_dir is not None:  # the user's maps: why, as far as r can say
                mine = self._of(resized, m)
                every = sum(map(_layer_sized, mine)) == len(by_method[m])
                photo = [t for t in mine if not _layer_sized(t)]
                info["note"] = why_references_differ(
                    by_method[m], self._of(crossed, m), self.classes, every, beyond[m],
                    layercam_agrees=m != "layercam" and traits(m).reference
                    and per_method.get("layercam", {}).get("verdict") == "agree",
                    resized_from=photo[0] if photo else "")
            elif self.paper_notes and traits(m).paper_note:  # the library departs from the paper
                info["note"] = traits(m).paper_note
        for m, info in per_method.items():  # an "agree" over part of the maps is no full mark
            info["missing"] = sum(1 for name in self.missing if name.endswith(f"__{m}"))
        words = {m: _step_words(steps[m], self.tolerance)
                 + _resized_words(self._of(resized, m)) for m in per_method}
        verdicts = [f"{m}: {info['verdict']} (max |diff| {info['max_abs']:.2e} over "
                    f"{maps_words(info)}, tolerance {self.tolerance:g}{words[m]})"
                    + (f": {info['note']}" if "note" in info else "")
                    for m, info in per_method.items()]
        result = {"source": str(self.reference_dir) if self.reference_dir else "hand-written",
                  "tolerance": self.tolerance, "verdicts": verdicts, "per_method": per_method,
                  "missing": self.missing}
        if self.reference_dir is not None:
            unmatched = unmatched_files(self.reference_dir, self.expected)
            # a dataset folder named by mistake holds thousands: summary.json lists the first
            result["unmatched"], result["unmatched_count"] = unmatched[:UNMATCHED_LISTED], \
                len(unmatched)
        return result


def maps_words(info: dict) -> str:
    """How many maps a verdict is over: "6 maps", or "3 of 6 maps (3 without a reference
    file)" when some of the method's maps had none, so "agree" is not read as every map."""
    if not info.get("missing"):
        return f"{info['maps']} maps"
    return (f"{info['maps']} of {info['maps'] + info['missing']} maps ({info['missing']} "
            f"without a reference file)")


def _resized_words(resized: list[str]) -> str:
    """What the verdict line says of reference maps of another shape, resized here."""
    if not resized:
        return ""
    return (f"; {len(resized)} reference map(s) of another shape ({resized[0]}) resized here, "
            f"then min-max scaled, as the library's maps are")


def _step_words(steps: list[float], tolerance: float) -> str:
    """What the verdict line says of the PNG references' rounding, allowed beside a smaller
    tolerance."""
    words = [w for q, w in PNG_STEPS.items() if q in steps and q > tolerance]
    return f"; {' and '.join(words)} PNG maps, their rounding" if words else ""

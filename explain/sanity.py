"""Sanity checks of the methods: do a method's maps depend on what the model learned, and on
the class they explain?

- **Model-parameter randomisation** (Adebayo et al. 2018, "Sanity checks for saliency maps"),
  *cascading*: from the output layer towards the input, one layer at a time is re-initialised
  in a copy of the network (each layer by its own ``reset_parameters()``, the default
  initialisation of its type), and after each step every method's map of every image x class
  is made again and compared with the trained model's map. *Independent*: each layer alone is
  re-initialised, the others as trained. A layer is a module with parameters of its own and a
  ``reset_parameters()`` method (convolutions, linear layers, normalisation layers; parameters
  held by modules without one, e.g. a ViT's position embedding, stay as trained: counted in
  ``not_randomised``). Layer ``k`` in cascading order (0: the one nearest the output) is
  re-initialised right after ``torch.manual_seed(seed + k)``, under a forked random state, so
  it gets the same weights in both variants and the caller's random state is left alone.
- **Random logit** (Sixt et al. 2020; Quantus' RandomLogit): each map against the map the same
  method gives for a randomly drawn other output of the model, drawn as Quantus draws it
  (``np.random.seed(seed)``, then ``randint(0, outputs - 1)`` per map, an index into the other
  outputs in order).

Similarity (``similarity``), per map pair, after each map is divided by its largest absolute
value (Quantus' ``normalise_by_max``; a zero map stays zero): Spearman's rank correlation over
the pixels and SSIM (Wang et al. 2004, as scikit-image computes it: a 7 x 7 uniform window,
sample covariances, K1 = 0.01, K2 = 0.03, the data range = max - min of both maps, the mean over
the positions where the window fits), each on the maps and on their absolute values. The CAM
methods' maps are already >= 0 (the methods' ReLU, then scaled to 0..1), so for them the
absolute numbers equal the plain ones; they differ for the signed maps, guided backpropagation
(the gradient summed over the colour channels) and Guided Grad-CAM. A constant map has no
ranking: its rank correlation is 1 with a map equal to it and 0 with any other map.

A method passes the randomisation check when the mean of ``measure`` over its maps, after the
last cascading step, is below ``threshold`` (Adebayo et al.: a rank correlation below 0.5);
the random-logit check likewise with ``logit_threshold``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from scipy.stats import rankdata
from torch import nn

from explain import sanity_records
from explain.errors import ExplainError, first_line

MEASURES = tuple(sanity_records.MEASURES)  # similarity's four numbers, in this order
SSIM_WINDOW = 7
SSIM_K = (0.01, 0.03)


# ---- similarity: pure numbers -------------------------------------------------------------

def normalised(a: np.ndarray) -> np.ndarray:
    """``a`` / max |a| as float64 (Quantus' normalise_by_max); a zero map stays zero."""
    a = np.asarray(a, dtype=np.float64)
    peak = np.abs(a).max() if a.size else 0.0
    return a / peak if peak > 0 else a


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps over their pixels (ties get their mean rank).
    A constant map has no ranking: 1 against an equal map, 0 against any other."""
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape:
        raise ValueError(f"maps of {a.size} and {b.size} pixels")
    a_flat, b_flat = np.ptp(a) == 0, np.ptp(b) == 0
    if a_flat or b_flat:
        return 1.0 if np.array_equal(a, b) else 0.0
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (b.size + 1) / 2
    return float(np.dot(ra, rb) / np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The mean structural similarity of two (H, W) maps, as scikit-image's
    ``structural_similarity(a, b, data_range=max - min of both)`` computes it (see the module
    docstring); maps smaller than the window are compared with one window over all of them."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape}")
    both = np.concatenate([a.ravel(), b.ravel()])
    span = float(both.max() - both.min())
    if span == 0:
        return 1.0  # two equal constant maps
    win = min(SSIM_WINDOW, *a.shape)
    win -= 1 - win % 2  # odd
    mean = lambda v: uniform_filter(v, size=win)  # noqa: E731
    ua, ub = mean(a), mean(b)
    norm = win * win / (win * win - 1)  # sample covariances
    va, vb = norm * (mean(a * a) - ua * ua), norm * (mean(b * b) - ub * ub)
    vab = norm * (mean(a * b) - ua * ub)
    c1, c2 = (SSIM_K[0] * span) ** 2, (SSIM_K[1] * span) ** 2
    s = (2 * ua * ub + c1) * (2 * vab + c2) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    pad = (win - 1) // 2
    return float(s[pad:s.shape[0] - pad, pad:s.shape[1] - pad].mean())


def similarity(original: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The four MEASURES of two maps (each normalised by its largest absolute value first):
    Spearman, Spearman of the absolute values, SSIM, SSIM of the absolute values."""
    a, b = normalised(original), normalised(other)
    rho = spearman(a, b)
    same_abs = a.min() >= 0 and b.min() >= 0  # maps >= 0: |map| is the map
    rho_abs = rho if same_abs else spearman(np.abs(a), np.abs(b))
    s = ssim(a, b)
    s_abs = s if same_abs else ssim(np.abs(a), np.abs(b))
    return np.array([rho, rho_abs, s, s_abs])


def verdict(value: float, threshold: float) -> str:
    """'pass' when the similarity is below the threshold (the maps changed), else 'fail'."""
    return "pass" if value < threshold else "fail"


def other_classes(explained: Sequence[int], outputs: int, seed: int) -> np.ndarray:
    """For each explained class a randomly drawn other output (0..outputs-1), as Quantus'
    RandomLogit draws it: ``np.random.seed(seed)``, ``randint(0, outputs - 1, n)``, an index
    into the outputs other than the explained one. Leaves numpy's global state alone."""
    explained = np.asarray(explained, dtype=np.int64)
    if outputs < 2:
        raise ValueError("a random other class needs at least two outputs")
    picks = np.random.RandomState(seed).randint(0, outputs - 1, len(explained))
    return picks + (picks >= explained)  # skip the explained class itself


# ---- the layers and the copy ---------------------------------------------------------------

def randomisable(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers the check re-initialises, in cascading order (output first): every module
    with parameters of its own and a ``reset_parameters()`` method, as named_modules() names
    them, last first."""
    found = [(name, m) for name, m in net.named_modules()
             if next(m.parameters(recurse=False), None) is not None
             and callable(getattr(m, "reset_parameters", None))]
    return found[::-1]


def not_randomised(net: nn.Module) -> int:
    """Parameter tensors held by modules without ``reset_parameters()`` (they stay trained)."""
    return sum(1 for m in net.modules() if not callable(getattr(m, "reset_parameters", None))
               for _ in m.parameters(recurse=False))


def check_randomisable(net: nn.Module) -> None:
    """One line when the check cannot run on ``net``: no parameters, no layer it can
    re-initialise, or a network that cannot be copied."""
    if next(net.parameters(), None) is None:
        raise ExplainError("sanity: the model has no parameters (weights) to randomise; turn "
                           "sanity off (sanity.enabled: false)")
    if not randomisable(net):
        raise ExplainError(f"sanity: none of the model's {not_randomised(net)} parameter "
                           f"tensors is in a layer with a reset_parameters() method, so no "
                           f"layer can be re-initialised; turn sanity off")
    copied(net)


def copied(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` (the user's network is never changed); one line if it fails."""
    try:
        return copy.deepcopy(net)
    except Exception as exc:
        raise ExplainError(f"sanity: the model cannot be copied for the randomisation "
                           f"({type(exc).__name__}: {first_line(exc, 120)}); turn sanity "
                           f"off") from None


def reinitialise(module: nn.Module, seed: int) -> None:
    """``module.reset_parameters()`` right after ``torch.manual_seed(seed)``, under a forked
    random state (the caller's generators are left as they were)."""
    param = next(module.parameters(recurse=False))
    devices = [param.device.index or 0] if param.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            module.reset_parameters()


class Randomiser:
    """A copy of a network whose layers are re-initialised one at a time (``cascade``) or
    each alone (``each``); the copy is the same object throughout, so an engine built on it
    sees every step."""

    def __init__(self, net: nn.Module, seed: int, count: Optional[int] = None):
        self.net = copied(net)
        self.layers = randomisable(self.net)[:count]
        self.seed = seed
        self._trained = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.layers]

    def restore(self) -> None:
        """Every parameter and buffer of the copy as trained."""
        self.net.load_state_dict(self._trained)

    def cascade(self) -> Iterator[str]:
        """Re-initialise the layers one after another, output first; yields after each, with
        its name (all layers up to it are then random). The copy is restored at the end."""
        try:
            for k, (name, module) in enumerate(self.layers):
                reinitialise(module, self.seed + k)
                yield name
        finally:
            self.restore()

    def each(self) -> Iterator[str]:
        """Re-initialise each layer alone (the others as trained); yields after each."""
        try:
            for k, (name, module) in enumerate(self.layers):
                self.restore()
                reinitialise(module, self.seed + k)
                yield name
        finally:
            self.restore()


# ---- the outcome ---------------------------------------------------------------------------

@dataclass
class Outcome:
    """What the checks measured. ``cascading[method]``: (steps, maps, 4) similarities with the
    trained model's maps, one row per layer in ``layers``; ``independent`` the same for each
    layer alone (or empty); ``logit[method]``: (maps, 4), each map against its random class's
    map; ``strip[method]``: (step, map) of the first image x class at the steps ``strip_steps``
    (0: the trained model, k: after k layers)."""
    methods: list[str]
    layers: list[str]
    cascading: dict[str, np.ndarray]
    independent: dict[str, np.ndarray] = field(default_factory=dict)
    logit: dict[str, np.ndarray] = field(default_factory=dict)
    logit_blank: dict[str, int] = field(default_factory=dict)  # random-class maps of one value
    strip: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)

    def mean(self, table: dict[str, np.ndarray], method: str) -> np.ndarray:
        """Mean over the maps: (steps, 4) for a step table, (4,) for ``logit``."""
        return table[method].mean(axis=-2)


def strip_steps(layers: int, columns: int = 8) -> list[int]:
    """The cascading steps a strip shows: the trained model (0), the last step, and up to
    ``columns`` - 2 evenly spaced steps between."""
    picks = np.linspace(0, layers, min(columns, layers + 1)).round().astype(int)
    return sorted(set(int(p) for p in picks))


# ---- maps of the copy, by the run's own engine ---------------------------------------------

GUIDED = "guided_backprop"


@dataclass
class Subject:
    """One image the checks explain: its input (C, H, W), the classes explained for it (as
    the run recorded them) and, per class, the random other class."""
    image: str
    x: torch.Tensor
    classes: list[int]
    others: list[int] = field(default_factory=list)


class MapMaker:
    """Maps of the randomiser's copy made as the run makes them: a CamEngine on the copy,
    at the target layers found by their names, with the run's methods, head, layouts and
    options; with ``guided``, guided backpropagation (explain.writers.guided, summed over
    the colour channels) and Guided Grad-CAM per method too."""

    def __init__(self, plan, net: nn.Module, guided: bool = False):
        from explain.engine import CamEngine, EngineOptions
        from explain.layers import find_layer
        from explain.models.heads import Classifier, ScoreModel
        cfg = plan.cfg
        self.model = Classifier.of(net, cfg)
        layers = [find_layer(net, name)[1] for name in cfg.target_layers]
        self.engine = CamEngine(self.model, layers, cfg.methods, plan.device, EngineOptions(
            layer_names=list(cfg.target_layers), aug_smooth=cfg.aug_smooth,
            eigen_smooth=cfg.eigen_smooth, guard_inplace=cfg.model.fix_inplace, seed=cfg.seed,
            head=plan.head, reshape=plan.reshape, precision=cfg.precision))
        self.scorer = ScoreModel(self.model, plan.head) if guided else None
        self.names = dict(plan.classes)
        self.methods = [m.name for m in cfg.methods]
        self.rows = self.methods + ([GUIDED] + [f"guided_{m}" for m in self.methods]
                                    if guided else [])

    def maps(self, subjects: list[Subject], others: bool = False) -> dict[str, list[np.ndarray]]:
        """Per row (method), one (H, W) map per image x class, images in order, classes in
        the order given; ``others``: of each class's random other class instead."""
        from explain.writers.guided import guided_gradient
        out: dict[str, list[np.ndarray]] = {row: [] for row in self.rows}
        for subject in subjects:
            classes = subject.others if others else subject.classes
            x = subject.x[None]
            result = self.engine.run(x, np.asarray([classes], dtype=np.int64), self.names)
            for m in self.methods:
                out[m] += [np.array(result.maps[m][0, s]) for s in range(len(classes))]
            if self.scorer is None:
                continue
            for s, cls in enumerate(classes):
                signed = guided_gradient(self.scorer, x.to(self.engine.device), cls).sum(axis=-1)
                out[GUIDED].append(signed)
                for m in self.methods:  # Guided Grad-CAM, summed over the colour channels
                    out[f"guided_{m}"].append(signed * result.maps[m][0, s])
        return out


def _compared(trained: dict[str, list[np.ndarray]], now: dict[str, list[np.ndarray]]
              ) -> dict[str, np.ndarray]:
    """Per row, (maps, 4): each map of ``now`` against its trained counterpart."""
    return {row: np.stack([similarity(a, b) for a, b in zip(trained[row], now[row])])
            for row in trained}


def run_checks(plan, subjects: list[Subject], *, layers: Optional[int] = None,
               independent: bool = False, guided: bool = False,
               tick: Callable[[], None] = lambda: None) -> Outcome:
    """Both checks on ``subjects`` (their ``others`` filled, or empty to skip the random
    logit), with the first ``layers`` layers in cascading order (None: all), on a copy of
    the plan's network; the network itself is left untouched. ``tick`` is called after each
    randomisation step."""
    randomiser = Randomiser(plan.net, plan.cfg.seed, layers)
    maker = MapMaker(plan, randomiser.net, guided)
    shown = strip_steps(len(randomiser.layers))
    with maker.engine:
        trained = maker.maps(subjects)
        outcome = Outcome(maker.rows, randomiser.names, cascading={},
                          strip={row: [(0, trained[row][0])] for row in maker.rows})
        if all(s.others for s in subjects):
            others = maker.maps(subjects, others=True)
            outcome.logit = _compared(trained, others)
            outcome.logit_blank = {row: sum(1 for m in maps if not np.ptp(m) > 0)
                                   for row, maps in others.items()}
        steps: list[dict[str, np.ndarray]] = []
        for k, _ in enumerate(randomiser.cascade(), 1):
            now = maker.maps(subjects)
            steps.append(_compared(trained, now))
            tick()
            if k in shown:
                for row in maker.rows:
                    outcome.strip[row].append((k, now[row][0]))
        outcome.cascading = {row: np.stack([s[row] for s in steps]) for row in maker.rows}
        if independent:
            alone = []
            for _ in randomiser.each():
                alone.append(_compared(trained, maker.maps(subjects)))
                tick()
            outcome.independent = {row: np.stack([s[row] for s in alone])
                                   for row in maker.rows}
    return outcome


def passes_per_step(plan, images: int, slots: int, guided: bool) -> int:
    """Forward and backward passes of one image that one step of the checks makes (for the
    estimate): per image one forward pass and one backward pass per class for the
    shared-pass methods, a call of two passes per class for the others, two per class for
    guided backpropagation. Not the per-channel methods' passes (ScoreCAM, AblationCAM):
    the engine shares those by the classes and runs them in batches, and
    ``explain.pace.per_channel_costs`` prices them so (counted here per class and at one
    image's pass, a sanity estimate of a ScoreCAM run said 98 s for 21)."""
    from explain.methods import traits
    per_image = 1 + slots + (2 * slots if guided else 0)
    for spec in plan.cfg.methods:
        entry = traits(spec.name)
        if entry.per_channel is None and (not entry.shared_pass or plan.cfg.aug_smooth):
            per_image += slots * 2
    return images * per_image

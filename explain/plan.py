"""The run plan: everything a run needs, resolved once, before anything is written.

``planned(cfg, ranks)`` finds the images, loads the model, decodes the first image, resolves
the layers ('auto', negative indexes), builds the engine and makes the one preflight pass
(``CamEngine.probe``) that gives every hooked layer's shape, layout and channel count, the
model's outputs and the class names. What it finds is a frozen ``RunPlan``: the runner loops
over batches with it, writers read it, and nothing works a value out again.

The preflight pass runs on the first image alone; it is not reused as the first batch's pass:
a map's last float bits depend on which images share its batch, and a batch that started
from a one-image pass would differ from the same batch in a resumed run. The first image's
decoded input *is* reused: every image is decoded once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from explain import batching, metrics, pace
from explain.config import (LAYER, MANY_CLASSES, MAX_CLASSES, TARGET_WORDS, Config, MetricSpec,
                            Reshape, names_a_field, resolved)
from explain.enginedata import LayerInfo, Probe
from explain.errors import ExplainError, model_failed
from explain.models.heads import Classifier, Head
from explain.images import ImageRef, Prepared, find_images
from explain.images.checking import first_image
from explain.layers import auto_layer, find_layer, passthrough_note, survey
from explain.models.layouts import TokenSpec, model_mode
from explain.models.labels import class_names_from_model
from explain.models.loading import load_model
from explain.models.guard import (available, forward_size_problem, meta_warm_up, pick_device,
                                  unvetted)
from explain.names import quote
from explain.results import Skipped
from explain.tasks import task_for

if TYPE_CHECKING:  # the engine (and the CAM library) is imported when an engine is made
    from explain.engine import CamEngine

SMALL_RUN = 50  # images; larger runs default to JPEG pictures (output.image_format)


@dataclass(frozen=True)
class RunPlan:
    """What a run needs, resolved once (see the module docstring)."""
    cfg: Config  # validated, with the layer names and classes the run uses; never changed
    images: tuple[ImageRef, ...]  # in config order
    notes: tuple[str, ...]  # what resolving found: auto layer, class source, links skipped
    net: nn.Module  # the user's network: layer names are relative to it
    model: Classifier  # net, its forward giving (N, outputs) logits
    head: Head  # how logits become the scores a map explains
    device: torch.device
    layers: tuple[LayerInfo, ...]  # targets in config order, then channel and concepts layers
    classes: Mapping[int, str]  # output index -> class name
    first: Prepared  # the first readable image, decoded once (the batch loop reuses it)
    probe: Probe  # the preflight pass on ``first``: logits, layers, its time
    skipped: tuple[Skipped, ...] = ()  # files found in folders that are not images
    task: Any = None  # task: segmentation / detection (explain.tasks); None: a classifier
    reshape: Any = "auto"  # how maps are read from the layers (``reshape_mode``), resolved once
    bounded_rows: Optional[int] = 1  # copies of the first image its bound sized
    # (``bounded_forward``); None with batch_size: auto, whose batches are sized to the memory
    # copies of the first image -> seconds per image of a pass without gradients, timed once
    # by explain.pace.timed_pass (the run's estimates and the sanity estimate all ask)
    timed: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def methods(self) -> list[str]:
        return [m.name for m in self.cfg.methods]

    @property
    def target_layers(self) -> tuple[LayerInfo, ...]:
        return self.layers[:len(self.cfg.target_layers)]

    @property
    def channel_layer(self) -> Optional[LayerInfo]:
        """The layer of the channel views (channels.enabled), else None."""
        return self._named(self.cfg.channel_layer) if self.cfg.channels.enabled else None

    @property
    def concept_layer(self) -> Optional[LayerInfo]:
        """The layer of the concept views (concepts.enabled), else None."""
        return self._named(self.cfg.concept_layer) if self.cfg.concepts.enabled else None

    def _named(self, name: str) -> LayerInfo:
        return next(layer for layer in self.layers if layer.name == name)

    @property
    def slots(self) -> int:
        """Slots (classes explained) per image: the maps of one method for one image."""
        return slots_per_image(self.cfg)

    @property
    def ext(self) -> str:
        """Extension of overlays, guided images and channel views (output.image_format;
        unset: PNG for runs of up to SMALL_RUN images, JPEG above)."""
        chosen = self.cfg.output.image_format
        return "." + (chosen or ("png" if len(self.images) <= SMALL_RUN else "jpg"))

    def targets(self, refs: list[ImageRef]) -> Any:
        """What the engine explains for these images (see ``slot_targets``)."""
        return slot_targets(self.cfg, refs)


def slot_targets(cfg: Config, refs: list[ImageRef]) -> Any:
    """What the engine explains for these images: None (each image's top_k classes), a list
    of class indices (the same for every image), or a (B, S) array when a slot depends on the
    image (its label; -1 = its prediction). An image without a label (a plain entry beside a
    labelled dataset) has its 'label' slot explain its prediction (see ``unlabelled_note``)."""
    targets = cfg.target_classes()
    if targets is None:
        return None
    if not any(t in TARGET_WORDS for t in targets):
        return [cfg.classes[t] for t in targets]
    rows = []
    for ref in refs:
        rows.append([-1 if t == "predicted" or (t == "label" and ref.label is None)
                     else cfg.classes[ref.label if t == "label" else t] for t in targets])
    return np.asarray(rows, dtype=np.int64)


def unlabelled_note(cfg: Config, refs: list[ImageRef]) -> list[str]:
    """The note for images without a label when ``targets`` asks for labels."""
    unlabelled = [ref for ref in refs if ref.label is None]
    if "label" not in (cfg.target_classes() or []) or not unlabelled:
        return []
    return [f"targets: {len(unlabelled)} image(s) without a label (e.g. "
            f"{unlabelled[0].path.name}): their 'label' slot explains the predicted class"]


def reshape_mode(cfg: Config, net: Any = None):
    """The config's reshape setting as explain.models.layouts takes it (``model_mode``: 'auto'
    on a Keras model is its own 'nhwc')."""
    spec = cfg.reshape
    return model_mode(net, TokenSpec(spec.prefix, spec.grid) if isinstance(spec, Reshape)
                      else spec)


@dataclass
class _Found:
    """What resolving has found so far (the plan's parts, before the preflight pass)."""
    cfg: Config
    refs: list[ImageRef]
    notes: list[str]
    net: nn.Module
    model: Classifier
    head: Head
    first: Prepared
    skipped: list[Skipped]
    task: Any = None  # explain.tasks.Task for segmentation / detection
    reshape: Any = "auto"  # reshape_mode(cfg, net)
    bounded_rows: Optional[int] = 1  # bounded_forward's batch (None: auto)


def _find(cfg: Config) -> _Found:
    """Images, model and the first image; the target layers' names resolved into the config."""
    if needs_bounds(cfg):
        meta_warm_up()  # on a thread, beside finding the images and loading the model
    refs, said = find_images(cfg)
    net = load_model(cfg)
    notes = [n for n in said if isinstance(n, str)] + unlabelled_note(cfg, refs)
    if cfg.compare.reference_dir and not cfg.compare.enabled:  # set, then nothing compared
        notes.append("compare.reference_dir is set but compare.enabled is false: nothing was "
                     "compared; set compare.enabled: true or add --compare")
    notes.extend(getattr(net, "explain_notes", ()))  # a Keras model: softmax taken off
    notes.extend(Classifier.grey_note(cfg))  # model.in_channels: 1 on ImageNet's mean / std
    task = task_for(cfg)
    model, head = task.wrap(net) if task else \
        (Classifier.of(net, cfg), Head(cfg.model.head, cfg.model.target))
    first, squeezed = first_image(cfg, refs)
    found = _Found(cfg, refs, notes + squeezed, net, model, head, first,
                   [n for n in said if isinstance(n, Skipped)], task, reshape_mode(cfg, net))
    found.bounded_rows = bounded_forward(cfg, model, found.first, len(refs))  # before any pass
    found.cfg = resolved(cfg, "target_layers", _layer_names(found))
    return found


def needs_bounds(cfg: Config) -> bool:
    """Whether the model comes from a file or a config's arguments nobody vouched for (a
    Keras file too: its symbolic shapes, sized as it loads, leave open an input of any size
    and a layer called many times)."""
    return not cfg.model.trust and \
        not (cfg.model.builder or "").startswith("explain.demo:")


def bounded_forward(cfg: Config, model: Any, first: Prepared, images: int = 1
                    ) -> Optional[int]:
    """ExplainError when the model's pass on a batch of the first image (``batch_size`` copies,
    at most ``images``; one for ``auto``, which sizes itself to the memory) would ask for more
    memory than the device has free, make over 10,000 module calls or too much work
    (explain.models.guard, on the meta device): a shared model file or a builder's arguments
    cannot exhaust the machine. Not for a trusted model or the demo's builder (the first pass
    on the meta device costs about a second of torch's own set-up, started early:
    ``meta_warm_up``). Returns the rows sized, None for ``auto`` (``LargerBatches`` goes on
    from there)."""
    auto = not isinstance(cfg.batch_size, int)
    rows = 1 if auto else max(1, min(cfg.batch_size, images))
    if needs_bounds(cfg):
        check_forward(model, first, rows, pick_device(cfg.device))
    return None if auto else rows


def check_forward(model: Any, first: Prepared, batch: int, device: torch.device) -> None:
    """``bounded_forward``'s check itself (also for a network explain.load_model read without
    trust and handed to explain.cam)."""
    x = first.tensor[None].expand(batch, *first.tensor.shape)
    problem = forward_size_problem(model, x, available(device) // 2)
    if problem:
        what = f"a batch of {batch} like {first.ref.id}" if batch > 1 else first.ref.id
        raise ExplainError(f"model: its forward pass on {what} is too large to run here: "
                           f"{problem}; check the model file, model.*_args, preprocess.size and "
                           f"batch_size, or set 'model.trust: true' if you trust this model")


class LargerBatches:
    """``bounded_forward`` for each batch larger than any bounded so far: it sized a batch of
    the first image, and with the aspect kept (``preprocess.size: 224``) a later 224 x 4096
    photo asks 18 times as much of the same model."""

    def __init__(self, plan: "RunPlan") -> None:
        self.plan, self.on, self.auto = plan, needs_bounds(plan.cfg), plan.bounded_rows is None
        self.largest = plan.first.tensor.numel() * (plan.bounded_rows or 1)

    def check(self, group: list[Prepared]) -> None:
        """ExplainError when this batch (images of one shape) is too large to run here; with
        batch_size: auto, when one of its images is (auto sized the batch to the memory)."""
        rows = 1 if self.auto else len(group)
        size = group[0].tensor.numel() * rows
        if self.on and size > self.largest:
            check_forward(self.plan.model, group[0], rows, self.plan.device)
            self.largest = size


def _layer_names(found: _Found) -> list[str]:
    """The target layers' dotted names as the model has them ('auto' and negative indexes
    resolved), with a note for each name that changed."""
    cfg, first = found.cfg, found.first
    rows: list = []

    def looked_at() -> list:
        if not rows:
            try:
                rows.extend(survey(found.net, found.model, first.tensor[None], found.head,
                                   mode=found.reshape))
            except ExplainError:
                raise
            except Exception as exc:  # the model's own code failed
                raise model_failed(exc, first.ref.id, size=first.tensor.shape[-2:]) from None
        return rows

    names = list(cfg.target_layers)
    if names == ["auto"]:
        chosen = found.task.auto_layer(found.net, found.model, first.tensor[None], looked_at()) \
            if found.task else auto_layer(looked_at())
        names = [chosen.name]
        found.notes.append(f"target_layers: auto chose '{chosen.name}' ({chosen.type}, output "
                           f"{chosen.output}), the last layer before the head a CAM can use")
    try:
        modules = [find_layer(found.net, n, f"target_layers[{i}]") for i, n in enumerate(names)]
    except ExplainError:  # a name that is not there: look at the layers for a better hint
        modules = [find_layer(found.net, n, f"target_layers[{i}]", looked_at())
                   for i, n in enumerate(names)]
    for given, (name, module) in zip(names, modules):
        if given != name:
            found.notes.append(f"target_layers: '{given}' is '{name}'")
        pooled = passthrough_note(found.net, name, module) if cfg.target_layers != ["auto"] \
            else ""
        found.notes += [pooled] if pooled else []
    if len(modules) > 1:  # one map from several layers: not a comparison of them
        found.notes.append(f"target_layers: {', '.join(n for n, _ in modules)} give one map per "
                           f"method and class (the mean of the layers' maps, each scaled to 0..1);"
                           f" to compare layers, run once per layer (--layer NAME)")
    recordable([name for name, _ in modules],
               "auto chose" if cfg.target_layers == ["auto"] else "resolves to")
    return [name for name, _ in modules]


def recordable(names: list[str], how: str) -> None:
    """A module name explain cannot record as a layer name (letters, digits, '_', '.', '-';
    the model's own names can hold anything) is one line, before anything is written."""
    for name in names:
        if len(name) > 200 or not LAYER.fullmatch(name):
            raise ExplainError(f"target_layers: {how} the layer {quote(name, 80)}, whose name "
                               f"explain cannot record (letters, digits, '_', '.' and '-' only, "
                               f"at most 200); rename that module in the model or pick another "
                               f"layer")


def _engine(found: _Found, device: torch.device) -> CamEngine:
    """The engine on the resolved layers; the channel layer hooked in every pass, the
    concepts layer in the preflight pass only."""
    cfg, net = found.cfg, found.net
    targets = [find_layer(net, name)[1] for name in cfg.target_layers]
    channel = find_layer(net, cfg.channel_layer, "channels.layer")[1] \
        if cfg.channels.enabled else None
    watch = ((("concepts.layer", find_layer(net, cfg.concept_layer, "concepts.layer")[1]),)
             if cfg.concepts.enabled else ())
    from explain.engine import CamEngine, EngineOptions
    engine_class = found.task.engine_class if found.task else CamEngine
    return engine_class(found.model, targets, cfg.methods, device, EngineOptions(
        layer_names=list(cfg.target_layers), probe_layer=channel, watch_layers=watch,
        aug_smooth=cfg.aug_smooth, eigen_smooth=cfg.eigen_smooth,
        guard_inplace=cfg.model.fix_inplace, seed=cfg.seed, head=found.head,
        reshape=found.reshape, precision=cfg.precision))


def _rows(found: _Found, engine: CamEngine) -> Config:
    """The config with ``batch_size: auto`` resolved to the images per pass that fit the
    memory (explain.batching), measured on the first image, with a note; the engine passes
    that many rows."""
    cfg = found.cfg
    if cfg.batch_size != "auto":
        return cfg
    x = found.first.tensor[None].to(engine.device)
    rows = batching.resolved("auto", lambda: engine.row_bytes(x), engine.device)
    engine.rows = rows
    found.notes.append(f"batch_size: auto chose {rows} image(s) per pass for the memory of "
                       f"{engine.device}")
    return resolved(cfg, "batch_size", rows)


def _probe(found: _Found, engine: CamEngine) -> Probe:
    """The preflight pass; class indices checked against the model's outputs."""
    try:
        probe = engine.probe(found.first.tensor[None])
    except ExplainError:
        raise
    except Exception as exc:  # the model's own code failed: say where, in one line
        raise model_failed(exc, found.first.ref.id, size=found.first.tensor.shape[-2:]) from None
    count = found.head.classes(int(probe.logits.shape[1]))
    for name, idx in found.cfg.classes.items():
        if idx >= count:
            raise ExplainError(f"classes.{name}: index {idx}, but the model has only "
                               f"{count} outputs (0..{count - 1})")
    pace.check_sizes(found.cfg.methods, probe.layers[:len(found.cfg.target_layers)],
                     found.first.tensor.shape[-2:], available(torch.device("cpu")),
                     found.cfg.eigen_smooth)
    found.notes.extend(blind_note(label) for label in probe.blind)
    return probe


def blind_note(label: str) -> str:
    """The note on a target layer the top class score does not reach (a ViT's final norm):
    a run's, and the warning of explain.cam and explain.channel_maps."""
    return (f"{label}: the top class score's gradient reaches fewer than 2 of its positions on "
            f"the first image, so gradient methods' maps at it are blank for every class; pick "
            f"another layer (explain layers CONFIG marks it 'zero grad')")


def _classes(found: _Found, count: int) -> Config:
    """The config with its classes: as given, or the names the model carries."""
    cfg = found.cfg
    if cfg.classes:
        return cfg
    named = class_names_from_model(found.net, cfg.model, count)
    if named is None:
        raise ExplainError("classes: not given and the model carries no class names; name "
                           "them, e.g. classes: {cat: 0, dog: 1}")
    names, source = named
    if cfg.targets == "all" and len(names) > MANY_CLASSES:
        raise ExplainError(f"targets: 'all' would explain all {len(names)} classes of the model "
                           f"for every image; use targets: predicted, top3, or name the classes")
    if len(names) > MAX_CLASSES:
        raise ExplainError(f"classes: the model names {len(names)} classes, more than "
                           f"{MAX_CLASSES}; name the ones to explain in the config")
    found.notes.append(f"classes: {len(names)} names from {source}")
    return resolved(cfg, "classes", names)


def slots_per_image(cfg: Config) -> int:
    """Classes explained per image (a config whose classes are resolved), at most: 'label'
    and 'predicted' among several targets may name the same class (one map; see
    ``slots_may_merge``)."""
    targets = cfg.target_classes()
    return min(cfg.top_k(), len(cfg.classes)) if targets is None else len(targets)


def slots_may_merge(cfg: Config) -> bool:
    """Whether an image may explain fewer classes than ``slots_per_image``: its targets hold
    'label' or 'predicted' beside other targets (the counts say "up to")."""
    targets = cfg.target_classes() or []
    return len(targets) > 1 and any(t in TARGET_WORDS for t in targets)


def _metrics(found: _Found) -> Config:
    """The config with ``metrics`` chosen when it leaves them unset (``default_metrics``: a
    default that depends on the run's size), with a note saying so; a task's run has none.
    Every later stage reads the resolved list."""
    cfg = found.cfg
    if cfg.metrics is not None:
        return cfg
    maps = len(found.refs) * slots_per_image(cfg) * len(cfg.methods)
    specs, note = default_metrics(maps, slots_may_merge(cfg)) if found.task is None else ([], "")
    found.notes.extend([note] if note else [])
    return resolved(cfg, "metrics", [s.model_dump() for s in specs])


def default_metrics(maps: int, up_to: bool = False) -> tuple[list[MetricSpec], str]:
    """The faithfulness metrics of a run of ``maps`` maps (``up_to``: at most) that leaves them
    unset, and a note saying why: AUTO_METRICS up to AUTO_MAPS maps, none above."""
    count = f"up to {maps}" if up_to else f"{maps}"
    default = [MetricSpec(name=name) for name in metrics.AUTO_METRICS]
    shown = ", ".join(f"{s.name} at percentiles {_span(s.percentiles)}" for s in default)
    if maps <= metrics.AUTO_MAPS:
        return default, (f"metrics: {shown} by default (runs of up to {metrics.AUTO_MAPS} maps; "
                         f"this one {count}); 'metrics: []' turns it off")
    return [], (f"metrics: off by default for runs over {metrics.AUTO_MAPS} maps (this one "
                f"{count}); 'metrics: [{', '.join(metrics.AUTO_METRICS)}]' turns on {shown}")


def _span(values: Optional[list[int]]) -> str:
    steps = {b - a for a, b in zip(values, values[1:])} if values and len(values) > 2 else set()
    if len(steps) == 1:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(str(v) for v in values or [])


def layer_infos(cfg: Config, probe: Probe, net: nn.Module) -> tuple[LayerInfo, ...]:
    """Every layer the run hooks, once, by its resolved name, as the probe saw it: the
    target layers in config order, then the channel and concepts layers."""
    names = list(cfg.target_layers)
    names += [cfg.channel_layer] if cfg.channels.enabled else []
    names += [cfg.concept_layer] if cfg.concepts.enabled else []
    return tuple(probe.info(find_layer(net, name)[1]).named(name) for name in dict.fromkeys(names))


@contextlib.contextmanager
def in_memory(cfg: Config, net: nn.Module, first: Prepared, refs: Sequence[ImageRef] = (), *,
              largest: Optional[Prepared] = None, rows: int = 1
              ) -> Iterator[tuple[Config, CamEngine, Head, Probe]]:
    """A network already in memory (not a file) resolved as a run's plan resolves one: layer
    names resolved, the engine held (model on the device, inplace guard on), the preflight
    pass made on ``first``. Yields the config with its layers resolved, the engine, the head
    and the probe (explain.api's ``cam`` and ``channel_maps`` use it). A network
    explain.load_model read without trust is bounded on ``rows`` copies of ``largest``
    (default ``first``): the biggest batch the call will run."""
    found = _Found(cfg, list(refs) or [first.ref], [], net, Classifier.of(net, cfg), Head(
        cfg.model.head, cfg.model.target), first, [], reshape=reshape_mode(cfg, net))
    if unvetted(net):  # read by explain.load_model from a file nobody vouched for; bounded
        # as the engine runs it (a grey network's Conv2d(1, ...) failed on RGB: no bound)
        check_forward(found.model, largest or first, rows, pick_device(cfg.device))
    found.cfg = resolved(cfg, "target_layers", _layer_names(found))
    engine = _engine(found, pick_device(found.cfg.device))
    with engine:
        probe = _probe(found, engine)
        yield _rows(found, engine), engine, found.head, probe


@contextlib.contextmanager
def naming_the_file(cfg: Config) -> Iterator[None]:
    """A planning error about a field of the config ('target_layers[0]: no layer ...',
    'classes.dog: index 5 ...') names the config file first, as a validation error does
    ('config dict' for a config given as a dict, as its validation errors say)."""
    try:
        yield
    except ExplainError as exc:
        if type(exc) is not ExplainError or not names_a_field(exc.message):
            raise
        raise ExplainError(f"{cfg.source or 'config dict'}: {exc.message}",
                           details=exc.details) from None


@contextlib.contextmanager
def planned(cfg: Config, ranks) -> Iterator[tuple[RunPlan, CamEngine]]:
    """Resolve ``cfg`` into a RunPlan and hold the engine (model on the device, inplace
    guard on) for the run. Under torchrun every rank resolves, and a failure on any rank
    stops all of them (``ranks.together``)."""
    with ranks.together(), naming_the_file(cfg):
        found = _find(cfg)
        device = ranks.device(pick_device(found.cfg.device))
        engine = _engine(found, device)
    ranks.same("images", [r.id for r in found.refs])  # so that the ranks' shares fit together
    with engine:
        with naming_the_file(cfg):
            with ranks.together():
                probe = _probe(found, engine)
                found.cfg = _classes(found, found.head.classes(int(probe.logits.shape[1])))
                found.cfg = _rows(found, engine)
            cfg = found.cfg = _metrics(found)
        yield RunPlan(
            cfg=cfg, images=tuple(found.refs), notes=tuple(found.notes), net=found.net,
            model=found.model, head=found.head, device=device,
            layers=layer_infos(cfg, probe, found.net),
            classes=MappingProxyType({idx: name for name, idx in cfg.classes.items()}),
            first=found.first, probe=probe, skipped=tuple(found.skipped), task=found.task,
            reshape=found.reshape, bounded_rows=found.bounded_rows), engine

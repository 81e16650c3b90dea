"""``explain.cam`` and ``explain.channel_maps``: a run's engine on a network already in memory.

Options are config keys (explain.api.inputs checks them with the config's schema), images are
prepared as a run prepares them, and the layers ('auto', negative indexes), the model wrapper
(``model.output``), the head, the layouts (``reshape``), the inplace guard, the engine and its
preflight pass are made by the same code as a run's plan (explain.plan). So a map here equals
the map a run with the same settings saves with ``output.save_arrays``, for the same batch of
images (a map's last float bits can depend on which images share its batch: images are
batched as a run batches them, ``batch_size`` at a time, grouped by input size).
The model's train/eval flags, ``requires_grad`` flags, inplace flags and device are restored
afterwards, also when a call fails.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union, overload

from explain.api import display
from explain.api.inputs import (OPTIONS, Images, Layer, check_model, in_call_words, layer_names,
                                prepared_images, settings, split_targets)
from explain.errors import ExplainError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure
    from torch import nn

    from explain.config import Config
    from explain.engine import BatchResult, CamEngine
    from explain.models.heads import Head
    from explain.images import Prepared

@contextlib.contextmanager
def session(model: "nn.Module", cfg: "Config", items: list["Prepared"],
            default_targets: bool) -> Iterator[tuple["Config", "CamEngine", "Head"]]:
    """The engine on ``model`` as a run's plan makes it: layer names resolved, the engine held
    (model on the device, inplace guard on), the preflight pass made on the first image and
    the classes named (given, carried by the model, else '0', '1', ...). Yields the resolved
    config, the engine and the head."""
    from explain.api.layerhint import POINTER, layers_named, usable_layers
    from explain.plan import blind_note, in_memory
    largest = max(items, key=lambda item: item.tensor.numel())  # what a bound must size:
    alike = sum(1 for item in items if item.tensor.shape == largest.tensor.shape)  # its batch
    rows = min(alike, cfg.batch_size if isinstance(cfg.batch_size, int) else 1)
    given = cfg
    try:
        with in_memory(cfg, model, items[0], [item.ref for item in items], largest=largest,
                       rows=rows) as (cfg, engine, head, probe):
            usable = usable_layers(model, given, items[0]) if probe.blind else []
            for label in probe.blind:  # a run notes it; here the maps would be blank unsaid
                warnings.warn(layers_named(blind_note(label), usable), UserWarning,
                              stacklevel=4)
            count = head.classes(int(probe.logits.shape[1]))
            yield _named(cfg, model, count, default_targets), engine, head
    except ExplainError as err:  # no config here: name the usable layers, not the command
        if POINTER.search(err.message):
            err.args = (layers_named(err.message, usable_layers(model, given, items[0])),
                        *err.args[1:])
        raise


def _named(cfg: "Config", net: "nn.Module", count: int, default_targets: bool) -> "Config":
    """The config with its classes: as given, the names the model carries, or the output
    indices as names; targets left out become 'predicted' over MANY_CLASSES classes (where a
    run's config refuses targets: all, explain.plan)."""
    from explain.config import MAX_CLASSES, resolved
    from explain.models.labels import class_names_from_model
    from explain.config import MANY_CLASSES
    if not cfg.classes:
        named = class_names_from_model(net, cfg.model, count)
        names = named[0] if named else {str(i): i for i in range(count)}
        if len(names) > MAX_CLASSES:
            raise ExplainError(f"classes: the model has {len(names)} outputs, more than "
                               f"{MAX_CLASSES}; name the ones to explain, e.g. "
                               f"classes={{'cat': 0, 'dog': 1}}")
        cfg = resolved(cfg, "classes", names)
    if default_targets and len(cfg.classes) > MANY_CLASSES:
        cfg = resolved(cfg, "targets", "predicted")
    return cfg


def by_index(cfg: "Config", indices: list[int]) -> "Config":
    """The config with targets given as output indices turned into class names."""
    from explain.config import resolved
    names = {i: name for name, i in cfg.classes.items()}
    for i in indices:
        if i not in names:
            shown = ", ".join(f"{n}={j}" for n, j in list(cfg.classes.items())[:20])
            raise ExplainError(f"targets: output {i} is not a named class ({shown})")
    return resolved(cfg, "targets", [names[i] for i in indices])


def explained(engine: "CamEngine", cfg: "Config", head: "Head", items: list["Prepared"]
              ) -> Iterator[tuple["Prepared", "BatchResult", int, "np.ndarray"]]:
    """Each image with its batch's result, its row there and its probabilities over all
    classes: ``batch_size`` images at a time, grouped by input size, as a run does."""
    import torch

    from explain.images import batches, group_by_shape
    from explain.errors import model_failed
    from explain.plan import slot_targets
    names = {i: name for name, i in cfg.classes.items()}
    for chunk in batches(items, cfg.batch_size):
        for group in group_by_shape(chunk):
            x = torch.stack([item.tensor.to(group[0].tensor.device) for item in group])
            try:
                result = engine.run(x, slot_targets(cfg, [item.ref for item in group]), names,
                                    cfg.top_k())
            except ExplainError:
                raise
            except Exception as exc:  # the model's own code failed on this batch
                raise model_failed(exc, ", ".join(item.ref.id for item in group[:3]),
                                   size=x.shape[-2:]) from None
            probs = head.probabilities(result.logits)
            for b, item in enumerate(group):
                yield item, result, b, probs[b]


@dataclass(frozen=True, eq=False, repr=False)
class CamResult:
    """One image's maps, as ``explain.cam`` returns them for one image.

    ``maps[method][class]``: the map, float32 (H, W) in 0..1 at the model's input size, what
    a run saves as ``cams/<method>/<image>__<class>.npy``. ``probabilities``: every named
    class's probability; ``predicted``: the most likely named class. ``raw_max[method][class]``:
    the map's maximum before scaling to 0..1 (None for methods the library computes itself).
    ``image``: the photo at input size (float32 RGB 0..1), ``input``: the (3, H, W) tensor the
    model was given. Shows itself in Jupyter (overlays embedded); ``show()`` is a figure."""
    name: str
    maps: dict[str, dict[str, "np.ndarray"]]
    probabilities: dict[str, float]
    predicted: str
    raw_max: dict[str, dict[str, Optional[float]]]
    image: "np.ndarray"
    input: "torch.Tensor"
    layers: tuple[str, ...]
    colormap: str = "jet"
    image_weight: float = 0.5

    @property
    def methods(self) -> list[str]:
        """The methods, in the order asked for."""
        return list(self.maps)

    @property
    def classes(self) -> list[str]:
        """The classes explained for this image."""
        return list(next(iter(self.maps.values()), {}))

    def overlay(self, method: str, cls: str) -> "np.ndarray":
        """The map over the photo, uint8 RGB (H, W, 3), as a run draws
        ``cams/<method>/<image>__<class>.png``."""
        from explain import render
        return render.overlay(self.image, self._map(method, cls), self.colormap,
                              self.image_weight)

    def _map(self, method: str, cls: str) -> "np.ndarray":
        if method not in self.maps:
            raise ExplainError(f"method {method!r} was not run (methods: "
                               f"{', '.join(self.maps)})")
        if cls not in self.maps[method]:
            raise ExplainError(f"class {cls!r} was not explained for {self.name} (classes: "
                               f"{', '.join(self.maps[method])})")
        return self.maps[method][cls]

    def show(self) -> "Figure":
        """A matplotlib figure: a row per class, the photo and each method's overlay."""
        from explain.render import as_uint8
        first = (f"{self.name} (predicted {self.predicted})",
                 as_uint8(self.image))
        return display.grid_figure([[first] + [(f"{m} · {c} (p {self.probabilities.get(c, 0):.3f})",
                                                self.overlay(m, c)) for m in self.methods]
                                    for c in self.classes])

    def html(self) -> str:
        """This image's block of the inline display (no outer <div>)."""
        from explain.render import as_uint8
        probs = ", ".join(f"{c} {p:.3f}" for c, p in list(self.probabilities.items())[:8])
        parts = [f"<p><b>{display.esc(self.name)}</b>: predicted "
                 f"<b>{display.esc(self.predicted)}</b> ({display.esc(probs)}) · layer "
                 f"{display.esc(', '.join(self.layers))}</p>",
                 display.figure_html(display.picture_uri(as_uint8(self.image)),
                                     "input")]
        for c in self.classes:
            parts += [display.figure_html(display.picture_uri(self.overlay(m, c)),
                                          f"{m} · {c}") for m in self.methods]
            parts.append("<br>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return display.block(self.html())

    def __repr__(self) -> str:
        probs = ", ".join(f"{c} {p:.3f}" for c, p in list(self.probabilities.items())[:5])
        return (f"CamResult({self.name!r}, methods {', '.join(self.methods)}; classes "
                f"{', '.join(self.classes)}; predicted {self.predicted} ({probs}))")


class CamBatch(Sequence):
    """What ``explain.cam`` returns for a batch: one CamResult per image, in input order
    (``batch[0]``, ``len(batch)``, ``for r in batch``). ``maps[method][class]`` stacks the
    images' maps to (B, H, W) when the images share a size and a class; ``probabilities``
    lists each image's dict. Shows itself in Jupyter."""

    def __init__(self, results: list[CamResult]):
        self.results = list(results)

    @overload
    def __getitem__(self, index: int) -> CamResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[CamResult]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[CamResult, list[CamResult]]:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    @property
    def maps(self) -> dict[str, dict[str, "np.ndarray"]]:
        """method -> class -> (B, H, W): the batch's maps stacked."""
        import numpy as np
        sizes = {r.image.shape[:2] for r in self.results}
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes))
            raise ExplainError(f"the images were fed at different sizes ({shown}), so their maps "
                               f"do not stack; use batch[i].maps for image i")
        out: dict[str, dict[str, np.ndarray]] = {}
        for method in self.results[0].methods:
            classes = [c for c in self.results[0].classes
                       if all(c in r.maps[method] for r in self.results)]
            out[method] = {c: np.stack([r.maps[method][c] for r in self.results])
                           for c in classes}
        return out

    @property
    def probabilities(self) -> list[dict[str, float]]:
        """Each image's probabilities of the named classes."""
        return [r.probabilities for r in self.results]

    def show(self) -> list["Figure"]:
        """One figure per image (CamResult.show)."""
        return [r.show() for r in self.results]

    def _repr_html_(self) -> str:
        return display.block("<hr>".join(r.html() for r in self.results))

    def __repr__(self) -> str:
        return f"CamBatch({len(self)} images: {', '.join(r.name for r in self.results)})"


def _result(item: "Prepared", result: "BatchResult", b: int, probs: "np.ndarray",
            cfg: "Config") -> CamResult:
    """One image's CamResult from its batch's result."""
    import numpy as np
    maps: dict[str, dict[str, np.ndarray]] = {m.name: {} for m in cfg.methods}
    raw: dict[str, dict[str, Optional[float]]] = {m.name: {} for m in cfg.methods}
    for one in result.per_image[b]:
        maps[one.method][one.class_name] = np.array(one.cam, dtype=np.float32)
        peaks = result.raw_max.get(one.method)
        raw[one.method][one.class_name] = None if peaks is None else float(peaks[b, one.slot])
    named = sorted(cfg.classes.values())
    names = {i: name for name, i in cfg.classes.items()}
    best = max(named, key=lambda i: probs[i])
    return CamResult(name=item.ref.id, maps=maps,
                     probabilities={names[i]: float(probs[i]) for i in named},
                     predicted=names[best], raw_max=raw, image=item.rgb, input=item.tensor,
                     layers=tuple(cfg.target_layers), colormap=cfg.output.colormap,
                     image_weight=float(cfg.output.image_weight))


def cam(model: "nn.Module", images: Images, layer: Layer,
        methods: Union[str, Sequence[Union[str, dict[str, Any]]]] = ("gradcam",),
        targets: Union[None, str, int, Sequence[Union[str, int]]] = None,
        **options: Any) -> Union[CamResult, CamBatch]:
    """Class activation maps of ``model`` (a torch.nn.Module in memory) for ``images``, as a
    run makes them: the same preprocessing, inplace guard, layouts, heads and engine.

    images: a path, an H x W x 3 RGB array (uint8, or float in 0..1), a PIL image or a prepared
    (3, H, W) tensor -> a CamResult; a list of those, a (B, H, W, 3) array or a (B, 3, H, W)
    tensor -> a CamBatch. layer: a layer name ('features.10', 'features.-3', 'auto'), the
    module itself, or a list of them. methods: names (or {name: ..., option: ...}) as in a
    config. targets: class names or output indices, 'all', 'predicted' or 'top3'; None: every
    named class when there are at most 20, else the predicted one. options: config keys
    ``classes`` ({name: index} or names in output order), ``preprocess`` (dict),
    ``output``/``head``/``target``/``fix_inplace``/``in_channels`` (the ``model.*`` keys;
    ``in_channels=1``: a grey network), ``reshape``,
    ``aug_smooth``, ``eigen_smooth``, ``seed``, ``device``, ``batch_size``, ``colormap`` and
    ``image_weight`` (the overlays). Bad input raises ExplainError with the line a config file
    would get, its keys as the arguments you pass (``in_channels=1``, ``output``).

    >>> r = explain.cam(net, "images/cat.jpg", "features.10", ["gradcam", "layercam"],
    ...                 classes={"cat": 0, "dog": 1})
    >>> r.maps["gradcam"]["cat"].shape, r.probabilities["cat"]
    """
    where = "explain.cam"
    with in_call_words(OPTIONS):  # 'in_channels=1' where a config file says 'model.in_channels: 1'
        check_model(model, where)
        wanted, indices = split_targets(targets)
        cfg = settings(where, layer_names(model, layer, where), methods, wanted, options)
        items, single = prepared_images(images, cfg.preprocess)
        with session(model, cfg, items, targets is None) as (cfg, engine, head):
            if indices is not None:
                cfg = by_index(cfg, indices)
            found = {item.ref.id: _result(item, result, b, probs, cfg)
                     for item, result, b, probs in explained(engine, cfg, head, items)}
    results = [found[item.ref.id] for item in items]
    return results[0] if single else CamBatch(results)

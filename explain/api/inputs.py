"""What ``explain.cam`` and ``explain.channel_maps`` take: options checked as config keys, and
images (paths, arrays, PIL images, tensors) prepared as a run prepares them.

Options are written into a config (the model part is a placeholder that is never built) and
validated by the config's own schema, so a bad value gets the line a config file would get,
starting with the function's name instead of the file's: ``explain.cam: methods[0].name:
unknown method 'gradcm' — did you mean 'gradcam'? ...``, in the call's words
(``call_words``: 'in_channels=1' where a file would read 'model.in_channels: 1'). Images named
by path are read and preprocessed by explain.images exactly as a run reads them; arrays and
PIL images go through the same ``preprocess``; a prepared tensor is used as it is.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

from explain.errors import ExplainError
from explain.names import fold, quote, safe_slug, short, suggest

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

    from explain.config import Config, Preprocess
    from explain.images import Prepared

# One image: a file path, an H x W x 3 RGB array (uint8 0..255 or float 0..1), a PIL image, or
# a prepared (3, H, W) tensor; a batch: a list of those, a (B, H, W, 3) array or a (B, 3, H, W)
# prepared tensor.
ImageInput = Union[str, os.PathLike, "np.ndarray", "Image.Image", "torch.Tensor"]
Images = Union[ImageInput, Sequence[ImageInput]]
Layer = Union[str, "nn.Module", Sequence[Union[str, "nn.Module"]]]

IN_MEMORY = "(in memory)"
PLACEHOLDER_MODEL = "explain.demo:catdog_efficientnet_lite0"  # validated, never built
# cam()'s options and the config key each one is (and is validated as)
OPTIONS = {
    "classes": "classes", "preprocess": "preprocess", "output": "model.output",
    "head": "model.head", "target": "model.target", "fix_inplace": "model.fix_inplace",
    "in_channels": "model.in_channels",
    "reshape": "reshape", "aug_smooth": "aug_smooth", "eigen_smooth": "eigen_smooth",
    "seed": "seed", "device": "device", "batch_size": "batch_size",
    "colormap": "output.colormap", "image_weight": "output.image_weight",
}
# channel_maps() also takes the channel views' drawing options
VIEW_OPTIONS = {"tile_size": "channels.tile_size", "top_k": "channels.top_k",
                "shared_scale": "channels.shared_scale", "labels": "channels.labels",
                "grid_colormap": "channels.colormap"}


def call_words(message: str, known: dict[str, str]) -> str:
    """``message`` with the config keys of ``known`` (option -> key) in a call's words: a
    notebook passes ``in_channels=1``, so 'set model.in_channels: 1' reads 'set in_channels=1'
    and a field 'model.output: ...' reads 'output: ...'. A key inside a name, path or quoted
    text ('model.head.fc', a layer of a wrapped model; /data/model.output/cat.png) is left as
    it is: the user's own words."""
    for option, key in sorted(known.items(), key=lambda pair: -len(pair[1])):
        if option == key:
            continue
        bare = rf"(?<![\w.'\"/\\-]){re.escape(key)}(?![\w'\"/\\-]|\.\w)"
        message = re.sub(rf"^([\w.]+: ){bare}: ", rf"\g<1>{option}: ", message)
        message = re.sub(bare + r": ([\w.\-]*\w)", lambda found: f"{option}="
                         f"{_python_value(found.group(1))}", message)
        message = re.sub(bare, option, message)
    return re.sub(r"(?:use|add) task: (segmentation|detection)(?: too)?", _TASK_HINT, message)


# a call takes no task: a segmentation model's or a detector's maps come from a run
_TASK_HINT = (r"explain.cam and explain.channel_maps explain classifiers only: write a config "
              r"with task: \1 (docs/models.md) and call explain.run(config)")


def _python_value(word: str) -> str:
    """A YAML scalar of an error's hint as Python writes it: 1, True, None, 'softmax'."""
    words = {"true": "True", "false": "False", "null": "None"}
    if word.lower() in words:
        return words[word.lower()]
    return word if re.fullmatch(r"-?\d+(\.\d+)?", word) else repr(word)


@contextlib.contextmanager
def in_call_words(known: dict[str, str]) -> Iterator[None]:
    """Any ExplainError raised inside, worded for the call (``call_words``)."""
    try:
        yield
    except ExplainError as err:
        err.args = (call_words(err.message, known), *err.args[1:])
        err.details = tuple(call_words(d, known) for d in err.details)
        raise


def plain(value: Any) -> Any:
    """A pydantic section (``Preprocess(size=112)``) as the dict a config file would hold."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


def split_targets(targets: Any) -> tuple[Any, Optional[list[int]]]:
    """``targets`` as a config value, or (None, output indices) when given by index (the
    names are known only once the classes are)."""
    if targets is None:
        return None, None
    if isinstance(targets, str):  # a word of the config's targets, or one class name
        from explain.config.schema import TOP_K
        word = re.fullmatch(rf"all|predicted|label|{TOP_K}", targets)
        return (targets if word else [targets]), None
    if isinstance(targets, int) and not isinstance(targets, bool):
        return None, [targets]
    if isinstance(targets, (list, tuple)) and targets and \
            all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
        return None, list(targets)
    return (list(targets) if isinstance(targets, tuple) else targets), None


def settings(where: str, layers: list[str], methods: Any, targets: Any,
             options: dict[str, Any], *, views: bool = False) -> "Config":
    """The config an in-memory call stands for, validated like a config file (ExplainError
    starting with ``where``). ``options`` keys: OPTIONS; with ``views`` (channel_maps) also
    VIEW_OPTIONS, and the channel views are on (at the first target layer)."""
    from pydantic import ValidationError

    from explain.config import Config, apply_override, explain_validation
    known = {**OPTIONS, **VIEW_OPTIONS} if views else OPTIONS
    data: dict[str, Any] = {"channels": {"enabled": views},
                            "model": {"builder": PLACEHOLDER_MODEL}, "images": [IN_MEMORY],
                            "target_layers": layers,
                            "methods": methods if isinstance(methods, str) else
                            [methods] if isinstance(methods, dict) else list(methods)}
    if targets is not None:
        data["targets"] = targets
    for key, value in options.items():
        if key not in known:
            raise ExplainError(f"{where}: unknown option {quote(key)}{suggest(key, list(known))} "
                               f"(options: {', '.join(known)})")
        value = plain(value)
        if key == "classes" and isinstance(value, (list, tuple)):
            value = {name: i for i, name in enumerate(value)}  # names in output order
        apply_override(data, known[key], value)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise explain_validation(err, where) from None


def layer_names(net: "nn.Module", layer: Layer, where: str) -> list[str]:
    """Layer names (as named_modules() prints them) from names or the modules themselves
    (``model.features[10]``)."""
    from torch import nn
    given = [layer] if isinstance(layer, (str, nn.Module)) else list(layer or [])
    if not given:
        raise ExplainError(f"{where}: layer: name at least one layer, e.g. 'features.10'")
    names = []
    for i, one in enumerate(given):
        if isinstance(one, nn.Module):
            found = next((n for n, m in net.named_modules() if m is one and n), None)
            if found is None:
                raise ExplainError(f"{where}: target_layers[{i}]: the module given "
                                   f"({type(one).__name__}) is not a layer of the model")
            one = found
        if not isinstance(one, str):
            raise ExplainError(f"{where}: target_layers[{i}]: a layer is a name or a module of "
                               f"the model (got {type(one).__name__})")
        names.append(one)
    return names


def check_model(model: Any, where: str) -> None:
    """The network must be an nn.Module with parameters (a model file goes through
    explain.load_model)."""
    from torch import nn
    if not isinstance(model, nn.Module):
        raise ExplainError(f"{where}: model: expected a torch.nn.Module (got "
                           f"{type(model).__name__}); a model file is loaded with "
                           f"explain.load_model(config)")


def prepared_images(images: Images, spec: "Preprocess") -> tuple[list["Prepared"], bool]:
    """The images ready for the model, and whether one image (not a batch) was given."""
    import numpy as np
    import torch
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        items = [_tensor_item(t, f"images[{i}]", i, spec) for i, t in enumerate(images)]
        return _unique(items), False
    if isinstance(images, np.ndarray) and images.ndim == 4:
        items = [_array_item(a, f"images[{i}]", i, spec) for i, a in enumerate(images)]
        return _unique(items), False
    if isinstance(images, (list, tuple)):
        if not images:
            raise ExplainError("images: the list is empty; give at least one image")
        return _unique([_item(one, f"images[{i}]", i, spec) for i, one in enumerate(images)]), \
            False
    return [_item(images, "images", 0, spec)], True


def _item(value: Any, where: str, index: int, spec: "Preprocess") -> "Prepared":
    import numpy as np
    import torch
    if isinstance(value, (str, os.PathLike)):
        return _path_item(Path(value), where, spec)
    if isinstance(value, np.ndarray):
        return _array_item(value, where, index, spec)
    if isinstance(value, torch.Tensor):
        return _tensor_item(value, where, index, spec)
    if _is_pil(value):
        return _pil_item(value, where, index, spec)
    raise ExplainError(f"{where}: expected an image file path, an H x W x 3 array, a PIL image "
                       f"or a (3, H, W) tensor (got {type(value).__name__})")


def _is_pil(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(value, Image.Image)


def _ref(name: str, path: Optional[Path] = None) -> Any:
    from explain.images import ImageRef
    return ImageRef(name, path or Path(IN_MEMORY), False, None)


def _path_item(path: Path, where: str, spec: "Preprocess") -> "Prepared":
    """A file, read and preprocessed as a run reads a file its config names."""
    from explain.images import prepare
    path = path.expanduser()
    try:
        found = path.is_file()
    except OSError as exc:
        raise ExplainError(f"{where}: {short(path)}: {exc.strerror}") from None
    if not found:
        from explain.images.finding import close_hint
        raise ExplainError(f"{where}: image not found: {short(path)}{close_hint(path)}")
    return prepare(_ref(safe_slug(path.stem, "image"), path.resolve()), spec)


def _array_item(array: "np.ndarray", where: str, index: int, spec: "Preprocess") -> "Prepared":
    """An RGB array: uint8 0..255 or float 0..1, (H, W, 3). Floats are rounded to 0..255 as a
    photo file holds them, so a photo given as ``rgb / 255`` gives the run's numbers."""
    import numpy as np
    if array.ndim != 3 or array.shape[2] != 3:
        hint = " (channels first: use array.transpose(1, 2, 0))" if array.ndim == 3 and \
            array.shape[0] == 3 else (" (RGBA: drop the alpha channel, array[..., :3])"
                                      if array.ndim == 3 and array.shape[2] == 4 else "")
        raise ExplainError(f"{where}: an image array must be H x W x 3 (RGB), got shape "
                           f"{tuple(array.shape)}{hint}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype in (np.float32, np.float64):
        finite = bool(np.isfinite(array).all())
        if not finite or array.min() < 0 or array.max() > 1:
            raise ExplainError(f"{where}: a float image array must hold values in 0..1 (got "
                               f"{float(np.nanmin(array)):.3g}..{float(np.nanmax(array)):.3g}"
                               f"{'' if finite else ', and NaN or infinite values'}); use uint8 "
                               f"for 0..255")
        pixels = np.round(array * 255).astype(np.uint8)  # as a photo file holds it
    else:
        raise ExplainError(f"{where}: image array of dtype {array.dtype}; expected uint8 "
                           f"(0..255) or float32/float64 (0..1)")
    return _from_pixels(pixels, _ref(f"image{index}"), where, spec)


def _pil_item(image: "Image.Image", where: str, index: int, spec: "Preprocess") -> "Prepared":
    import numpy as np
    if image.width * image.height > spec.max_pixels:
        raise ExplainError(f"{where}: {image.width}x{image.height} is over "
                           f"preprocess.max_pixels ({spec.max_pixels})")
    name = Path(getattr(image, "filename", "") or "").stem
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return _from_pixels(rgb, _ref(safe_slug(name, f"image{index}") if name else f"image{index}"),
                        where, spec)


def _from_pixels(pixels: "np.ndarray", ref: Any, where: str, spec: "Preprocess") -> "Prepared":
    from explain.images import ImageError, Prepared, preprocess
    height, width = pixels.shape[:2]
    if height * width > spec.max_pixels:
        raise ExplainError(f"{where}: {width}x{height} is over preprocess.max_pixels "
                           f"({spec.max_pixels})")
    if min(height, width) < 1:
        raise ExplainError(f"{where}: an empty image ({width}x{height})")
    try:
        tensor, rgb = preprocess(pixels, spec)
    except ImageError as exc:
        raise ExplainError(f"{where}: {exc}") from None
    return Prepared(ref, tensor, rgb)


def _tensor_item(tensor: "torch.Tensor", where: str, index: int,
                 spec: "Preprocess") -> "Prepared":
    """A prepared (3, H, W) tensor, used as it is; its photo for the overlays is the tensor
    with the normalisation of ``spec`` undone."""
    import numpy as np
    import torch
    from explain.images import Prepared
    from explain.images.reading import unnormalised
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ExplainError(f"{where}: a prepared tensor must be (3, H, W) or (B, 3, H, W), "
                           f"got shape {tuple(tensor.shape)}")
    if not torch.is_floating_point(tensor) or not bool(torch.isfinite(tensor).all()):
        raise ExplainError(f"{where}: a prepared tensor must hold finite floats (got "
                           f"{tensor.dtype})")
    photo = unnormalised(tensor.detach().float().cpu().numpy(), spec)
    return Prepared(_ref(f"image{index}"), tensor.detach(), np.ascontiguousarray(photo))


def _unique(items: list["Prepared"]) -> list["Prepared"]:
    """Items with unique names (``cat``, ``cat-2``): the names key the results."""
    from dataclasses import replace
    seen: set[str] = set()
    out = []
    for item in items:
        name, n = item.ref.id, 2
        while fold(name) in seen:
            name, n = f"{item.ref.id}-{n}", n + 1
        seen.add(fold(name))
        out.append(item if name == item.ref.id else
                   type(item)(replace(item.ref, id=name), item.tensor, item.rgb))
    return out

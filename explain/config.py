"""The experiment file: schema, defaults, validation and command-line overrides.

Relative paths inside a config file are resolved against the folder that holds the config
file, so a run gives the same result from any working directory. Paths given on the command
line (``--out``) are relative to the working directory, as usual for command-line arguments.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import cv2
import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, ValidationError, field_validator, model_validator)

from explain.errors import ExplainError
from explain.names import name_problem, quote, safe_slug, short, suggest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Every colormap OpenCV has, by its lower-case name ('jet', 'turbo', ...).
COLORMAPS = tuple(sorted(n[len("COLORMAP_"):].lower() for n in dir(cv2) if n.startswith("COLORMAP_")))

# Bounds that keep a small config from asking for huge allocations or endless work.
MAX_CONFIG_BYTES = 256 * 1024
MAX_CONFIG_NODES = 20_000  # YAML nodes after alias expansion (a config has about a hundred)
MAX_SIDE = 4096  # model input side in pixels
MAX_CLASSES = 1000  # named classes (ImageNet-1k fits; name a subset of larger label sets)
Int = StrictInt
Number = Union[StrictInt, StrictFloat]
Text = Annotated[StrictStr, Field(max_length=4096)]
DOTTED = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?")
LAYER = re.compile(r"[\w.-]+")


def is_finite(value: float) -> bool:
    """Whether a number is finite; an integer too large for a float (a 400-digit number
    written in a file) is not, instead of an OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _finite(values: tuple[float, ...], what: str) -> tuple[float, ...]:
    if not all(is_finite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers (at most about 1e308)")
    return values


TARGET_WORDS = ("label", "predicted")  # in a targets list: the image's label, its prediction


class _Section(BaseModel):
    # frozen: a config is validated once and never changed; what a run resolves (layer names
    # from 'auto', class names from the model) makes a new, validated copy (``resolved``)
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """Where the network comes from: a file (whole pickle or state_dict + arch) or a builder.

    ``arch`` and ``builder`` name code. Without ``trust: true`` they may only name the
    allow-listed model factories (see explain.model); with it, any importable callable.
    """
    file: Optional[Text] = None
    keras: Optional[Text] = None  # a Keras 3 model file (.keras, .h5), run on Keras' torch backend
    arch: Optional[StrictStr] = None
    arch_args: dict[StrictStr, Any] = Field(default_factory=dict)
    builder: Optional[StrictStr] = None
    builder_args: dict[StrictStr, Any] = Field(default_factory=dict)
    trust: StrictBool = False
    fix_inplace: StrictBool = True
    # what forward returns: null (a logits tensor), an index into a tuple/list, or a key /
    # attribute name of a dict or output object (e.g. 'logits'); see explain.heads
    output: Union[Annotated[Int, Field(ge=0, le=64)], Annotated[StrictStr, Field(
        pattern=r"^[A-Za-z_]\w{0,63}$")], None] = None
    head: Literal["softmax", "binary", "multilabel"] = "softmax"
    target: Literal["logit", "probability"] = "logit"  # what a map explains

    @field_validator("arch", "builder")
    @classmethod
    def _dotted(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (len(v) > 200 or not DOTTED.fullmatch(v)):
            raise ValueError(f"{quote(v)} is not a dotted name such as "
                             f"torchvision.models.alexnet or package.module:function")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if sum(x is not None for x in (self.file, self.builder, self.keras)) != 1:
            raise ValueError("give exactly one of 'file', 'builder' or 'keras'")
        if self.arch and self.builder:
            raise ValueError("'arch' goes with 'file' (a state_dict), not with 'builder'")
        return self


class Reshape(_Section):
    """An explicit token layout: ``prefix`` tokens (class, distillation, registers) before an
    h x w grid of patch tokens (grid inferred from the input's shape when left out)."""
    prefix: Int = Field(ge=0, le=64)
    grid: Optional[tuple[Annotated[Int, Field(ge=1, le=MAX_SIDE)],
                         Annotated[Int, Field(ge=1, le=MAX_SIDE)]]] = None


class Preprocess(_Section):
    """OpenCV preprocessing: BGR->RGB, resize, scale to 0..1, normalise."""
    size: Union[Annotated[Int, Field(ge=8, le=MAX_SIDE)],
                tuple[Annotated[Int, Field(ge=8, le=MAX_SIDE)],
                      Annotated[Int, Field(ge=8, le=MAX_SIDE)]]] = 224
    multiple_of: Int = Field(32, ge=1, le=256)
    mean: tuple[Number, Number, Number] = IMAGENET_MEAN
    std: tuple[Number, Number, Number] = IMAGENET_STD
    max_pixels: Int = Field(40_000_000, ge=1, le=250_000_000)
    # image files larger than this are refused before they are read (stat); 256 MiB holds an
    # uncompressed 16-bit RGB TIFF of 40 MP (the max_pixels default); at most 1 GiB
    max_bytes: Int = Field(256 * 2**20, ge=1024, le=2**30)
    # torch: (x/255 - mean) / std; caffe: BGR, 0..255 minus the ImageNet BGR mean (VGG16's
    # preprocess_input); tf: x/127.5 - 1 (MobileNet, Inception)
    mode: Literal["torch", "caffe", "tf"] = "torch"

    @field_validator("mean")
    @classmethod
    def _mean(cls, v):
        return _finite(v, "mean values")

    @model_validator(mode="after")
    def _mode_uses_mean(self) -> "Preprocess":
        if self.mode != "torch" and (tuple(self.mean) != IMAGENET_MEAN or
                                     tuple(self.std) != IMAGENET_STD):
            raise ValueError(f"mean and std apply to mode 'torch' only; mode '{self.mode}' has "
                             f"its own fixed scaling (remove mean/std or use mode: torch)")
        return self

    @field_validator("std")
    @classmethod
    def _std(cls, v):
        _finite(v, "std values")
        if any(s <= 0 for s in v):
            raise ValueError("std values must be greater than 0 (they divide the pixels)")
        return v


class _Named(BaseModel):
    """A list entry given by name alone ('gradcam') or as a mapping with options."""
    name: StrictStr

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v):
        return {"name": v} if isinstance(v, str) else v


class MethodSpec(_Named):
    """One CAM method by name, with its own options (plain values, checked)."""
    model_config = ConfigDict(extra="allow")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from explain.methods import method_names
        name = v.lower().replace("+", "plus").replace("-", "").replace("_", "")
        if name not in method_names():
            raise ValueError(f"unknown method {quote(v)}{suggest(name, method_names())} "
                             f"(valid: {', '.join(method_names())})")
        return name

    @model_validator(mode="after")
    def _known_options(self) -> "MethodSpec":
        if not self.options:  # nothing to check: the library (and torch) stay unimported
            return self
        from explain.methods import check_option, method_options
        allowed = method_options(self.name)
        for key, value in self.options.items():
            if key not in allowed:
                raise ValueError(f"method '{self.name}' has no option {quote(key)}"
                                 f"{suggest(str(key), allowed)} (valid: {', '.join(allowed) or 'none'})")
            try:
                setattr(self, key, check_option(key, value))
            except ValueError as exc:
                raise ValueError(f"{self.name}.{key}: {exc} (got {quote(value)})") from None
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Channels(_Section):
    """Per-channel views of the channel layer (see explain.channels and README#channel-views).

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
    # per-image grids (activations, contributions): true, false, or null: only for runs of at
    # most 50 images (the top-channels figure, contrast and CSV are written either way)
    grids: Optional[StrictBool] = None
    contrast: StrictBool = True       # class-contrast figure when an image has two classes

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


class Guided(_Section):
    """Guided backpropagation images and Guided Grad-CAM (guided backprop x each CAM)."""
    enabled: StrictBool = False


class Concepts(_Section):
    """Deep Feature Factorization: ``n_components`` concepts found at ``layer`` (default: the
    first target layer) over each image, with the classes each concept scores highest."""
    enabled: StrictBool = False
    layer: Optional[StrictStr] = None
    n_components: Int = Field(5, ge=2, le=32)
    top_k: Int = Field(2, ge=1, le=10)  # class names shown per concept


class Compare(_Section):
    """Numeric comparison of library maps with hand-written or external reference maps."""
    enabled: StrictBool = False
    reference_dir: Optional[Text] = None
    tolerance: Number = Field(1e-4, ge=0, le=1)


# ---- faithfulness, localisation, report (see explain.metrics, explain.annotations) ----------

# The metrics (names, aliases, percentiles) are explain.metrics.TABLE's: read when a config
# is checked, without importing torch or the library.
Percent = Annotated[Int, Field(ge=1, le=99)]


class MetricSpec(_Named):
    """One faithfulness metric by name (explain.metrics.TABLE; aliases accepted); the ROAD
    metrics also take the percentiles of pixels they remove (the score is the mean over them)."""
    model_config = ConfigDict(extra="forbid")
    percentiles: Optional[Annotated[list[Percent], Field(min_length=1, max_length=19)]] = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from explain.metrics import canonical, metric_names
        name, known = canonical(v), metric_names()
        if name not in known:
            raise ValueError(f"unknown metric {quote(v)}{suggest(v.lower(), known)} "
                             f"(valid: {', '.join(known)})")
        return name

    @model_validator(mode="after")
    def _percentiles(self) -> "MetricSpec":
        from explain.metrics import TABLE
        default = TABLE[self.name].percentiles
        if default is None:
            if self.percentiles is not None:
                takers = [t.name for t in TABLE.values() if t.percentiles is not None]
                raise ValueError(f"metric '{self.name}' takes no percentiles (only "
                                 f"{', '.join(takers)})")
        elif self.percentiles is None:
            self.percentiles = list(default)
        return self


BoxValues = tuple[Number, Number, Number, Number]


class Annotations(_Section):
    """Ground-truth boxes for the localisation numbers, x0, y0, x1, y1 in original image pixels
    (x1, y1 exclusive: a whole W x H image is 0, 0, W, H). Images by id or file name."""
    file: Optional[Text] = None  # CSV or JSON rows (image, class, x0, y0, x1, y1), Pascal VOC
    #                              .xml, or a folder of VOC .xml files
    boxes: Annotated[dict[StrictStr, dict[StrictStr, list[BoxValues]]],
                     Field(max_length=10_000)] = Field(default_factory=dict)
    threshold: Number = Field(0.5, gt=0, le=1)  # IoU: the map above this fraction of its max

    @field_validator("boxes", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        """A single box may be written without the outer list: {cat: [0, 0, 10, 10]}."""
        if not isinstance(v, dict):
            return v
        return {image: ({cls_: ([b] if isinstance(b, list) and len(b) == 4 and
                                 not any(isinstance(n, list) for n in b) else b)
                         for cls_, b in classes.items()} if isinstance(classes, dict) else classes)
                for image, classes in v.items()}

    @field_validator("boxes")
    @classmethod
    def _valid_boxes(cls, v: dict) -> dict:
        for image, classes in v.items():
            for name, boxes in classes.items():
                for box in boxes:
                    problem = box_problem(box)
                    if problem:
                        raise ValueError(f"{short(image, 60)}.{short(name, 60)}: box "
                                         f"{short(list(box), 120)} {problem}")
        return v

    @property
    def enabled(self) -> bool:
        return self.file is not None or bool(self.boxes)


def box_problem(box: tuple) -> Optional[str]:
    """Why (x0, y0, x1, y1) is not a usable box, or None."""
    if not all(isinstance(n, (int, float)) and is_finite(n) for n in box):
        return "must hold four finite numbers (at most about 1e308)"
    x0, y0, x1, y1 = box
    if min(x0, y0) < 0:
        return "has a negative coordinate"
    if not (x0 < x1 and y0 < y1):
        return "must have x0 < x1 and y0 < y1"
    return None


class LabelledImages(_Section):
    """An ``images`` entry with ground truth: ``labelled`` is an ImageFolder-style tree
    (``root/<class>/*.jpg``) or a ``.csv`` (header ``path,label``) / ``.json`` (list of
    ``{path, label}``) list whose paths are relative to the list's folder (see
    explain.images). ``skip_unknown``: skip subfolders / rows whose label names no class."""
    labelled: Text
    skip_unknown: StrictBool = False


def _image_entry(index: int, entry: Any) -> Any:
    """One ``images`` entry: a string as it is, a mapping as a LabelledImages (one clean
    message on a bad key, instead of one per alternative of the union)."""
    if not isinstance(entry, dict):
        return entry
    unknown = [k for k in entry if k not in LabelledImages.model_fields]
    if unknown:
        key = str(unknown[0])
        raise ValueError(f"entry {index}: unknown key {quote(key)}"
                         f"{suggest(key[:100], list(LabelledImages.model_fields))} (a mapping "
                         f"entry is {{labelled: PATH, skip_unknown: false}})")
    try:
        return LabelledImages.model_validate(entry)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "entry"
        msg = "required key is missing" if first["type"] == "missing" else \
            f"{first['msg']} (got {quote(first.get('input'))})"
        raise ValueError(f"entry {index}: {key}: {msg}") from None


class Report(_Section):
    """report.html: the study on one page (see explain.writers.report)."""
    enabled: StrictBool = True
    weak_below: Number = Field(0.05, ge=0, le=1)  # flag maps of classes the model gives less
    page_size: Int = Field(100, ge=1, le=10_000)  # image cards per page (more: report/page-N.html)


def _colormap_name(v: str) -> str:
    if v.lower() not in COLORMAPS:
        raise ValueError(f"unknown colormap {quote(v)}{suggest(v.lower(), list(COLORMAPS))}")
    return v.lower()


class Output(_Section):
    dir: Text = "results"
    colormap: StrictStr = "jet"
    image_weight: Number = Field(0.5, ge=0, le=1)
    save_arrays: StrictBool = False
    # overlays, guided images and channel views; jpg/webp encode 10x faster than png (lossy);
    # null: png for runs of up to 50 images, jpg above
    image_format: Optional[Literal["png", "jpg", "webp"]] = None

    @field_validator("colormap")
    @classmethod
    def _colormap(cls, v: str) -> str:
        return _colormap_name(v)


class Config(_Section):
    """A whole experiment. Field docs live in README.md#the-experiment-file."""
    name: Optional[StrictStr] = None
    model: ModelSpec
    # empty: the names the model carries (torchvision / timm ImageNet labels, HF id2label)
    classes: dict[StrictStr, Annotated[Int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=dict)
    # all | predicted | label | top<K> | a list of class names, 'label' and 'predicted'
    targets: Union[Literal["all", "predicted", "label"], Annotated[StrictStr, Field(
        pattern=r"^top([1-9]|1[0-9]|20)$")], list[StrictStr]] = "all"
    # files, folders, globs, and {labelled: PATH} datasets (explain.images)
    images: Annotated[list[Union[Text, LabelledImages]], Field(max_length=10_000)]
    preprocess: Preprocess = Field(default_factory=Preprocess)
    # layer names, or 'auto': the last layer before the head a CAM can use (explain layers)
    target_layers: Annotated[list[StrictStr], Field(max_length=16)]
    reshape: Union[Literal["auto", "vit", "swin", "none"], Reshape] = "auto"
    methods: Annotated[list[MethodSpec], Field(max_length=32)]
    aug_smooth: StrictBool = False
    eigen_smooth: StrictBool = False
    batch_size: Int = Field(8, ge=1, le=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: Int = Field(0, ge=0, le=2**32 - 1)
    # threads decoding images ahead of the model and encoding files behind it; null: cores - 1
    # (does not change any output)
    workers: Optional[Annotated[Int, Field(ge=0, le=64)]] = None  # 0: all in the main thread
    channels: Channels = Field(default_factory=Channels)
    guided: Guided = Field(default_factory=Guided)
    concepts: Concepts = Field(default_factory=Concepts)
    compare: Compare = Field(default_factory=Compare)
    output: Output = Field(default_factory=Output)
    metrics: Annotated[list[MetricSpec], Field(max_length=16)] = Field(default_factory=list)
    annotations: Annotations = Field(default_factory=Annotations)
    report: Report = Field(default_factory=Report)

    # Not part of the file: where it was read from (for relative paths and the run name).
    source: Optional[Path] = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        problem = None if v is None else name_problem(v)
        if problem:
            raise ValueError(f"run name {quote(v)} {problem}")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: dict[str, int]) -> dict[str, int]:
        if len(v) > MAX_CLASSES:
            raise ValueError(f"{len(v)} classes named; at most {MAX_CLASSES}")
        seen: dict[Any, str] = {}
        for name, idx in v.items():
            problem = name_problem(name)
            if problem:
                raise ValueError(f"class name {quote(name)} {problem}")
            for key in (idx, name.lower()):
                if key in seen:
                    what = f"index {idx}" if key == idx else "the same name (ignoring case)"
                    raise ValueError(f"classes '{seen[key]}' and '{name}' have {what}")
                seen[key] = name
        return v

    @field_validator("images", mode="before")
    @classmethod
    def _image_entries(cls, v: Any) -> Any:
        return [_image_entry(i, e) for i, e in enumerate(v)] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _labels_need_classes(self) -> "Config":
        labelled = [i for i, e in enumerate(self.images) if isinstance(e, LabelledImages)]
        if labelled and not self.classes:
            raise ValueError(f"images[{labelled[0]}]: labels name classes; give 'classes' "
                             f"(which output index each label is, e.g. {{cat: 0, dog: 1}})")
        return self

    @field_validator("target_layers", mode="before")
    @classmethod
    def _auto_layer(cls, v: Any) -> Any:
        return [v] if v == "auto" else v

    @field_validator("images", "target_layers", "methods")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("must list at least one entry")
        return v

    @field_validator("target_layers")
    @classmethod
    def _layers(cls, v: list[str]) -> list[str]:
        for name in v:
            if len(name) > 200 or not LAYER.fullmatch(name):
                raise ValueError(f"{quote(name)} is not a layer name such as features.10")
        if "auto" in v and len(v) > 1:
            raise ValueError("'auto' picks one layer; list layer names instead")
        return v

    @model_validator(mode="after")
    def _targets_named(self) -> "Config":
        special = [t for t in (self.targets if isinstance(self.targets, list) else [])
                   if t in TARGET_WORDS]
        if set(special) & set(self.classes):
            raise ValueError(f"targets: '{special[0]}' is both a class name and a target word; "
                             f"rename the class")
        if isinstance(self.targets, list) and len(set(self.targets)) != len(self.targets):
            raise ValueError("targets: an entry is listed twice")
        if isinstance(self.targets, list) and len(special) < len(self.targets) and \
                not self.classes:
            raise ValueError("targets: a list of class names needs 'classes' (which output "
                             "index each name is)")
        if self.model.head == "binary" and self.classes and \
                not set(self.classes.values()) <= {0, 1}:
            raise ValueError("classes: with head: binary, index 0 names the negative side and "
                             "1 the positive side (the model has one logit)")
        if isinstance(self.targets, list):
            for name in self.targets:
                if name not in self.classes and name not in TARGET_WORDS:
                    raise ValueError(f"targets: {quote(name)} is not a named class"
                                     f"{suggest(name, list(self.classes))}")
        names = [m.name for m in self.methods]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"methods: listed twice: {', '.join(sorted(dup))}")
        metrics = [m.name for m in self.metrics]
        dup = {n for n in metrics if metrics.count(n) > 1}
        if dup:
            raise ValueError(f"metrics: listed twice: {', '.join(sorted(dup))}")
        for image, classes in self.annotations.boxes.items():
            for name in classes:
                if name not in self.classes:
                    raise ValueError(f"annotations.boxes.{image}: {quote(name)} is not a named "
                                     f"class{suggest(name, list(self.classes))}")
        return self

    # ---- derived values -------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        """The run folder's name: ``name``, or a safe form of the config file's name."""
        return self.name or safe_slug(self.source.stem if self.source else "run", "run")

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def resolve(self, path: str) -> Path:
        """A config path, made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    def target_classes(self) -> list[str] | None:
        """What each image's slots explain: class names, 'label' (the image's ground truth)
        or 'predicted' (its best named class); None: its ``top_k()`` most likely classes."""
        if self.targets == "all":
            return list(self.classes)
        if self.targets == "label":
            return ["label"]
        if isinstance(self.targets, str):  # predicted, top<K>
            return None
        return list(self.targets)

    def top_k(self) -> int:
        """How many of the most likely classes each image explains (targets: predicted/topK)."""
        return int(self.targets[3:]) if isinstance(self.targets, str) and \
            self.targets.startswith("top") else 1


# ---- loading ------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {quote(key)} is given twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        """An integer; one over Python's digit limit (4300) is a YAML error on its line."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"the integer {short(str(node.value), 40)} has "
                            f"{len(str(node.value))} characters; too many digits",
                node.start_mark) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Nodes visited when aliases are expanded, counting no further than ``limit`` + 1."""
    count, todo = 0, [node]
    while todo and count <= limit:
        item = todo.pop()
        count += 1
        if isinstance(item, yaml.MappingNode):
            todo.extend(part for pair in item.value for part in pair)
        elif isinstance(item, yaml.SequenceNode):
            todo.extend(item.value)
    return count


MAX_NESTING = 32  # brackets or indentation levels; a config needs four or five


def nesting_problem(text: str) -> Optional[str]:
    """Whether the text nests deeper than MAX_NESTING, found by counting before parsing
    (PyYAML's time grows with the depth of what is still open)."""
    depth, quote_char = 0, None
    for char in text:
        if quote_char:
            quote_char = None if char == quote_char else quote_char
        elif char in "'\"":
            quote_char = char
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return f"brackets nested more than {MAX_NESTING} deep"
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == "\n":
            quote_char = None
    indents = {len(line) - len(line.lstrip(" -")) for line in text.splitlines() if line.strip()}
    if len(indents) > MAX_NESTING:
        return f"more than {MAX_NESTING} levels of indentation"
    return None


def read_yaml(text: str, where: str) -> Any:
    """Parse a config's text safely: no tags that build objects, no duplicate keys, and
    aliases and nesting bounded (a 'billion laughs' file is refused, not expanded)."""
    deep = nesting_problem(text)
    if deep:
        raise ExplainError(f"{where}: the YAML has {deep}; a config is a few levels deep")
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
            raise ExplainError(f"{where}: the YAML expands to more than {MAX_CONFIG_NODES} "
                               f"values (aliases nested too deep); write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ExplainError(f"{where}: {line}YAML syntax error: {problem[:200]}") from None
    except RecursionError:
        raise ExplainError(f"{where}: the YAML is nested too deep") from None
    finally:
        if loader is not None:
            loader.dispose()


_DICT_FIELDS = {"classes", "arch_args", "builder_args"}


def _clean_loc(loc: tuple) -> tuple[str, Any]:
    """pydantic's error location written as the file's keys ('preprocess.size', 'methods[1]'),
    without the labels pydantic adds inside unions ('int', 'tuple[int, int]'); and the section
    the last key belongs to (for 'did you mean')."""
    out, model, parent, item_model, in_dict = "", Config, Config, None, False
    for part in loc:
        if isinstance(part, int):
            out, model = out + f"[{part}]", item_model
            continue
        if in_dict:  # a key of a free-form mapping (a class name, a builder argument)
            out, model, in_dict = out + f".{part}", None, False
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None:
            break  # a pydantic label inside a union: the key is complete
        part = part if len(str(part)) <= 40 else str(part)[:37] + "..."
        out, parent = (out + f".{part}" if out else str(part)), model
        if part not in fields:
            model = None
            continue
        ann = fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        item_model = {"methods": MethodSpec, "metrics": MetricSpec}.get(part)
        in_dict = part in _DICT_FIELDS
    return out, parent


def _problem_line(error: dict) -> tuple[str, str]:
    loc, parent = _clean_loc(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        fields = [k for k in getattr(parent, "model_fields", {}) if k != "source"]
        return loc, f"unknown key {quote(key)}{suggest(key[:100], fields)}"
    if kind == "missing":
        return loc, "required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    if kind != "value_error" and "input" in error:
        msg += f" (got {quote(error['input'])})"
    return loc, msg


def explain_validation(err: ValidationError, where: str) -> ExplainError:
    """Every problem pydantic found, one line each, each starting with the file and key.

    A union (``preprocess.size``: a number or a pair) fails once per alternative; only the
    first message per key is kept."""
    problems: dict[str, tuple[int, str]] = {}
    for error in err.errors():
        loc, msg = _problem_line(error)
        depth = len(error["loc"])  # the deeper a union's error, the closer it is to the input
        if loc not in problems or depth > problems[loc][0]:
            problems[loc] = (depth, msg)
    problems = {loc: msg for loc, (_, msg) in problems.items()}
    lines = [f"{where}: {loc or 'config'}: {msg}" for loc, msg in problems.items()]
    if len(lines) == 1:
        return ExplainError(lines[0])
    return ExplainError(f"{len(lines)} problems in {where}:\n  " + "\n  ".join(lines))


def parse_value(text: str) -> Any:
    """A --set value as YAML would read it ('3' -> 3, 'true' -> True, '[a, b]' -> list)."""
    try:
        return read_yaml(text, "--set")
    except ExplainError:
        return text


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set data['a']['b'] = value for 'a.b', creating sections as needed."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def read_bounded_bytes(path: Path, limit: int, what: str) -> bytes:
    """A file of at most ``limit`` bytes (``what``: 'a config', 'a list'), read whole, once:
    its size is checked on the open file before reading, and no more than ``limit`` + 1 bytes
    are ever read (a file that grows meanwhile, or a device, is refused the same way)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise ExplainError(f"{path}: {max(size, len(data))} bytes; {what} is at most {limit} "
                           f"bytes")
    return data


def read_bounded_text(path: Path, limit: int, what: str, encoding: str = "utf-8") -> str:
    """A text file of at most ``limit`` bytes (``what``: 'a config', 'a list'), read whole;
    one-line ExplainError naming it when it is larger or not UTF-8 text (a NUL character
    means UTF-16 or a binary file, which would otherwise decode as UTF-8)."""
    try:
        text = read_bounded_bytes(path, limit, what).decode(encoding)
    except UnicodeDecodeError as exc:
        raise ExplainError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    if "\x00" in text:
        raise ExplainError(f"{path}: not a UTF-8 text file (it holds NUL characters: UTF-16, "
                           f"or not text at all)")
    return text


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> Config:
    """Read, override and validate an experiment file; raise ExplainError on any problem."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ExplainError(f"{short(path)}: {exc.strerror}") from None
    if not found:
        raise ExplainError(f"{short(path)}: config file not found")
    text = read_bounded_text(path, MAX_CONFIG_BYTES, "a config")
    data = read_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ExplainError(f"{path}: the top level must be a mapping of keys (model, images, ...)")
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise explain_validation(err, str(path)) from None
    return cfg.model_copy(update={"source": path.resolve()})


def resolved(cfg: Config, field: str, value: Any) -> Config:
    """A copy of ``cfg`` whose ``field`` is what the run resolved it to (the layer names
    'auto' stands for, the class names the model carries), validated as if the file had
    said so; the config itself is never changed."""
    data = cfg.model_dump()
    data[field] = value
    try:
        new = Config.model_validate(data)
    except ValidationError as err:
        raise explain_validation(err, f"{field} as resolved") from None
    return new.model_copy(update={"source": cfg.source})

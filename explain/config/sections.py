"""The sections of an experiment file (model, preprocess, channels, metrics, output, ...):
pydantic models with their defaults, bounds and checks. Every section is frozen: a config is
validated once and never changed (what a run resolves makes a new, validated copy)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Optional, Union

import cv2
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat,
                      StrictInt, StrictStr, ValidationError, field_validator, model_serializer,
                      model_validator)

from explain.names import check_photo_separator, quote, short, suggest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Every colormap OpenCV has, by its lower-case name ('jet', 'turbo', ...).
COLORMAPS = tuple(sorted(n[len("COLORMAP_"):].lower() for n in dir(cv2) if n.startswith("COLORMAP_")))

# Bounds that keep a small config from asking for huge allocations or endless work.
MAX_CONFIG_BYTES = 256 * 1024
MAX_CONFIG_NODES = 20_000  # YAML nodes after alias expansion (a config has about a hundred)
MAX_SIDE = 4096  # model input side in pixels
# a grey network's one channel from the three prepared ones (model.in_channels: 1): ITU-R
# 601's luma, as Pillow's convert("L"), OpenCV's RGB2GRAY and torchvision's Grayscale make
# it; the weights sum to 1, so a grey scan gives its own grey and one mean / std normalises
# the grey as it normalised each channel (explain.models.heads.Classifier)
GREY_WEIGHTS = (0.299, 0.587, 0.114)
GREY_WORDS = "0.299 R + 0.587 G + 0.114 B, as Pillow's convert('L')"
MAX_PIXELS = 250_000_000  # preprocess.max_pixels at most (Pillow's own bound is off while
#                            explain reads a header: explain.images.quiet)
MAX_ARGS_DEPTH = 16  # model.arch_args / builder_args: lists and mappings inside each other
MAX_CLASSES = 1000  # named classes (ImageNet-1k fits; name a subset of larger label sets)
MANY_CLASSES = 20  # more named classes than this: targets 'all' is refused (explain.cam's
# targets left out: 'predicted'), an image lists only its likeliest probabilities (runner)
# and the report's paged index shows the p(class) columns of the classes most listed
MAX_BATCH = 1024  # batch_size: images per pass (explain.batching's 'auto' stays within it)
Int = StrictInt
Number = Union[StrictInt, StrictFloat]
Text = Annotated[StrictStr, Field(max_length=4096)]
DOTTED = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?")
LAYER = re.compile(r"[\w.-]+")
# Config.precision: autocast of the forward passes (explain.precision); Config.batch_size:
# images per pass, or 'auto' for what fits the memory (explain.batching)
Precision = Literal["fp32", "bf16", "fp16"]
BatchSize = Union[Annotated[Int, Field(ge=1, le=MAX_BATCH)], Literal["auto"]]


def is_finite(value: float) -> bool:
    """Whether a number is finite; an integer too large for a float (a 400-digit number
    written in a file) is not, instead of an OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


SCALE_BOUND = 1e4  # preprocess mean and std: a pixel's scale is 0..1 (or 0..255 mistaken)


def _finite(values: tuple[float, ...], what: str) -> tuple[float, ...]:
    if not all(is_finite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers (at most about 1e308)")
    return values


TARGET_WORDS = ("label", "predicted")  # in a targets list: the image's label, its prediction


class Section(BaseModel):
    # frozen: a config is validated once and never changed; what a run resolves (layer names
    # from 'auto', class names from the model) makes a new, validated copy (``resolved``)
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Section):
    """Where the network comes from: a file (whole pickle or state_dict + arch) or a builder.

    ``arch`` and ``builder`` name code. Without ``trust: true`` they may only name the
    allow-listed model factories (see explain.models); with it, any importable callable.
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
    # attribute name of a dict or output object (e.g. 'logits'); see explain.models.heads
    output: Union[Annotated[Int, Field(ge=0, le=64)], Annotated[StrictStr, Field(
        pattern=r"^[A-Za-z_]\w{0,63}$")], None] = None
    head: Literal["softmax", "binary", "multilabel"] = "softmax"
    target: Literal["logit", "probability"] = "logit"  # what a map explains
    # 1: a network for grey images (Conv2d(1, ...)); it is given the grey of the three
    # prepared channels (GREY_WEIGHTS), so pictures, metrics and maps stay RGB
    in_channels: Literal[1, 3] = 3

    @field_validator("in_channels", mode="before")
    @classmethod
    def _whole(cls, v: Any) -> Any:
        """1 or 3 as a whole number: ``true`` and ``1.0`` passed as 1 (a Literal compares)."""
        if isinstance(v, (bool, float)):
            shown = str(v).lower() if isinstance(v, bool) else v  # as YAML spells it
            raise ValueError(f"1 (a grey network) or 3 (RGB), a whole number; got {shown}")
        return v

    @model_serializer(mode="wrap")
    def _as_before_grey(self, handler: Any) -> Any:
        """An RGB network's section dumps as before ``in_channels`` existed (config.json and
        summary.json byte for byte, so an earlier run folder still resumes)."""
        data = handler(self)
        if self.in_channels == 3 and isinstance(data, dict):
            data.pop("in_channels", None)
        return data

    @field_validator("arch_args", "builder_args", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        """null (``--set model.arch_args=null``, an empty ``arch_args:``) is no arguments."""
        return {} if v is None else v

    @field_validator("arch_args", "builder_args")
    @classmethod
    def _shallow(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Arguments nested at most MAX_ARGS_DEPTH deep (a shared summary.json's 300 levels
        passed, then broke serialising the config: a 36-line traceback for explain diff)."""
        level, depth = [v], 1
        while level:
            level = [x for item in level for x in (item.values() if isinstance(item, dict)
                                                   else item if isinstance(item, list) else ())
                     if isinstance(x, (dict, list))]
            depth += bool(level)
            if depth > MAX_ARGS_DEPTH:
                raise ValueError(f"nested more than {MAX_ARGS_DEPTH} levels deep")
        return v

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


class Reshape(Section):
    """An explicit token layout: ``prefix`` tokens (class, distillation, registers) before an
    h x w grid of patch tokens (grid inferred from the input's shape when left out)."""
    prefix: Int = Field(ge=0, le=64)
    grid: Optional[tuple[Annotated[Int, Field(ge=1, le=MAX_SIDE)],
                         Annotated[Int, Field(ge=1, le=MAX_SIDE)]]] = None


class Preprocess(Section):
    """OpenCV preprocessing: BGR->RGB, resize, scale to 0..1, normalise."""
    size: Union[Annotated[Int, Field(ge=8, le=MAX_SIDE)],
                tuple[Annotated[Int, Field(ge=8, le=MAX_SIDE)],
                      Annotated[Int, Field(ge=8, le=MAX_SIDE)]]] = 224
    multiple_of: Int = Field(32, ge=1, le=256)
    mean: tuple[Number, Number, Number] = IMAGENET_MEAN
    std: tuple[Number, Number, Number] = IMAGENET_STD
    max_pixels: Int = Field(40_000_000, ge=1, le=MAX_PIXELS)
    # image files larger than this are refused before they are read (stat); 256 MiB holds an
    # uncompressed 16-bit RGB TIFF of 40 MP (the max_pixels default); at most 1 GiB
    max_bytes: Int = Field(256 * 2**20, ge=1024, le=2**30)
    # torch: (x/255 - mean) / std; caffe: BGR, 0..255 minus the ImageNet BGR mean (VGG16's
    # preprocess_input); tf: x/127.5 - 1 (MobileNet, Inception)
    mode: Literal["torch", "caffe", "tf"] = "torch"

    @field_validator("size", mode="before")
    @classmethod
    def _size_shape(cls, v):
        """One line for a size of the wrong shape (the union would say 'missing', or
        'a valid integer', about a list)."""
        if isinstance(v, (list, tuple)) and len(v) != 2:
            raise ValueError(f"a number (the short side, e.g. 224) or a pair [height, width]; "
                             f"got a list of {len(v)}")
        if not isinstance(v, (int, list, tuple)) or isinstance(v, bool):
            raise ValueError(f"a number (the short side, e.g. 224) or a pair [height, width]; "
                             f"got {quote(v)}")
        return v

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _one_or_three(cls, v, info):
        """One value stands for all three channels (a grey network's ``mean: [0.5]``, which
        said 'mean[1]: required key is missing'); another count is one line."""
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v]
        if isinstance(v, (list, tuple)) and len(v) == 1:
            if isinstance(v[0], bool) or not isinstance(v[0], (int, float)):  # said once,
                shown = str(v[0]).lower() if isinstance(v[0], bool) else quote(v[0])  # not 3x
                raise ValueError(f"numbers: three (R, G, B), or one for all three; got {shown}")
            return [v[0]] * 3
        if isinstance(v, (list, tuple)) and len(v) != 3:
            raise ValueError(f"three values (R, G, B), or one for all three (a grey network's "
                             f"{info.field_name}: [0.5]); got {len(v)}")
        return v

    @field_validator("mean")
    @classmethod
    def _mean(cls, v):
        _finite(v, "mean values")
        if any(abs(m) > SCALE_BOUND for m in v):  # 1e308 made every pixel inf, then NaN
            raise ValueError(f"mean values are on the pixels' 0..1 scale (ImageNet's: 0.485, "
                             f"0.456, 0.406); each must lie within +-{SCALE_BOUND:g}")
        return v

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
        if any(not 1 / SCALE_BOUND <= s <= SCALE_BOUND for s in v):
            raise ValueError(f"std values are on the pixels' 0..1 scale (ImageNet's: 0.229, "
                             f"0.224, 0.225); each must lie within {1 / SCALE_BOUND:g} to "
                             f"{SCALE_BOUND:g}")
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
        from explain.methods import canonical, method_names, unknown_method
        if canonical(v) not in method_names():
            raise ValueError(unknown_method(v))
        return canonical(v)

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


class Guided(Section):
    """Guided backpropagation images and Guided Grad-CAM (guided backprop x each CAM)."""
    enabled: StrictBool = False


class Concepts(Section):
    """Deep Feature Factorization: ``n_components`` concepts found at ``layer`` (default: the
    first target layer) over each image, with the classes each concept scores highest."""
    enabled: StrictBool = False
    layer: Optional[StrictStr] = None
    n_components: Int = Field(5, ge=2, le=32)
    top_k: Int = Field(2, ge=1, le=10)  # class names shown per concept


class Compare(Section):
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


class Annotations(Section):
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


class LabelledImages(Section):
    """An ``images`` entry with ground truth: ``labelled`` is an ImageFolder-style tree
    (``root/<class>/*.jpg``) or a ``.csv`` (header ``path,label``) / ``.json`` (list of
    ``{path, label}``) list whose paths are relative to the list's folder (see
    explain.images). ``skip_unknown``: skip subfolders / rows whose label names no class."""
    labelled: Text
    skip_unknown: StrictBool = False


def image_entry(index: int, entry: Any) -> Any:
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


class Sanity(Section):
    """Sanity checks of the methods (explain.sanity): model-parameter randomisation, cascading
    from the output layer (and, with ``independent``, one layer at a time), and random logit.
    A method passes when its maps' mean ``measure`` with the trained model's maps, after the
    randomisation, is below ``threshold`` (``logit_threshold`` for the random class)."""
    enabled: StrictBool = False
    layers: Union[Literal["all"], Annotated[Int, Field(ge=1, le=10_000)]] = "all"  # from the top
    images: Int = Field(2, ge=1, le=1000)  # the run's first images, in config order
    independent: StrictBool = False  # also each layer alone, the others as trained
    measure: Literal["spearman", "spearman_abs", "ssim", "ssim_abs"] = "spearman"
    threshold: Number = Field(0.5, gt=-1, le=1)  # Adebayo et al.: rank correlation < 0.5
    logit_threshold: Number = Field(0.5, gt=-1, le=1)


class Report(Section):
    """report.html: the study on one page (see explain.writers.report)."""
    enabled: StrictBool = True
    weak_below: Number = Field(0.05, ge=0, le=1)  # flag maps of classes the model gives less
    page_size: Int = Field(100, ge=1, le=10_000)  # image cards per page (more: report/page-N.html)
    # images whose ids agree up to this text's first place are one photo (flips, crops of it):
    # the trust intervals resample photos (explain.methodtable.photo_of)
    photo_separator: Optional[Annotated[StrictStr, AfterValidator(check_photo_separator)]] = None


def _colormap_name(v: str) -> str:
    if v.lower() not in COLORMAPS:
        raise ValueError(f"unknown colormap {quote(v)}{suggest(v.lower(), list(COLORMAPS))}")
    return v.lower()


class Output(Section):
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

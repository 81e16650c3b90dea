"""The experiment file: schema, defaults, validation and command-line overrides.

Relative paths inside a config file are resolved against the folder that holds the config
file, so a run gives the same result from any working directory. Paths given on the command
line (``--out``) are relative to the working directory, as usual for command-line arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explain.errors import ExplainError
from explain.methods import INSTANCE_OPTIONS, method_names, method_options, suggest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLORMAPS = ("autumn", "bone", "jet", "winter", "rainbow", "ocean", "summer", "spring", "cool",
             "hsv", "pink", "hot", "parula", "magma", "inferno", "plasma", "viridis", "cividis",
             "twilight", "twilight_shifted", "turbo", "deepgreen")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Section):
    """Where the network comes from: a file (whole pickle or state_dict + arch) or a builder."""
    file: Optional[str] = None
    arch: Optional[str] = None
    arch_args: dict[str, Any] = Field(default_factory=dict)
    builder: Optional[str] = None
    builder_args: dict[str, Any] = Field(default_factory=dict)
    trust: bool = False
    fix_inplace: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.file is None) == (self.builder is None):
            raise ValueError("give exactly one of 'file' or 'builder'")
        if self.arch and self.builder:
            raise ValueError("'arch' goes with 'file' (a state_dict), not with 'builder'")
        return self


class Preprocess(_Section):
    """OpenCV preprocessing: BGR->RGB, resize, scale to 0..1, normalise."""
    size: Union[int, tuple[int, int]] = 224
    multiple_of: int = Field(32, ge=1)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_pixels: int = Field(40_000_000, ge=1)

    @field_validator("size")
    @classmethod
    def _positive(cls, v):
        sizes = (v,) if isinstance(v, int) else v
        if any(s < 8 for s in sizes):
            raise ValueError("sizes must be at least 8 pixels")
        return v


class MethodSpec(BaseModel):
    """One CAM method by name, with its own constructor options."""
    model_config = ConfigDict(extra="allow")
    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        name = v.lower().replace("+", "plus").replace("-", "").replace("_", "")
        if name not in method_names():
            raise ValueError(f"unknown method '{v}'{suggest(name, method_names())} "
                             f"(valid: {', '.join(method_names())})")
        return name

    @model_validator(mode="after")
    def _known_options(self) -> "MethodSpec":
        allowed = method_options(self.name) + INSTANCE_OPTIONS.get(self.name, [])
        for key in self.options:
            if key not in allowed:
                raise ValueError(f"method '{self.name}' has no option '{key}'"
                                 f"{suggest(key, allowed)} (valid: {', '.join(allowed) or 'none'})")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Channels(_Section):
    """Per-channel activation and contribution grids (see explain.channels)."""
    enabled: bool = False
    layer: Optional[str] = None
    shared_scale: bool = False
    colormap: Optional[str] = None
    overlay: bool = False
    labels: bool = False
    tile_size: int = Field(48, ge=1)


class Compare(_Section):
    """Numeric comparison of library maps with hand-written or external reference maps."""
    enabled: bool = False
    reference_dir: Optional[str] = None
    tolerance: float = Field(1e-4, ge=0)


class Output(_Section):
    dir: str = "results"
    colormap: str = "jet"
    image_weight: float = Field(0.5, ge=0, le=1)
    save_arrays: bool = False

    @field_validator("colormap")
    @classmethod
    def _colormap(cls, v: str) -> str:
        if v.lower() not in COLORMAPS:
            raise ValueError(f"unknown colormap '{v}'{suggest(v.lower(), list(COLORMAPS))}")
        return v.lower()


class Config(_Section):
    """A whole experiment. Field docs live in README.md#the-experiment-file."""
    name: Optional[str] = None
    model: ModelSpec
    classes: dict[str, int]
    targets: Union[Literal["all", "predicted"], list[str]] = "all"
    images: list[str]
    preprocess: Preprocess = Field(default_factory=Preprocess)
    target_layers: list[str]
    methods: list[MethodSpec]
    aug_smooth: bool = False
    eigen_smooth: bool = False
    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    channels: Channels = Field(default_factory=Channels)
    compare: Compare = Field(default_factory=Compare)
    output: Output = Field(default_factory=Output)

    # Not part of the file: where it was read from (for relative paths and the run name).
    source: Optional[Path] = Field(default=None, exclude=True)

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:
            raise ValueError("name at least one class, e.g. {cat: 0, dog: 1}")
        for name, idx in v.items():
            if idx < 0:
                raise ValueError(f"class '{name}' has a negative index {idx}")
        return v

    @field_validator("images", "target_layers", "methods")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("must list at least one entry")
        return v

    @model_validator(mode="after")
    def _targets_named(self) -> "Config":
        if isinstance(self.targets, list):
            for name in self.targets:
                if name not in self.classes:
                    raise ValueError(f"targets: '{name}' is not a named class"
                                     f"{suggest(name, list(self.classes))}")
        names = [m.name for m in self.methods]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"methods: listed twice: {', '.join(sorted(dup))}")
        return self

    # ---- derived values -------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        return self.name or (self.source.stem if self.source else "run")

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def resolve(self, path: str) -> Path:
        """A config path, made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    def target_classes(self) -> list[str] | None:
        """Class names explained for every image; None means 'the predicted class'."""
        if self.targets == "all":
            return list(self.classes)
        if self.targets == "predicted":
            return None
        return list(self.targets)


# ---- loading ------------------------------------------------------------------------------

def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part):  # pydantic's validator labels, not keys of the file
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _fields_at(loc: tuple) -> list[str]:
    """The valid keys of the section an error location points into."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int) or not hasattr(model, "model_fields"):
            continue
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return []
    return [k for k in getattr(model, "model_fields", {}) if k != "source"]


def explain_validation(err: ValidationError, where: str) -> ExplainError:
    """Turn pydantic's report into one line naming the file and the first bad field."""
    first = err.errors()[0]
    loc = first["loc"]
    path = _loc(loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        msg = f"unknown key '{key}'{suggest(key, _fields_at(loc))}"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        if kind not in ("value_error",) and "input" in first:
            msg += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
    return ExplainError(f"{where}: {path}: {msg}{tail}")


def parse_value(text: str) -> Any:
    """A --set value as YAML would read it ('3' -> 3, 'true' -> True, '[a, b]' -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
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


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> Config:
    """Read, override and validate an experiment file; raise ExplainError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ExplainError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ExplainError(f"{path}: {line}YAML syntax error: {problem}") from exc
    except UnicodeDecodeError as exc:
        raise ExplainError(f"{path}: not a text file ({exc.reason})") from exc
    if not isinstance(data, dict):
        raise ExplainError(f"{path}: the top level must be a mapping of keys (model, images, ...)")
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise explain_validation(err, str(path)) from None
    cfg.source = path.resolve()
    return cfg

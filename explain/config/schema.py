"""The whole experiment file: ``Config``, its checks across sections, and the values derived
from it (run name, target classes, paths resolved against the config file's folder)."""


from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (Field, StrictBool, StrictStr, field_validator, model_serializer,
                      model_validator)

from explain.names import fold, name_problem, quote, safe_slug, suggest
from explain.config.channelviews import Channels
from explain.config.sections import (Annotations, BatchSize, Compare, Concepts, Guided,
                                     image_entry, Int, LabelledImages, LAYER, MAX_CLASSES,
                                     MethodSpec, MetricSpec, ModelSpec, Output, Precision,
                                     Preprocess, Report, Reshape, Sanity, Section, TARGET_WORDS,
                                     Text)
from explain.config.tasks import Detection, Segmentation, Task, task_defaults, task_problem

TOP_K = r"top([1-9]|1[0-9]|20)"  # targets: top<K>, each image's K most likely classes


class Config(Section):
    """A whole experiment. Field docs live in docs/config.md."""
    name: Optional[StrictStr] = None
    model: ModelSpec
    # empty: the names the model carries (torchvision / timm ImageNet labels, HF id2label)
    classes: dict[StrictStr, Annotated[Int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=dict)
    # all | predicted | label | top<K> | a list of class names, 'label' and 'predicted'
    targets: Union[Literal["all", "predicted", "label"], Annotated[StrictStr, Field(
        pattern=rf"^{TOP_K}$")], list[StrictStr]] = "all"
    # files, folders, globs, and {labelled: PATH} datasets (explain.images)
    images: Annotated[list[Union[Text, LabelledImages]], Field(max_length=10_000)]
    preprocess: Preprocess = Field(default_factory=Preprocess)
    # layer names, or 'auto': the last layer before the head a CAM can use (explain layers)
    target_layers: Annotated[list[StrictStr], Field(max_length=16)]
    reshape: Union[Literal["auto", "vit", "swin", "none"], Reshape] = "auto"
    methods: Annotated[list[MethodSpec], Field(max_length=32)]
    aug_smooth: StrictBool = False
    eigen_smooth: StrictBool = False
    batch_size: BatchSize = 8  # images per pass, or auto: what fits the memory (explain.batching)
    precision: Precision = "fp32"  # autocast of the forward passes (explain.precision)
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
    # faithfulness metrics; unset (null): road_combined at its 9 percentiles for runs of up to
    # explain.metrics.AUTO_MAPS maps (images x classes x methods), none above; []: none
    metrics: Optional[Annotated[list[MetricSpec], Field(max_length=16)]] = None
    annotations: Annotations = Field(default_factory=Annotations)
    report: Report = Field(default_factory=Report)
    # classification (default) | segmentation | detection: see explain.config.tasks
    task: Task = "classification"
    segmentation: Segmentation = Field(default_factory=Segmentation)
    detection: Detection = Field(default_factory=Detection)
    sanity: Sanity = Field(default_factory=Sanity)  # explain.sanity

    # Not part of the file: where it was read from (for relative paths and the run name).
    source: Optional[Path] = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _task_methods(cls, data: Any) -> Any:
        return task_defaults(data)

    @model_validator(mode="after")
    def _task_fits(self) -> "Config":
        problem = task_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_serializer(mode="wrap")
    def _as_before_tasks(self, handler: Any) -> Any:
        """A classifier's config dumps as before tasks existed (summary.json, config.json and
        the API's copies byte for byte): no task keys."""
        data = handler(self)
        if self.task == "classification" and isinstance(data, dict):
            for key in ("task", "segmentation", "detection"):
                data.pop(key, None)
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        # a run in <name>-2, -3, ... is resumed by that name: the suffix may go past the limit
        problem = None if v is None else name_problem(re.sub(r"-[0-9]{1,9}$", "", v) or v)
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
            for key in (idx, fold(name)):
                if key in seen:
                    what = f"index {idx}" if key == idx else \
                        "the same name (ignoring case and Unicode normalisation, as macOS and " \
                        "Windows name files)"
                    raise ValueError(f"classes '{seen[key]}' and '{name}' have {what}")
                seen[key] = name
        return v

    @field_validator("images", mode="before")
    @classmethod
    def _image_entries(cls, v: Any) -> Any:
        """Each entry checked; one entry alone is a list of it (``images: {labelled:
        photos}``, ``images: photos/`` were 'Input should be a valid list')."""
        if isinstance(v, (str, dict)):
            v = [v]
        return [image_entry(i, e) for i, e in enumerate(v)] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _labels_need_classes(self) -> "Config":
        labelled = [i for i, e in enumerate(self.images) if isinstance(e, LabelledImages)]
        if labelled and not self.classes:
            raise ValueError(f"images[{labelled[0]}]: labels name classes; give 'classes' "
                             f"(which output index each label is, e.g. {{cat: 0, dog: 1}})")
        if not labelled and "label" in (self.target_classes() or []):
            raise ValueError("targets: 'label' needs a labelled dataset among the images "
                             "({labelled: PATH}); plain images have no label")
        return self

    @field_validator("methods", "metrics", "target_layers", mode="before")
    @classmethod
    def _listed_text(cls, v: Any) -> Any:
        """One string lists entries as --methods, --set and the API give them: 'gradcam,
        layercam' -> ['gradcam', 'layercam'], 'road_combined' -> ['road_combined'], 'auto'
        -> ['auto'] (``--set metrics=road_combined`` was "Input should be a valid list")."""
        return [m.strip() for m in v.split(",") if m.strip()] if isinstance(v, str) else v

    @field_validator("target_layers", mode="before")
    @classmethod
    def _numbered(cls, v: Any) -> Any:
        """A Sequential's child by its number, as YAML reads ``[1]``: '1'. A float is refused:
        YAML reads ``[1.10]`` as 1.1, another layer than '1.10'. One number alone (``--set
        target_layers=1``, ``target_layers: 1``) is a list of it."""
        if type(v) in (int, float):
            v = [v]
        if not isinstance(v, list):
            return v
        for name in v:
            if isinstance(name, float):
                raise ValueError(f"{name!r} is a number to YAML (1.10 reads as 1.1): write "
                                 f"the layer name in quotes, e.g. '1.10'")
        return [str(n) if type(n) is int else n for n in v]

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
        metrics = [m.name for m in self.metrics or []]
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
    def channel_layer(self) -> str:
        """The layer the channel views read: ``channels.layer``, or the first target layer."""
        return self.channels.layer or self.target_layers[0]

    @property
    def concept_layer(self) -> str:
        """The layer the concept views read: ``concepts.layer``, or the first target layer."""
        return self.concepts.layer or self.target_layers[0]

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

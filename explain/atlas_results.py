"""The records of the channel layer across a run: the atlas and class fingerprints
(``AtlasSummary``) and the channel ablation (``AblationSummary``), summary.json's ``atlas`` and
``ablation`` (see explain.channels.atlas, explain.channels.ablation, explain.writers.atlas).

Kept apart from explain.results (which holds a field of each) so that reading a summary
imports neither torch nor the channel code. Every file the atlas writer writes is named here
(``AtlasFiles``, ``AblationSummary.files``), on the image's record (``ImageFiles.atlas``)
or, for the page of both (report/atlas.html), in ``RunFiles.atlas_page``.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _paths(record: BaseModel) -> list[str]:
    """The paths a files record names: its fields' values (a dict's values in order)."""
    out: list[str] = []
    for name in type(record).model_fields:
        value = getattr(record, name)
        out += list(value.values()) if isinstance(value, dict) else [value] if value else []
    return out


class FingerprintChannel(_Record):
    """One channel of a class's fingerprint: its share of the class's maps across the run."""
    channel: int
    share: float  # mean share of the map (explain.channels.channel_shares) over the maps
    low: Optional[float] = None  # the mean's 95% bootstrap interval (streamed Poisson
    high: Optional[float] = None  # bootstrap over images); None in runs of over 20 classes
    top_k: float  # fraction of the maps where it is among the image's channels.top_k channels
    share_correct: Optional[float] = None  # labelled runs: mean over the images predicted as
    share_wrong: Optional[float] = None  # the class rightly / wrongly (None: no such image)
    picture: Optional[str] = None  # channels/atlas/channel_<k>.<ext>


class Fingerprint(_Record):
    """The channels that carry one class for one channel-sum method across the run."""
    class_name: str = Field(alias="class")
    method: str
    maps: int  # maps of the class by the method in the fingerprint
    weak: int = 0  # maps left out: the class under report.weak_below and not the prediction
    correct: int = 0  # labelled images predicted as the class whose label it is
    wrong: int = 0  # ... whose label is another class
    channels: list[FingerprintChannel] = Field(default_factory=list)  # largest mean share first
    wrong_channels: list[FingerprintChannel] = Field(default_factory=list)  # largest mean share
    #   over the wrong predictions first: the channels a wrong prediction leaned on
    table: str  # channels/atlas/<method>/<class>.csv: every channel


class Overlap(_Record):
    """Two classes' fingerprints (one method): the channels that serve both."""
    method: str
    classes: list[str]
    shared: list[int]
    jaccard: float  # |shared| / |union of the two fingerprints|


class AtlasFiles(_Record):
    """The atlas's files (the per-image state is ImageFiles.atlas)."""
    regions_csv: Optional[str] = None  # channels/atlas/regions.csv: every channel's regions
    state: Optional[str] = None  # channels/atlas/state.zip: the heaps and sums (--resume)
    pictures: dict[str, str] = Field(default_factory=dict)  # channel -> its picture
    tables: dict[str, str] = Field(default_factory=dict)  # '<method>/<class>' -> its CSV

    def paths(self) -> list[str]:
        return _paths(self)


class AtlasSummary(_Record):
    """summary.json's ``atlas``: the channel layer across the run."""
    layer: str
    channels: int
    images: int  # images in the atlas
    top_n: int  # regions per channel and ranking
    top_k: int  # channels.top_k: the per-image top channels counted in ``top_k``
    crop: int  # crop side in cells of the layer's map
    fingerprints: list[Fingerprint] = Field(default_factory=list)
    overlaps: list[Overlap] = Field(default_factory=list)
    files: AtlasFiles = Field(default_factory=AtlasFiles)

    def paths(self) -> list[str]:
        return self.files.paths()


class AblationPoint(_Record):
    """One method at one k: the mean drop of the class score (positive: the score fell) over
    the image x class maps, zeroing the top-k, k random and the k lowest channels."""
    top: float
    random: float
    bottom: float
    maps: int
    gap: float  # top - random
    gap_low: float  # the gap's 95% bootstrap interval
    gap_high: float


class AblationMethod(_Record):
    k: dict[str, AblationPoint] = Field(default_factory=dict)  # by k
    marked: bool = False  # at some k the top channels lower the score no more than random ones
    curve: Optional[str] = None  # channels/ablation/<method>.png


class AblationFiles(_Record):
    table: Optional[str] = None  # channels/ablation/ablation.csv
    state: Optional[str] = None  # channels/atlas/state.zip when the atlas is off (else its own)

    def paths(self) -> list[str]:
        return _paths(self)


class AblationSummary(_Record):
    """summary.json's ``ablation``: per method and k, the mean drops."""
    score: str  # what fell: the class logit or probability (model.target)
    draws: int  # random draws averaged per map and k
    forward: str  # how the ablated passes ran: split | stub | full (explain.channels.ablation)
    methods: dict[str, AblationMethod] = Field(default_factory=dict)
    files: AblationFiles = Field(default_factory=AblationFiles)

    def paths(self) -> list[str]:
        return self.files.paths() + [m.curve for m in self.methods.values() if m.curve]

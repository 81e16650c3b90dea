"""The channel atlas's numbers, streamed over a run in bounded memory (no activation is kept).

What one image adds is an ``ImageAtlas``: per channel of the channel layer its peak activation
and where it is; per explained class x channel-sum method each channel's contribution (its
term of the map, summed over positions: explain.channels.channel_totals) and where it peaks;
and, with the ablation on, the drops of the class score (explain.channels.ablation). The writer
saves it per image (``channels/atlas/images/<image>.npz``) and adds it to an ``AtlasState``:

- ``Heaps``: per channel the ``top_n`` regions with the largest value (peak activation, or
  contribution to a class by a method), ties broken by a hash of the image id: the same
  regions whatever the order the images come in (batches, --resume, torchrun ranks);
- ``Sums``: per class x method x outcome the shares (explain.channels.channel_shares) and how
  often each channel is among an image's ``top_k`` (the top-channels figure's channels); per
  method x k the ablation drops. Values are added as integers (x 2**24, rounded), so the sums
  are exact and order-free, and a streamed Poisson bootstrap (``BOOT`` replicates, each image
  weighted by Poisson(1) draws seeded by its id and the run's seed) gives 95% intervals
  without keeping the per-image values.

Memory: heaps 32 bytes x channels x top_n x (1 + classes x methods); bootstrap 8 bytes x
BOOT x channels per class x method (only when the run names at most BOOT_CLASSES classes: an
ImageNet-wide run gets means without intervals); nothing grows with the images but the
covered ids.
A region is a crop of ``crop`` x ``crop`` cells (a cell: input size / map size, the layer's
stride) centred on the peak cell, shifted to lie inside the image.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Collection, Iterable, Optional

import numpy as np

from explain.channels.numbers import channel_shares, top_channels
from explain.config.sections import MAX_SIDE
from explain.errors import ExplainError, first_line
from explain.readback import container_problem, stored_array, stored_only

SCALE = 1 << 24  # shares and drops are summed as round(value x SCALE): exact integer sums
LIMIT = 1000.0  # |value| clipped to this before summing: int64 sums stay far from overflow
BOOT = 200  # bootstrap replicates
BOOT_CLASSES = 20  # runs naming more classes keep no bootstrap (memory: see above)
OUTCOMES = ("all", "correct", "wrong")
MAX_HEADER = 64 * 1024 * 1024  # bytes of a saved header (covered ids included)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed dates: the same state gives the same bytes


def image_key(ident: str) -> int:
    """A 60-bit number from an image id: the heaps' tie-breaker and the bootstrap's seed."""
    return int(hashlib.sha256(ident.encode("utf-8")).hexdigest()[:15], 16)


def poisson_weights(key: int, seed: int) -> np.ndarray:
    """The image's weight in each bootstrap replicate: Poisson(1) draws seeded by its key and
    the run's seed (the same on any rank, in any order)."""
    return np.random.default_rng([seed, key]).poisson(1.0, BOOT).astype(np.int64)


def crop_boxes(peaks: np.ndarray, map_hw: tuple[int, int], input_hw: tuple[int, int],
               cells: int) -> np.ndarray:
    """The region of each peak cell (flat indexes into an h x w map over an H x W input):
    (x0, y0, x1, y1) of ``cells`` x ``cells`` cells centred on it, shifted inside the input,
    then (x0, y0, x1, y1) of the cell itself; input pixels, (C, 8) int32."""
    (h, w), (H, W) = map_hw, input_hw
    py, px = np.divmod(np.asarray(peaks, np.int64), w)
    sy, sx = H / h, W / w
    bh, bw = min(H, max(1, round(cells * sy))), min(W, max(1, round(cells * sx)))
    y0 = np.rint(np.clip((py + 0.5) * sy - bh / 2, 0, H - bh))
    x0 = np.rint(np.clip((px + 0.5) * sx - bw / 2, 0, W - bw))
    return np.stack([x0, y0, x0 + bw, y0 + bh, np.rint(px * sx), np.rint(py * sy),
                     np.rint((px + 1) * sx), np.rint((py + 1) * sy)], axis=1).astype(np.int32)


# ---- one image --------------------------------------------------------------------------------

@dataclass
class MapAtlas:
    """One image x class x channel-sum method."""
    class_name: str
    method: str
    outcome: Optional[str]  # 'correct' / 'wrong': a labelled image's predicted class; else None
    totals: np.ndarray  # (C,) float64: each channel's contribution summed over positions
    peaks: np.ndarray  # (C,) int32: flat position of each channel's largest contribution
    drops: Optional[np.ndarray] = None  # (K, 3): score drops zeroing top / random / bottom k
    weak: bool = False  # a class the model gives less than report.weak_below, not predicted:
    #                     left out of the fingerprints and regions (its ablation counts)


@dataclass
class ImageAtlas:
    """What one image adds to the atlas (saved per image, re-added by --resume)."""
    id: str
    input_hw: tuple[int, int]
    map_hw: tuple[int, int]
    activation: np.ndarray  # (C,) float64: each channel's peak activation
    peaks: np.ndarray  # (C,) int32: where it is (flat index into the map)
    maps: list[MapAtlas] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        header = {"id": self.id, "input_hw": list(self.input_hw), "map_hw": list(self.map_hw),
                  "maps": [[m.class_name, m.method, m.outcome, m.weak] for m in self.maps]}
        arrays = {"activation": self.activation, "peaks": self.peaks}
        if self.maps:
            arrays["totals"] = np.stack([m.totals for m in self.maps])
            arrays["map_peaks"] = np.stack([m.peaks for m in self.maps])
            if self.maps[0].drops is not None:
                arrays["drops"] = np.stack([m.drops for m in self.maps])
        return zip_bytes(header, arrays)

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "ImageAtlas":
        """The image's part ``to_bytes`` wrote; ExplainError naming ``where`` if it is not."""
        try:
            header, arrays = unzip(data)
            c = len(arrays["activation"])
            maps = []
            for i, (name, method, outcome, weak) in enumerate(header["maps"]):
                drops = arrays["drops"][i].astype(np.float64) if "drops" in arrays else None
                maps.append(MapAtlas(str(name), str(method), outcome,
                                     arrays["totals"][i].astype(np.float64),
                                     arrays["map_peaks"][i].astype(np.int32), drops, bool(weak)))
            if any(len(m.totals) != c or len(m.peaks) != c for m in maps):
                raise ValueError("a map's channels differ from the activations'")
            return cls(str(header["id"]), _pair(header["input_hw"]), _pair(header["map_hw"]),
                       arrays["activation"].astype(np.float64), arrays["peaks"].astype(np.int32),
                       maps)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise ExplainError(f"{where}: not an atlas part of this explain version "
                               f"({first_line(exc, 100)}); the run folder is damaged") from None


def _pair(values: list) -> tuple[int, int]:
    h, w = (int(v) for v in values)
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"size {h} x {w}")
    return h, w


def zip_bytes(header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """A zip (fixed dates) of ``header.json`` and one .npy per array: the same content gives
    the same bytes, and numpy's ``np.load`` reads the arrays."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("header.json", date_time=ZIP_DATE),
                   json.dumps(header, sort_keys=True).encode())
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), buf.getvalue())
    return out.getvalue()


def unzip(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """What ``zip_bytes`` wrote (ValueError when it is not such a zip, or when a member is
    compressed: ``stored_only``)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            stored_only(z)
            if z.getinfo("header.json").file_size > MAX_HEADER:
                raise ValueError("header.json larger than a header")
            header = _header(z.read("header.json"))
            arrays = {n[:-4]: stored_array(z.read(n))
                      for n in z.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, RecursionError) as exc:
        raise ValueError(first_line(exc, 80)) from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a mapping")
    return header, arrays


def _header(data: bytes) -> object:
    """A saved state's JSON header, refused before it is parsed when it is mostly lists and
    objects (``readback.container_problem``): 63 MB of ``[],`` took 2.4 GB and 12 s."""
    problem = container_problem(data)
    if problem:
        raise ValueError(f"header.json: {problem}")
    return json.loads(data)


# ---- what the run keeps -------------------------------------------------------------------

class Heaps:
    """Per channel, the ``n`` entries with the largest value (ties: the smaller key): value,
    image key and boxes (``crop_boxes``: region, then peak cell). Empty slots: -inf, key -1."""

    def __init__(self, channels: int, n: int):
        self.values = np.full((channels, n), -np.inf)
        self.keys = np.full((channels, n), -1, np.int64)
        self.boxes = np.zeros((channels, n, 8), np.int32)

    def add(self, values: np.ndarray, keys: np.ndarray, boxes: np.ndarray) -> None:
        """Offer M images' entries: values (M, C), keys (M,), boxes (M, C, 8)."""
        c, m = self.values.shape[0], len(keys)
        self._keep(np.concatenate([self.values, np.asarray(values, np.float64).T], 1),
                   np.concatenate([self.keys, np.broadcast_to(
                       np.asarray(keys, np.int64)[None], (c, m))], 1),
                   np.concatenate([self.boxes, np.asarray(boxes, np.int32).transpose(1, 0, 2)], 1))

    def merge(self, other: "Heaps") -> None:
        self._keep(np.concatenate([self.values, other.values], 1),
                   np.concatenate([self.keys, other.keys], 1),
                   np.concatenate([self.boxes, other.boxes], 1))

    def _keep(self, values: np.ndarray, keys: np.ndarray, boxes: np.ndarray) -> None:
        n = self.values.shape[1]
        order = np.lexsort((keys, -values), axis=1)[:, :n]
        self.values = np.take_along_axis(values, order, 1)
        self.keys = np.take_along_axis(keys, order, 1)
        self.boxes = np.take_along_axis(boxes, order[:, :, None], 1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values, "keys": self.keys, "boxes": self.boxes}

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> "Heaps":
        heaps = cls(0, 0)  # its arrays' own, never sized by a shape read back alone
        heaps.values = arrays["values"].astype(np.float64)
        heaps.keys = arrays["keys"].astype(np.int64)
        heaps.boxes = arrays["boxes"].astype(np.int32)
        if heaps.keys.shape != heaps.values.shape or heaps.boxes.shape != (*heaps.keys.shape, 8):
            raise ValueError("heap arrays of different shapes")
        return heaps


class Sums:
    """Exact running sums of vectors over images (each value x SCALE, rounded), how often each
    entry was among the image's marked ones (``hits``), and, with ``boot``, the same sums
    weighted per bootstrap replicate."""

    def __init__(self, width: int, boot: bool = True):
        self.count = 0
        self.total = np.zeros(width, np.int64)
        self.hits = np.zeros(width, np.int64)
        self.boot = np.zeros((BOOT, width), np.int64) if boot else None
        self.weights = np.zeros(BOOT, np.int64) if boot else None

    def add(self, values: np.ndarray, weights: np.ndarray,
            hits: Optional[np.ndarray] = None) -> None:
        scaled = np.rint(np.clip(np.asarray(values, np.float64), -LIMIT, LIMIT) * SCALE) \
            .astype(np.int64)
        self.count += 1
        self.total += scaled
        if hits is not None:
            self.hits[hits] += 1
        if self.boot is not None:
            self.boot += weights[:, None] * scaled[None, :]
            self.weights += weights

    def merge(self, other: "Sums") -> None:
        self.count += other.count
        self.total += other.total
        self.hits += other.hits
        if self.boot is not None and other.boot is not None:
            self.boot += other.boot
            self.weights += other.weights

    def mean(self) -> np.ndarray:
        return self.total / (max(self.count, 1) * SCALE)

    def interval(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """The mean's 95% percentile interval over the replicates (those with any weight);
        None without a bootstrap."""
        if self.weights is None:
            return None
        used = self.weights > 0
        if not used.any():
            return self.mean(), self.mean()
        means = self.boot[used] / (self.weights[used, None] * float(SCALE))
        low, high = np.quantile(means, [0.025, 0.975], axis=0)
        return low, high

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"count": np.array([self.count], np.int64), "total": self.total, "hits": self.hits}
        if self.boot is not None:
            out.update(boot=self.boot, weights=self.weights)
        return out

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> "Sums":
        sums = cls(0, boot="boot" in arrays)  # its arrays' own, as Heaps.of
        sums.count = int(arrays["count"][0])
        sums.total, sums.hits = arrays["total"].astype(np.int64), arrays["hits"].astype(np.int64)
        if sums.boot is not None:
            sums.boot, sums.weights = arrays["boot"].astype(np.int64), \
                arrays["weights"].astype(np.int64)
            if sums.boot.shape != (BOOT, len(sums.total)) or sums.weights.shape != (BOOT,):
                raise ValueError("bootstrap sums of another shape")
        if sums.hits.shape != sums.total.shape:
            raise ValueError("sums of different shapes")
        return sums


Key = tuple[str, str]  # (class, method)


class AtlasState:
    """Everything the atlas keeps over a run: the activation heaps, per class x method the
    contribution heaps and share sums (outcome 'all' with a bootstrap; 'correct' / 'wrong'
    for labelled images' predicted class), per method x k the ablation sums (top, random,
    bottom, top - random), the ids it covers. ``merge`` adds another rank's; ``to_bytes``
    saves it for --resume (the same state gives the same bytes)."""

    def __init__(self, channels: int, n: int, *, top_k: int, crop: int, seed: int,
                 ks: Iterable[int] = (), boot: bool = True):
        self.channels, self.n, self.top_k, self.crop, self.seed = channels, n, top_k, crop, seed
        self.ks, self.boot = [int(k) for k in ks], boot
        self.activation = Heaps(channels, n)
        self.contribution: dict[Key, Heaps] = {}
        self.shares: dict[tuple[str, str, str], Sums] = {}
        self.ablation: dict[tuple[str, int], Sums] = {}
        self.names: dict[int, str] = {}  # heap key -> image id (the keys in the heaps)
        self.covered: set[str] = set()
        self.weak: dict[Key, int] = {}  # weak maps left out, per class x method

    def empty(self) -> "AtlasState":
        """A state of the same settings with nothing in it."""
        return AtlasState(self.channels, self.n, top_k=self.top_k, crop=self.crop,
                          seed=self.seed, ks=self.ks, boot=self.boot)

    def add(self, images: list[ImageAtlas]) -> None:
        """Add these images (each once: an image already covered is an error of the caller)."""
        if not images:
            return
        keys = np.array([image_key(one.id) for one in images], np.int64)
        self.activation.add(np.stack([one.activation for one in images]), keys, np.stack(
            [crop_boxes(one.peaks, one.map_hw, one.input_hw, self.crop) for one in images]))
        offered: dict[Key, list] = {}
        for one, key in zip(images, keys.tolist()):
            self.names[key] = one.id
            self.covered.add(one.id)
            weights = poisson_weights(key, self.seed)
            for m in one.maps:
                self._add_map(m, weights)
                if m.weak:
                    continue
                box = crop_boxes(m.peaks, one.map_hw, one.input_hw, self.crop)
                offered.setdefault((m.class_name, m.method), []).append((m.totals, key, box))
        for pair, entries in offered.items():
            heaps = self.contribution.setdefault(pair, Heaps(self.channels, self.n))
            heaps.add(np.stack([e[0] for e in entries]), np.array([e[1] for e in entries]),
                      np.stack([e[2] for e in entries]))
        if len(self.names) > 4 * self.activation.keys.size * (1 + len(self.contribution)):
            self._prune()

    def _add_map(self, m: MapAtlas, weights: np.ndarray) -> None:
        if m.weak:
            self.weak[(m.class_name, m.method)] = self.weak.get((m.class_name, m.method), 0) + 1
        else:
            shares = channel_shares(m.totals)
            top = top_channels(m.totals, min(self.top_k, self.channels))
            self._sums((m.class_name, m.method, "all"), self.boot).add(shares, weights, top)
            if m.outcome in OUTCOMES[1:]:
                self._sums((m.class_name, m.method, m.outcome), False).add(shares, weights, top)
        if m.drops is not None:
            for k, (top_drop, random_drop, bottom_drop) in zip(self.ks, m.drops.tolist()):
                sums = self.ablation.setdefault((m.method, k), Sums(4))
                sums.add(np.array([top_drop, random_drop, bottom_drop, top_drop - random_drop]),
                         weights)

    def _sums(self, key: tuple[str, str, str], boot: bool) -> Sums:
        if key not in self.shares:
            self.shares[key] = Sums(self.channels, boot)
        return self.shares[key]

    def _prune(self) -> None:
        """Forget the ids of images no heap holds any more."""
        live = set(self.activation.keys.ravel().tolist())
        for heaps in self.contribution.values():
            live.update(heaps.keys.ravel().tolist())
        self.names = {k: v for k, v in self.names.items() if k in live}

    def merge(self, other: "AtlasState") -> None:
        """Add another rank's state (images disjoint from this one's)."""
        self.activation.merge(other.activation)
        for pair, heaps in other.contribution.items():
            self.contribution.setdefault(pair, Heaps(self.channels, self.n)).merge(heaps)
        for key, sums in other.shares.items():
            self._sums(key, sums.boot is not None).merge(sums)
        for key, sums in other.ablation.items():
            self.ablation.setdefault(key, Sums(4)).merge(sums)
        self.names.update(other.names)
        self.covered |= other.covered
        for pair, n in other.weak.items():
            self.weak[pair] = self.weak.get(pair, 0) + n
        self._prune()

    def check(self, classes: set[str], methods: set[str]) -> None:
        """ValueError unless this state is one a run of these classes and methods makes: safe
        ids, each name the id of its key, every held key named, boxes inside an input, keys
        of known classes, methods, outcomes and ks (a shared state's 20,000 x 20,000 boxes
        asked for 1.1 GiB a crop, its names ran into a CSV and a caption's fitting)."""
        from explain.names import name_problem
        bad = next((i for i in self.covered if name_problem(i)), None)
        if bad is not None:
            raise ValueError(f"image id {bad[:40]!r}")
        if any(v not in self.covered or image_key(v) != k for k, v in self.names.items()):
            raise ValueError("an image name that is not its key's")
        for heaps in [self.activation, *self.contribution.values()]:
            held = heaps.keys >= 0
            if (heaps.keys[~held] != -1).any() or \
                    not set(np.unique(heaps.keys[held]).tolist()) <= self.names.keys():
                raise ValueError("a heap key without its image")
            box = heaps.boxes[held].astype(np.int64)
            if box.size and ((box < 0).any() or (box > MAX_SIDE).any()
                             or (box[:, [2, 3]] <= box[:, [0, 1]]).any()
                             or (box[:, [6, 7]] < box[:, [4, 5]]).any()):
                raise ValueError("a region outside any input")
        if not all(c in classes and m in methods for c, m in self.contribution) or \
                not all(c in classes and m in methods and o in OUTCOMES
                        for c, m, o in self.shares) or \
                not all(m in methods and k in self.ks for m, k in self.ablation) or \
                not all(c in classes and m in methods for c, m in self.weak):
            raise ValueError("a class, method or k that is not this run's")

    # ---- saved with the run (--resume) ------------------------------------------------------
    def to_bytes(self) -> bytes:
        self._prune()
        pairs, shares, ablation = sorted(self.contribution), sorted(self.shares), \
            sorted(self.ablation)
        header = {**self.settings(), "covered": sorted(self.covered),
                  "names": [[k, self.names[k]] for k in sorted(self.names)],
                  "contribution": [list(p) for p in pairs], "shares": [list(s) for s in shares],
                  "ablation": [list(a) for a in ablation],
                  "weak": [[*pair, self.weak[pair]] for pair in sorted(self.weak)]}
        arrays = {f"a.{n}": v for n, v in self.activation.arrays().items()}
        for i, pair in enumerate(pairs):
            arrays.update({f"c{i}.{n}": v for n, v in self.contribution[pair].arrays().items()})
        for i, key in enumerate(shares):
            arrays.update({f"s{i}.{n}": v for n, v in self.shares[key].arrays().items()})
        for i, key in enumerate(ablation):
            arrays.update({f"d{i}.{n}": v for n, v in self.ablation[key].arrays().items()})
        return zip_bytes(header, arrays)

    def settings(self) -> dict:
        """What the state was made with: a saved state is read only into these."""
        return {"channels": self.channels, "n": self.n, "top_k": self.top_k, "crop": self.crop,
                "seed": self.seed, "ks": list(self.ks), "boot": self.boot}

    @classmethod
    def from_bytes(cls, data: bytes, where: str, like: "AtlasState", *,
                   classes: Collection[str] = (), methods: Collection[str] = ()) -> "AtlasState":
        """The state ``to_bytes`` wrote, made with ``like``'s settings (compared before
        anything is built: a header's n of 10^12 asked for that many heap slots) for these
        classes and methods (``check``); ExplainError naming ``where`` when it is not one."""
        try:
            h, arrays = unzip(data)

            def part(prefix: str) -> dict[str, np.ndarray]:
                return {n[len(prefix):]: v for n, v in arrays.items() if n.startswith(prefix)}
            if {k: h.get(k) for k in like.settings()} != like.settings():
                raise ValueError("made with other settings than this run's")
            state = cls(like.channels, like.n, top_k=like.top_k, crop=like.crop,
                        seed=like.seed, ks=like.ks, boot=like.boot)
            state.activation = Heaps.of(part("a."))
            state.contribution = {(str(c), str(m)): Heaps.of(part(f"c{i}."))
                                  for i, (c, m) in enumerate(h["contribution"])}
            state.shares = {(str(c), str(m), str(o)): Sums.of(part(f"s{i}."))
                            for i, (c, m, o) in enumerate(h["shares"])}
            state.ablation = {(str(m), int(k)): Sums.of(part(f"d{i}."))
                              for i, (m, k) in enumerate(h["ablation"])}
            state.names = {int(k): str(v) for k, v in h["names"]}
            state.covered = {str(i) for i in h["covered"]}
            state.weak = {(str(c), str(m)): int(n) for c, m, n in h["weak"]}
            shapes = [state.activation.values.shape] + \
                [x.values.shape for x in state.contribution.values()]
            if any(s != (state.channels, state.n) for s in shapes) or \
                    any(len(s.total) != state.channels for s in state.shares.values()):
                raise ValueError("arrays of another channel count")
            state.check(set(classes), set(methods))
            return state
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise ExplainError(f"{where}: not an atlas state of this explain version "
                               f"({first_line(exc, 100)})") from None

"""Numbers and views of a labelled dataset: accuracy, the confusion table, per-class counts
and pointing game, the mean map per class x method over correct and wrong images, and the
images whose maps the methods disagree on most.

Everything but the mean maps is computed from the run's records (``ImageEntry`` /
``MapRecord``), so a report rebuilt from a results folder, or from an interrupted run's item
files, shows the same numbers. The mean maps are running sums kept by ``MeanSums``: each map
is resized to ``MEAN_SIZE`` and added as integers (the map x 2**24, rounded), so the sums are
exact and the same in any order: a resumed run's means equal an uninterrupted run's, byte
for byte. Memory grows with classes x methods (0.4 MB per class x method x outcome), not with
the number of images.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import TYPE_CHECKING, Iterable, Optional

import cv2
import numpy as np

from explain.errors import ExplainError, first_line
from explain.readback import container_problem, stored_array, stored_only
from explain.results import (ClassNumbers, DatasetSummary, Disagreement, ImageEntry,
                             MeanMap)

if TYPE_CHECKING:
    from explain.config import Config

MEAN_SIZE = (224, 224)  # (H, W) every map is resized to before averaging
SCALE = 1 << 24  # maps in 0..1 are summed as round(map * SCALE): exact integer sums
OUTCOMES = ("correct", "wrong")
DISAGREE_TOP = 20  # image x class rows kept in summary.json (all of them in the CSV)
MAX_HEADER_BYTES = 64 * 1024 * 1024  # state.json of a saved mean-map state
FULL_CONFUSION = 50  # up to this many named classes the table lists them all; more: the
#                      classes that occur as a label or a prediction


# ---- from the records ---------------------------------------------------------------------

def labelled(entries: Iterable[ImageEntry]) -> list[ImageEntry]:
    """The entries that carry a ground-truth label."""
    return [e for e in entries if e.label is not None]


def accuracy(entries: list[ImageEntry]) -> tuple[int, int, Optional[float]]:
    """(labelled images, correctly predicted, accuracy); accuracy None without labels."""
    known = labelled(entries)
    correct = sum(e.predicted == e.label for e in known)
    return len(known), correct, (round(correct / len(known), 6) if known else None)


def confusion(entries: list[ImageEntry], classes: list[str]) -> tuple[list[str], list[list[int]]]:
    """The confusion table over ``classes`` (config order): rows = label, columns =
    predicted, counts of labelled images. Over FULL_CONFUSION classes, only the classes that
    occur as a label or a prediction are rows and columns."""
    known = labelled(entries)
    axis = list(classes)
    if len(axis) > FULL_CONFUSION:
        seen = {e.label for e in known} | {e.predicted for e in known}
        axis = [c for c in axis if c in seen]
    where = {c: i for i, c in enumerate(axis)}
    table = [[0] * len(axis) for _ in axis]
    for e in known:
        if e.label in where and e.predicted in where:
            table[where[e.label]][where[e.predicted]] += 1
    return axis, table


def per_class(entries: list[ImageEntry], classes: list[str], methods: list[str],
              seed: int = 0, separator: Optional[str] = None) -> list[ClassNumbers]:
    """Per named class that occurs (as a label, a prediction or a map): images labelled with
    it, of those correct, images predicted as it, and the pointing game over its maps that
    have a ground-truth box (all methods, with its interval over images, and per method)."""
    images: dict[str, int] = {}
    correct: dict[str, int] = {}
    predicted: dict[str, int] = {}
    mapped: set[str] = set()
    hits: dict[tuple[str, str], list[int]] = {}  # (class, method) -> [hits, maps]
    for e in entries:
        predicted[e.predicted] = predicted.get(e.predicted, 0) + 1
        if e.label is not None:
            images[e.label] = images.get(e.label, 0) + 1
            correct[e.label] = correct.get(e.label, 0) + (e.predicted == e.label)
        for r in e.cams:
            mapped.add(r.class_name)
            if r.localisation is not None:
                counts = hits.setdefault((r.class_name, r.method), [0, 0])
                counts[0] += r.localisation.pointing_hit
                counts[1] += 1
    shares = pointing_shares(entries, separator)
    rows, bounds = [], share_intervals(shares, seed)
    for cls in classes:
        if cls not in images and cls not in predicted and cls not in mapped:
            continue
        mine = {m: hits[(cls, m)] for m in methods if (cls, m) in hits}
        hit, maps = sum(h for h, _ in mine.values()), sum(n for _, n in mine.values())
        n = images.get(cls, 0)
        rows.append(ClassNumbers(
            class_name=cls, images=n, correct=correct.get(cls, 0),
            accuracy=round(correct.get(cls, 0) / n, 6) if n else None,
            predicted_as=predicted.get(cls, 0), pointing_maps=maps, pointing_hits=hit,
            pointing=round(hit / maps, 6) if maps else None,
            pointing_interval=bounds.get(cls),
            pointing_units=len(shares[cls]) if cls in bounds else None,
            pointing_by_method={m: round(h / k, 6) for m, (h, k) in mine.items()} or None))
    return rows


def regrouped(summary, separator: Optional[str]) -> Optional[DatasetSummary]:
    """A copy of the run's dataset numbers (``summary.dataset``; None without) with its
    per-class pointing intervals over the photos of ``separator`` (explain report
    --photo-separator: they said 'over 6 photos' of the run's interval over 6 images)."""
    if summary.dataset is None:
        return None
    cfg = summary.config
    rows = per_class(summary.images, list(cfg.classes), [m.name for m in cfg.methods],
                     cfg.seed, separator)
    return summary.dataset.model_copy(update={"per_class": rows})


def pointing_intervals(entries: list[ImageEntry], seed: int,
                       separator: Optional[str] = None) -> dict[str, list[float]]:
    """Per class, the 95% bootstrap interval of its pointing game over the images (each
    image's share of hits among its maps of the class, all methods: an image's maps are not
    independent draws), or over the photos with report.photo_separator (a photo's variants'
    shares averaged, as the methods table does), for classes with boxes on at least
    MIN_IMAGES of them; at least their
    Wilson interval (stats.widened: images that all hit have no spread to resample) and cut
    to the values a share takes, as the methods table's are. Classes with fewer have none."""
    return share_intervals(pointing_shares(entries, separator), seed)


def pointing_shares(entries: list[ImageEntry],
                    separator: Optional[str] = None) -> dict[str, list[float]]:
    """Per class, each image's (or photo's: its variants' mean) share of hits among its maps
    of the class with a box: what ``share_intervals`` resamples."""
    from explain.names import photo_of
    by_photo: dict[str, dict[str, list[float]]] = {}  # class -> photo -> its images' shares
    for e in entries:
        mine: dict[str, list[int]] = {}
        for r in e.cams:
            if r.localisation is not None:
                counts = mine.setdefault(r.class_name, [0, 0])
                counts[0] += r.localisation.pointing_hit
                counts[1] += 1
        for cls, (hit, maps) in mine.items():
            photo = photo_of(e.id, separator, e.path)
            by_photo.setdefault(cls, {}).setdefault(photo, []).append(hit / maps)
    return {cls: [sum(v) / len(v) for v in photos.values()] for cls, photos in by_photo.items()}


def share_intervals(shares: dict[str, list[float]], seed: int) -> dict[str, list[float]]:
    """``pointing_intervals`` of the shares ``pointing_shares`` gives."""
    from explain.metrics import SHARE
    from explain.stats import MIN_IMAGES, intervals, widened
    wide = [cls for cls, values in shares.items() if len(values) >= MIN_IMAGES]
    found = intervals([shares[cls] for cls in wide], seed=seed)
    out = {}
    for cls, bounds in zip(wide, found):
        low, high = widened(bounds, sum(shares[cls]) / len(shares[cls]), len(shares[cls]))
        out[cls] = [round(max(SHARE[0], low), 6), round(min(SHARE[1], high), 6)]
    return out


def disagreements(entries: list[ImageEntry], classes: list[str]) -> list[Disagreement]:
    """Every image x class with maps of two or more methods, ranked by disagreement: 1 - the
    mean pairwise Pearson r of the methods' maps. That mean is the mean of the records'
    ``agreement`` (each record's mean r with the other methods: every pair counted twice).
    Ties keep image order, then class order."""
    rank = {c: i for i, c in enumerate(classes)}
    rows = []
    for order, e in enumerate(entries):
        by_class: dict[str, list[float]] = {}
        for r in e.cams:
            if r.agreement is not None:
                by_class.setdefault(r.class_name, []).append(r.agreement)
        for cls, values in by_class.items():
            if len(values) < 2:
                continue
            value = round(1.0 - float(np.mean(values)), 6)
            rows.append((-value, order, rank.get(cls, len(rank)),
                         Disagreement(image=e.id, class_name=cls, disagreement=value,
                                      predicted=e.predicted, label=e.label)))
    return [row[-1] for row in sorted(rows, key=lambda r: r[:3])]


def summarise(entries: list[ImageEntry], classes: list[str], methods: list[str],
              seed: int = 0, separator: Optional[str] = None) -> DatasetSummary:
    """Every number of the dataset section that the records hold (no mean maps); ``seed``
    and ``separator``: the run's, for the pointing game's intervals (over photos with
    report.photo_separator)."""
    count, correct, acc = accuracy(entries)
    axis, table = confusion(entries, classes)
    return DatasetSummary(labelled=count, unlabelled=len(entries) - count, correct=correct,
                          accuracy=acc, classes=axis, confusion=table,
                          per_class=per_class(entries, classes, methods, seed, separator),
                          disagreement=disagreements(entries, classes)[:DISAGREE_TOP])


def confusion_rows(axis: list[str], table: list[list[int]]) -> list[dict]:
    """dataset/confusion.csv: a row per label, a column per prediction."""
    return [{"label/predicted": cls, **dict(zip(axis, row))} for cls, row in zip(axis, table)]


def class_rows(rows: list[ClassNumbers], methods: list[str]) -> list[dict]:
    """dataset/per_class.csv: one row per class, the pointing game's interval as two columns,
    pointing per method as columns."""
    out = []
    for row in rows:
        data = row.model_dump(mode="json", by_alias=True)
        by_method = data.pop("pointing_by_method") or {}
        data["pointing_low"], data["pointing_high"] = data.pop("pointing_interval") or (None,
                                                                                      None)
        data.update({f"pointing_{m}": by_method.get(m) for m in methods})
        out.append(data)
    return out


# ---- mean maps ----------------------------------------------------------------------------

Key = tuple[str, str, str]  # (class, method, outcome)


def resize_map(cam: np.ndarray, size: tuple[int, int] = MEAN_SIZE) -> np.ndarray:
    """A map (H, W) in 0..1 at ``size`` (H, W): INTER_AREA when it shrinks, else
    INTER_LINEAR (cv2.resize), float32."""
    h, w = size
    shrink = h * w < cam.shape[0] * cam.shape[1]
    return cv2.resize(np.asarray(cam, dtype=np.float32), (w, h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def id_digest(ids: Iterable[str], start: int = 0) -> int:
    """An order-free fingerprint of a set of image ids (sum of their hashes mod 2**128)."""
    total = start
    for ident in ids:
        total += int(hashlib.sha256(ident.encode("utf-8")).hexdigest()[:32], 16)
    return total % (1 << 128)


class MeanSums:
    """Running integer sums of resized maps per (class, method, outcome), the images they
    cover (a count and a digest) and how many maps each sum holds."""

    def __init__(self, size: tuple[int, int] = MEAN_SIZE):
        self.size = tuple(size)
        self.sums: dict[Key, np.ndarray] = {}
        self.counts: dict[Key, int] = {}
        self.covered = 0  # images whose maps are in the sums (contributing or not)
        self.digest = 0  # id_digest of those images
        self.absent = 0  # images kept from an interrupted run whose maps could not be added

    def add(self, key: Key, cam: np.ndarray) -> None:
        """Add one map (any size, 0..1) to the sum of ``key``."""
        scaled = np.rint(np.clip(resize_map(cam, self.size), 0, 1).astype(np.float64) * SCALE)
        if key not in self.sums:
            self.sums[key] = np.zeros(self.size, dtype=np.int64)
            self.counts[key] = 0
        self.sums[key] += scaled.astype(np.int64)
        self.counts[key] += 1

    def cover(self, ids: Iterable[str]) -> None:
        """Count these images as added (whether or not they had a map to add)."""
        ids = list(ids)
        self.covered += len(ids)
        self.digest = id_digest(ids, self.digest)

    def merge(self, other: "MeanSums") -> None:
        """Add another rank's sums (integers and an order-free digest: any order gives the
        same total)."""
        for key, total in other.sums.items():
            if key in self.sums:
                self.sums[key] += total
                self.counts[key] += other.counts[key]
            else:
                self.sums[key], self.counts[key] = total.copy(), other.counts[key]
        self.covered += other.covered
        self.digest = (self.digest + other.digest) % (1 << 128)
        self.absent += other.absent

    def mean(self, key: Key) -> np.ndarray:
        """The mean map of ``key``, float32 (H, W) in 0..1."""
        return (self.sums[key].astype(np.float64) / (self.counts[key] * SCALE)).astype(np.float32)

    def keys(self, classes: list[str], methods: list[str]) -> list[Key]:
        """The keys with maps, in class, method, outcome order."""
        rc = {c: i for i, c in enumerate(classes)}
        rm = {m: i for i, m in enumerate(methods)}
        return sorted(self.sums, key=lambda k: (rc.get(k[0], len(rc)), k[0],
                                                rm.get(k[1], len(rm)), k[1], OUTCOMES.index(k[2])))

    # ---- saved state (what --resume continues from) -----------------------------------------
    def to_bytes(self, pending: list[str]) -> bytes:
        """A zip (fixed dates: the same state gives the same bytes) of the sums and a JSON
        header; ``pending``: ids of the batch being added after this state."""
        keys = sorted(self.sums)
        header = {"size": list(self.size), "covered": self.covered, "digest": f"{self.digest:x}",
                  "absent": self.absent, "pending": list(pending),
                  "groups": [[*k, self.counts[k]] for k in keys]}
        stack = np.stack([self.sums[k] for k in keys]) if keys else \
            np.zeros((0, *self.size), dtype=np.int64)
        arrays = io.BytesIO()
        np.save(arrays, stack)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for name, data in (("state.json", json.dumps(header).encode()),
                               ("sums.npy", arrays.getvalue())):
                z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> tuple["MeanSums", list[str]]:
        """The state ``to_bytes`` wrote and its pending ids; ExplainError naming ``where``
        when it is not one."""
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                stored_only(z)  # nothing read is larger than the file
                if z.getinfo("state.json").file_size > MAX_HEADER_BYTES:
                    raise ValueError("state.json larger than a header")
                raw = z.read("state.json")
                problem = container_problem(raw)  # 63 MB of '[],' took 1.6 GB
                if problem:
                    raise ValueError(f"state.json: {problem}")
                header = json.loads(raw)
                size = tuple(int(n) for n in header["size"])
                groups = [_group(g) for g in header["groups"]]
                if len(size) != 2 or not all(1 <= n <= 4096 for n in size):
                    raise ValueError(f"size {list(size)[:4]}")
                expected = len(groups) * size[0] * size[1] * 8 + 4096
                if z.getinfo("sums.npy").file_size > expected:
                    raise ValueError("sums larger than its header says")
                stack = stored_array(z.read("sums.npy"))
            state = cls(size)
            if stack.shape != (len(groups), *size) or stack.dtype != np.int64:
                raise ValueError("sums do not match the header")
            for key, n in groups:
                state.sums[key], state.counts[key] = stack[len(state.sums)].copy(), n
            if len(state.sums) != len(groups):
                raise ValueError("a class, method and outcome is listed twice")
            state.covered, state.digest = int(header["covered"]), int(header["digest"], 16)
            state.absent = int(header["absent"])
            return state, [str(p) for p in header["pending"]]
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, RecursionError) as exc:
            raise ExplainError(f"{where}: not a mean-map state of this explain version "
                               f"({first_line(exc, 100)})") from None


def _group(group: list) -> tuple[Key, int]:
    """One [class, method, outcome, maps] entry of a saved state's header."""
    cls, method, outcome, n = group
    if not all(isinstance(t, str) for t in (cls, method, outcome)) or outcome not in OUTCOMES:
        raise ValueError(f"group {str(group)[:60]}: not a class, method and outcome "
                         f"({' or '.join(OUTCOMES)})")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"group {str(group)[:60]}: the map count is not a positive number")
    return (cls, method, outcome), n


def mean_record(key: Key, count: int, mean: np.ndarray) -> MeanMap:
    """The summary record of one mean map and where its files go."""
    cls, method, outcome = key
    stem = f"dataset/mean/{method}/{cls}__{outcome}"
    return MeanMap(class_name=cls, method=method, outcome=outcome, count=count,
                   max=round(float(mean.max()), 6), file=f"{stem}.png", array=f"{stem}.npy")


def problem(numbers: DatasetSummary, cfg: Config, images: int) -> Optional[str]:
    """What in a summary's dataset numbers its run (``cfg``, ``images`` entries) cannot have
    written, or None: confusion classes that are not the config's classes in its order, or
    more than its images name (a shared 4,000 x 4,000 table took the report 3.4 GB), numbers
    of other classes or methods, more disagreement rows than a run keeps."""
    order = {name: i for i, name in enumerate(cfg.classes)}
    axis = [order.get(c, -1) for c in numbers.classes]
    if -1 in axis or axis != sorted(set(axis)):
        return "confusion classes that are not its classes in their order"
    if len(axis) > max(FULL_CONFUSION, 2 * images):
        return f"a confusion table of {len(axis)} classes, more than its images name"
    methods = {m.name for m in cfg.methods}
    if any(c.class_name not in order for c in numbers.per_class) or \
            len(numbers.per_class) > len(order) or \
            any(m.class_name not in order or m.method not in methods for m in numbers.mean_maps) or \
            len(numbers.mean_maps) > 2 * len(order) * len(methods):
        return "numbers of a class or method that is not its run's"
    if len(numbers.disagreement) > DISAGREE_TOP or \
            any(d.class_name not in order for d in numbers.disagreement):
        return f"more than {DISAGREE_TOP} disagreement rows, or one of another class"
    return None

"""Ground-truth boxes for the localisation numbers: reading them, matching them to images,
and scaling them from original image pixels to the model's input pixels.

Boxes come from the config (``annotations.boxes``: image -> class -> boxes) and/or a file
(``annotations.file``):

- CSV with a header row ``image,class,x0,y0,x1,y1`` (extra columns are ignored);
- JSON: a list of objects with the same keys;
- Pascal VOC XML (one ``<annotation>`` per file: ``filename`` and ``object``/``name``/
  ``bndbox``), or a folder of such files. VOC counts pixels from 1 with inclusive corners,
  so ``xmin`` becomes ``xmin - 1`` and ``xmax`` stays. XML is parsed from its bytes (UTF-8 or
  UTF-16, with or without a byte-order mark) and a document type declaration is refused by the
  parser itself, so no entity is ever declared or expanded, whatever the encoding.

Every file is bounded (MAX_FILE_BYTES, MAX_XML_ELEMENTS, MAX_BOXES in all) and every problem
is one ExplainError line naming the file and its line, item or object.

Coordinates are x0, y0, x1, y1 in the pixels of the image as displayed (EXIF orientation
applied, as explain decodes it), x1 and y1 exclusive. An image is named by its id in the
outputs (``both``) or its file name (``both.jpg``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from xml.parsers import expat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from explain.config import Config, box_problem, read_bounded_bytes, read_bounded_text
from explain.csvrows import CsvRows
from explain.errors import ExplainError, first_line
from explain.images.orientation import original_size
from explain.measures import peak_inside
from explain.names import listed, quote, short, suggest
from explain.results import Localisation

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_VOC_FILES = 100_000
MAX_XML_ELEMENTS = 100_000  # in one VOC file (an object is about a dozen)
MAX_BOXES = 1_000_000  # in all the files of a run
MAX_BOXES_PER_IMAGE = 1000  # each one is drawn on every overlay of the image and measured
COLUMNS = ("image", "class", "x0", "y0", "x1", "y1")


@dataclass(frozen=True, slots=True)
class Box:
    """One ground-truth box in original image pixels, and where it was given (for messages)."""
    image: str
    class_name: str
    x0: float
    y0: float
    x1: float
    y1: float
    where: str


class BoxSet:
    """All boxes of a run, looked up by image (id or file name) and class."""

    def __init__(self, boxes: Iterable[Box]):
        self.boxes: dict[str, list[Box]] = {}
        for box in boxes:
            self.boxes.setdefault(box.image, []).append(box)
        self.used: set[str] = set()

    def __len__(self) -> int:
        return sum(len(v) for v in self.boxes.values())

    def for_image(self, image_id: str, path: Path) -> dict[str, list[Box]]:
        """class -> boxes for the image with this id and file."""
        found: dict[str, list[Box]] = {}
        for key in dict.fromkeys((image_id, path.name)):
            for box in self.boxes.get(key, []):
                self.used.add(key)
                found.setdefault(box.class_name, []).append(box)
        return found

    def check_unique(self, images: Iterable[tuple[str, Path]]) -> None:
        """ExplainError when a box names its image by a file name that several images of the
        run share (data/cat/0.jpg and data/dog/0.jpg): the box would land on each of them."""
        images = list(images)
        ids = {image_id for image_id, _ in images}
        by_name: dict[str, list[str]] = {}
        for image_id, path in images:
            by_name.setdefault(path.name, []).append(image_id)
        for key, many in self.boxes.items():
            owners = by_name.get(key, [])
            if key in ids or len(owners) < 2:
                continue
            named = listed([quote(i) for i in owners])
            raise ExplainError(f"{many[0].where}: image {quote(key)} is the file name of "
                               f"{len(owners)} images of the run (ids {named}); name each box's "
                               f"image by its id (as in the report and summary.csv) instead")

    def unused(self) -> list[str]:
        """Image keys that matched no image of the run (a shared box file is fine)."""
        return sorted(set(self.boxes) - self.used)


def load_boxes(cfg: Config) -> BoxSet:
    """Every box the config gives, inline and from ``annotations.file``; ExplainError naming the
    file (and line or element) for anything unusable."""
    spec = cfg.annotations
    boxes = [Box(image, cls, *map(float, values), f"annotations.boxes.{image}.{cls}")
             for image, classes in spec.boxes.items()
             for cls, many in classes.items() for values in many]
    if spec.file is not None:
        path = cfg.resolve(spec.file)
        boxes += read_box_file(path, list(cfg.classes))
    _count(len(boxes), "annotations")
    found = BoxSet(boxes)
    for image, many in found.boxes.items():
        if len(many) > MAX_BOXES_PER_IMAGE:
            raise ExplainError(f"{many[MAX_BOXES_PER_IMAGE].where}: more than "
                               f"{MAX_BOXES_PER_IMAGE} boxes for the image {quote(image)} "
                               f"(each is drawn on every overlay of the image and measured)")
    return found


def read_box_file(path: Path, classes: list[str]) -> list[Box]:
    """Boxes from a CSV, JSON or VOC XML file, or a folder of VOC XML files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir()  # links skipped, as in a listed image folder
                       if p.suffix.lower() == ".xml" and p.is_file() and not p.is_symlink())
        if not files:
            raise ExplainError(f"annotations.file: {path}: no .xml files in the folder")
        if len(files) > MAX_VOC_FILES:
            raise ExplainError(f"annotations.file: {path}: {len(files)} files; at most "
                               f"{MAX_VOC_FILES}")
        boxes: list[Box] = []
        for f in files:
            boxes += _read_voc(f, _bytes(f), classes)
            _count(len(boxes), path)
        return boxes
    if not path.is_file():  # or what it is: a named pipe, a socket, a device
        from explain.names import not_found
        raise ExplainError(f"annotations.file: file {not_found(path, '')}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, _text(path), classes)
    if suffix == ".json":
        return _read_json(path, _text(path), classes)
    if suffix == ".xml":
        return _read_voc(path, _bytes(path), classes)
    raise ExplainError(f"annotations.file: {path}: expected a .csv, .json or Pascal VOC .xml "
                       f"file, or a folder of .xml files")


def _text(path: Path) -> str:
    return read_bounded_text(path, MAX_FILE_BYTES, "an annotation file", encoding="utf-8-sig")


def _bytes(path: Path) -> bytes:
    return read_bounded_bytes(path, MAX_FILE_BYTES, "an annotation file")


def _box(row: dict, where: str, classes: list[str]) -> Box:
    """A Box from a mapping with the COLUMNS keys; ExplainError naming ``where``."""
    missing = [k for k in COLUMNS if row.get(k) in (None, "")]
    if missing:
        raise ExplainError(f"{where}: missing {', '.join(missing)} (columns: {', '.join(COLUMNS)})")
    image, cls = str(row["image"]).strip(), str(row["class"]).strip()
    if cls not in classes:
        raise ExplainError(f"{where}: class {quote(cls)} is not a named class"
                           f"{suggest(cls, classes)} (named: {listed(list(classes), 20)})")
    try:
        values = tuple(float(row[k]) for k in COLUMNS[2:])
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit JSON integer
        raise ExplainError(f"{where}: x0, y0, x1, y1 must be numbers of at most about 1e308 "
                           f"(got {short(quote([row[k] for k in COLUMNS[2:]]), 120)})") from None
    problem = box_problem(values)
    if problem:
        raise ExplainError(f"{where}: box {list(values)} {problem}")
    return Box(image, cls, *values, where)


def _count(boxes: int, where: object) -> None:
    if boxes > MAX_BOXES:
        raise ExplainError(f"{where}: more than {MAX_BOXES} boxes (the most a run takes); split "
                           f"the file")


def _read_csv(path: Path, text: str, classes: list[str]) -> list[Box]:
    table = CsvRows(text, str(path), MAX_BOXES, "the most a run takes; split the file")
    if not set(COLUMNS) <= set(table.header):
        raise ExplainError(f"{path}: line 1: expected a header with the columns "
                           f"{', '.join(COLUMNS)} (got {short(quote(table.header), 200)})")
    return [_box(row, f"{path}: line {line}", classes) for line, row in table.rows(COLUMNS)]


def _read_json(path: Path, text: str, classes: list[str]) -> list[Box]:
    from explain.readback import container_problem
    problem = container_problem(text)  # '[{},{},...]': 20x its size in memory once parsed
    if problem:
        raise ExplainError(f"{path}: {problem}")
    try:
        data = json.loads(text)
    except ValueError as exc:  # also an integer over Python's 4300 digits
        raise ExplainError(f"{path}: not valid JSON ({first_line(exc, 120)})") from None
    except RecursionError:
        raise ExplainError(f"{path}: the JSON is nested too deep (a box file is a list of "
                           f"objects)") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ExplainError(f"{path}: expected a list of objects with the keys "
                           f"{', '.join(COLUMNS)}")
    _count(len(data), path)
    return [_box(row, f"{path}: item {i}", classes) for i, row in enumerate(data)]


class _Refused(Exception):
    """Raised in an expat handler: the parse stops at once, with this message."""


def parse_xml(path: Path, data: bytes) -> ET.Element:
    """The element tree of an XML file's bytes (expat finds the encoding: UTF-8, UTF-16 with
    or without a BOM). Any document type declaration is refused by the parser as soon as it
    starts, so no entity is declared or expanded whatever the encoding; at most
    MAX_XML_ELEMENTS elements, and as many '=' (attributes, counted before parsing).
    ExplainError naming the file otherwise."""
    if data.count(b"=") > MAX_XML_ELEMENTS:  # expat builds an element's attributes before
        # any handler sees it: 3 million in one element (32 MB) took 870 MB and 6 s
        raise ExplainError(f"{path}: over {MAX_XML_ELEMENTS} '=' (attributes); a VOC file "
                           f"describes one image")
    parser, builder = expat.ParserCreate(), ET.TreeBuilder()
    count = 0

    def start(tag: str, attrs: dict) -> None:
        nonlocal count
        count += 1
        if count > MAX_XML_ELEMENTS:
            raise _Refused(f"over {MAX_XML_ELEMENTS} XML elements; a VOC file describes one image")
        builder.start(tag, attrs)

    def refuse(*_) -> None:
        raise _Refused("a document type declaration (<!DOCTYPE ...>, entities) is not allowed "
                       "in an annotation file")

    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler, parser.EndElementHandler = start, builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise ExplainError(f"{path}: {exc}") from None
    except expat.ExpatError as exc:
        raise ExplainError(f"{path}: not valid XML ({exc})") from None
    return builder.close()


def _read_voc(path: Path, data: bytes, classes: list[str]) -> list[Box]:
    root = parse_xml(path, data)
    image = (root.findtext("filename") or "").strip()
    if root.tag != "annotation" or not image:
        raise ExplainError(f"{path}: not a Pascal VOC file (<annotation> with <filename>)")
    boxes = []
    for i, obj in enumerate(root.findall("object")):
        where = f"{path}: object {i + 1}"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ExplainError(f"{where}: no <bndbox>")
        corners = (("x0", "xmin"), ("y0", "ymin"), ("x1", "xmax"), ("y1", "ymax"))
        row = {"image": image, "class": (obj.findtext("name") or "").strip(),
               **{k: bnd.findtext(tag) for k, tag in corners}}
        try:  # VOC: 1-based, inclusive corners
            row["x0"], row["y0"] = float(row["x0"]) - 1, float(row["y0"]) - 1
        except (TypeError, ValueError):
            pass  # _box names the bad values
        boxes.append(_box(row, where, classes))
    return boxes


# ---- sizes and scaling --------------------------------------------------------------------

def to_input(box: Box, original: tuple[int, int], size: tuple[int, int]) -> list[float]:
    """The box in model-input pixels: x scaled by W_in / W, y by H_in / H (preprocessing
    resizes the whole image to the input size); clipped to the input. ExplainError when the
    box lies outside the image (by more than one pixel)."""
    (h, w), (hi, wi) = original, size
    if box.x0 >= w or box.y0 >= h or box.x1 > w + 1 or box.y1 > h + 1:
        raise ExplainError(f"{box.where}: box {[box.x0, box.y0, box.x1, box.y1]} lies outside "
                           f"the {w}x{h} image '{box.image}'")
    sx, sy = wi / w, hi / h
    return [round(min(box.x0 * sx, wi), 4), round(min(box.y0 * sy, hi), 4),
            round(min(box.x1 * sx, wi), 4), round(min(box.y1 * sy, hi), 4)]


def box_mask(boxes: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """Pixels (bool, input size) whose centre lies inside any of the boxes (input pixels). A
    box that holds no pixel centre (thinner than a pixel once resized: a 12 px box of a
    4000 px photo at 224) gets the pixels it overlaps, so it is never an empty mask that
    every map misses."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    for x0, y0, x1, y1 in boxes:
        rows = (ys >= y0) & (ys < y1)
        cols = (xs >= x0) & (xs < x1)
        if not rows.any() or not cols.any():  # overlapped pixels: [floor(a), ceil(b))
            rows = (np.arange(h) + 1 > y0) & (np.arange(h) < max(y1, y0 + 1e-9))
            cols = (np.arange(w) + 1 > x0) & (np.arange(w) < max(x1, x0 + 1e-9))
        mask |= rows[:, None] & cols[None, :]
    return mask


def input_boxes(found: dict[str, list[Box]], path: Path,
                size: tuple[int, int]) -> Optional[dict[str, list[list[float]]]]:
    """class -> boxes in input pixels for one image, or None when it has no boxes."""
    if not found:
        return None
    original = original_size(path)
    return {cls: [to_input(b, original, size) for b in boxes] for cls, boxes in found.items()}


def localisation(cam: np.ndarray, mask: np.ndarray, threshold: float) -> Localisation:
    """Pointing game, energy share and thresholded IoU of one map against a box mask."""
    peak = float(cam.max())
    total = float(cam.sum(dtype=np.float64))
    hit = peak_inside(cam, mask)
    energy = float(cam[mask].sum(dtype=np.float64)) / total if total > 0 else 0.0
    hot = cam >= threshold * peak if peak > 0 else np.zeros_like(mask)
    union = int((hot | mask).sum())
    iou = int((hot & mask).sum()) / union if union else 0.0
    return Localisation(pointing_hit=hit, energy_in_box=round(energy, 6), box_iou=round(iou, 6))

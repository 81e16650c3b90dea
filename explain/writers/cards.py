"""The report's image cards: a card per image, a cell per map, with the files around each
map that are in the run folder (a file the records name and the folder lacks is left out)
and the positions of its boxes and peak over the overlay."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional

from explain.outputs import RunFolder
from explain.reportload import ReportData
from explain.results import CompareRow, ImageEntry, MapRecord
from explain.shownpaths import shown_path


def in_folder(run: RunFolder, rel: Optional[str]) -> Optional[str]:
    """``rel``, a file the records name, when it is in the folder (a plain file); else None."""
    return rel if rel and run.has_file(rel) else None


@dataclass
class Cell:
    """One map on a card: the record, the files around it, the box and peak positions."""
    record: MapRecord
    overlay: Optional[str]  # relative path, None when the file is missing
    top: Optional[str] = None
    contributions: Optional[str] = None  # every channel's term of the map (channel views)
    diff: Optional[str] = None
    compare: Optional[CompareRow] = None
    guided: Optional[str] = None  # Guided Grad-CAM picture (guided.enabled)
    boxes: list[str] = field(default_factory=list)  # CSS positions over the overlay
    boxes_left_out: int = 0  # the class's boxes beyond REPORT_BOXES (summary.json has them)
    peak: str = ""


@dataclass
class Card:
    """One image: photo, probabilities, and a row of cells per class."""
    entry: ImageEntry
    photo: Optional[str]
    classes: list[str]
    cells: dict[tuple[str, str], Cell]
    page: str = ""  # the file the card is on, for the index
    page_number: int = 1  # its number (the index's column)
    concepts: Optional[str] = None  # the concepts figure (concepts.enabled)
    task_picture: Optional[str] = None  # the predicted mask / the boxes (task: segmentation,
    #                                     detection)
    channel_views: list[tuple[str, str]] = field(default_factory=list)  # (what, file): the
    #                                     activation grid, each method's class contrast
    path: str = ""  # the photo's path as the page shows it (``shown_path``)
    mask_key: list[tuple[str, str]] = field(default_factory=list)  # (class, '#rrggbb'): the
    #                                     predicted mask's colours (task: segmentation)


REPORT_BOXES = 50  # boxes drawn over one overlay: a shared summary.json within every bound
# (300 images x 14 methods x 1,000 boxes of a class) made 364 MB of HTML drawing them all


def _box_style(box: list[float], size: list[int]) -> str:
    """CSS position of a box (input pixels) over its overlay, in percent."""
    h, w = size
    x0, y0, x1, y1 = box
    return (f"left:{100 * x0 / w:.3f}%;top:{100 * y0 / h:.3f}%;"
            f"width:{100 * (x1 - x0) / w:.3f}%;height:{100 * (y1 - y0) / h:.3f}%")


def image_cards(run: RunFolder, data: ReportData, classes: list[str]) -> list[Card]:
    """A card per image, with the files its records name that are in the folder."""
    cards = []
    for entry in data.summary.images:
        rows = {(r.image, r.class_name, r.method): r for r in data.compare_rows.get(entry.id, [])}
        present = [c for c in classes if any(r.class_name == c for r in entry.cams)]
        present += [c for c in entry.explained_classes()
                    if c not in present]  # a detection's <class>-<n>
        cells = {}
        h, w = entry.input_size
        styles = {cls: [_box_style(b, entry.input_size) for b in boxes[:REPORT_BOXES]]
                  for cls, boxes in (entry.boxes or {}).items()}  # once per class: a class's
        left_out = {cls: max(0, len(boxes) - REPORT_BOXES)  # maps share them
                    for cls, boxes in (entry.boxes or {}).items()}
        for rec in entry.cams:
            cells[(rec.class_name, rec.method)] = Cell(
                record=rec, overlay=in_folder(run, rec.file), top=in_folder(run, rec.files.top),
                contributions=in_folder(run, rec.files.contributions),
                diff=in_folder(run, rec.files.compare),
                compare=rows.get((entry.id, rec.class_name, rec.method)),
                guided=in_folder(run, rec.guided_file),
                boxes=styles.get(rec.class_name, []),
                boxes_left_out=left_out.get(rec.class_name, 0),
                peak=f"left:{100 * (rec.peak_x + 0.5) / w:.3f}%;top:{100 * (rec.peak_y + 0.5) / h:.3f}%")
        cards.append(Card(entry, in_folder(run, entry.files.photo), present, cells,
                          concepts=in_folder(run, entry.files.concepts_figure),
                          task_picture=in_folder(run, entry.files.task),
                          channel_views=channel_views(run, entry, data.summary.config),
                          path=shown_path(entry.path, data.summary.config_file),
                          mask_key=mask_colours(entry, data.summary.config)))
    return cards


def mask_colours(entry: ImageEntry, config: Any) -> list[tuple[str, str]]:
    """(class, '#rrggbb') of each class a segmentation image's mask picture tints: the
    classes with predicted pixels but class 0, left clear (explain.tasks.drawing.palette)."""
    if config.task != "segmentation" or entry.segmentation is None:
        return []
    shown = [(c, config.classes[c]) for c, share in entry.probabilities.items()
             if share and config.classes.get(c, 0) > 0]
    # the palette of the run's classes, once a report (each row is the same in any longer
    # one): a shared summary's class index 1,000,000 made 20 ms of colours a card, 40 s for
    # 2,000 images
    colours = _palette(max(config.classes.values(), default=0) + 1) if shown else None
    return [(c, "#" + "".join(f"{int(v):02x}" for v in colours[i])) for c, i in shown]


@lru_cache(maxsize=1)
def _palette(count: int) -> Any:
    """explain.tasks.drawing.palette(count), kept for the next card."""
    from explain.tasks.drawing import palette
    return palette(count)


def channel_views(run: RunFolder, entry: ImageEntry, config: Any) -> list[tuple[str, str]]:
    """The image's channel pictures in the folder: every channel of the channel layer, then
    each method's class contrast."""
    views = [(f"every channel of {config.channel_layer}", in_folder(run, entry.files.activations))]
    views += [(f"{method}: the channels that tell the classes apart", in_folder(run, rel))
              for method, rel in entry.files.contrast.items()]
    return [(what, rel) for what, rel in views if rel]

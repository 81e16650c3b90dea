"""``explain diff`` of two detection runs: a detection map's class is its box's rank among the
boxes of its label ('dog-1', the best), so two runs' maps of one name may explain other boxes
(the detector ranked them otherwise, or one run found a box the other did not). Their maps
are paired by box instead: the same label, the boxes' intersection over union (B's box scaled
to A's input size) at least BOX_IOU, the pairs of the largest overlap first, each box once;
a box without a partner is listed, never compared."""

from __future__ import annotations

from typing import Optional

from explain.results import ImageEntry

BOX_IOU = 0.5  # two runs' boxes overlap this much at least to be the same detection
Box = tuple[str, list[float]]  # label, (x0, y0, x1, y1) in model-input pixels


def boxes_overlap(p: list[float], q: list[float]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1); 0.0 when neither has an area."""
    w = min(p[2], q[2]) - max(p[0], q[0])
    h = min(p[3], q[3]) - max(p[1], q[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
    return inter / union if union > 0 else 0.0


def detected(entry: ImageEntry, scale: tuple[float, float] = (1.0, 1.0)) -> dict[str, Box]:
    """An image's explained boxes from its map records: name -> (label, box), the box scaled
    by ``scale`` (x, y). A map without its detection's numbers has no box."""
    out: dict[str, Box] = {}
    for rec in entry.cams:
        det = rec.detection
        if det is not None and len(det.box) == 4 and rec.class_name not in out:
            x0, y0, x1, y1 = det.box
            out[rec.class_name] = (det.label, [x0 * scale[0], y0 * scale[1], x1 * scale[0],
                                               y1 * scale[1]])
    return out


def paired_boxes(ea: ImageEntry, eb: ImageEntry,
                 threshold: float = BOX_IOU) -> tuple[dict[str, str], list[str], list[str]]:
    """One image in both runs: A's detection name -> B's of the same box (see the module),
    and the names of A and of B left without a partner (in their runs' order)."""
    scale = (ea.input_size[1] / eb.input_size[1], ea.input_size[0] / eb.input_size[0])
    boxes_a, boxes_b = detected(ea), detected(eb, scale)
    candidates = sorted(
        ((boxes_overlap(box_a, box_b), i, j, name_a, name_b)
         for i, (name_a, (label_a, box_a)) in enumerate(boxes_a.items())
         for j, (name_b, (label_b, box_b)) in enumerate(boxes_b.items())
         if label_a == label_b), key=lambda c: (-c[0], c[1], c[2]))
    pairs: dict[str, str] = {}
    taken: set[str] = set()
    for iou, _, _, name_a, name_b in candidates:
        if iou >= threshold and name_a not in pairs and name_b not in taken:
            pairs[name_a] = name_b
            taken.add(name_b)
    return (pairs, [n for n in ea.explained_classes() if n not in pairs],
            [n for n in eb.explained_classes() if n not in taken])


def unpaired_line(label: str, other: str, boxes: list[str]) -> Optional[str]:
    """The left-out line of the boxes of run ``label`` without a partner in run ``other``
    ('image/name', each listed), or None when there are none."""
    from explain.names import listed
    if not boxes:
        return None
    return (f"{len(boxes)} detection(s) only in {label} (no box of its label in {other} "
            f"overlaps it with IoU {BOX_IOU} or more; not compared): {listed(boxes)}")

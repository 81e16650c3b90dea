"""Labelled datasets (``images: [{labelled: PATH}]``): an ImageFolder-style tree
(``root/<class>/*.jpg``, links never followed) or a ``.csv`` / ``.json`` list of
``path, label`` rows whose paths are relative to the list's folder."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterator, Optional

from explain.config import Config, LabelledImages, read_bounded_text
from explain.csvrows import CsvRows
from explain.errors import ExplainError, first_line
from explain.names import close_file, not_found, quote, short, suggest
from explain.results import Skipped
from explain.images.found import (IMAGE_SUFFIXES, MAX_IMAGES, NOT_IMAGE, Found, Note, link_note,
                                  links_hint)


MAX_LIST_BYTES = 64 * 1024 * 1024  # a .csv / .json list of labelled images
LIST_SUFFIXES = (".csv", ".json")  # the lists of labelled images read (else: a folder)



MAX_TREE_DEPTH = 32  # folders below a class folder (1,100 nested ones were a RecursionError)

def labelled_files(cfg: Config, spec: LabelledImages, where: str,
                   notes: list[Note]) -> list[Found]:
    """The (file, True, label) of a labelled entry: an ImageFolder-style tree
    (``root/<class>/**/<image>``) or a ``.csv`` / ``.json`` list; labels must be named
    classes (or, with ``skip_unknown``, are skipped with a note)."""
    where = f"{where}.labelled"
    path = cfg.resolve(spec.labelled)
    before = len(notes)
    try:
        if path.is_dir():
            found = _image_folder(path, list(cfg.classes), spec.skip_unknown,
                                  where=where, notes=notes)
        elif path.is_file():
            found = _label_list(path, list(cfg.classes), spec.skip_unknown,
                                where=where, notes=notes)
        else:
            raise ExplainError(f"{where}: {not_found(path, close_file(path, LIST_SUFFIXES))}")
    except OSError as exc:
        raise ExplainError(f"{where}: {short(exc.filename or path)}: {exc.strerror}") from None
    if not found:
        raise ExplainError(f"{where}: no labelled image files in {short(path)}"
                           f"{links_hint(notes[before:])}")
    return found


def _image_folder(root: Path, classes: list[str], skip_unknown: bool, *, where: str,
                  notes: list[Note]) -> list[Found]:
    """``root/<class>/...``: every image file under a class folder (subfolders included),
    labelled with the folder's name. Hidden entries are ignored; files directly in ``root``
    are noted and skipped; a symbolic link anywhere below ``root`` (a class folder, a
    subfolder, a file) is never followed: it is skipped with a note."""
    found: list[Found] = []
    links: list[Path] = []
    for sub in sorted(root.iterdir()):
        if sub.name.startswith("."):
            continue
        if sub.is_symlink():
            links.append(sub)
            continue
        if not sub.is_dir():
            notes.append(Skipped(path=str(sub), reason=f"not in a class folder of {root}"))
            continue
        if sub.name not in classes:
            if skip_unknown:
                notes.append(Skipped(path=str(sub), reason="the folder names no class"))
                continue
            raise ExplainError(f"{where}: {short(sub)}: subfolder {quote(sub.name)} names no "
                               f"class{suggest(sub.name, classes)} (classes: "
                               f"{', '.join(classes)}); rename it, add the class, or set "
                               f"skip_unknown: true")
        for folder, dirs, files in os.walk(sub):  # does not descend into linked folders
            here = Path(folder)
            if len(here.relative_to(sub).parts) >= MAX_TREE_DEPTH:  # os.walk recurses
                notes += [Skipped(path=str(here / d), reason=f"nested more than "
                                  f"{MAX_TREE_DEPTH} folders deep") for d in sorted(dirs)]
                dirs[:] = []
            linked = {d for d in dirs if not d.startswith(".") and (here / d).is_symlink()}
            links += [here / d for d in linked]
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
            for file in (here / name for name in sorted(files) if not name.startswith(".")):
                if file.is_symlink() or not file.is_file():
                    links += [file] if file.is_symlink() else []
                    continue
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    notes.append(Skipped(path=str(file), reason=NOT_IMAGE))
                    continue
                if len(found) >= MAX_IMAGES:
                    raise ExplainError(f"{where}: {short(root)} holds over {MAX_IMAGES} images; "
                                       f"split the dataset into several runs")
                found.append((file, True, sub.name))
    notes += link_note(root, links, "a labelled tree")
    return found


def _label_list(path: Path, classes: list[str], skip_unknown: bool, *, where: str,
                notes: list[Note]) -> list[Found]:
    """A ``.csv`` (header ``path,label``) or ``.json`` (list of ``{path, label}``) list of
    labelled images; paths relative to the list's folder. Every row names an existing
    image file and a named class, else one line naming the file and row. A row names its file
    as the config does: it may lie outside the list's folder or be a link (followed)."""
    suffix = path.suffix.lower()
    if suffix not in LIST_SUFFIXES:
        raise ExplainError(f"{where}: {short(path)}: expected a folder of class folders, a .csv "
                           f"or a .json list")
    text = read_bounded_text(path, MAX_LIST_BYTES, "a list", encoding="utf-8-sig")
    rows = _csv_rows(path, text) if suffix == ".csv" else _json_rows(path, text)
    found: list[Found] = []
    labels: dict[tuple[int, int], tuple[str, str]] = {}
    unknown, seen = 0, set()
    for row_where, file, label in rows:
        if len(found) >= MAX_IMAGES:
            raise ExplainError(f"{short(path)}: over {MAX_IMAGES} rows; split the dataset into "
                               f"several runs")
        if not file or not label:
            raise ExplainError(f"{row_where}: needs a path and a label "
                               f"(got {quote([file, label])})")
        if label not in classes:
            if skip_unknown:
                unknown += 1
                continue
            raise ExplainError(f"{row_where}: label {quote(label)} is not a named class"
                               f"{suggest(label, classes)} (classes: {', '.join(classes)})")
        if (file, label) in seen:  # a row repeated word for word: one image, checked once (a
            continue  # list naming one file a million times took 50 s to resolve)
        seen.add((file, label))
        image = path.parent / Path(file).expanduser()
        key = _file_key(image)
        if key is None:
            raise ExplainError(f"{row_where}: image not found (or not a regular file): "
                               f"{short(image)}")
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise ExplainError(f"{row_where}: {short(image)} is not an image file "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        if key in labels:  # one file under other names ('a/../cat.jpg'): explained once, and
            if labels[key][0] != label:  # never resolved again (4 KB of 'a/../' a row: 4 ms)
                raise ExplainError(f"{row_where}: {short(image)} is labelled {quote(label)} "
                                   f"here and {quote(labels[key][0])} at {labels[key][1]}")
            continue
        labels[key] = (label, row_where)
        found.append((image, True, label))
    if unknown:
        notes.append(Skipped(path=str(path), reason=f"{unknown} row(s) naming no class"))
    return found


def _file_key(image: Path) -> Optional[tuple[int, int]]:
    """The (device, inode) of the regular file ``image`` names (links followed, as a row's
    path is used as named), or None: one stat in the kernel, whatever the path's length."""
    try:
        found = os.stat(image)
    except (OSError, ValueError):  # missing, a name too long, a NUL
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISREG(found.st_mode) else None


def _csv_rows(path: Path, text: str) -> Iterator[tuple[str, str, str]]:
    """(where, path, label) of each row of a .csv list, read one at a time (CsvRows)."""
    table = CsvRows(text, short(path), MAX_IMAGES, "split the dataset into several runs")
    if not {"path", "label"} <= set(table.header):
        raise ExplainError(f"{short(path)}: line 1: expected a header with the columns "
                           f"path, label (got {short(quote(table.header), 200)})")
    for line, row in table.rows(("path", "label")):
        yield (f"{short(path)}: line {line}", (row["path"] or "").strip(),
               (row["label"] or "").strip())


def _json_rows(path: Path, text: str) -> Iterator[tuple[str, str, str]]:
    from explain.readback import container_problem
    problem = container_problem(text)  # '[{},{},...]': 20x its size in memory once parsed
    if problem:
        raise ExplainError(f"{short(path)}: {problem}")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ExplainError(f"{short(path)}: not valid JSON ({first_line(exc, 120)})") from None
    except RecursionError:
        raise ExplainError(f"{short(path)}: the JSON is nested too deep (a list is a list of "
                           f"{{path, label}} objects)") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ExplainError(f"{short(path)}: expected a list of objects with the keys path, label")
    if len(data) > MAX_IMAGES:
        raise ExplainError(f"{short(path)}: over {MAX_IMAGES} rows; split the dataset into "
                           f"several runs")
    for i, row in enumerate(data):
        file, label = row.get("path"), row.get("label")
        if not isinstance(file, str) or not isinstance(label, str):
            raise ExplainError(f"{short(path)}: item {i}: path and label must be texts "
                               f"(got {quote([file, label])})")
        yield f"{short(path)}: item {i}", file.strip(), label.strip()

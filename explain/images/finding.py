"""Finding the images a config names: files, folders, globs and labelled datasets, each with
a unique, safe id (``ImageRef``).

Links: what the config (or a list's row) names may be a link, as the user chose it; what a
folder, a glob or a labelled tree *finds* is never a link nor reached through one (skipped
with a note), so a shared dataset holding ``cat -> /`` reads nothing outside itself.
"""

from __future__ import annotations

import collections
import glob
from pathlib import Path


from explain.config import Config, LabelledImages
from explain.errors import ExplainError
from explain.names import (close_file, fitted, fold, folder_names, not_found, quote, safe_slug,
                           short)
from explain.results import Skipped
from explain.images.found import (IMAGE_SUFFIXES, MAX_IMAGES, NOT_IMAGE, Found, Note, link_note,
                                  links_hint)
from explain.images.reading import ImageRef
from explain.images.labelled import labelled_files


MAX_DOUBLE_STARS = 2  # '**' parts of one pattern ('/usr/**' x 8 was days of CPU)


def _matches(pattern: str, where: str, links: list[Path]) -> list[Path]:
    """Files a glob matches, at most MAX_IMAGES. pathlib's '**' does not descend into linked
    folders, so a symbolic link loop cannot make it run forever; a match that is a link, or
    lies under a linked folder below the pattern's fixed start, is put in ``links``."""
    given = Path(pattern).parts
    parts = [p for i, p in enumerate(given)  # '**/**' is '**': walked once
             if not (p == "**" and i and given[i - 1] == "**")]
    if parts.count("**") > MAX_DOUBLE_STARS:  # each '**' walks the tree below the last again
        raise ExplainError(f"{where}: the pattern has {parts.count('**')} '**' parts, over "
                           f"{MAX_DOUBLE_STARS} (each walks every folder below again); use "
                           f"one, e.g. data/**/*.jpg")
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first])
    found = []
    for path in base.glob(str(Path(*parts[first:]))):
        if len(found) >= MAX_IMAGES:
            raise ExplainError(f"{where}: the pattern matches over {MAX_IMAGES} files; "
                               f"split the images into several runs")
        rel = path.relative_to(base).parts
        if any((base.joinpath(*rel[:k])).is_symlink() for k in range(1, len(rel) + 1)):
            links.append(path)
        elif path.is_file():
            found.append(path)
    return sorted(found)


def find_images(cfg: Config) -> tuple[list[ImageRef], list[Note]]:
    """Expand files, folders, globs and labelled datasets of ``images``; returns the images
    and what was left out: notes (links not followed) and Skipped records (other files)."""
    paths: list[Found] = []
    notes: list[Note] = []
    for i, entry in enumerate(cfg.images):
        where = f"images[{i}]"
        if isinstance(entry, LabelledImages):
            paths += labelled_files(cfg, entry, where, notes)
        else:
            paths += _plain_files(cfg, entry, where, notes)
    return _with_ids(paths), notes


def _plain_files(cfg: Config, entry: str, where: str, notes: list[Note]) -> list[Found]:
    """The files of one plain ``images`` entry: a file, a folder's files or a glob's matches
    (links found in a folder or by a glob are skipped with a note)."""
    links: list[Path] = []
    before = len(notes)
    try:
        path = cfg.resolve(entry)
        if glob.has_magic(entry):
            candidates = [(p, True) for p in _matches(str(path), where, links)]
            notes += link_note(path, links, "a glob")
            if not candidates:
                raise ExplainError(f"{where}: the pattern {quote(entry)} matches no file"
                                   f"{links_hint(notes[before:]) or _suffix_hint(path)}")
        elif path.is_dir():
            listed = sorted(path.iterdir())
            links = [p for p in listed if p.is_symlink()]
            candidates = [(p, True) for p in listed if not p.is_symlink() and p.is_file()]
            notes += link_note(path, links, "a folder")
        elif path.is_file():
            candidates = [(path, False)]
        else:
            raise ExplainError(f"{where}: image " + not_found(
                path, relative_hint(entry) or close_hint(path)))
    except OSError as exc:  # a name too long, a folder we may not read
        raise ExplainError(f"{where}: {quote(entry)}: {exc.strerror}") from None
    images = [(p, f, None) for p, f in candidates if not f or p.suffix.lower() in IMAGE_SUFFIXES]
    notes += [Skipped(path=str(p), reason=NOT_IMAGE) for p, f in candidates
              if f and p.suffix.lower() not in IMAGE_SUFFIXES]
    if not images:
        raise ExplainError(f"{where}: no image files in {quote(entry)}"
                           f"{links_hint(notes[before:]) or _subfolder_hint(path, entry)}")
    return images


def _subfolder_hint(path: Path, entry: str) -> str:
    """For a folder whose images are in subfolders (a class per folder, say): a folder entry
    reads only the files in it; what to write instead."""
    try:
        if not path.is_dir() or glob.has_magic(entry):
            return ""
        folders = [p for p in sorted(path.iterdir())[:1000]
                   if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
    except OSError:
        return ""
    if not folders:
        return ""
    base = entry.rstrip("/")[:120]
    return (f" (a folder entry reads the files in it, not its subfolders "
            f"{', '.join(quote(p.name) for p in folders[:3])}{', ...' if len(folders) > 3 else ''}"
            f"; for a folder per class write {{labelled: {base}}}, or list "
            f"'{base}/*/*')")


def _with_ids(paths: list[Found]) -> list[ImageRef]:
    """One ImageRef per file (a file listed twice is explained once, with its label), each
    with a unique, safe id made from its name."""
    seen: dict[Path, list] = {}
    for p, from_folder, label in paths:
        known = seen.setdefault(p.resolve(), [p, from_folder, label])
        if label is not None and known[2] is None:
            known[2] = label
        elif label is not None and known[2] != label:
            raise ExplainError(f"images: {short(p)} is listed with the labels {quote(known[2])} "
                               f"and {quote(label)}; give it one")
    refs, used = [], set()
    next_n: dict[str, int] = {}  # base -> the next number to try: linear in the repeats
    for key, (p, from_folder, label) in seen.items():
        base = safe_slug(p.stem, "image")
        ident, n = base, next_n.get(fold(base), 2)
        if fold(ident) in used:  # a repeated name: its folder's name first (dog/img.jpg:
            ident = safe_slug(f"{p.parent.name}_{p.stem}", base)  # 'dog_img'), then numbers
        while fold(ident) in used:  # as a disk ignoring case and normalisation sees them
            ident, n = fitted(base, f"-{n}"), n + 1
        next_n[fold(base)] = n
        used.add(fold(ident))
        refs.append(ImageRef(ident, key, from_folder, label))
    return refs


def relative_hint(entry: str, folder: bool = False) -> str:
    """A relative entry that names a file (a ``folder``) from the working directory instead:
    say that relative paths are read from the config's folder (``--set`` ones too)."""
    relative = Path(entry)
    if relative.is_absolute() or not (relative.is_dir() if folder else relative.is_file()):
        return ""
    return (f" (relative paths are read from the config's folder; {quote(entry)} exists "
            f"from the working directory: give it as {quote(str(relative.resolve()))})")


def close_hint(path: Path) -> str:
    """' — did you mean <path>?' for a picture in the same folder close to a missing one
    (``names.close_file``)."""
    return close_file(path, IMAGE_SUFFIXES)


def _suffix_hint(pattern: Path) -> str:
    """For a glob over one folder that matches nothing: which kinds of file the folder has."""
    if glob.has_magic(str(pattern.parent)):
        return ""
    kinds = collections.Counter(Path(n).suffix.lower() or "(no suffix)"
                                for n in folder_names(pattern.parent))
    if not kinds:
        return ""
    shown = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common(4))
    return f" ({short(pattern.parent)} holds {shown}{', ...' if len(kinds) > 4 else ''})"

"""What finding images produces and shares: the image suffixes, the bound on a source's
files, a found file (``Found``), a note or a skipped file (``Note``), and the note for
links that were not followed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from explain.names import short
from explain.results import Skipped


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
NOT_IMAGE = "not an image file"
MAX_IMAGES = 1_000_000  # files one images entry may expand to (a link loop stops here)
LINKS_SKIPPED = "symbolic link(s) in"
Found = tuple[Path, bool, Optional[str]]  # a file, whether from a folder/glob/list, its label
Note = Union[str, Skipped]  # what finding images says: a note, or a file it left out


def link_note(root: Path, links: list[Path], inside: str) -> list[str]:
    """The note for symbolic links found (and not followed) under ``root``."""
    return [f"skipped {len(links)} {LINKS_SKIPPED} {short(root)} (e.g. {short(min(links))}): "
            f"links found in {inside} are not followed; name a linked file or folder in the "
            f"config to use it"] if links else []


def links_hint(notes: list[Note]) -> str:
    """' (...)' when these notes skipped links: why a folder held no usable file."""
    hint = any(isinstance(note, str) and LINKS_SKIPPED in note for note in notes)
    return " (symbolic links there are not followed)" if hint else ""


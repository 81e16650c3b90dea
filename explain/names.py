"""Names that come from users and end up in file names: one safe pattern, checks and hints.

A *safe name* (run name, class name; image ids are made safe from file names) is 1 to 64
characters: letters, digits, '_', '.' and '-', starting with a letter or digit, with no '__'
(two underscores separate the image id from the class name in output file names, so a name
without them keeps every output file name unambiguous). Unicode letters are allowed ('猫').
Nothing else: no '/', no '..' on its own, no NUL, no spaces, no '$' (matplotlib's maths marker).
"""

from __future__ import annotations

import difflib
import re

MAX_NAME = 64
_SAFE = re.compile(r"[^\W_][\w.-]*")
_UNSAFE_CHARS = re.compile(r"[^\w.-]+")
QUOTE_LIMIT = 80


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty text"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long; at most {MAX_NAME}"
    if not _SAFE.fullmatch(name):
        return ("may hold only letters, digits, '_', '.' and '-', and must start with a letter "
                "or digit")
    if "__" in name:
        return "must not contain '__' (it separates image and class in output file names)"
    return None


def safe_slug(text: str, fallback: str = "item") -> str:
    """A safe name made from any text (a file stem): other characters become '_'."""
    slug = _UNSAFE_CHARS.sub("_", text)
    slug = re.sub(r"_{2,}", "_", slug).strip("._-")[:MAX_NAME].rstrip("._-")
    return slug if slug and name_problem(slug) is None else fallback


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr(value), cut to ``limit`` characters, so no message quotes a whole input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(text: object, limit: int = 160) -> str:
    """A path or text for a message: whole when short, else its start and end around '...'."""
    text = str(text)
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return text[:half] + "..." + text[-half:]


def suggest(name: str, choices: list[str]) -> str:
    """' — did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else ""

"""Names that come from users and end up in file names: one safe pattern, checks and hints.

A *safe name* (run name, class name; image ids are made safe from file names) is 1 to 64
characters and at most 96 bytes in UTF-8 (an output file name holds an image id and a class
name, and a file system allows 255 bytes): letters, digits, '_', '.' and '-', starting with
a letter or digit, with no '__' (two underscores separate the image id from the class name
in output file names, so a name without them keeps every output file name unambiguous).
Unicode letters are allowed ('猫').
Nothing else: no '/', no '..' on its own, no NUL, no spaces, no '$' (matplotlib's maths marker).

Text that reaches a terminal (messages, log lines, layer names) passes ``printable``: names from
files and models may hold escape codes, line breaks or bidi overrides that would redraw the
screen or forge a line, so those are shown escaped and the length is capped. Text that reaches
a spreadsheet (every CSV cell a run writes) passes ``inert_cell``: no cell starts a formula.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable

MAX_NAME = 64
MAX_NAME_BYTES = 96
_SAFE = re.compile(r"[^\W_][\w.-]*")
_UNSAFE_CHARS = re.compile(r"[^\w.-]+")
QUOTE_LIMIT = 80
LINE_LIMIT = 1000  # a whole message or log line on the terminal
NAME_LIMIT = 120  # one name (a layer) in a table
# C0 and C1 controls, DEL, line/paragraph separators, bidi marks, overrides and isolates, and
# lone surrogates (undecodable bytes of a file name; they cannot even be written to stdout).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


# Names Windows keeps for devices, with any extension ('nul.png' writes nowhere)
_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3])"
                      r"(\..*)?", re.IGNORECASE)


def fold(name: str) -> str:
    """The key under which two names are one file on a disk that ignores case and Unicode
    normalisation (macOS, Windows): NFC, then case-folded ('Cat' and 'cat'; the long s of
    'ſun' and 'sun'; U+F900 and U+8C48, one character twice in Unicode)."""
    return unicodedata.normalize("NFC", name).casefold()


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty text"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long; at most {MAX_NAME}"
    if utf8_bytes(name) > MAX_NAME_BYTES:
        return f"is {utf8_bytes(name)} bytes long in UTF-8; at most {MAX_NAME_BYTES}"
    if not _SAFE.fullmatch(name):
        return ("may hold only letters, digits, '_', '.' and '-', and must start with a letter "
                "or digit")
    if "__" in name:
        return "must not contain '__' (it separates image and class in output file names)"
    if _DEVICES.fullmatch(name):
        return "is a name Windows keeps for a device"
    return None


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def encoded(text: str) -> bytes:
    """``text`` as UTF-8 for a file the run writes (a page, a CSV): a lone surrogate (a file
    name that is not UTF-8, as a Windows zip unpacked leaves them: 'caf\\udce9.jpg') is
    written escaped, ``\\udce9``, where strict encoding stopped the run at its last step."""
    return text.encode("utf-8", "backslashreplace")


def fitted(base: str, suffix: str = "") -> str:
    """``base`` cut so that ``base + suffix`` keeps to MAX_NAME characters and MAX_NAME_BYTES
    bytes (a repeated name's '-2', '_3')."""
    cut = base[: MAX_NAME - len(suffix)]
    while cut and utf8_bytes(cut + suffix) > MAX_NAME_BYTES:
        cut = cut[:-1]
    return cut.rstrip("._-") + suffix


def safe_slug(text: str, fallback: str = "item") -> str:
    """A safe name made from any text (a file stem): other characters become '_'."""
    slug = _UNSAFE_CHARS.sub("_", text)
    slug = fitted(re.sub(r"_{2,}", "_", slug).strip("._-"))
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


LISTED = 5  # names a note or a message lists before "(+N more)"


_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def without_bidi(value: object) -> object:
    """A text with its bidirectional controls shown escaped ('\\u202e'); anything else as it
    is. A page escapes HTML, not these: a shared file name holding U+202E turned the rest of
    its line around on report.html ('gpj.exe' for 'exe.jpg')."""
    if not isinstance(value, str) or not _BIDI.search(value):
        return value
    return _BIDI.sub(lambda found: f"\\u{ord(found.group()):04x}", value)


def a_type(value: object) -> str:
    """'a Tensor', 'an OrderedDict': a value's type name with its article, as messages say
    what a file or a model gave."""
    name = type(value).__name__
    return f"{'an' if _vowel_sound(name) else 'a'} {name}"


def _vowel_sound(word: str) -> bool:
    """Whether ``word`` is said starting with a vowel: by its letters' names when it starts
    as an acronym does ('an NDArray', 'a UNet'), else by its first letters ('an OrderedDict',
    'a UserDict', 'a Unicode...', 'an Ugly...', 'a OneCycle...')."""
    if len(word) > 1 and word[:2].isupper() and word[:2].isalpha():
        return word[0] in "AEFHILMNORSX"
    low = word.lower()
    if low.startswith(("eu", "one", "uni", "use", "usu", "uti", "ura", "uro")):
        return False
    return low[:1] in ("a", "e", "i", "o", "u")


def listed(names: list[str], limit: int = LISTED) -> str:
    """The first ``limit`` names, comma-separated, then how many more: 'a, b (+3 more)'."""
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


MAX_RATIOS = 32  # full comparisons a hint makes at most (each up to ~6 ms for long names)


def close_match(word: str, choices: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """``difflib.get_close_matches(word, choices, n=1, cutoff)`` in bounded time: the
    choices whose quick upper bounds pass ``cutoff`` are compared in full best bound first,
    until no bound can beat the best found, at most MAX_RATIOS of them. A shared dataset of
    300 names of 245 'a's took 6 s to hint 5 box keys of 196 (2 to 6 ms a comparison)."""
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)
    bounds = []
    for order, choice in enumerate(choices):
        matcher.set_seq1(choice)
        if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
            bounds.append((-matcher.quick_ratio(), order, choice))
    best: tuple[float, str] | None = None
    for bound, _, choice in sorted(bounds)[:MAX_RATIOS]:
        if best is not None and -bound < best[0]:
            break
        matcher.set_seq1(choice)
        score = matcher.ratio()
        if score >= cutoff and (best is None or score > best[0] or
                                (score == best[0] and choice > best[1])):
            best = (score, choice)
    return [best[1]] if best else []


_LOOKALIKES = str.maketrans("OoIl", "0011")  # letters typed for digits: 'features.1O'


def suggest(name: str, choices: list[str]) -> str:
    """' — did you mean 'x'?' for the closest choice, or '' when nothing is close. A choice
    the name equals once letters that look like digits are read as digits comes first
    ('features.1O' is 'features.10', not the shorter 'features.1' difflib finds closer)."""
    same = [c for c in choices if c.translate(_LOOKALIKES) == name.translate(_LOOKALIKES)]
    close = same[:1] or close_match(name, choices, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else ""


NAMES_LOOKED_AT = 2000  # a hint reads at most this many names of a folder


def folder_names(folder: Path) -> list[str]:
    """Up to NAMES_LOOKED_AT names in ``folder`` (not hidden ones); [] when it cannot be read."""
    try:
        with os.scandir(folder) as found:
            return [e.name for e in itertools.islice(found, NAMES_LOOKED_AT)
                    if not e.name.startswith(".")]
    except OSError:
        return []


def close_file(path: Path, suffixes: Iterable[str], folders: bool = True) -> str:
    """' — did you mean <path>?' for a name in the same folder close to the missing one, by
    the names without their suffixes (a shared '.jpg' made 'zebra.jpg' close to 'cat.jpg';
    'cat.png' for 'cat.jpg' is offered); only names with one of ``suffixes``, and ``folders``
    (names without a suffix) when asked."""
    names = {}
    for name in sorted(folder_names(path.parent)):  # those kinds and folders, in a fixed order
        if Path(name).suffix.lower() in suffixes or (folders and not Path(name).suffix):
            names.setdefault(Path(name).stem, name)
    close = close_match(path.stem, list(names), cutoff=0.6)
    return f" — did you mean {short(path.parent / names[close[0]])}?" if close else ""


def _escape(char: str) -> str:
    """One character as the terminal gets it: itself, or an escape such as \\x1b or \\u202e."""
    if not _UNPRINTABLE.match(char):
        return char
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _take(chars, budget: int) -> tuple[list[str], int]:
    """Escaped pieces of ``chars`` while they fit in ``budget`` characters; how many were taken."""
    pieces, used = [], 0
    for char in chars:
        piece = _escape(char)
        if used + len(piece) > budget:
            break
        pieces.append(piece)
        used += len(piece)
    return pieces, len(pieces)


def printable(text: object, limit: int = LINE_LIMIT) -> str:
    """``text`` safe for a terminal: control characters (ESC, CR, LF, TAB, C1), bidi overrides
    and isolates and lone surrogates shown escaped (``\\x1b``, ``\\n``, ``\\u202e``), so it stays
    one line that draws nothing; longer than ``limit`` characters (after escaping), its middle
    is replaced by a marker that says how many characters were left out."""
    text = str(text)
    if len(text) <= limit and not _UNPRINTABLE.search(text):
        return text
    if len(text) <= limit:
        whole = _UNPRINTABLE.sub(lambda m: _escape(m.group()), text)
        if len(whole) <= limit:
            return whole
    marker = "[...{} characters cut...]"
    room = max(limit - len(marker.format(len(text))), 16)  # for the text beside the marker
    head, taken = _take(text[:room], room - room // 3)
    tail, kept = _take(reversed(text[-(room // 3):]), room // 3)
    cut = len(text) - taken - kept
    return "".join(head) + marker.format(cut) + "".join(reversed(tail))


_FORMULA_STARTS = ("=", "+", "-", "@", "\t")


def inert_cell(value: object) -> object:
    """A text that a spreadsheet would read as a formula ('=HYPERLINK(...)', '@SUM(...)',
    '-1+cmd|...') with a "'" before it, as spreadsheets themselves mark text; numbers and
    texts that are numbers ('-0.5') as they are; a carriage return as '\\r' (the csv module
    leaves a cell holding one unquoted, and readers end the row there). A layer name from a
    model file reaches sanity.csv, a shared record's text summary.csv. Each part between ';'
    is checked too: a spreadsheet whose list separator is ';' (most of Europe's) opens a
    comma-separated file by cutting its unquoted cells there ('x;=1+cmd|...')."""
    if not isinstance(value, str):
        return value
    value = value.replace("\r", "\\r")
    return ";".join(map(_inert_part, value.split(";"))) if ";" in value else _inert_part(value)


def _inert_part(value: str) -> str:
    if not value.startswith(_FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def inert_rows(rows: Iterable[dict]) -> tuple[list, list[dict]]:
    """(columns, rows) of a table with every text cell and column name ``inert_cell`` (a name
    made inert that meets another column's gets '_'s: "-x" and "'-x" stay two columns); a
    row of numbers is kept as it is (no pass over its cells: a channel CSV's 320 rows)."""
    rows = list(rows)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    renamed: dict = {}
    for key in keys:
        name = inert_cell(key)
        while name != key and (name in keys or name in renamed.values()):
            name = f"{name}_"
        if name != key:
            renamed[key] = name
    rows = [{renamed.get(k, k): inert_cell(v) for k, v in row.items()}
            if renamed or any(isinstance(v, str) for v in row.values()) else row
            for row in rows]
    return [renamed.get(k, k) for k in keys], rows


MAX_SEPARATOR = 8


def check_photo_separator(text: str) -> str:
    """``report.photo_separator`` checked: 1 to 8 characters an image id can hold (letters,
    digits, '_', '.', '-'), and no '__' (ids never hold it: runs of '_' become one)."""
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_SEPARATOR \
            or _UNSAFE_CHARS.search(text):
        raise ValueError(f"{quote(text)}: 1 to {MAX_SEPARATOR} of the characters an image id "
                         f"holds (letters, digits, '_', '.', '-'), e.g. '-' for cat01-flip.jpg")
    if "__" in text:
        raise ValueError(f"{quote(text)}: image ids never hold '__' (a file name's '__' "
                         f"becomes '_'): use '-' and name the files cat01-flip.jpg")
    return text


def photo_of(image_id: str, separator: str | None, path: str | None = None) -> str:
    """The photo an image is a variant of: its id up to the first ``separator`` (flips and
    crops named cat01-flip, cat01-crop2 are photo 'cat01', as is cat01 itself); without a
    separator, or when the id starts with it, the id itself. With the image's ``path``, a
    separator only explain's id holds, not the file's name, is no variant's: the ids explain
    makes for repeated names ('dog_0', '0-2' for train/dog/0.jpg, val/dog/0.jpg) made other
    photos' variants of photo 'dog' or '0'."""
    if not separator:
        return image_id
    if path is not None and separator not in safe_slug(Path(path).stem, ""):
        return image_id
    head = image_id.split(separator, 1)[0]
    return head or image_id


def not_found(path: Path, hint: str) -> str:
    """'not found: PATH' + ``hint`` (a close name), or, for a path that is there but neither a
    regular file nor a folder (a named pipe, a socket, a device), what it is: the close name
    offered was the path itself."""
    import stat
    try:
        mode = path.stat().st_mode
    except OSError:
        return f"not found: {short(path)}{hint}"
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{short(path)} is {kind}, not a file or folder explain reads"

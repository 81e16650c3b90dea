"""The rows of a shared CSV file a config names (a labelled list, a box file), read line by
line and bounded: at most ``max_rows`` lines below the header, blank ones included, each at
most MAX_LINE_CHARS characters, and each row's named columns taken by their place in the
header. csv.DictReader filled every row out to the header's width (a 5 MB header of commas
took 0.14 s a row, a 60 MB one days for a list), and a list was read whole into its rows
before the first was checked (64 MB of ``a,b`` rows took 2.9 GB and 42 s)."""

from __future__ import annotations

import csv
import io
from typing import Iterator, Optional

from explain.errors import ExplainError

MAX_LINE_CHARS = 1 << 20  # a row names a path (at most 4,096 bytes), a label and a few columns


class CsvRows:
    """A CSV text's header (``header``: names stripped of spaces) and, through ``rows``, its
    non-blank rows. Every problem is an ExplainError ``'{where}: line N: ...'``;
    ``too_many`` says what to do when the file holds over ``max_rows`` rows."""

    def __init__(self, text: str, where: str, max_rows: int, too_many: str):
        self.where, self.max_rows, self.too_many = where, max_rows, too_many
        self.lines = 0
        self.reader = csv.reader(self._lines(text))
        first = self._next()
        self.header = [name.strip() for name in first or []]

    def _lines(self, text: str) -> Iterator[str]:
        for line in io.StringIO(text, newline=None):  # '\r' ends a line too (Excel for Mac)
            self.lines += 1
            if len(line) > MAX_LINE_CHARS:
                raise ExplainError(f"{self.where}: line {self.lines}: over {MAX_LINE_CHARS} "
                                   f"characters; a row is a path, a label and a few columns")
            if self.lines > self.max_rows + 1:
                raise ExplainError(f"{self.where}: over {self.max_rows} rows; {self.too_many}")
            yield line

    def _next(self) -> Optional[list[str]]:
        start = self.reader.line_num + 1  # a quoted field may go on over several lines
        try:  # csv.Error: a field over csv's limit (128 KiB), a NUL, a bad quote
            return next(self.reader, None)
        except csv.Error as exc:
            end = max(self.lines, 1)
            where = f"line {end}" if end <= start else f"lines {start}-{end}"
            raise ExplainError(f"{self.where}: {where}: {exc}") from None

    def rows(self, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Optional[str]]]]:
        """(first line, column -> value) of each non-blank row, one at a time: the named
        columns only (a name the header repeats: its last column, as csv.DictReader), None
        where the row is shorter."""
        place = {name: i for i, name in enumerate(self.header)}
        while True:
            start = self.reader.line_num + 1  # where the row starts; line_num: where it ends
            if (row := self._next()) is None:
                return
            if not any(value.strip() for value in row):
                continue  # a blank line
            yield start, {name: row[place[name]] if place.get(name, len(row)) < len(row)
                          else None for name in columns}

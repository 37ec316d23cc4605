"""CSV output: RFC 4180 (CRLF line ends, quotes doubled, one header row), UTF-8, streamed.

Spreadsheets execute a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return
as a formula ("CSV injection"); MO texts and keywords come from anyone with a phone, so such a
cell gets a leading apostrophe, which spreadsheets show as text and never run. A cell that is a
plain number — an E.164 phone number `+447700900123`, a negative count — cannot call anything
and stays as it is, so numbers stay readable and sortable.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import IO, Any, Final

_TRIGGERS: Final = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def neutralise(value: str) -> str:
    """The cell as a spreadsheet may safely read it (see the module docstring)."""
    if value.startswith(_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def cell(value: Any) -> str:
    """One value as CSV text: None is empty, times ISO 8601, floats without noise."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    return neutralise(str(value))


class CsvWriter:
    """Rows into an open text file (opened with `newline=""`, UTF-8)."""

    def __init__(self, fh: IO[str], header: Sequence[str]) -> None:
        self._w = csv.writer(fh, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        self._w.writerow([cell(h) for h in header])
        self.rows = 0

    def write(self, row: Iterable[Any]) -> None:
        """Write one row."""
        self._w.writerow([cell(v) for v in row])
        self.rows += 1

    def write_many(self, rows: Iterable[Iterable[Any]]) -> None:
        """Write several rows."""
        for row in rows:
            self.write(row)

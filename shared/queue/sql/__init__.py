"""The queue's named SQL, one file per owner (procrastinate's `sql/__init__.py` shape).

`queue.sql` holds the queue core's statements (`shared.queue.store`); `<table>.sql` holds the
statements of the module that owns that queue table (`shared.queue.outbound`, `.inbound`,
`.receipts`, `.callbacks`, `.mo_parts`). Each block starts with `-- name: <statement>` followed
by a description line (`-- ...`); the comments inside a statement stay part of it. The core's
statements that serve several queue tables are templates with `{t}` (the table) and a few
other `{placeholders}` for SQL fragments; `shared.queue.store` fills them only with
whitelisted identifiers and constant fragments it owns — never with caller data, which always
travels as `$n` parameters. The owners' files hold no placeholders.
"""

from __future__ import annotations

import importlib.resources
import re
from typing import LiteralString

_BLOCK_RE = re.compile(r"^-- name: (?P<name>[a-z_]+)\n(?P<body>.*?)(?=^-- name: |\Z)",
                       re.MULTILINE | re.DOTALL)


def load(owner: str) -> dict[str, LiteralString]:
    """Statement name → SQL text of `<owner>.sql` (templates still hold their `{placeholders}`)."""
    text = importlib.resources.files(__name__).joinpath(f"{owner}.sql").read_text("utf-8")
    queries: dict[str, LiteralString] = {}
    for m in _BLOCK_RE.finditer(text):
        body = m.group("body").strip()
        if not body.startswith("--"):
            raise ValueError(f"{owner}.sql: {m.group('name')!r} has no description line")
        if m.group("name") in queries:
            raise ValueError(f"{owner}.sql: {m.group('name')!r} is named twice")
        queries[m.group("name")] = body  # type: ignore[assignment]
    return queries


QUERIES: dict[str, LiteralString] = load("queue")
"""The queue core's statement name → SQL text (templates still hold their `{placeholders}`)."""

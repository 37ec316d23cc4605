"""The queue's named SQL, loaded once from `queue.sql` (procrastinate's `sql/__init__.py` shape).

Each block starts with `-- name: <query>` followed by a description line (`-- ...`). Queries
that serve several queue tables are templates with `{t}` (the table) and a few other
`{placeholders}` for SQL fragments; `shared.queue.store` fills them only with whitelisted
identifiers and constant fragments it owns — never with caller data, which always travels as
`$n` parameters.
"""

from __future__ import annotations

import importlib.resources
import re
from typing import LiteralString

_BLOCK_RE = re.compile(r"^-- name: (?P<name>[a-z_]+)\n(?P<body>.*?)(?=^-- name: |\Z)",
                       re.MULTILINE | re.DOTALL)


def _load() -> dict[str, LiteralString]:
    text = importlib.resources.files(__name__).joinpath("queue.sql").read_text("utf-8")
    queries: dict[str, LiteralString] = {}
    for m in _BLOCK_RE.finditer(text):
        body = m.group("body").strip()
        if not body.startswith("--"):
            raise ValueError(f"query {m.group('name')!r} has no description line")
        queries[m.group("name")] = body  # type: ignore[assignment]
    return queries


QUERIES: dict[str, LiteralString] = _load()
"""Query name → SQL text (templates still hold their `{placeholders}`)."""

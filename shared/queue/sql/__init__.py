"""The queue's named SQL, one file per owner (procrastinate's `sql/__init__.py` shape).

`queue.sql` holds the queue core's statements (`shared.queue.store`); `<table>.sql` holds the
statements of the module that owns that queue table (`shared.queue.outbound`, `.inbound`,
`.receipts`, `.callbacks`, `.mo_parts`). Each block starts with `-- name: <statement>` followed
by a description line (`-- ...`); the comments inside a statement stay part of it.

`dedupe.sql`, `lanes.sql` and `receipt_parts.sql` hold fragments, not statements:
`{take_over_expired}` in any file is replaced at load time by the one dedupe rule (the ON
CONFLICT clause of every key claim), `{queued_lanes}` by the loose index scan of outbound's
(category, account) lanes, `{receipt_part_update}` by the one rule by which a receipt changes
its part. The core's statements that serve several queue tables are also templates with `{t}`
(the table) and a few other `{placeholders}` for SQL fragments; `shared.queue.store` fills them
only with whitelisted identifiers and constant fragments it owns — never with caller data,
which always travels as `$n` parameters.
"""

from __future__ import annotations

import importlib.resources
import re
from typing import LiteralString

_BLOCK_RE = re.compile(r"^-- name: (?P<name>[a-z_]+)\n(?P<body>.*?)(?=^-- name: |\Z)",
                       re.MULTILINE | re.DOTALL)


def _blocks(owner: str) -> dict[str, LiteralString]:
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


def _fragment(sql: str) -> str:
    # a fragment is inserted without its description comment
    return "\n".join(line for line in sql.splitlines() if not line.startswith("--"))


FRAGMENTS: dict[str, str] = {k: _fragment(v) for owner in ("dedupe", "lanes", "receipt_parts")
                             for k, v in _blocks(owner).items()}
"""Fragment name → SQL text (`{take_over_expired}`: the dedupe rule; `{queued_lanes}`)."""


def load(owner: str) -> dict[str, LiteralString]:
    """Statement name → SQL text of `<owner>.sql`, fragments filled in (the core's templates
    still hold their other `{placeholders}`)."""
    out: dict[str, LiteralString] = {}
    for name, sql in _blocks(owner).items():
        for frag, text in FRAGMENTS.items():
            sql = sql.replace("{" + frag + "}", text)  # type: ignore[assignment]
        out[name] = sql
    return out


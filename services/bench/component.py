"""What the component benchmarks (`smsgw bench queue|processor|…`) share: where they run.

`run_on_database` migrates and runs a benchmark against `--database-url`, or against a
throwaway embedded cluster whose postmaster pid it passes on, so the benchmark can count the
Postgres CPU of the run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from smsgw.services.bench.procstats import postmaster_pid
from smsgw.shared.core import db
from smsgw.shared.core.aio import loop_runner
from smsgw.shared.core.embedded_pg import EmbeddedPostgres

Bench = Callable[[str, int | None], Coroutine[Any, Any, Any]]


def run_on_database(database_url: str | None, bench: Bench, *, fsync: bool = True,
                    extra_conf: dict[str, str] | None = None) -> int:
    """Run `bench(dsn, postmaster pid or None)` on a migrated database; return 0."""
    runner = loop_runner()
    if database_url:
        runner(db.migrate(database_url))
        runner(bench(database_url, None))
        return 0
    with tempfile.TemporaryDirectory(prefix="smsgw-bench-pg-") as tmp:
        cluster = EmbeddedPostgres(Path(tmp) / "data", fsync=fsync,
                                   extra_conf=extra_conf or {})
        cluster.start()
        try:
            dsn = cluster.url_with_password()  # a throwaway cluster
            runner(db.migrate(dsn))
            runner(bench(dsn, postmaster_pid(cluster.datadir)))
        finally:
            cluster.stop(mode="fast")
    return 0

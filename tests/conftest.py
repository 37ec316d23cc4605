"""Test harness: a real Postgres for the whole run, a migrated template, a fresh database per test.

Unless SMSGW_TEST_DATABASE_URL points at a server (any database on it; we create our own), the
run starts a throwaway cluster with initdb/pg_ctl in a temp dir on a free port (fsync off: tests
measure behaviour, not durability). The template database is built by running the migrations,
so every run exercises them; each test gets `CREATE DATABASE … TEMPLATE` (procrastinate's
pattern) and its own function-scoped pool.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from smsgw.shared.core import db
from smsgw.shared.core.embedded_pg import EmbeddedPostgres


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[dict[str, object]]:
    """The server for this run: {'url': admin url, 'cluster': EmbeddedPostgres | None}."""
    external = os.environ.get("SMSGW_TEST_DATABASE_URL")
    if external:
        yield {"url": external, "cluster": None}
        return
    tmp = Path(tempfile.mkdtemp(prefix="smsgw-test-pg-"))
    cluster = EmbeddedPostgres(tmp / "data", fsync=False)
    cluster.start()
    try:
        # The cluster requires its generated password; test code takes one URL, so it rides in
        # the URL here (a throwaway cluster; the daemons log URLs redacted).
        yield {"url": cluster.url_with_password(), "cluster": cluster}
    finally:
        cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
def pg_template(pg_server: dict[str, object]) -> Iterator[str]:
    """Name of a migrated template database, unique to this run (runs may share a server)."""
    admin = str(pg_server["url"])
    name = f"smsgw_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def build() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await db.migrate(_with_db(admin, name))

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(build())
    yield name
    asyncio.run(drop())


def _fresh_database(pg_server: dict[str, object], pg_template: str) -> Iterator[str]:
    admin = str(pg_server["url"])
    name = f"smsgw_t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield _with_db(admin, name)
    asyncio.run(drop())


@pytest.fixture
def db_url(pg_server: dict[str, object], pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test alone (dropped afterwards)."""
    yield from _fresh_database(pg_server, pg_template)


@pytest.fixture(scope="module")
def module_db_url(pg_server: dict[str, object], pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated database shared by one module's tests (for a module that runs
    one stack for all its tests, each test keeping to its own messages)."""
    yield from _fresh_database(pg_server, pg_template)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool (project codecs) on this test's database."""
    p = await db.create_pool(db_url, min_size=1, max_size=20)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def pg_cluster(pg_server: dict[str, object]) -> EmbeddedPostgres:
    """The embedded cluster, for tests that restart or stop Postgres (skipped on an external
    one)."""
    cluster = pg_server["cluster"]
    if cluster is None:
        pytest.skip("needs the embedded test cluster (SMSGW_TEST_DATABASE_URL is set)")
    assert isinstance(cluster, EmbeddedPostgres)
    return cluster


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Make a unique name with a prefix."""
    return lambda prefix: f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 / localhost (openssl; skips without it):
    the TLS tests of the SMPP client, the ESME listener and the callback HTTP client."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key

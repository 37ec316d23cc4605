"""Multi-host database URLs reach only a primary (issue 18): `db.primary_url` and the config.

The behaviour against real servers (a standby skipped, the promoted one found) is proven in
tests/reliability/test_failover.py; here the URL rules and their errors.
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from smsgw.shared.core import db
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime.admin_config import AdminConfig
from smsgw.shared.runtime.config import load_shared


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://smsgw@db1:5432,db2:5432/smsgw",
     "postgresql://smsgw@db1:5432,db2:5432/smsgw?target_session_attrs=read-write"),
    ("postgresql://smsgw@db1,db2/smsgw?sslmode=require",
     "postgresql://smsgw@db1,db2/smsgw?sslmode=require&target_session_attrs=read-write"),
    ("postgresql:///smsgw?host=/run/postgresql",
     "postgresql:///smsgw?host=/run/postgresql&target_session_attrs=read-write"),
    ("postgresql://db1,db2/smsgw?target_session_attrs=primary",
     "postgresql://db1,db2/smsgw?target_session_attrs=primary"),
    ("postgresql://db1/smsgw?target_session_attrs=read-write",
     "postgresql://db1/smsgw?target_session_attrs=read-write"),
])
def test_primary_url_adds_read_write_unless_named(url: str, expected: str) -> None:
    assert db.primary_url(url) == expected


@pytest.mark.parametrize("attrs", ["any", "standby", "prefer-standby", "read-only"])
def test_a_url_that_may_reach_a_standby_is_a_config_error(attrs: str, tmp_path: Path) -> None:
    """In [database] url (any daemon, check-config) and in --database-url (admin commands)."""
    url = f"postgresql://smsgw@db1,db2/smsgw?target_session_attrs={attrs}"
    with pytest.raises(ConfigError) as exc:
        load_shared(None, {"SMSGW_DATABASE_URL": url})
    assert f"target_session_attrs={attrs}: smsgw writes" in str(exc.value.errors)
    args = argparse.Namespace(config=None, database_url=url, data_dir=str(tmp_path))
    with pytest.raises(ConfigError) as exc2:
        AdminConfig.load(args, {}).database()
    assert exc2.value.errors[0].startswith("--database-url: target_session_attrs=")


async def test_no_primary_among_the_hosts_is_a_connection_error(db_url: str) -> None:
    """A URL whose only reachable host is not writable for this session: asyncpg raises
    TargetServerAttributeNotMatched, which the daemons wait out as a connection error (the
    test server is a primary, so 'standby' stands in for 'no primary here')."""
    url = db_url + ("&" if "?" in db_url else "?") + "target_session_attrs=standby"
    with pytest.raises(db.CONNECTION_ERRORS) as exc:
        await asyncpg.connect(url, timeout=5)
    assert isinstance(exc.value, asyncpg.exceptions.TargetServerAttributeNotMatched)


async def test_a_silent_first_host_does_not_hide_the_primary(db_url: str) -> None:
    """A host that accepts TCP and never answers (a hung old primary) listed first: asyncpg's
    own walk would spend its whole timeout there and never try the next host. `db.connect`
    gives each host its own timeout, then tries the host that worked last first: the first
    connection takes ~1 timeout, the next ones none; so does a pool."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        parts = urlsplit(db_url)
        user, _, hosts = parts.netloc.rpartition("@")
        netloc = f"{user}@127.0.0.1:{silent.getsockname()[1]},{hosts}"
        url = urlunsplit(parts._replace(netloc=netloc))
        assert len(db.host_urls(url)) == 2
        with pytest.raises(TimeoutError):  # what asyncpg alone does
            await asyncpg.connect(url, timeout=1.0)
        t0 = time.monotonic()
        conn = await db.connect(url, timeout=1.0)
        first = time.monotonic() - t0
        await conn.close()
        t0 = time.monotonic()
        conn = await db.connect(url, timeout=1.0)
        again = time.monotonic() - t0
        await conn.close()
        assert 0.9 < first < 3.0 and again < 0.5, (first, again)
        pool = await db.create_pool(url, min_size=2, max_size=2, timeout=1.0)
        try:
            assert await pool.fetchval("SELECT 1") == 1
        finally:
            await pool.close()
    finally:
        silent.close()

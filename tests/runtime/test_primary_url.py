"""Multi-host database URLs reach only a primary (issue 18): `db.primary_url` and the config.

The behaviour against real servers (a standby skipped, the promoted one found) is proven in
tests/reliability/test_failover.py; here the URL rules and their errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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

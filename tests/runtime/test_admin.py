"""`smsgw migrate` and `smsgw check-config` as operators run them (subprocesses)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncpg

from smsgw.shared.core import db
from smsgw.shared.runtime.config import ENV_PREFIX


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(extra)
    return env


def out(proc: Any) -> str:
    return "".join(e.get("raw", "") for e in proc.events)


async def test_migrate_dry_run_then_apply_then_up_to_date(
        pg_server: dict[str, object], unique: Any, spawn: Any) -> None:
    """1. an empty database: --dry-run lists every migration and changes nothing;
    2. migrate applies them all; 3. a second migrate says it is up to date."""
    admin = str(pg_server["url"])
    name = unique("smsgw_rt_mig_")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = env_with(SMSGW_DATABASE_URL=admin.rsplit("/", 1)[0] + "/" + name)
        names = [m.name for m in db.load_migrations()]
        proc = await spawn("migrate", "--dry-run", env=env)
        assert await proc.exit_code() == 0
        assert "would apply:" in out(proc) and all(n in out(proc) for n in names)
        proc = await spawn("migrate", env=env)
        assert await proc.exit_code() == 0
        assert "applied:" in out(proc) and all(n in out(proc) for n in names)
        proc = await spawn("migrate", env=env)
        assert await proc.exit_code() == 0
        assert f"schema at version {db.schema_needed()}" in out(proc)
        assert "up to date" in out(proc)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_check_config_reports_every_daemon_section(spawn: Any, tmp_path: Path) -> None:
    """check-config validates all sections (a daemon checks only its own): a typo in
    [processor] and an unknown SMSGW_RECEIVER__ variable both exit 78, named."""
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text("[processor]\nbacth = 5\n[sender]\ndrain_s = 4\n")
    env = env_with(SMSGW_DATABASE_URL="postgresql://x/y", SMSGW_RECEIVER__HTTP_PROT="1")
    proc = await spawn("check-config", "--config", str(cfg), env=env)
    assert await proc.exit_code() == 78
    err = proc.stderr.decode()
    assert "processor.bacth: unknown key" in err
    assert "SMSGW_RECEIVER__HTTP_PROT (receiver.http_prot): unknown key" in err
    cfg.write_text("[processor]\nbatch = 5\n[sender]\ndrain_s = 4\n")
    proc = await spawn("check-config", "--config", str(cfg),
                       env=env_with(SMSGW_DATABASE_URL="postgresql://x/y"))
    assert await proc.exit_code() == 0
    assert "config OK" in out(proc) and "sender@1: metrics port 9103" in out(proc)

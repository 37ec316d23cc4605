"""The Kannel differential suite: opt-in, and failing (never skipping) without Kannel.

`pytest -m kannel tests/kannel` runs it; the default run skips every `kannel` test, as
`tests/ops` does for `prometheus` and `tests/reliability` for `slow`, so the default suite never
needs Kannel. Selected on a machine without `bearerbox`/`smsbox`, the suite FAILS naming the
install line (`apt-get install -y kannel`, Kannel 1.4.5 on Debian 12): a CI job that asks for
the comparison must not go green by comparing nothing.

The table of cases → results is printed at the end of the run and written to
`$KANNEL_DIFF_TABLE` (default: `kannel-differential.md` in the system's temp folder).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from .world import (
    INSTALL_LINE,
    KannelGateway,
    Recorder,
    SmsgwGateway,
    find_binary,
    new_simulator,
)

TABLE_KEY = pytest.StashKey[list[dict[str, Any]]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`kannel` tests run only when the -m expression selects them."""
    selected = config.getoption("-m") or ""
    if "kannel" in selected and "not kannel" not in selected:
        return
    skip = pytest.mark.skip(reason="opt-in: run with `pytest -m kannel tests/kannel`")
    for item in items:
        if "kannel" in item.keywords:
            item.add_marker(skip)


def table_path() -> Path:
    return Path(os.environ.get("KANNEL_DIFF_TABLE")
                or Path(tempfile.gettempdir()) / "kannel-differential.md")


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | sends | result | differences (kannel → smsgw) |", "|---|---|---|---|"]
    for r in rows:
        detail = "; ".join(r["details"]) or ""
        lines.append(f"| {r['case']} | {r['sends']} | {r['result']} | {detail} |")
    counts: dict[str, int] = {}
    for r in rows:
        key = r["result"].split(" ")[0]
        counts[key] = counts.get(key, 0) + 1
    lines.append("")
    lines.append("Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(TABLE_KEY, None)
    if not rows:
        return
    text = render_table(rows)
    path = table_path()
    path.write_text(text)
    terminalreporter.section("Kannel differential: cases → results")
    terminalreporter.write(text)
    terminalreporter.write_line(f"(written to {path})")


@pytest.fixture
def table(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The run's rows of the cases → results table."""
    return request.config.stash.setdefault(TABLE_KEY, [])


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(pg_server: dict[str, object], pg_template: str,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimpleNamespace]:
    """Kannel and smsgw, each with its own recording simulator, and one recording application.

    The smsgw stack starts first: its account's API key becomes the Kannel sendsms-user's
    password, so both gateways take the very same request.
    """
    missing = [b for b in ("bearerbox", "smsbox") if find_binary(b) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the kannel suite needs Kannel "
                    f"installed ({INSTALL_LINE})", pytrace=False)
    from .test_differential import SMSGW_CONNECTOR, SMSGW_FORWARD

    admin = str(pg_server["url"])
    dbname = f"smsgw_kannel_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE "{pg_template}"')
    finally:
        await conn.close()
    folder = tmp_path_factory.mktemp("kannel-diff")
    recorder = Recorder()
    sims = {"kannel": new_simulator(), "smsgw": new_simulator()}
    started: list[Any] = []
    try:
        await recorder.start()
        started.append(recorder)
        for sim in sims.values():
            await sim.start()
            started.append(sim)
        (folder / "smsgw").mkdir()
        (folder / "kannel").mkdir()
        smsgw = SmsgwGateway(folder / "smsgw", sims["smsgw"], recorder,
                             _with_db(admin, dbname), SMSGW_CONNECTOR, SMSGW_FORWARD)
        try:
            await smsgw.start()
        finally:
            started.append(smsgw)
        kannel = KannelGateway(folder / "kannel", sims["kannel"], recorder, smsgw.api_key)
        try:
            await kannel.start()
        finally:
            started.append(kannel)
        yield SimpleNamespace(kannel=kannel, smsgw=smsgw, recorder=recorder, sims=sims,
                              folder=folder, gateways={"kannel": kannel, "smsgw": smsgw})
    finally:
        for thing in reversed(started):
            try:
                await thing.stop()
            except Exception as exc:  # noqa: BLE001 - teardown goes on with the rest
                print(f"teardown of {type(thing).__name__}: {exc!r}")
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        finally:
            await conn.close()
        await asyncio.sleep(0)

"""Issue 12, finding 8: `smsgw erase` left the number in evidence.number and flood_counters.

1. Every column that can hold text (text, varchar, json/jsonb, bytea, arrays) is classified in
   `services.admin.erase.COVERAGE`: a column added by a later migration fails here until the
   erase code knows how it is covered.
2. Realistic traffic through the real code paths — MTs via the receiver API (JSON with a
   status callback URL, Kannel sendsms with a `%p` dlr-url), MOs via the intake (whole and
   concatenated, one left incomplete), the processor's rules (a reply quoting the number, a
   JSON and a GET-URL forward, a campaign entry), STOP, flood control, a `smsgw sender`
   process submitting to the SMSC simulator with receipts and status callbacks, the
   retention move to the history tables, a ported-number entry — then `smsgw erase`, then a
   search of EVERY text-like column of EVERY table (found in information_schema, jsonb values
   recursively as text, bytea raw and as UCS-2) for the number in any form (E.164 with and
   without '+', national, URL-encoded: all contain the national significant number) and for
   its unkeyed sha256: nothing may remain. Another number's traffic stays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from smsgw.services.admin import erase
from smsgw.services.processor.rules import parse_rules
from smsgw.services.processor.rules_cli import import_rules
from smsgw.shared.domain.intake import FragmentWrite, InboundWrite, flush_inbound
from smsgw.shared.queue import store
from smsgw.shared.runtime.config import RetentionSettings

from .conftest import ROOT, SEC_MT_SECRET, sec_erase_env

NUMBER = "+447700900123"
NSN = "7700900123"         # in every form: +447700900123, 447700900123, 07700900123, %2B44…
OTHER = "+447700900456"
SHORT = "80080"
TEXTLIKE = ("text", "character varying", "character", "json", "jsonb", "bytea", "ARRAY")
RULES = [
    {"name": "promo", "priority": 10, "match": {"to": [SHORT], "keyword": "WIN"}, "actions": [
        {"type": "campaign_entry", "campaign": "xmas", "data": {"who": "{from}"}},
        {"type": "reply", "template": "Thanks {from}, you are in", "category": "marketing"},
        {"type": "forward", "url": "https://app.example.com/mo"},
        {"type": "forward", "get_url": "https://app.example.com/k?from=%p&text=%a"}]},
    {"name": "echo", "match": {"to": [SHORT]}, "actions": [
        {"type": "reply", "template": "Got it {from}"}]},
]


async def _textlike_columns(conn: asyncpg.Connection) -> set[tuple[str, str, str]]:
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
        " AND c.data_type = ANY($1::text[])", list(TEXTLIKE))
    return {(r["table_name"], r["column_name"], r["data_type"]) for r in rows}


async def test_every_textlike_column_is_classified_for_erase(pool: asyncpg.Pool) -> None:
    """The erase code's classification matches the live schema exactly: no column it does
    not know about, none it lists that is gone."""
    async with pool.acquire() as conn:
        live = {(t, c) for t, c, _ in await _textlike_columns(conn)}
    known = {(t, c) for t, cols in erase.COVERAGE.items() for c in cols}
    assert sorted(live - known) == [], "columns erase does not know how to cover"
    assert sorted(known - live) == [], "columns erase lists that the schema does not have"


async def _occurrences(conn: asyncpg.Connection, needles: dict[str, Any]
                       ) -> dict[tuple[str, str], int]:
    """(table, column) -> rows holding any needle, over every text-like column."""
    found: dict[tuple[str, str], int] = {}
    for table, column, dtype in sorted(await _textlike_columns(conn)):
        col = f'"{column}"'
        if dtype == "bytea":
            cond = (f"position($1::bytea IN {col}) > 0 OR position($2::bytea IN {col}) > 0"
                    f" OR position($3::bytea IN {col}) > 0")
            args = [needles["nsn"].encode(), needles["nsn"].encode("utf-16-be"),
                    needles["sha256"]]
        else:
            text = f"array_to_string({col}, ',')" if dtype == "ARRAY" else f"{col}::text"
            cond = f"strpos({text}, $1) > 0 OR strpos({text}, $2) > 0"
            args = [needles["nsn"], needles["sha256"].hex()]
        n = await conn.fetchval(f'SELECT count(*) FROM "{table}" WHERE {cond}', *args)
        if n:
            found[(table, column)] = n
    return found


async def _wait(pred: Any, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not await pred():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def _traffic(pool: asyncpg.Pool, api: Any, key: str, number: str) -> None:
    """One number's traffic through the real paths (see the module docstring)."""
    status, body = await api.call("POST", "/v1/messages", key=key, json={
        "to": number, "from": "Acme", "text": "Your code is 1234", "client_ref": f"c{number}",
        "callback_url": "https://app.example.com/dlr"})
    assert status == 202, body
    dlr = "https://app.example.com/dlr?to=%p&status=%d"
    status, body = await api.call("GET", "/cgi-bin/sendsms?" + (
        f"username=sec_erase_app&password={quote(key)}&from=Acme&to={quote(number)}"
        f"&text=hello&dlr-mask=3&dlr-url={quote(dlr)}"))
    assert status == 202, body
    frag = dict(channel="smpp", provider="sim", connector="sim", from_addr=number,
                to_addr=SHORT, total=2)
    async with pool.acquire() as conn:
        await flush_inbound(conn, [
            InboundWrite(channel="smpp", provider="sim", connector="sim", from_addr=number,
                         to_addr=SHORT, body="WIN a car", meta={"from": number}),
            InboundWrite(channel="http", provider="generic", connector=None, from_addr=number,
                         to_addr=SHORT, body="hello there", dedupe_scope="mo:generic:app",
                         dedupe_key=f"m{number}"),
            FragmentWrite(ref=7, seq=1, body="first half ", **frag),
            FragmentWrite(ref=7, seq=2, body="second half", **frag),
            FragmentWrite(ref=8, seq=1, body="never completed", **frag),
            InboundWrite(channel="smpp", provider="sim", connector="sim", from_addr=number,
                         to_addr=SHORT, body="STOP")])


async def test_erase_leaves_no_trace_of_the_number(
        pool: asyncpg.Pool, db_url: str, tmp_path: Path, sec_mt_receiver: Any,
        sec_mt_account: Any, sec_erase_sender: Any) -> None:
    """Traffic for NUMBER and OTHER; before erase NUMBER is found in many columns (the search
    works), after `smsgw erase NUMBER` in none, and OTHER's rows are all still there."""
    async with pool.acquire() as conn:
        await import_rules(conn, parse_rules(RULES), actor="test", replace=True)
        await conn.execute("INSERT INTO ported_numbers (number, connectors) VALUES ($1, $2)",
                           NUMBER, ["sim"])
    _, key = await sec_mt_account("sec_erase_app")
    api = await sec_mt_receiver()
    for number in (NUMBER, OTHER):
        await _traffic(pool, api, key, number)
    processor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "processor", cwd=tmp_path,
        env=sec_erase_env(db_url, SMSGW_PROCESSOR__METRICS_PORT="0",
                          SMSGW_PROCESSOR__POLL_S="0.2", SMSGW_PROCESSOR__FLOOD_MAX="3"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        await _wait(lambda: pool.fetchval(
            "SELECT count(*) = 0 FROM inbound WHERE status = 'queued'"))
    finally:
        processor.terminate()
        await processor.wait()
    # every MT sent and its receipt matched (delivered), status callbacks queued
    await _wait(lambda: pool.fetchval(
        "SELECT count(*) FILTER (WHERE status IN ('queued', 'sending', 'submitted')) = 0"
        " AND count(*) FILTER (WHERE status = 'delivered') >= 4 FROM outbound"))
    await _wait(lambda: pool.fetchval(
        "SELECT count(*) > 0 FROM callbacks WHERE kind = 'status'"))
    async with pool.acquire() as conn:  # half of it moves to the history tables
        await conn.execute("UPDATE outbound SET updated_at = now() - interval '1 hour'"
                           " WHERE source = 'api'")
        await conn.execute("UPDATE inbound SET updated_at = now() - interval '1 hour'"
                           " WHERE id % 2 = 0")
        await store.run_retention(conn, RetentionSettings(finished_after_s=60))

    needles = {"nsn": NSN, "sha256": hashlib.sha256(NUMBER.encode()).digest()}
    other = {"nsn": "7700900456", "sha256": hashlib.sha256(OTHER.encode()).digest()}
    async with pool.acquire() as conn:
        before = await _occurrences(conn, needles)
        other_before = await _occurrences(conn, other)
    for must in (("outbound", "to_addr"), ("outbound_history", "to_addr"),
                 ("inbound", "from_addr"), ("mo_parts", "from_addr"),
                 ("callbacks", "url"), ("callbacks", "body"), ("campaign_entries", "number"),
                 ("flood_counters", "number"), ("suppressions", "evidence"),
                 ("ported_numbers", "number")):
        assert must in before, f"traffic did not reach {must}: {sorted(before)}"

    res = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "erase", NUMBER, "--yes", "--json",
        "--database-url", db_url, env=sec_erase_env(db_url), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(res.communicate(), 120)
    assert res.returncode == 0, out.decode()

    async with pool.acquire() as conn:
        after = await _occurrences(conn, needles)
        other_after = await _occurrences(conn, other)
        key = hmac.digest(SEC_MT_SECRET, b"smsgw suppression v1", "sha256")
        kept = await conn.fetchval("SELECT count(*) FROM suppressions WHERE number_hash = $1"
                                   " AND scope = 'global'", hmac.digest(
                                       key, hashlib.sha256(NUMBER.encode()).digest(), "sha256"))
    assert after == {}, f"the number is still stored in {after}"
    assert kept == 1  # suppressed (under the keyed hash only), so never messaged again
    assert other_after == other_before  # nothing of the other number was touched

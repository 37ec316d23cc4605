"""`smsgw fuzz attacks` against a real gateway, then a scan of every file the run wrote for every
configured secret (issue 12: "after a fuzz run a test scans every log file the run wrote for
every configured secret and fails on a hit").

One bounded run (fixed seed; every class goes through all its routes and fields at least once)
on a real stack — receiver, processor, sender and simulator as subprocesses on this test's
Postgres database — is shared by the tests below: one per class (no 5xx, no broken connection
for a well-formed request, the right 4xx for bad input, the receiver alive; for `idna` the
canary on loopback got no connection; for `slow` every trickling or idle client dropped in
time while a well-formed request is answered), one for the log scan. The scanner itself is
proved able to fail: a secret planted in each encoding is found.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import asyncpg
import pytest

from smsgw.services.bench import logscan
from smsgw.services.bench.fuzz_attacks import CLASSES, AttackOptions, AttackReport, run_attacks

pytestmark = pytest.mark.timeout(240)
SEED = 20260112


# -- the scanner can fail ------------------------------------------------------------------

@pytest.mark.parametrize("secret", ["fuzzsecret-twilio-0123456789abcdef01234567",
                                    "sécret/with+odd=chars&ünïcode-4f2a9c"])
def test_logscan_finds_a_planted_secret_in_each_encoding(tmp_path: Path, secret: str) -> None:
    """Every encoding the scanner knows is found at its file and line, and nothing else is."""
    b = secret.encode()
    planted = {
        "raw": b,
        "hex": b.hex().encode(),
        "HEX": b.hex().upper().encode(),
        "base64": base64.b64encode(b),
        "base64 unpadded": base64.b64encode(b).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(b),
        "base64url unpadded": base64.urlsafe_b64encode(b).rstrip(b"="),
        "basic auth (blob offset 2)": b"Basic " + base64.b64encode(b"user:" + b),
        "blob offset 1": base64.b64encode(b"usr:" + b + b"@host"),
        "blob offset 0": base64.urlsafe_b64encode(b"us:" + b + b"@h").rstrip(b"="),
        "url-encoded": quote(secret, safe="").encode(),
        "form-encoded": quote_plus(secret).encode(),
        "bytes repr": repr(b).encode(),
        "json": json.dumps(secret).encode(),
        "utf-16le": secret.encode("utf-16-le"),
    }
    log = tmp_path / "daemon.log"
    lines = [b'{"level":"info","event":"clean line"}']
    for name, form in planted.items():
        lines.append(b'{"level":"error","event":"x","' + name.encode() + b'":"' + form + b'"}')
    log.write_bytes(b"\n".join(lines) + b"\n")
    hits = logscan.scan([log], {"the secret": secret})
    found = {h.line for h in hits}
    for i, name in enumerate(planted, start=2):
        assert i in found, f"{name} form not found: {planted[name]!r}"
    assert 1 not in found
    assert all(h.secret == "the secret" and h.path == log for h in hits)
    assert secret not in "".join(str(h) for h in hits)  # a report never shows the value
    clean = tmp_path / "clean.log"
    clean.write_bytes(b"\n".join(lines[:1]) + b"\n" + secret[:8].encode() + b"\n")
    assert logscan.scan([clean], {"the secret": secret}) == []


def test_logscan_run_files_reads_logs_not_secret_or_database_files(tmp_path: Path) -> None:
    """`run_files`: every file a run wrote, the Postgres server log included, its binary data
    and the excluded secret files not."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "receiver-1.log").write_text("x\n")
    (tmp_path / "smsgw.toml").write_text("[database]\n")
    (tmp_path / "server-secret").write_text("s3cret\n")
    pg = tmp_path / "pg"
    (pg / "base" / "1").mkdir(parents=True)
    (pg / "base" / "1" / "1259").write_bytes(b"\0" * 10)
    (pg / "PG_VERSION").write_text("15\n")
    (pg / "server.log").write_text("LOG: ready\n")
    (pg / "log").mkdir()
    (pg / "log" / "postgresql-1.log").write_text("LOG: x\n")
    files = logscan.run_files(tmp_path, exclude=[tmp_path / "server-secret"])
    assert {p.relative_to(tmp_path).as_posix() for p in files} == {
        "logs/receiver-1.log", "smsgw.toml", "pg/server.log", "pg/log/postgresql-1.log"}


# -- one fuzz run against a real gateway ----------------------------------------------------

def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture(scope="module")
def sec_fuzz_report(pg_server: dict[str, object], pg_template: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackReport]:
    """The report of one bounded `fuzz attacks` run (all classes) on its own database."""
    admin = str(pg_server["url"])
    name = f"smsgw_t_{uuid.uuid4().hex[:12]}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(sql(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    data_dir = tmp_path_factory.mktemp("fuzz-attacks")
    opts = AttackOptions(seed=SEED, count=int(os.environ.get("SMSGW_FUZZ_COUNT", "400")),
                         duration_s=60.0, concurrency=8, idle=300, settle_s=20.0,
                         database_url=_with_db(admin, name), data_dir=data_dir, keep=True,
                         say=lambda m: None)
    try:
        yield asyncio.run(run_attacks(opts))
    finally:
        asyncio.run(sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _explain(report: AttackReport) -> str:
    return "\n".join(report.lines(detail=30))


def test_fuzz_run_started(sec_fuzz_report: AttackReport) -> None:
    """The gateway started and every class ran (otherwise every other test is vacuous)."""
    assert not sec_fuzz_report.problems, _explain(sec_fuzz_report)
    assert [c.name for c in sec_fuzz_report.classes] == list(CLASSES)
    assert all(c.n > 0 for c in sec_fuzz_report.classes)


@pytest.mark.parametrize("cls", CLASSES)
def test_fuzz_class_has_no_failure(sec_fuzz_report: AttackReport, cls: str) -> None:
    """No 5xx, no broken connection for a well-formed request, the right 4xx for bad input,
    the receiver alive; `idna`: nothing reached the canary; `slow`: every slow client dropped."""
    result = next((c for c in sec_fuzz_report.classes if c.name == cls), None)
    assert result is not None, _explain(sec_fuzz_report)
    assert result.ok, _explain(sec_fuzz_report)
    if cls == "idna":
        assert not sec_fuzz_report.canary_hits, _explain(sec_fuzz_report)


def test_no_secret_in_any_file_the_run_wrote(sec_fuzz_report: AttackReport) -> None:
    """Every configured secret (server secret, Twilio token, Vonage secret, generic source
    secret, the API key used as sendsms password), raw or encoded, in no file of the run."""
    names = {p.name for p in sec_fuzz_report.scanned}
    assert {"receiver-1.log", "processor-1.log", "sender-1.log"} <= names, names
    assert not sec_fuzz_report.hits, "\n".join(str(h) for h in sec_fuzz_report.hits[:50])

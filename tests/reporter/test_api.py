"""`/v1/reports` on a real receiver socket: scope, validation, the stored files streamed."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from smsgw.services.reporter.kinds import Progress
from smsgw.services.reporter.runner import run_report
from smsgw.services.reporter.settings import ReporterSettings
from smsgw.shared.domain.reports import MAX_RANGE_DAYS
from smsgw.shared.queue import report_requests as rq

from ..receiver.conftest import AccountFactory, Receiver, ReceiverFactory
from .conftest import CAMPAIGN, END, START, ZONE, seed
from .test_kinds import read


async def test_reports_api_scope_validation_and_files(pool: asyncpg.Pool,
                                                      receiver_factory: ReceiverFactory,
                                                      account_factory: AccountFactory,
                                                      tmp_path: Path) -> None:
    """1. A plain account's key asks for its traffic report: 202, the account is its own.
    2. It may not ask for a campaign report (403 naming kind), nor another account's traffic
       (403 naming account); bad fields are 422 each naming its field.
    3. Another plain account cannot see the report (404); an operator's key sees it and may
       ask for a campaign report.
    4. Once the reporter made it, GET shows the file links, and each file streams the bytes
       the reporter wrote, with its type and a CSP that lets nothing load or run.
    5. An account with 20 open reports gets a 429 for the next."""
    await seed(pool)
    r: Receiver = await receiver_factory()
    _, key = await account_factory("shopkeeper")
    _, other = await account_factory("stranger")
    op_id, op = await account_factory("ops")
    await pool.execute("UPDATE accounts SET operator = true WHERE id = $1", op_id)
    body = {"kind": "traffic", "from": START, "to": END, "tz": ZONE}
    status, rep = await r.post("/v1/reports", key=key, json=body)
    assert status == 202, rep
    assert rep["status"] == "queued" and rep["links"]["self"] == f"/v1/reports/{rep['id']}"
    assert r.last_headers["Location"] == rep["links"]["self"]
    for bad, code, field in (
            ({"kind": "campaign", "campaign": CAMPAIGN}, 403, "kind"),
            ({"kind": "traffic", "account": "shop"}, 403, "account"),
            ({"kind": "bogus"}, 422, "kind"),
            ({"kind": {}}, 422, "kind"),  # not hashable: was a 500 (found by `smsgw fuzz http`)
            ({"kind": "traffic", "tz": "Mars/Olympus"}, 422, "tz"),
            ({"kind": "traffic", "from": "2026-02-01", "to": "2026-01-01"}, 422, "to"),
            ({"kind": "traffic", "from": "2020-01-01", "to": "2026-01-01"}, 422, "to"),
            ({"kind": "traffic", "from": "yesterday"}, 422, "from"),
            ({"kind": "traffic", "colour": "red"}, 422, "colour")):
        status, err = await r.post("/v1/reports", key=key, json=bad)
        assert (status, err["errors"][0]["field"]) == (code, field), (bad, err)
    # the reporter's configured maximum (`[reporter] max_range_days`, read by the receiver
    # at start and on SIGHUP) is checked at request time too
    r.ctx.report_max_range_days = 30
    status, err = await r.post("/v1/reports", key=key, json={
        "kind": "traffic", "from": "2026-01-01", "to": "2026-03-01"})
    assert (status, err["errors"][0]["field"]) == (422, "to"), err
    assert "30 days" in err["errors"][0]["message"], err
    r.ctx.report_max_range_days = MAX_RANGE_DAYS
    status, err = await r.post("/v1/reports", key=op, json={"kind": "campaign",
                                                            "campaign": "nope"})
    assert (status, err["errors"][0]["field"]) == (422, "campaign")
    status, _ = await r.post("/v1/reports", key=key, data=b"{not json")
    assert status == 400
    assert (await r.get(f"/v1/reports/{rep['id']}", key=other))[0] == 404
    assert (await r.get(f"/v1/reports/{rep['id']}"))[0] == 401
    assert (await r.get("/v1/reports/x1", key=key))[0] == 422
    status, seen = await r.get(f"/v1/reports/{rep['id']}", key=op)
    assert status == 200 and seen["id"] == rep["id"]
    status, camp = await r.post("/v1/reports", key=op, json={
        "kind": "campaign", "campaign": CAMPAIGN, "from": START, "to": END, "tz": ZONE})
    assert status == 202, camp
    assert (await r.get(f"/v1/reports/{rep['id']}/files/csv", key=key))[0] == 404  # not yet

    settings = ReporterSettings(dir=str(tmp_path))
    for req in await rq.claim(pool, owner="t", limit=2, lease_s=60):
        assert await run_report(pool, req, Progress(), owner="t", settings=settings) == "done"
    status, done = await r.get(f"/v1/reports/{rep['id']}", key=key)
    assert status == 200 and done["status"] == "done" and done["progress"]["percent"] == 100
    assert set(done["links"]["files"]) == {"csv", "html"}
    row = await rq.get(pool, rep["id"], account_id=None)
    assert row is not None and row.files is not None and row.params["tz"] == ZONE
    for name, link in done["links"]["files"].items():
        async with r.http.get(r.url + link, headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200
            assert await resp.read() == read(row.files[name]["path"])
            assert resp.headers["Content-Type"].startswith(
                "text/csv" if name == "csv" else "text/html")
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert (await r.get(f"/v1/reports/{camp['id']}/files/entries_csv", key=key))[0] == 404
    status, _ = await r.get(f"/v1/reports/{camp['id']}/files/entries_csv", key=op)
    assert status == 200
    # 5. at most 20 open (queued or running) reports per account: the 21st is a 429
    own = await pool.fetchval("SELECT id FROM accounts WHERE name = 'shopkeeper'")
    for _ in range(20):
        await rq.insert(pool, kind="traffic", params={}, account_id=own, requested_by="t",
                        keep_s=60)
    status, err = await r.post("/v1/reports", key=key, json=body)
    assert (status, err["error"]) == (429, "too_many_reports")
    assert r.last_headers["Retry-After"] == "60"

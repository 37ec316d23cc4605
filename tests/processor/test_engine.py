"""The batch transaction against real Postgres: every action, quotas, opt-out, flood, atomicity."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson

from smsgw.services.processor.options import ProcessorKeys
from smsgw.shared.domain import suppression
from smsgw.shared.queue import store
from smsgw.shared.queue.listener import CHANNELS

from .conftest import HASHER, SHORT, add_mo, drain, mo, set_rules

A, B = "+447700900001", "+447700900002"


async def outbound(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM outbound ORDER BY id")


async def test_reply_entry_and_quota(pool, make_engine) -> None:
    """1. a promo rule replies and records one entry per number per day;
    2. A enters twice, B once, in separate batches; 3. A's second text gets the over-quota
    reply and no entry; every inbound row is done."""
    await set_rules(pool, [{
        "name": "win", "priority": 10, "match": {"to": [SHORT], "keyword": ["WIN", "WINN"]},
        "actions": [
            {"type": "campaign_entry", "campaign": "xmas", "quota": {"per": "day", "max": 1},
             "over_quota_reply": "Only one entry a day, {from}", "data": {"prize": "a car"}},
            {"type": "reply", "template": "Thanks {keyword}! Entry {entries}/{quota_max} "
                                          "to win {prize}", "category": "marketing"}]}])
    engine = make_engine()
    await add_mo(pool, [mo(A, "win"), mo(B, "WINN me")])
    await add_mo(pool, [mo(A, "win again")])
    assert await drain(engine) == 3
    rows = await outbound(pool)
    bodies = sorted((r["to_addr"], r["body"], r["category"], r["source"]) for r in rows)
    assert bodies == [
        (A, "Only one entry a day, " + A, "transactional", "rule"),
        (A, "Thanks WIN! Entry 1/1 to win a car", "marketing", "rule"),
        (B, "Thanks WINN! Entry 1/1 to win a car", "marketing", "rule")]
    assert all(r["from_addr"] == SHORT and r["inbound_id"] and r["rule_id"] for r in rows)
    entries = await pool.fetch("SELECT number, campaign, data FROM campaign_entries ORDER BY id")
    assert [(e["number"], e["campaign"]) for e in entries] == [(A, "xmas"), (B, "xmas")]
    assert entries[0]["data"] == {"prize": "a car"}
    assert await pool.fetchval("SELECT count(*) FROM inbound WHERE status = 'done'") == 3
    outcomes = await pool.fetch("SELECT detail->>'outcome' AS o FROM events "
                                "WHERE message_table = 'inbound' ORDER BY message_id")
    assert [o["o"] for o in outcomes] == ["applied", "applied", "over_quota"]


async def test_forward_post_and_get_url(pool, make_engine) -> None:
    """1. a forward rule with a secret and a Kannel get-url; 2. one MO; 3. two callbacks rows:
    a JSON POST naming the rule's secret, and a GET with the escapes filled in."""
    await set_rules(pool, [{"name": "fwd", "match": {"keyword": "INFO"}, "actions": [
        {"type": "forward", "url": "http://127.0.0.1:9/mo", "secret_env": "APP_SECRET"},
        {"type": "forward", "get_url": "http://127.0.0.1:9/k?from=%p&to=%P&text=%a&kw=%k"}]}])
    [mid] = await add_mo(pool, [mo(A, "info please")])
    await drain(make_engine())
    rows = await pool.fetch("SELECT * FROM callbacks ORDER BY id")
    assert [(r["kind"], r["method"], r["inbound_id"]) for r in rows] == [
        ("mo", "POST", mid), ("mo", "GET", mid)]
    rule_id = await pool.fetchval("SELECT id FROM rules")
    assert rows[0]["secret_ref"] == f"rule:{rule_id}:0"
    body = orjson.loads(rows[0]["body"])
    assert body["from"] == A and body["text"] == "info please" and body["keyword"] == "INFO"
    # Kannel's urltrans_fill_escape_codes: %a the words joined by '+', %k the first word as
    # written, values URL-encoded as octstr_url_encode does ('+' → %2B)
    assert rows[1]["url"] == ("http://127.0.0.1:9/k?from=%2B447700900001&to=80080"
                              "&text=info+please&kw=info")
    assert rows[1]["secret_ref"] is None and rows[1]["body"] is None


async def test_stop_start_help_and_audit(pool, make_engine) -> None:
    """1. STOP from A suppresses A for the short code (is_suppressed says so) with evidence;
    2. STOPALL from B suppresses B globally; 3. START from A removes A's entries;
    4. HELP replies; 5. every suppression change is in the audit log."""
    engine = make_engine()
    await set_rules(pool, [{"name": "promo", "match": {"keyword": "STOP"},
                            "actions": [{"type": "reply", "template": "never"}]}])
    await add_mo(pool, [mo(A, "Stop"), mo(B, "stopall")])
    await drain(engine)
    assert await suppression.is_suppressed(pool, [A, B], SHORT, hasher=HASHER) == {A, B}
    assert await suppression.is_suppressed(pool, [A, B], "global", hasher=HASHER) == {B}
    assert await suppression.is_suppressed(pool, [A], "99999", hasher=HASHER) == set()
    ev = await pool.fetchval("SELECT evidence FROM suppressions WHERE number = $1", A)
    assert ev["text"] == "Stop" and ev["short_code"] == SHORT and ev["number"] == A
    assert ev["at"] and ev["inbound_id"]
    await add_mo(pool, [mo(A, "START"), mo(B, "help")])
    await drain(engine)
    assert await suppression.is_suppressed(pool, [A, B], SHORT, hasher=HASHER) == {B}
    replies = [r["body"] for r in await outbound(pool)]
    assert len(replies) == 4 and "never" not in replies  # built-in opt-out wins over rules
    assert any("unsubscribed from 80080" in b for b in replies)
    assert any("STOP to unsubscribe" in b for b in replies)
    audit = await pool.fetch("SELECT action, object_id, detail FROM audit_log "
                             "WHERE object_type = 'suppression' ORDER BY id")
    assert [a["action"] for a in audit] == ["suppression_add", "suppression_add",
                                           "suppression_remove"]
    assert audit[2]["detail"]["evidence"]["text"] == "Stop"  # opt-out proof outlives START
    assert audit[2]["object_id"] == HASHER(A).hex() + ":" + SHORT


async def test_optout_action_from_a_rule(pool, make_engine) -> None:
    """A rule's optout action with global scope suppresses for every short code."""
    await set_rules(pool, [{"name": "leave", "match": {"keyword": "LEAVE"}, "actions": [
        {"type": "optout", "op": "stop", "scope": "global", "reply": "Bye {from}"}]}])
    await add_mo(pool, [mo(A, "leave")])
    await drain(make_engine())
    assert await suppression.is_suppressed(pool, [A], hasher=HASHER) == {A}
    assert [r["body"] for r in await outbound(pool)] == [f"Bye {A}"]


async def test_flood_limit(pool, make_engine) -> None:
    """1. flood_max 3 per window; 2. A sends 6 (processed in order, one per batch), B sends 1;
    3. A gets 3 replies, the rest are recorded as flooded; a STOP over the limit still counts."""
    await set_rules(pool, [{"name": "echo", "actions": [{"type": "reply", "template": "ok"}]}])
    engine = make_engine(flood_max=3, flood_window_s=3600)
    await add_mo(pool, [mo(A, f"hi {i}") for i in range(5)] + [mo(B, "hi"), mo(A, "STOP")])
    await drain(engine)
    per_number = dict(await pool.fetch(
        "SELECT to_addr, count(*) FROM outbound GROUP BY to_addr"))
    assert per_number == {A: 3, B: 1}
    flooded = await pool.fetchval("SELECT count(*) FROM events "
                                  "WHERE detail->>'outcome' = 'flooded'")
    assert flooded == 2
    assert await suppression.is_suppressed(pool, [A], SHORT, hasher=HASHER) == {A}
    assert await pool.fetchval("SELECT count(*) FROM inbound WHERE status <> 'done'") == 0


async def test_more_says_when_to_claim_again(pool, make_engine) -> None:
    """`run_batch` sets `more` so that the consume loop skips the empty claim after a short
    batch, but never strands a row behind one of the batch's (head-of-line):
    1. batch 3; A, B, A queued: the batch takes A and B (A's second waits) -> more;
    2. the next takes A's second -> a short batch, nothing waiting -> not more;
    3. four from four numbers: a full batch -> more; then the last one -> not more;
    4. nothing queued -> 0, not more."""
    await set_rules(pool, [{"name": "echo", "actions": [{"type": "reply", "template": "ok"}]}])
    engine = make_engine(batch=3)
    a1, b1, a2 = await add_mo(pool, [mo(A, "1"), mo(B, "1"), mo(A, "2")])
    assert (await engine.run_batch(), engine.more) == (2, True)
    assert (await engine.run_batch(), engine.more) == (1, False)
    await add_mo(pool, [mo(f"+44770090010{i}", "x") for i in range(4)])
    assert (await engine.run_batch(), engine.more) == (3, True)
    assert (await engine.run_batch(), engine.more) == (1, False)
    assert (await engine.run_batch(), engine.more) == (0, False)
    done = await pool.fetch("SELECT id FROM inbound WHERE status = 'done' AND id = ANY($1) "
                            "ORDER BY updated_at, id", [a1, b1, a2])
    assert [r["id"] for r in done] == [a1, b1, a2]


async def test_no_rule_and_empty_body(pool, make_engine) -> None:
    """Messages no rule matches (also without text) are done with outcome no_rule."""
    await add_mo(pool, [mo(A, "hello"), mo(B, None)])
    await drain(make_engine())
    assert await pool.fetchval("SELECT count(*) FROM inbound WHERE status = 'done'") == 2
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0


async def test_failed_batch_retries_only_the_failing_message(pool, make_engine) -> None:
    """1. a trigger refuses the reply to one message twice; 2. the batch is re-run per message:
    the others are applied at once; 3. the failing one retries with backoff, its number's next
    message waits for it, and both are applied in order once the trigger lets it through."""
    await set_rules(pool, [{"name": "echo", "actions": [
        {"type": "reply", "template": "re: {text}"}]}])
    ids = await add_mo(pool, [mo(A, "first"), mo(B, "other"), mo(A, "second")])
    await pool.execute(f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.inbound_id = {ids[0]}
             AND (SELECT attempts FROM inbound WHERE id = NEW.inbound_id) < 2 THEN
            RAISE EXCEPTION 'injected failure';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON outbound FOR EACH ROW EXECUTE FUNCTION refuse();
    """)
    engine = make_engine(retry_base_s=0.05, retry_max_s=0.05)
    assert await engine.run_batch() == 2  # A's first fails, B's applies
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM inbound WHERE id = $1",
                              ids[0])
    assert row["status"] == "queued" and row["attempts"] == 1
    assert "injected failure" in row["last_error"]
    assert [r["body"] for r in await outbound(pool)] == ["re: other"]
    for _ in range(50):
        await drain(engine)
        if await pool.fetchval("SELECT count(*) FROM inbound WHERE status = 'queued'") == 0:
            break
        await asyncio.sleep(0.06)
    assert [r["body"] for r in await outbound(pool)] == ["re: other", "re: first", "re: second"]


async def test_dead_after_max_attempts(pool, make_engine) -> None:
    """A message whose reply always fails ends dead after max_attempts; others go on."""
    await set_rules(pool, [{"name": "echo", "actions": [{"type": "reply", "template": "x"}]}])
    ids = await add_mo(pool, [mo(A, "boom"), mo(B, "fine")])
    await pool.execute(f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.inbound_id = {ids[0]} THEN RAISE EXCEPTION 'always'; END IF;
        RETURN NEW; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON outbound FOR EACH ROW EXECUTE FUNCTION refuse();
    """)
    engine = make_engine(max_attempts=3, retry_base_s=0.01, retry_max_s=0.01)
    for _ in range(100):
        await drain(engine)
        if await pool.fetchval("SELECT status FROM inbound WHERE id = $1", ids[0]) == "dead":
            break
        await asyncio.sleep(0.02)
    row = await pool.fetchrow("SELECT status, attempts FROM inbound WHERE id = $1", ids[0])
    assert (row["status"], row["attempts"]) == ("dead", 3)
    assert await pool.fetchval("SELECT status FROM inbound WHERE id = $1", ids[1]) == "done"


async def test_rule_change_applies_to_next_batch(pool, make_engine) -> None:
    """1. the engine applies a batch with rule v1; 2. another connection imports v2 (no NOTIFY
    needed by the engine); 3. the next batch replies with v2."""
    engine = make_engine()
    await set_rules(pool, [{"name": "r", "actions": [{"type": "reply", "template": "v1"}]}])
    await add_mo(pool, [mo(A, "x")])
    await drain(engine)
    await set_rules(pool, [{"name": "r", "actions": [{"type": "reply", "template": "v2"}]}])
    await add_mo(pool, [mo(B, "x")])
    await drain(engine)
    assert [r["body"] for r in await outbound(pool)] == ["v1", "v2"]


async def test_pauses_above_outbound_watermark(pool, make_engine) -> None:
    """1. the queue_stats snapshot says outbound holds 500 queued; 2. with a high watermark of
    100 the engine claims nothing; 3. once the snapshot drops below the low one it resumes."""
    await add_mo(pool, [mo(A, "x")])
    engine = make_engine(outbound_high_watermark=100, outbound_low_watermark=50)
    await pool.execute("INSERT INTO queue_stats (queue, status, depth) VALUES "
                       "('outbound', 'queued', 500)")
    assert await engine.run_batch() == 0
    assert engine.gate.paused
    await pool.execute("UPDATE queue_stats SET depth = 10")
    await asyncio.sleep(0.02)
    assert await engine.run_batch() == 1


async def test_replies_notify_outbound_once(pool, make_engine, db_url) -> None:
    """A batch with many replies sends one NOTIFY on the outbound channel."""
    got: list[str] = []
    marker = asyncio.Event()
    conn = await asyncpg.connect(db_url)
    await conn.add_listener(CHANNELS["outbound"], lambda *a: (
        marker.set() if a[3] == "test-marker" else got.append(a[2])))
    try:
        await set_rules(pool, [{"name": "r", "actions": [{"type": "reply", "template": "x"}]}])
        await add_mo(pool, [mo(f"+4477009{i:05d}", "x") for i in range(50)])
        assert await make_engine().run_batch() == 50
        # Positive control: notifications arrive in commit order, so once a marker sent after
        # the batch is heard, every notification of the batch has been heard too.
        await pool.execute("SELECT pg_notify($1, 'test-marker')", CHANNELS["outbound"])
        await asyncio.wait_for(marker.wait(), 10)
        assert got == [CHANNELS["outbound"]]
    finally:
        await conn.close()





async def test_default_watermark_pauses_when_the_snapshot_is_at_its_cap(pool, make_engine) -> None:
    """The snapshot counts queued rows only up to its cap (100,000). With the old default
    watermark equal to that cap and a strict `>`, the processor never paused, however deep
    outbound grew. 1. fill outbound with 100,500 queued rows; 2. refresh the real snapshot;
    3. an engine with the default `[processor]` watermark claims nothing."""
    defaults = ProcessorKeys()
    await pool.execute(
        "INSERT INTO outbound (source, from_addr, to_addr, body, category, status) "
        "SELECT 'api', 'X', '+447700900123', 'x', 'transactional', 'queued' "
        "FROM generate_series(1, 100500)")
    async with pool.acquire() as conn:
        await store.refresh_queue_stats(conn)
    await add_mo(pool, [mo(A, "x")])
    engine = make_engine(outbound_high_watermark=defaults.outbound_high_watermark,
                         outbound_low_watermark=None)
    assert await engine.run_batch() == 0
    assert engine.gate.paused

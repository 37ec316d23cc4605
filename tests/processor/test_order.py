"""Per-subscriber order with two processors, retries and injected failures (guarantee 7)."""

from __future__ import annotations

import asyncio

from smsgw.services.processor.engine import Engine

from .conftest import add_mo, mo, set_rules

NUMBERS, ROUNDS = 1000, 20
FAILING_ROUNDS = (0, 1, 5)  # these messages of the first FAILING_NUMBERS numbers fail once
FAILING_NUMBERS = 30


def number(n: int) -> str:
    return f"+4477009{n:05d}"


async def run_engine(engine: Engine, done: asyncio.Event) -> int:
    processed = 0
    while not done.is_set():
        n = await engine.run_batch()
        processed += n
        if n == 0:
            await asyncio.sleep(0.01)
    return processed


async def test_two_processors_keep_each_numbers_order(pool, make_engine) -> None:
    """1. 1,000 numbers x 20 messages, interleaved (round by round) in one queue;
    2. a trigger in the database refuses to finish chosen early messages on their first try
    (no mock: the real batch fails, is re-run per message, and those rows wait for a retry);
    3. a second trigger logs every message as it is applied and whether an earlier message of
    its number was still unfinished at that moment; 4. two engines drain the queue at once;
    5. no message was applied before an earlier one of its number — including while that one
    waited for its retry — every message got its reply, and replies are in order per number."""
    await set_rules(pool, [{"name": "echo", "actions": [
        {"type": "reply", "template": "{text}"}]}])
    await add_mo(pool, [mo(number(n), str(k)) for k in range(ROUNDS) for n in range(NUMBERS)])
    await pool.execute(f"""
        CREATE TABLE applied_log (seq bigserial PRIMARY KEY, inbound_id bigint,
                                  from_addr text, earlier_unfinished boolean);
        CREATE FUNCTION log_applied() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO applied_log (inbound_id, from_addr, earlier_unfinished)
          VALUES (NEW.id, NEW.from_addr, EXISTS (
              SELECT 1 FROM inbound e WHERE e.from_addr = NEW.from_addr AND e.id < NEW.id
                 AND e.status <> 'done'));
          RETURN NULL;
        END $$;
        CREATE TRIGGER log_applied AFTER UPDATE ON inbound FOR EACH ROW
          WHEN (NEW.status = 'done' AND OLD.status = 'queued') EXECUTE FUNCTION log_applied();
        CREATE FUNCTION refuse_first_try() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF OLD.attempts = 0 AND NEW.body::int IN {FAILING_ROUNDS}
             AND right(NEW.from_addr, 5)::int < {FAILING_NUMBERS} THEN
            RAISE EXCEPTION 'injected transient failure';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_first_try BEFORE UPDATE ON inbound FOR EACH ROW
          WHEN (NEW.status = 'done') EXECUTE FUNCTION refuse_first_try();
    """)
    done = asyncio.Event()
    workers = [asyncio.create_task(run_engine(make_engine(), done)) for _ in range(2)]
    try:
        async with asyncio.timeout(60):
            while await pool.fetchval(  # noqa: ASYNC110
                    "SELECT count(*) FROM inbound WHERE status <> 'done'") > 0:
                await asyncio.sleep(0.1)
    finally:
        done.set()
        counts = await asyncio.gather(*workers)
    assert all(c > 0 for c in counts), counts  # both processors did work
    total = NUMBERS * ROUNDS
    assert await pool.fetchval("SELECT count(*) FROM applied_log") == total
    assert await pool.fetchval(
        "SELECT count(*) FROM applied_log WHERE earlier_unfinished") == 0
    # applied order per number == arrival order (the log's seq follows commit order)
    assert await pool.fetchval("""
        SELECT count(*) FROM (
          SELECT inbound_id, lag(inbound_id) OVER (PARTITION BY from_addr ORDER BY seq) AS prev
            FROM applied_log) x WHERE prev > inbound_id""") == 0
    retried = await pool.fetchval("SELECT count(*) FROM inbound WHERE attempts = 1")
    assert retried == len(FAILING_ROUNDS) * FAILING_NUMBERS  # each failed once, then applied
    assert await pool.fetchval("SELECT count(*) FROM inbound WHERE attempts > 1") == 0
    # one reply per message, and each number's replies were queued in order
    assert await pool.fetchval("SELECT count(*) FROM outbound") == total
    assert await pool.fetchval("""
        SELECT count(*) FROM (
          SELECT body::int AS k, lag(body::int) OVER (PARTITION BY to_addr ORDER BY id) AS prev
            FROM outbound) x WHERE prev >= k""") == 0

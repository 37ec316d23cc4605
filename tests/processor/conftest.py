"""Helpers for the processor tests: MO rows, rule import, an engine on the test database."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from smsgw.services.processor import rules_cli
from smsgw.services.processor.engine import Engine
from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.processor.options import ProcessorKeys
from smsgw.services.processor.rules import parse_rules
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import store

SHORT = "80080"
# The suppression hasher of the tests' server secret (the daemons derive theirs the same way).
HASHER = NumberHasher.from_secret("test-server-secret")


def mo(from_addr: str, body: str, to: str = SHORT, **kw: Any) -> dict[str, Any]:
    """One inbound row as intake stores it (numbers already E.164)."""
    return {"channel": "smpp", "provider": "smsc-a", "connector": "smsc-a",
            "from_addr": from_addr, "to_addr": to, "body": body, **kw}


async def add_mo(pool: asyncpg.Pool, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Enqueue inbound rows in one statement; return their ids in order."""
    return [r.id for r in await store.enqueue(pool, "inbound", list(rows))]


async def set_rules(pool: asyncpg.Pool, rules: list[dict[str, Any]], actor: str = "test") -> None:
    """Replace the stored rules with `rules` (validated like `smsgw rules import --replace`)."""
    async with pool.acquire() as conn:
        await rules_cli.import_rules(conn, parse_rules(rules), actor=actor, replace=True)


async def drain(engine: Engine, max_batches: int = 1000) -> int:
    """Run batches until nothing is due; return the rows processed."""
    total = 0
    for _ in range(max_batches):
        n = await engine.run_batch()
        if n == 0:
            return total
        total += n
    raise AssertionError("queue did not drain")


@pytest.fixture
def settings() -> ProcessorKeys:
    """Processor settings for tests: small retries, flood control off unless a test sets it."""
    return ProcessorKeys(batch=100, flood_max=0, retry_base_s=0.05, retry_max_s=0.2,
                         queue_stats_s=0.01)


@pytest.fixture
def make_engine(pool: asyncpg.Pool, settings: ProcessorKeys) -> Callable[..., Engine]:
    """Build an engine on the test pool (each with its own registry)."""

    def build(**overrides: Any) -> Engine:
        s = settings.model_copy(update=overrides) if overrides else settings
        return Engine(pool, s, hasher=HASHER,
                      metrics=ProcessorMetrics.create(CollectorRegistry()))

    return build

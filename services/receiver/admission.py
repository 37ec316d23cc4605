"""Admission control: each intake checks its own queue in the depth/age snapshot.

docs/ARCHITECTURE.md "Backpressure, end to end": the MT API pairs with `outbound`, MO (HTTP and
SMPP) with `inbound`, receipts only with `receipts` — never refuse receipts because outbound is
deep, that
starts SMSC retry storms. Above a queue's high watermark, or when its oldest queued row is older
than `<queue>_max_queued_age_s`, intake is refused (HTTP 503 + Retry-After, SMPP the connector's
transient status). The numbers come from the `queue_stats` snapshot that one instance refreshes
every few hundred milliseconds (`shared.runtime.daemon`); `read` re-reads it on a timer, so a
request costs a dict lookup, never a COUNT.

The MT API is fair across accounts. Its watermark counts DUE rows only (`outbound_account_depth`,
refreshed with queue_stats: messages scheduled ahead and retries waiting out a backoff do not
count), and each account may hold at most its share of it: `account_high_watermark` when set,
else max(outbound_high_watermark // (n + 1), account_watermark_floor) with n the number of
accounts holding due MTs — the +1 keeps room for an account that has none yet. An account over
its share gets 503 (`account_watermark`) while the others keep going until the global
watermark. Rows without an account (rule replies) count only towards the global figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from smsgw.services.receiver.options import ReceiverOptions
from smsgw.shared.queue import store

log = structlog.get_logger("receiver.admission")
# A snapshot nobody has refreshed for this long is ignored (fail open): a dead refresher must
# not keep refusing intake on numbers from the past. The database being down is caught at
# commit time anyway.
STALE_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Depth and oldest queued age of one queue, as of the snapshot's own time."""

    depth: int
    oldest_age_s: float


class Admission:
    """Decides, from the last snapshot, whether an intake may take more work."""

    def __init__(self, options: ReceiverOptions, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._options = options
        self._clock = clock
        self._queues: dict[str, QueueSnapshot] = {}
        self._due: dict[int, int] | None = None  # account → due MTs; None until first read
        self._due_total = 0
        self._active_accounts = 0  # accounts (not 0) with due MTs
        self.updated_at: datetime | None = None
        self._fresh_at = clock()  # local time the snapshot last changed

    def update_options(self, options: ReceiverOptions) -> None:
        """Apply reloaded watermarks."""
        self._options = options

    async def read(self, conn: asyncpg.Connection) -> None:
        """Re-read the `queue_stats` snapshot (a periodic job, every `stats_read_s`)."""
        queues: dict[str, QueueSnapshot] = {}
        newest = self.updated_at
        for stat in await store.read_queue_stats(conn):
            if stat.status != "queued":
                continue
            age = (stat.updated_at - stat.oldest_at).total_seconds() if stat.oldest_at else 0.0
            queues[stat.queue] = QueueSnapshot(stat.depth, max(0.0, age))
            newest = stat.updated_at if newest is None else max(newest, stat.updated_at)
        if newest != self.updated_at:
            self.updated_at = newest
            self._fresh_at = self._clock()
        self._queues = queues
        self._set_due(await store.read_account_depth(conn))

    def _set_due(self, due: dict[int, int]) -> None:
        self._due = due
        self._due_total = sum(due.values())
        self._active_accounts = sum(1 for a, n in due.items() if a != 0 and n > 0)

    def set_account_depth(self, due: dict[int, int]) -> None:
        """Set the per-account due MTs directly (tools and tests that have no refresher)."""
        self._set_due(dict(due))
        self._fresh_at = self._clock()

    def account_limit(self, account_id: int) -> int:
        """How many due MTs the account may hold before it is refused (see the docstring)."""
        opts = self._options
        if opts.account_high_watermark is not None:
            return opts.account_high_watermark
        n = self._active_accounts
        if self._due is None or self._due.get(account_id, 0) <= 0:
            n += 1  # the account would become one more
        return max(opts.outbound_high_watermark // (n + 1), opts.account_watermark_floor)

    def check_account(self, account_id: int) -> str | None:
        """None when the account may submit more MTs, else the rejection reason."""
        if self._due is None or self._clock() - self._fresh_at > STALE_AFTER_S:
            return None
        own = self._due.get(account_id, 0)
        if own > 0 and own >= self.account_limit(account_id):
            return "account_watermark"
        return None

    def set_snapshot(self, queue: str, depth: int, oldest_age_s: float = 0.0) -> None:
        """Set one queue's numbers directly (tools and tests that have no refresher)."""
        self._queues[queue] = QueueSnapshot(depth, oldest_age_s)
        self._fresh_at = self._clock()

    def check(self, queue: str) -> str | None:
        """None when `queue` may take more, else the rejection reason (a metric label)."""
        snap = self._queues.get(queue)
        if snap is None or self._clock() - self._fresh_at > STALE_AFTER_S:
            return None
        opts = self._options
        depth = snap.depth
        # Receipts wait for matching on purpose (run_after in the future): depth only.
        if queue == "outbound":
            watermark, max_age = opts.outbound_high_watermark, opts.outbound_max_queued_age_s
            if self._due is not None:
                depth = self._due_total  # rows scheduled ahead do not count
        elif queue == "inbound":
            watermark, max_age = opts.inbound_high_watermark, opts.inbound_max_queued_age_s
        elif queue == "receipts":
            watermark, max_age = opts.receipts_high_watermark, None
        else:
            watermark, max_age = None, None
        if watermark is not None and depth >= watermark:
            return f"{queue}_watermark"
        if max_age is not None and snap.oldest_age_s > max_age:
            return f"{queue}_age"
        return None

"""Per-account rate limit that holds across receiver instances, without a query per request.

Counts are kept per account per window (1 s, or 1/rate for rates below 1/s) in the UNLOGGED
table `account_rate_windows` (migration 0003). Each instance decides locally from the last
global count it read plus what it admitted since, and every `sync_s` (~200 ms) adds its local
count to the shared row and reads the global total back (one upsert and one select for all
active accounts). So a request costs a dict lookup; the limit holds across instances up to what
the others admit within one sync interval (at most the remaining allowance per instance and
window). Over the limit the API answers 429 with `Retry-After` (429 means only this).
An account without its own rate gets `[receiver] default_account_rate` (50/s unless set).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import asyncpg

# add_rate_counts: add each instance-local count to the shared window rows; return totals.
ADD_RATE_COUNTS = """
INSERT INTO account_rate_windows (account_id, window_start, count)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[])
ON CONFLICT (account_id, window_start)
DO UPDATE SET count = account_rate_windows.count + EXCLUDED.count
RETURNING account_id, window_start, count
"""

# read_rate_counts: the shared totals of the given accounts' current windows.
READ_RATE_COUNTS = """
SELECT account_id, window_start, count FROM account_rate_windows
 WHERE account_id = ANY($1::bigint[]) AND window_start >= $2
"""

# purge_rate_windows: drop windows older than $1 (unix seconds).
PURGE_RATE_WINDOWS = "DELETE FROM account_rate_windows WHERE window_start < $1"

def window_limit(rate_per_s: float) -> int:
    """Messages one rate window admits (also the most one request may carry)."""
    if math.isinf(rate_per_s):
        return 2**31 - 1
    return max(1, int(rate_per_s * max(1.0, 1.0 / rate_per_s)))


ACTIVE_FOR_S = 10.0  # keep reading an account's global count this long after its last request
PURGE_EVERY_S = 30.0


class AccountRateLimiter:
    """See the module docstring. `clock` returns unix seconds (injected in tests)."""

    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._clock = clock
        self._global: dict[tuple[int, int], int] = {}  # (account, window_start) → shared count
        self._local: dict[tuple[int, int], int] = {}  # admitted here, not yet synced
        self._active: dict[int, float] = {}  # account → last request time
        self._last_purge = 0.0

    def try_acquire(self, account_id: int, rate_per_s: float | None, n: int = 1) -> float | None:
        """Admit `n` messages for the account now: None if allowed, else seconds to wait.
        `rate_per_s` None or infinite (`smsgw accounts update NAME --rate unlimited`): no limit."""
        if rate_per_s is None or math.isinf(rate_per_s) or rate_per_s <= 0:
            return None
        now = self._clock()
        window_s = max(1.0, 1.0 / rate_per_s)
        limit = max(1, int(rate_per_s * window_s))
        start = int(now // window_s * window_s)
        key = (account_id, start)
        self._active[account_id] = now
        used = self._global.get(key, 0) + self._local.get(key, 0)
        if used + n > limit:
            return max(1.0, math.ceil(start + window_s - now)) if n <= limit else window_s
        self._local[key] = self._local.get(key, 0) + n
        return None

    async def sync(self, conn: asyncpg.Connection | None = None) -> None:
        """Push local counts, pull the global totals of active accounts (a periodic job)."""
        if conn is None:
            async with self._pool.acquire() as c:
                await self._sync(c)
        else:
            await self._sync(conn)

    async def _sync(self, conn: asyncpg.Connection) -> None:
        now = self._clock()
        pending, self._local = self._local, {}
        try:
            if pending:
                keys = list(pending)
                rows = await conn.fetch(ADD_RATE_COUNTS, [k[0] for k in keys],
                                        [k[1] for k in keys], [pending[k] for k in keys])
                for r in rows:
                    self._global[(r["account_id"], r["window_start"])] = r["count"]
        except BaseException:
            for k, v in pending.items():  # not lost: pushed on the next sync
                self._local[k] = self._local.get(k, 0) + v
            raise
        self._active = {a: t for a, t in self._active.items() if now - t < ACTIVE_FOR_S}
        if self._active:
            oldest = int(now) - 3600  # the longest window (rate ≥ 1/3600 s) still current
            rows = await conn.fetch(READ_RATE_COUNTS, list(self._active), oldest)
            self._global = {(r["account_id"], r["window_start"]): r["count"] for r in rows}
        else:
            self._global = {}
        if now - self._last_purge > PURGE_EVERY_S:
            self._last_purge = now
            await conn.execute(PURGE_RATE_WINDOWS, int(now) - 7200)

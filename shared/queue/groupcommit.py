"""Group commit: coalesce concurrent writes into one transaction; answer each when durable.

Every HTTP request and every `deliver_sm` the receiver takes must be committed before it is
acknowledged (docs/ARCHITECTURE.md, guarantee 1). One transaction per message costs one WAL flush
per message — a few hundred to a few thousand per second with fsync on. Group commit pays one flush
for many: callers `await committer.submit(item)`; a small set of flush workers each take
everything pending (up to `max_batch`), write it with the caller-supplied `flush` function
(one multi-row INSERT and one NOTIFY per table) inside one transaction, commit, then resolve
every caller's future. Under light load a flush holds one item (no added latency); under heavy
load the batches grow by themselves while the previous flush commits.

`max_inflight` flushers run at once, so one batch fills while another commits (commit latency
overlaps with the next batch's collection); a flusher that finds few items while another is
committing lingers up to `linger_s` to let the batch fill.

Adaptive linger (`adaptive_linger_s`): at a steady moderate rate (hundreds to a few thousand
items a second) the flushes never overlap, so without it every item pays a whole transaction
and WAL flush of its own. The committer keeps a moving average of the time between arrivals;
when at least two more items are expected within `adaptive_linger_s`, a flusher that finds a
short batch waits for about `target_batch` arrivals (never longer than `adaptive_linger_s`)
before it writes. When quiet (arrivals further apart) it writes at once, so a lone item never
waits; when the arrivals stop (a closed-loop client waiting for its answers) the wait is only
a few arrival intervals long. `max_pending` bounds the buffer:
past it `submit` raises `IntakeFull` at once (the caller answers "retry later"), it never
queues without limit.

Errors: a flush that cannot reach the database fails its whole batch with `DatabaseUnavailable`
(callers answer 503 / a transient SMPP status). A caller waits at most `commit_wait_s` for its
commit (a primary that stopped answering without closing its connections would otherwise hold
it for the whole `command_timeout`): then it gets `DatabaseUnavailable` too, its items still
waiting in the buffer are withdrawn (never written), and items already in a flush may still
commit — unacknowledged, which a client's retry with the same `client_ref` stores once. Any
other database error in a batch of several items is retried item by item, so one poisoned item
cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg
import structlog

from smsgw.shared.core.db import CONNECTION_ERRORS
from smsgw.shared.core.errors import DatabaseUnavailable, SmsGatewayError

T = TypeVar("T")
R = TypeVar("R")

FlushFn = Callable[[asyncpg.Connection, Sequence[T]], Awaitable[Sequence[R]]]
CommitObserver = Callable[[int, float], None]

log = structlog.get_logger("groupcommit")
# How long a caller waits for its commit before answering "retry later": below the patience
# of the clients (HTTP applications, an SMSC waiting for deliver_sm_resp), so that a primary
# that stopped answering gets a 503 / transient status, never a hang or a client timeout.
COMMIT_WAIT_S = 10.0


class IntakeFull(SmsGatewayError):
    """The committer's pending buffer is full: answer 'retry later'."""


class IntakeClosed(SmsGatewayError):
    """The committer is draining for shutdown and takes no new items."""


class GroupCommitter(Generic[T, R]):
    """Batch concurrent `submit` calls into shared transactions; see the module docstring."""

    def __init__(self, pool: asyncpg.Pool, flush: FlushFn[T, R], *, name: str,
                 max_batch: int = 500, max_inflight: int = 2, max_pending: int = 20000,
                 linger_s: float = 0.001, acquire_timeout_s: float = 2.0,
                 on_commit: CommitObserver | None = None, transactional: bool = True,
                 commit_wait_s: float = COMMIT_WAIT_S,
                 adaptive_linger_s: float = 0.0, target_batch: int = 8) -> None:
        """`flush(conn, items)` writes the items and returns one result per item, in order.

        With `transactional` (the default) the committer wraps each flush in a transaction;
        with False the flush manages its own (e.g. one autocommitted statement, which saves
        the BEGIN and COMMIT round trips). Either way the flush has committed when it
        returns. `on_commit(rows, seconds)` observes each committed batch.
        `adaptive_linger_s` > 0 turns on the adaptive linger (module docstring)."""
        self._pool = pool
        self._flush = flush
        self.name = name
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._max_pending = max_pending
        self._linger_s = linger_s
        self._acquire_timeout_s = acquire_timeout_s
        self._on_commit = on_commit
        self._transactional = transactional
        self._commit_wait_s = commit_wait_s
        self._adaptive_linger_s = adaptive_linger_s
        self._target_batch = max(1, min(target_batch, max_batch))
        self._gap_s = 1.0  # moving average of the time between arrivals (per item)
        self._last_arrival = 0.0
        self._lingering = False  # one flusher at a time lets a batch fill
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        # (deadline, futures) of each submit, in deadline order (commit_wait_s is fixed), and
        # one timer for the oldest: an asyncio.timeout per submit cost ~4 µs of each request
        self._deadlines: deque[tuple[float, list[asyncio.Future[R]]]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._closing = False
        self._workers: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        """Items waiting for a flush (not counting those being flushed)."""
        return len(self._pending)

    def start(self) -> None:
        """Start the flush workers (call from inside the running loop)."""
        for i in range(self._max_inflight):
            self._workers.append(asyncio.create_task(
                self._run_worker(), name=f"groupcommit.{self.name}.{i}"))

    async def close(self, timeout_s: float = 10.0) -> None:
        """Refuse new items, flush what is pending (within `timeout_s`), stop the workers."""
        self._closing = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._pending or self._inflight:
                    self._idle.clear()
                    self._wake.set()
                    await self._idle.wait()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        while self._pending:  # left over after the deadline: tell the callers, do not drop
            _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(IntakeClosed(f"{self.name}: shutting down"))

    async def submit(self, item: T) -> R:
        """Queue one item and wait until it is committed; return its flush result."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Queue several items (they may share a batch) and wait until all are committed."""
        if self._closing:
            raise IntakeClosed(f"{self.name}: shutting down")
        if len(self._pending) + len(items) > self._max_pending:
            raise IntakeFull(f"{self.name}: {len(self._pending)} items pending")
        loop = asyncio.get_running_loop()
        if self._adaptive_linger_s:
            now = loop.time()
            gap = min(now - self._last_arrival, 1.0) / len(items)
            self._last_arrival = now
            self._gap_s += (gap - self._gap_s) * 0.25
        futures: list[asyncio.Future[R]] = []
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            self._pending.append((item, fut))
            futures.append(fut)
        if len(self._pending) >= (self._target_batch if self._adaptive_linger_s
                                  else self._max_batch):
            self._batch_ready.set()
        self._wake.set()
        self._watch(loop, futures)
        if len(futures) == 1:
            return [await futures[0]]
        # gather keeps waiting for the others if one fails; the first error is raised after.
        results = await asyncio.gather(*futures, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def _watch(self, loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future[R]]) -> None:
        """Give `futures` `commit_wait_s` to be answered (see `_expire`)."""
        deadlines = self._deadlines
        while deadlines:  # forget the oldest ones once answered
            done = deadlines[0][1]
            if not (done[0].done() if len(done) == 1 else all(f.done() for f in done)):
                break
            deadlines.popleft()
        deadlines.append((loop.time() + self._commit_wait_s, futures))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadlines[0][0], self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer of the oldest deadline: every submit whose `commit_wait_s` has passed
        without its commit gets `DatabaseUnavailable` — its items still in the buffer are
        withdrawn (a flush skips a future that is done), those in a flush may still commit
        (their result is ignored); then the timer is set for the next deadline."""
        self._watchdog = None
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, futures = deadlines[0]
            waiting = [f for f in futures if not f.done()]
            if waiting and deadline > now:
                break
            deadlines.popleft()
            if waiting:
                log.warning("group_commit_wait_timeout", committer=self.name,
                            rows=len(waiting), wait_s=self._commit_wait_s)
                for fut in waiting:
                    fut.set_exception(DatabaseUnavailable(
                        f"{self.name}: no commit within {self._commit_wait_s:g}s"))
        if deadlines:
            self._watchdog = loop.call_at(deadlines[0][0], self._expire, loop)

    async def _run_worker(self) -> None:
        while True:
            if not self._pending:
                if self._inflight == 0:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            linger = self._adaptive_wait()
            if linger and self._lingering:
                # another flusher is already letting this batch fill: splitting it between
                # two lingering flushers would halve it
                self._wake.clear()
                await self._wake.wait()
                continue
            if linger:
                self._lingering = True
                self._batch_ready.clear()
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._batch_ready.wait(), linger)
                finally:
                    self._lingering = False
                if not self._pending:
                    continue
            elif (self._inflight > 0 and len(self._pending) < self._max_batch
                  and self._linger_s):
                # Another flush is committing: let this batch fill a little instead of
                # committing a handful of rows right behind it.
                self._batch_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), self._linger_s)
                if not self._pending:
                    continue
            batch = [self._pending.popleft()
                     for _ in range(min(self._max_batch, len(self._pending)))]
            # withdrawn by a caller whose commit_wait_s passed: never written
            batch = [entry for entry in batch if not entry[1].done()]
            if not batch:
                continue
            self._inflight += 1
            try:
                await self._flush_batch(batch)
            finally:
                self._inflight -= 1

    def _adaptive_wait(self) -> float:
        """Seconds to let a short batch fill before writing it (0: write now)."""
        if not self._adaptive_linger_s or self._closing:
            return 0.0
        missing = self._target_batch - len(self._pending)
        gap = self._gap_s
        if missing <= 0 or 2 * gap > self._adaptive_linger_s:
            return 0.0  # full enough, or quiet: a lone item does not wait
        return min(self._adaptive_linger_s, missing * gap)

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        started = time.perf_counter()
        try:
            results = await self._write(items)
        except asyncio.CancelledError:
            _fail_all(batch, IntakeClosed(f"{self.name}: shutting down"))
            raise
        except CONNECTION_ERRORS as exc:
            log.warning("group_commit_db_unavailable", committer=self.name, rows=len(items),
                        error=type(exc).__name__)
            _fail_all(batch, DatabaseUnavailable(f"{self.name}: {type(exc).__name__}"))
            return
        except asyncpg.PostgresError as exc:
            if len(batch) == 1:
                log.error("group_commit_item_failed", committer=self.name,
                          error=type(exc).__name__, detail=str(exc))
                _fail_all(batch, exc)
                return
            # One bad item must not fail the others: retry each alone.
            log.warning("group_commit_batch_split", committer=self.name, rows=len(items),
                        error=type(exc).__name__)
            for one in batch:
                await self._flush_batch([one])
            return
        except Exception as exc:  # a bug in a flush function: fail the batch, keep the worker
            log.exception("group_commit_flush_crashed", committer=self.name)
            _fail_all(batch, exc)
            return
        if self._on_commit is not None:
            self._on_commit(len(items), time.perf_counter() - started)
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def _write(self, items: list[T]) -> Sequence[R]:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            if self._transactional:
                async with conn.transaction():
                    results = await self._flush(conn, items)
            else:
                results = await self._flush(conn, items)
        if len(results) != len(items):
            raise RuntimeError(f"{self.name}: flush returned {len(results)} results "
                               f"for {len(items)} items")
        return results


def _fail_all(batch: Sequence[tuple[object, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)

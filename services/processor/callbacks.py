"""Delivery of the `callbacks` queue to applications: forwarded MO and MT status reports.

Lease claims (docs/ARCHITECTURE.md, guarantee 3): a claim takes at most the free concurrency, marks
the rows `sending` with our lease, and every write-back is fenced by `lease_owner`, so a late
result never overwrites a row another instance took over after our lease expired
(`lease_s` > `timeout_s`, checked by the settings). Expired leases of dead instances are
reclaimed by the claim itself.

Each request:
- URL guard at send time (`shared.domain.urlguard`): `check_url` refuses non-http(s),
  credentials and hosts that are (once IDNA-mapped as the client maps them) non-public
  addresses outside `[webhooks] allowed_networks`; the HTTP client
  (`shared.runtime.httpclient`) resolves names itself and dials only the addresses the policy
  allows (DNS rebinding), IP literals checked the same way. A refused URL is permanent: the
  row ends `dead` at once.
- redirects are not followed (a 3xx is "not 2xx": retried, then dead);
- bounded concurrency: `concurrency` rows in flight in this process, `per_host` per host (a
  semaphore per host, taken before the request's timeout starts, so waiting for a slow host's
  slot never times a request out);
- signed when the row has a `secret_ref` ('account:<id>' -> the account's callback secret,
  derived from the server secret and `accounts.callback_secret_generation`, never stored;
  'rule:<id>:<action>' -> the forward action's `secret_env`): headers
  `X-Smsgw-Timestamp: <unix>` and `X-Smsgw-Signature: sha256=<hex HMAC-SHA256(secret,
  "<ts>." + body)>` for a POST, and over `"<ts>." + path-and-query` (the request target as
  sent) for a Kannel-style GET, whose query carries the status (`shared.domain.callback_signing`).
  Every status callback has an account ref, so every one is signed; one whose secret cannot
  be resolved is retried, never sent unsigned;
- 2xx -> done; anything else (status, timeout, connection error) -> retry with exponential
  backoff and jitter (`retry_base_s` .. `retry_max_s`), dead after `max_attempts`. No response
  body convention is required of the application; the body is not read, except for a forward
  with `reply_from_body` (below).

Replies from the body (a forward whose row carries a `reply` snapshot, migration 0012): the
answer's body (at most the action's `max_body_bytes`, sent with `Accept-Encoding: identity`;
a larger one ends the row `dead` at once, as a failed delivery, since asking again would make
the application handle the MO twice) becomes the reply MT(s) as a Kannel sms-service's does
(`kannel_reply.build`: max-messages, omit-empty, X-Kannel headers, charset, split). The reply
rows are written in the transaction that marks the callback done, and only for rows this
instance still held (`store.update_many` returns them): a late answer after another instance
took the row over writes no reply. Each reply row also takes the dedupe key
`reply` / `callback:<callback id>:<part>`, so a callback answered twice (a re-run after a lost
commit acknowledgement, a requeue) still makes exactly one reply. A retry after a timeout or
an error status never replies for the failed attempt: only the attempt that succeeds does.
Replies go to `outbound` like the rules' auto-replies (source 'rule', the rule's id and
category, the recipient's keyed hash for the sender's suppression check).

Batched forwards: rows a forward action marked `batch_max` > 1 that were claimed together and
go to the same URL with the same secret are sent as ONE POST whose body is the JSON array of
their objects (`X-Smsgw-Batch: <count>`, one signature over the array); the request's outcome
applies to every row in it. An application answering one HTTP request per MO costs the
processor one HTTP request each (keep-alive, `shared.runtime.httpclient`); a batch spreads
that over its rows.

Results are written back in batches (one statement per outcome kind per loop turn), not one
round trip per callback. In the processor daemon (`acks_ride`) plain successes wait up to
`ACK_RIDE_S` for the next inbound batch to acknowledge them in its own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
import structlog
from yarl import URL

from smsgw.services.processor import kannel_reply
from smsgw.services.processor.kannel_reply import Answer, ReplyPlan
from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.processor.options import CallbackSettings
from smsgw.shared.core.db import DATABASE_ERRORS
from smsgw.shared.domain.callback_signing import account_secret, request_target, sign
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.domain.urlguard import AddressPolicy, UnsafeAddress, UnsafeUrl, check_url
from smsgw.shared.queue import store
from smsgw.shared.queue.records import Callback, DedupeKey
from smsgw.shared.runtime.httpclient import HttpClient
from smsgw.shared.runtime.metrics import smsgw_version
from smsgw.shared.smpp.fields import TlvCatalog

log = structlog.get_logger("smsgw.processor.callbacks")

ACCOUNT_SECRETS: Final = """
-- account_secrets: the callback secret generations of the accounts $1 (secrets are derived)
SELECT id, callback_secret_generation FROM accounts WHERE id = ANY($1::int8[])
"""
RULE_ACTIONS: Final = """
-- rule_actions: the actions of rules $1 (forward secrets are named there)
SELECT id, actions FROM rules WHERE id = ANY($1::int8[])
"""
STATEMENTS: Final = {"account_secrets": ACCOUNT_SECRETS, "rule_actions": RULE_ACTIONS}


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one delivery attempt."""

    id: int
    kind: str
    outcome: str  # done, retry, refused, failed (dead at once: refused and failed)
    error: str | None = None
    reply: ReplyPlan | None = None  # a `reply_from_body` forward answered 2xx


ACK_RIDE_S: Final = 0.05
"""How long plain successes (2xx, no reply) wait to be acknowledged in the processor's next
inbound batch (`take_acks`: `engine.finish_batch` marks them done in that batch's own
statement and commit) before the delivery loop acknowledges them itself. At a few MO a second
and more a batch comes within that time: one statement and one commit (a WAL flush) less per
forwarded MO. Until either commits the rows stay leased to us: after a crash they are
delivered again when the lease expires (at-least-once, as after any crash between a request
and its write-back)."""

REPLY_DEDUPE_SCOPE: Final = "reply"
REPLY_DEDUPE_TTL_S: Final = 7 * 86400.0  # longer than any callback's retries


class SecretResolver:
    """Resolves `secret_ref`s of a claimed batch with at most two queries.

    `server_secret` (`[security] server_secret`) derives the accounts' callback secrets
    (`shared.domain.callback_signing.account_secret`); `env` holds the rules' `secret_env`
    variables.
    """

    def __init__(self, env: Mapping[str, str] | None = None, *,
                 server_secret: bytes | None = None) -> None:
        self.env = os.environ if env is None else env
        self.server_secret = server_secret

    async def resolve(self, conn: asyncpg.Pool | asyncpg.Connection,
                      refs: set[str]) -> dict[str, str | None]:
        """Map each ref to its secret, or None when it cannot be resolved (no server secret,
        a rule's `secret_env` that is not set, a rule or account that is gone): the call is
        then retried, never sent unsigned to an application that expects a signature."""
        accounts = {int(r.split(":")[1]) for r in refs if _is_ref(r, "account")}
        rules = {int(r.split(":")[1]) for r in refs if _is_ref(r, "rule")}
        out: dict[str, str | None] = dict.fromkeys(refs)
        if accounts and self.server_secret:
            for row in await conn.fetch(ACCOUNT_SECRETS, list(accounts)):
                out[f"account:{row['id']}"] = account_secret(
                    self.server_secret, row["id"], row["callback_secret_generation"])
        if rules:
            actions = {row["id"]: row["actions"] for row in
                       await conn.fetch(RULE_ACTIONS, list(rules))}
            for ref in refs:
                if _is_ref(ref, "rule"):
                    out[ref] = self._rule_secret(ref, actions)
        return out

    def _rule_secret(self, ref: str, actions: Mapping[int, Any]) -> str | None:
        parts = ref.split(":")
        found = actions.get(int(parts[1])) or []
        if len(parts) > 2 and parts[2].isdigit() and int(parts[2]) < len(found):
            candidates = [found[int(parts[2])]]
        else:
            candidates = [a for a in found if a.get("type") == "forward"]
        for action in candidates:
            env_name = action.get("secret_env")
            if env_name:
                return self.env.get(env_name)
        return None


def _is_ref(ref: str, kind: str) -> bool:
    parts = ref.split(":")
    return len(parts) >= 2 and parts[0] == kind and parts[1].isdigit()


class CallbackDelivery:
    """Claims callbacks with leases and delivers them (see the module docstring).

    `pool`, `settings`, `owner` (the lease owner name) and `allowed_networks` (`[webhooks]
    allowed_networks`; `set_allowed_networks` on reload) are injected; call
    `start()` inside the running loop (the HTTP session is opened there), `run(stop)` as a
    worker, and `release()` after the drain to give back leases still held. Replies from
    bodies need `hasher` (the recipients' keyed hashes), `connectors` (the names
    X-Kannel-SMSC may name) and `tlvs` (what X-Kannel-Meta-Data may set).
    """

    def __init__(self, pool: asyncpg.Pool, settings: CallbackSettings, *, owner: str,
                 allowed_networks: Iterable[Any] = (),
                 metrics: ProcessorMetrics | None = None,
                 secrets: SecretResolver | None = None, poll_s: float = 5.0,
                 hasher: NumberHasher | None = None, connectors: Iterable[str] = (),
                 tlvs: TlvCatalog | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.owner = owner
        self.hasher = hasher
        self.connectors = frozenset(connectors)
        self.tlvs = tlvs or TlvCatalog()
        self.policy = AddressPolicy(allowed_networks)
        self.metrics = metrics
        self.secrets = secrets or SecretResolver()
        self.poll_s = poll_s
        self.user_agent = f"smsgw/{smsgw_version()}"
        self._http: HttpClient | None = None
        self._tasks: set[asyncio.Task[list[Result]]] = set()
        self._ids: dict[asyncio.Task[list[Result]], list[int]] = {}
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._extended = time.monotonic()
        self._kick = asyncio.Event()  # `take` started requests the loop is not watching yet
        self._more = True  # the last claim was full (or none yet): claim again at once
        self._claim_due = True  # notified or timed out since the last claim
        # plain successes not acknowledged yet (ACK_RIDE_S), since when, and those handed to
        # the engine's batch in progress; `acks_ride` False: acknowledged at once
        self.acks_ride = False
        self._acks: list[Result] = []
        self._acks_since = 0.0
        self._riding: list[Result] = []

    async def start(self) -> None:
        """Open the HTTP client (keep-alive connections, at most `per_host` idle per host)."""
        s = self.settings
        self._http = HttpClient(self.policy, connect_timeout_s=s.connect_timeout_s,
                                timeout_s=s.timeout_s, max_idle_per_host=s.per_host)

    def set_allowed_networks(self, networks: Iterable[Any]) -> None:
        """Apply a new `[webhooks] allowed_networks` (SIGHUP) to the next connections; idle
        connections dialled under the old rule are closed."""
        self.policy.networks = AddressPolicy(networks).networks
        if self._http is not None:
            self._http.close_idle()

    async def close(self) -> None:
        """Close the HTTP client's idle connections."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def release(self) -> int:
        """Give every lease this owner still holds back to the queue (attempt not counted),
        after acknowledging the successes still waiting for it (never re-deliver those)."""
        await self._ack_pending(force=True)
        return await store.release(self.pool, "callbacks", self.owner)

    # -- acknowledgements riding on the engine's batches ----------------------------------------

    def take_acks(self) -> list[int]:
        """Hand the plain successes waiting for an acknowledgement to the engine's batch that
        is starting (their ids, fenced by our lease there); `acks_committed` tells how it
        ended."""
        self._riding, self._acks = self._riding + self._acks, []
        return [r.id for r in self._riding]

    def acks_committed(self, committed: bool) -> None:
        """The batch that took the acknowledgements committed (they are done), or not (they
        wait again, due at once)."""
        riding, self._riding = self._riding, []
        if committed:
            self._count(riding, set())
        elif riding:
            self._acks = riding + self._acks
            self._acks_since = 0.0
            self._kick.set()

    async def _ack_pending(self, *, force: bool) -> None:
        """Acknowledge the waiting successes ourselves once they waited `ACK_RIDE_S`."""
        if not self._acks or (not force and self._ack_wait() > 0):
            return
        acks, self._acks = self._acks, []
        try:
            await store.ack(self.pool, "callbacks", [r.id for r in acks], owner=self.owner)
        except BaseException:
            self._acks = acks + self._acks
            raise
        self._count(acks, set())

    def _ack_wait(self) -> float:
        """Seconds until the waiting successes are due (inf: none wait)."""
        if not self._acks:
            return float("inf")
        return self._acks_since + ACK_RIDE_S - time.monotonic()

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        """Deliver until `stop` is set, then finish what is in flight and write it back.

        Woken by `wake` (the listener's callbacks channel event), by a finished request, or
        every `poll_s` (retries whose run_after has come).
        """
        try:
            while not stop.is_set():
                await self._turn()
                if stop.is_set():
                    break
                if not self._more or len(self._tasks) >= self.settings.concurrency:
                    # the last claim took every due row: claim again only when notified
                    # (or by the timer), not after each finished request — at a moderate rate
                    # that was an empty claim per request
                    await self._wait(stop, wake)
            if self._tasks:
                await asyncio.wait(self._tasks)
        finally:
            await self._finish()

    async def _turn(self) -> int:
        """Write back finished results, then claim into the free capacity."""
        try:
            await self._flush()
            await self._ack_pending(force=False)
            await self._extend_leases()
            free = self.settings.concurrency - len(self._tasks)
            if free <= 0 or not (self._more or self._claim_due):
                return 0
            limit = min(free, self.settings.batch)
            claimed = await self.deliver_batch(limit)
            self._more = claimed >= limit
            self._claim_due = False
            return claimed
        except DATABASE_ERRORS as exc:
            # loop boundary: the database is away; results stay buffered, retry next turn
            log.warning("callbacks_turn_failed", error=str(exc)[:200])
            await asyncio.sleep(1.0)
            return 0

    async def _extend_leases(self) -> None:
        # A request may wait for its host's slot behind slow requests; keep the leases of
        # everything in flight alive so no other instance takes a row over meanwhile.
        now = time.monotonic()
        if not self._tasks or now - self._extended < self.settings.lease_s / 3:
            return
        self._extended = now
        await store.extend_lease(self.pool, "callbacks",
                                 [i for ids in self._ids.values() for i in ids],
                                 owner=self.owner, lease_s=self.settings.lease_s)

    async def _wait(self, stop: asyncio.Event, wake: asyncio.Event | None) -> None:
        """Wait for a notification, the timer, or finished requests worth writing back.

        A notification or the timer makes the next turn claim (the timer also serves retries
        whose run_after has come). Finished requests alone do not: after the first one
        finishes, the wait goes on while the others still running finish too (at most
        `settings.writeback_linger_s`), so one statement acknowledges a claim's worth of
        requests instead of one each."""
        if wake is not None and wake.is_set():  # notified while we worked: claim now
            wake.clear()
            self._claim_due = True
            return
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
        if wake is not None:
            waiters.add(asyncio.ensure_future(wake.wait()))
        self._kick.clear()
        kick = asyncio.ensure_future(self._kick.wait())
        timer = min(self.poll_s, self.settings.lease_s / 3)
        acks_due = max(self._ack_wait(), 0.0)
        try:
            done, _ = await asyncio.wait(waiters | self._tasks | {kick},
                                         timeout=min(timer, acks_due),
                                         return_when=asyncio.FIRST_COMPLETED)
            if (not done and acks_due >= timer) or done & waiters:
                self._claim_due = True
            elif done == {kick}:
                pass  # new requests from `take`: wait again, watching them too
            else:
                running = {t for t in self._tasks if not t.done()}
                if running and self.settings.writeback_linger_s > 0:
                    rest = asyncio.ensure_future(asyncio.wait(running))
                    try:
                        done, _ = await asyncio.wait(
                            waiters | {rest}, timeout=self.settings.writeback_linger_s,
                            return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        rest.cancel()  # stops waiting; the requests themselves go on
                    if done & waiters:
                        self._claim_due = True
        finally:
            for w in (*waiters, kick):
                w.cancel()
        if wake is not None and wake.is_set():
            wake.clear()

    async def _finish(self) -> None:
        # On cancellation (drain deadline) the unfinished requests are cancelled; their rows
        # stay leased to us and `release()` hands them back. Finished ones are written now.
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(*DATABASE_ERRORS):
            await self._flush()
            await self._ack_pending(force=True)

    @property
    def lease_s(self) -> float:
        """How long a claimed (or inserted-leased) row stays ours."""
        return self.settings.lease_s

    def free(self) -> int:
        """Requests this process may still start (the processor's forwards are inserted
        leased to it up to this many: `engine.write_plan`)."""
        return max(self.settings.concurrency - len(self._tasks), 0)

    async def take(self, rows: list[Callback]) -> None:
        """Start delivering rows already leased to us (forwards inserted leased)."""
        await self._start(rows)
        self._kick.set()  # the delivery loop watches the new requests too

    async def deliver_batch(self, limit: int) -> int:
        """Claim up to `limit` callbacks and start delivering them; return how many."""
        rows: list[Callback] = await store.claim_leased(
            self.pool, "callbacks", limit=limit, owner=self.owner,
            lease_s=self.settings.lease_s)
        if not rows:
            return 0
        await self._start(rows)
        return len(rows)

    async def _start(self, rows: list[Callback]) -> None:
        refs = {r.secret_ref for r in rows if r.secret_ref}
        secrets = await self.secrets.resolve(self.pool, refs) if refs else {}
        for group in batches(rows):
            first = group[0]
            secret = secrets.get(first.secret_ref or "")
            coro = (self._deliver_many(group, secret) if batchable(first)
                    else self._deliver(first, secret))
            task = asyncio.create_task(coro, name=f"processor.callback.{first.id}")
            self._tasks.add(task)
            self._ids[task] = [r.id for r in group]
        if self.metrics:
            self.metrics.callbacks_in_flight.set(len(self._tasks))

    # -- one request --------------------------------------------------------------------------

    def _host_slot(self, url: str) -> asyncio.Semaphore:
        host = (urlsplit(url).hostname or "").lower()
        sem = self._hosts.get(host)
        if sem is None:
            if len(self._hosts) > 10_000:  # bounded: drop idle hosts' semaphores
                self._hosts = {h: s for h, s in self._hosts.items() if s.locked()}
            sem = self._hosts[host] = asyncio.Semaphore(self.settings.per_host)
        return sem

    def _headers(self, row: Callback, secret: str | None, *,
                 body: bytes | None = None) -> dict[str, str]:
        headers = {str(k): str(v) for k, v in (row.headers or {}).items()}
        headers.setdefault("User-Agent", self.user_agent)
        ts = int(time.time())
        headers["X-Smsgw-Timestamp"] = str(ts)
        if secret:
            if body is not None:
                message = body
            elif row.method == "GET":  # no body: the query carries the data
                try:
                    message = request_target(row.url)
                except ValueError:  # not a URL: `_call` refuses it before any request
                    return headers
            else:
                message = row.body or b""
            headers["X-Smsgw-Signature"] = sign(secret, ts, message)
        return headers

    async def _deliver(self, row: Callback, secret: str | None) -> list[Result]:
        headers = self._headers(row, secret)
        if row.reply is not None:  # the body is read as it was sent (the session never decodes)
            headers["Accept-Encoding"] = "identity"
        return await self._call([row], row.body if row.method == "POST" else None, headers,
                                secret)

    async def _deliver_many(self, rows: list[Callback], secret: str | None) -> list[Result]:
        # One POST of the rows' JSON objects as an array (see `batches`); one signature.
        body = b"[" + b",".join(r.body or b"null" for r in rows) + b"]"
        headers = self._headers(rows[0], secret, body=body)
        headers["X-Smsgw-Batch"] = str(len(rows))
        return await self._call(rows, body, headers, secret)

    async def _call(self, rows: list[Callback], body: bytes | None, headers: dict[str, str],
                    secret: str | None) -> list[Result]:
        first = rows[0]
        try:
            check_url(first.url, allowed_networks=self.policy)
        except UnsafeUrl as exc:
            return _all(rows, "refused", f"url refused: {exc}")
        if first.secret_ref and secret is None:  # see SecretResolver.resolve
            return _all(rows, "retry", f"secret {first.secret_ref} unresolved")
        limit = _body_limit(first)
        async with self._host_slot(first.url):
            started = time.perf_counter()
            outcome, error, answer = await self._request(first.method, first.url, body, headers,
                                                         limit)
            if self.metrics:
                self.metrics.callback_duration.observe(time.perf_counter() - started)
        if outcome == "done" and answer is not None:
            return [self._reply(first, answer)]
        return _all(rows, outcome, error)

    def _reply(self, row: Callback, answer: Answer) -> Result:
        """The reply plan of a `reply_from_body` forward's answer (pure; written back later)."""
        try:
            plan = kannel_reply.build(row.reply, answer, callback_id=row.id,
                                      inbound_id=row.inbound_id, now=datetime.now(UTC),
                                      connectors=self.connectors, tlvs=self.tlvs)
        except ValueError as exc:  # a stored snapshot this release cannot read
            plan = ReplyPlan("refused", reason=f"reply settings invalid: {exc}"[:300])
        if plan.rows and self.hasher is None:
            plan = ReplyPlan("refused", reason="no server secret to hash the recipient",
                             denied=plan.denied)
        return Result(row.id, row.kind, "done", reply=plan)

    async def _request(self, method: str, url: str, body: bytes | None,
                       headers: dict[str, str], limit: int | None = None,
                       ) -> tuple[str, str | None, Answer | None]:
        """One HTTP attempt: (outcome, error, the answer when `limit` asks for its body)."""
        assert self._http is not None, "start() first"
        try:
            resp = await self._http.request(method, request_url(url), body, headers,
                                            read_limit=limit)
        except (UnsafeUrl, UnsafeAddress) as exc:  # the policy refused every address
            return "refused", f"url refused: {exc}"[:300], None
        except (TimeoutError, OSError) as exc:  # connection, TLS, protocol, timeout
            return "retry", f"{type(exc).__name__}: {exc}"[:300], None
        status = resp.status
        if 200 <= status < 300:
            if limit is None:
                return "done", None, None
            if resp.too_large or resp.body is None:
                return "failed", f"reply body larger than {limit} bytes", None
            return "done", None, Answer(status, resp.headers, resp.body)
        return "retry", f"HTTP {status}", None

    # -- write-back ---------------------------------------------------------------------------

    async def _flush(self) -> None:
        done = [t for t in self._tasks if t.done()]
        if not done:
            return
        results = [r for t in done if not t.cancelled() and t.exception() is None
                   for r in t.result()]
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.error("callback_task_crashed", error=repr(t.exception()))
        if self.acks_ride:  # plain successes wait for a batch to acknowledge them (ACK_RIDE_S)
            plain = [r for r in results if r.outcome == "done" and r.reply is None]
            if plain:
                if not self._acks:
                    self._acks_since = time.monotonic()
                self._acks += plain
                results = [r for r in results if r.outcome != "done" or r.reply is not None]
        await self.write_back(results)
        self._tasks.difference_update(done)
        for t in done:
            self._ids.pop(t, None)
        if self.metrics:
            self.metrics.callbacks_in_flight.set(len(self._tasks))

    async def write_back(self, results: list[Result]) -> None:
        """Record results fenced by our lease: done, retried (or dead at the limit), refused."""
        s = self.settings
        by_error: dict[str, list[Result]] = {}
        for r in results:
            if r.outcome == "retry":
                by_error.setdefault(r.error or "error", []).append(r)
        replied: list[Result] = []
        if not results:
            return
        if all(r.outcome == "done" and r.reply is None for r in results):
            # the common case, every request answered 2xx: one autocommitted statement (no
            # BEGIN/COMMIT round trips)
            await store.ack(self.pool, "callbacks", [r.id for r in results], owner=self.owner)
            self._count(results, set())
            return
        async with self.pool.acquire() as conn, conn.transaction():
            done = [r for r in results if r.outcome == "done" and r.reply is None]
            if done:
                await store.ack(conn, "callbacks", [r.id for r in done], owner=self.owner)
            replies = [r for r in results if r.outcome == "done" and r.reply is not None]
            if replies:
                replied = await self._write_replies(conn, replies)
            refused = [r for r in results if r.outcome in ("refused", "failed")]
            for r in refused:  # rare: one statement each keeps each error
                await store.fail(conn, "callbacks", [r.id], owner=self.owner, status="dead",
                                 error=r.error or "refused")
            dead: set[int] = set()
            for error, group in by_error.items():
                _, died = await store.retry(
                    conn, "callbacks", [r.id for r in group], owner=self.owner, error=error,
                    max_attempts=s.max_attempts, base_s=s.retry_base_s, cap_s=s.retry_max_s)
                dead.update(died)
            # Events for what went wrong only: a delivered callback's row already says `done`
            # (status, attempts, updated_at — what `smsgw trace` shows), and an events row for
            # it was one more INSERT per forwarded MO and per status callback.
            failures = [r for r in results if r.outcome != "done"]
            notes = [r for r in replied if r.reply and (r.reply.outcome != "queued"
                                                         or r.reply.denied)]
            if failures or notes:
                await store.log_events(conn, [
                    ("callbacks", r.id, _label(r, dead), {"error": r.error} if r.error else None)
                    for r in failures] + [
                    ("callbacks", r.id, f"reply_{r.reply.outcome}", r.reply.detail())
                    for r in notes if r.reply], "processor")
        self._count(results, dead)
        self._count_replies(replied)

    async def _write_replies(self, conn: asyncpg.Connection,
                             results: list[Result]) -> list[Result]:
        """Mark `results` done (fenced) and queue the replies of those we still held, each
        under its dedupe key; return the results whose row this write marked done."""
        acked = set(await store.update_many(conn, "callbacks",
                                            [(r.id, "done", None) for r in results],
                                            owner=self.owner))
        ours = [r for r in results if r.id in acked]
        rows: list[dict[str, Any]] = []
        keys: list[DedupeKey | None] = []
        for r in ours:
            assert r.reply is not None
            for part, row in enumerate(r.reply.rows):
                assert self.hasher is not None  # `_reply` refuses rows without one
                rows.append(row | {"to_hash": self.hasher(row["to_addr"])})
                keys.append(DedupeKey(scope=REPLY_DEDUPE_SCOPE, key=f"callback:{r.id}:{part}",
                                      ttl_s=REPLY_DEDUPE_TTL_S))
        if rows:
            await store.enqueue(conn, "outbound", rows, dedupe=keys, notify=True)
        return ours

    def _count_replies(self, results: list[Result]) -> None:
        for r in results:
            plan = r.reply
            if plan is None:
                continue
            if self.metrics:
                for row in plan.rows:
                    self.metrics.replies.labels(category=row["category"]).inc()
            if plan.outcome == "refused":
                log.warning("forward_reply_refused", callback_id=r.id, reason=plan.reason)
            elif plan.outcome == "omitted":
                log.info("forward_reply_omitted", callback_id=r.id, reason=plan.reason)
            if plan.denied:  # Kannel: "Tried to change …, denied."
                log.warning("forward_reply_headers_denied", callback_id=r.id,
                            headers=list(plan.denied))

    def _count(self, results: list[Result], dead: set[int]) -> None:
        counts: dict[tuple[str, str], int] = {}  # one labels() lookup per kind and outcome
        for r in results:
            label = _label(r, dead)
            counts[(r.kind, label)] = counts.get((r.kind, label), 0) + 1
            if label != "done":
                log.warning("callback_failed", callback_id=r.id, outcome=label,
                            error=(r.error or "")[:200])
        if self.metrics:
            for (kind, label), n in counts.items():
                self.metrics.callbacks.labels(kind=kind, outcome=label).inc(n)


def _all(rows: list[Callback], outcome: str, error: str | None) -> list[Result]:
    return [Result(r.id, r.kind, outcome, error) for r in rows]


_NOT_AS_IS = re.compile(r"[^\x21-\x7e]")  # a character a request line cannot carry as it is


def request_url(url: str) -> URL:
    """The URL as the request sends it: byte for byte when it is already fit for a request
    line (a rendered Kannel get-url or dlr-url says `%3F` and `%40` where yarl would write
    `?` and `@`; the application and a signature over the request target see what the
    template made), else quoted by yarl (a template with a space or non-ASCII text)."""
    return URL(url, encoded=_NOT_AS_IS.search(url) is None)


def _body_limit(row: Callback) -> int | None:
    """How much of the answer to read: a `reply_from_body` forward's `max_body_bytes`."""
    if row.reply is None:
        return None
    options = row.reply.get("options") or {}
    limit = options.get("max_body_bytes")
    return int(limit) if isinstance(limit, int) and limit > 0 else 65_536


def batchable(row: Callback) -> bool:
    """A JSON POST forward marked `batch_max` > 1: sent inside a JSON array, even alone, so
    the application that asked for batches always gets the same shape."""
    return (row.batch_max or 1) > 1 and row.method == "POST" and row.body is not None


def batches(rows: list[Callback]) -> list[list[Callback]]:
    """Group claimed rows into requests: batchable rows that go to the same URL with the same
    secret share a request, up to `batch_max` rows each, in claim order; every other row is a
    request of its own."""
    out: list[list[Callback]] = []
    open_groups: dict[tuple[str, str | None, int], list[Callback]] = {}
    for row in rows:
        if not batchable(row):
            out.append([row])
            continue
        limit = row.batch_max or 1
        key = (row.url, row.secret_ref, limit)
        group = open_groups.get(key)
        if group is None or len(group) >= limit:
            group = open_groups[key] = []
            out.append(group)
        group.append(row)
    return out


def _label(r: Result, dead: set[int]) -> str:
    if r.outcome == "done":
        return "done"
    if r.outcome == "refused":
        return "refused"
    if r.outcome == "failed":
        return "dead"
    return "dead" if r.id in dead else "retried"


async def deliver_until_idle(delivery: CallbackDelivery, *, timeout_s: float,
                             idle: Callable[[], Awaitable[bool]]) -> None:
    """Run a delivery loop until `idle()` is true (tests and the benchmark)."""
    stop = asyncio.Event()
    task = asyncio.create_task(delivery.run(stop), name="processor.callbacks.until_idle")
    try:
        async with asyncio.timeout(timeout_s):
            while not await idle():  # noqa: ASYNC110 - test/bench helper: polls the DB
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task

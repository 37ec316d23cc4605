"""Bearer-key authentication with a short in-process cache.

A request presents `Authorization: Bearer <key>`; the key's HMAC-SHA256 under the server
secret is looked up in `api_keys` (`shared.domain.apikeys`). Results are cached for `cache_s`
seconds, keyed by the presented key itself, so a busy client costs one dict lookup per request
(no HMAC: it was ~1.6 µs of each) and one HMAC and query per few seconds; a revoked key stops
working within `cache_s`. The cache lives in this process's memory only, which already holds
the server secret (a key is worth less), and an entry is dropped `cache_s` after it was read
from the database; keys are never logged. Failures are cached for one second so a client
retrying a bad key cannot turn into a query per request. Concurrent requests that miss the
cache for the same key share one lookup (a busy client's 64 requests in flight when its entry
expires cost one HMAC and one query, not 64).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from pydantic import SecretBytes, SecretStr

from smsgw.shared.domain.apikeys import LOOKUP_ACCOUNT_BY_KEY_HASH, Account, hash_key

NEGATIVE_CACHE_S = 1.0
MAX_CACHE_ENTRIES = 10_000
MAX_KEY_LENGTH = 200


class Authenticator:
    """Resolve API keys to accounts (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, server_secret: SecretBytes | SecretStr | bytes | None,
                 *, cache_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        # Kept in a holder that prints as `**********` (repr, logs); unwrapped only for the HMAC.
        self._secret = secret_bytes(server_secret)
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[Account | None, float]] = {}
        self._lookups: dict[str, asyncio.Future[Account | None]] = {}  # misses being looked up

    async def authenticate(self, key: str) -> Account | None:
        """The account the key belongs to, or None (unknown, revoked, disabled account; or no
        server secret configured, when no key can be checked)."""
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]  # only keys that passed the checks below are ever cached
        if not key or len(key) > MAX_KEY_LENGTH or self._secret is None or not key.isascii():
            # keys are ASCII (shared.domain.apikeys.generate_key); anything else is wrong
            return None
        while (pending := self._lookups.get(key)) is not None:
            # another request is looking this key up: share its answer
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling() or not pending.cancelled():
                    raise  # this request is being cancelled
                # the request looking it up was cancelled (shutdown): look it up here
        pending = asyncio.get_running_loop().create_future()
        self._lookups[key] = pending
        try:
            account = await self._lookup(key)
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            if self._lookups.get(key) is pending:
                del self._lookups[key]
        pending.set_result(account)
        return account

    async def _lookup(self, key: str) -> Account | None:
        """One key's account from the database, cached (see the module docstring)."""
        assert self._secret is not None
        digest = hash_key(self._secret.get_secret_value(), key)
        rec = await self._pool.fetchrow(LOOKUP_ACCOUNT_BY_KEY_HASH, digest)
        account = Account.from_record(rec) if rec is not None else None
        now = self._clock()
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.clear()
        ttl = self._cache_s if account is not None else min(self._cache_s, NEGATIVE_CACHE_S)
        if ttl > 0:
            self._cache[key] = (account, now + ttl)
        return account


def secret_bytes(secret: SecretBytes | SecretStr | bytes | None) -> SecretBytes | None:
    """The secret as `SecretBytes` (UTF-8 for a `SecretStr`); None stays None."""
    if secret is None or isinstance(secret, SecretBytes):
        return secret
    if isinstance(secret, SecretStr):
        return SecretBytes(secret.get_secret_value().encode())
    return SecretBytes(secret)


def bearer_key(header: str | None) -> str | None:
    """The key from an `Authorization: Bearer <key>` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None

"""API keys: random tokens, stored as HMAC-SHA256 under the server secret, looked up by hash.

A key is `smsgw_` + 32 url-safe base64 characters (192 random bits), shown once when created.
The database keeps only `HMAC-SHA256(server_secret, key)` and a short prefix to recognise the
key in listings. Authentication hashes the presented key and looks the hash up through the
unique index: one HMAC and one index probe, no bcrypt/argon2 on the request path (the key has
full entropy, so a slow hash adds nothing; the server secret means a leaked table alone cannot
be used to check guesses offline). An account may hold several valid keys, so a key is rotated
by adding the new one, moving the clients, then revoking the old one. Every change is written
to `audit_log`.

A disabled account (`smsgw accounts disable`) is refused by the key lookup itself; paths that
do not go through a key (an SMPP bind by system_id, each PDU of a bound session) ask
`DisabledAccounts`, which reads the set of disabled accounts at most every `max_age_s` (≤ 5 s),
so a disable takes effect there within the same bound as the receivers' key cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

KEY_PREFIX = "smsgw_"
KEY_RANDOM_BYTES = 24  # 192 bits (≥ 128 required)
LISTING_PREFIX_LEN = len(KEY_PREFIX) + 6

# -- SQL -----------------------------------------------------------------------------------

# lookup_account_by_key_hash: the account a valid (unrevoked) key belongs to, if enabled.
LOOKUP_ACCOUNT_BY_KEY_HASH = """
SELECT a.id, a.name, a.default_category, a.rate_per_s, a.allowed_senders, a.transliterate,
       a.disabled, a.allowed_connectors, a.operator, k.id AS key_id
  FROM api_keys k
  JOIN accounts a ON a.id = k.account_id
 WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND NOT a.disabled
"""

# disabled_accounts: the ids of every disabled account (few: read whole, cached briefly).
DISABLED_ACCOUNTS = "SELECT id FROM accounts WHERE disabled"

MAX_DISABLED_AGE_S = 5.0  # the longest a disable may take to reach a cached check

# insert_api_key: store a new key's hash and listing prefix.
INSERT_API_KEY = """
INSERT INTO api_keys (account_id, key_hash, prefix) VALUES ($1, $2, $3)
RETURNING id, account_id, prefix, created_at, revoked_at
"""

# revoke_api_key: revoke one key of an account by id or listing prefix; returns what it revoked.
REVOKE_API_KEY = """
UPDATE api_keys SET revoked_at = now()
 WHERE account_id = $1 AND revoked_at IS NULL AND (id::text = $2 OR prefix = $2)
RETURNING id, account_id, prefix, created_at, revoked_at
"""

# list_api_keys: every key of an account, newest first (hashes never leave the database).
LIST_API_KEYS = """
SELECT id, account_id, prefix, created_at, revoked_at FROM api_keys
 WHERE account_id = $1 ORDER BY id DESC
"""

# insert_audit: one audit_log row per change to accounts, keys, rules or suppressions.
INSERT_AUDIT = """
INSERT INTO audit_log (actor, action, object_type, object_id, detail) VALUES ($1, $2, $3, $4, $5)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """The authenticated account a request acts for."""

    id: int
    name: str
    default_category: str
    rate_per_s: float | None
    allowed_senders: tuple[str, ...] | None
    transliterate: bool
    key_id: int
    # connectors the account may force (Kannel `smsc=`, JSON `connector`); empty: none
    allowed_connectors: tuple[str, ...] = ()
    # an operator account (migration 0016): its keys may ask for every report kind
    operator: bool = False

    @classmethod
    def from_record(cls, rec: Any) -> Account:
        """Build from a `LOOKUP_ACCOUNT_BY_KEY_HASH` row."""
        senders = rec["allowed_senders"]
        return cls(id=rec["id"], name=rec["name"], default_category=rec["default_category"],
                   rate_per_s=rec["rate_per_s"],
                   allowed_senders=tuple(senders) if senders is not None else None,
                   transliterate=rec["transliterate"], key_id=rec["key_id"],
                   allowed_connectors=tuple(rec["allowed_connectors"] or ()),
                   operator=bool(rec.get("operator", False)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """One stored key (without its secret)."""

    id: int
    account_id: int
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_record(cls, rec: Any) -> ApiKey:
        """Build from an `api_keys` row."""
        return cls(id=rec["id"], account_id=rec["account_id"], prefix=rec["prefix"],
                   created_at=rec["created_at"], revoked_at=rec["revoked_at"])


def generate_key() -> str:
    """A new random API key (192 bits from `secrets`)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(server_secret: bytes, key: str) -> bytes:
    """HMAC-SHA256 of the key under the server secret: what `api_keys.key_hash` stores."""
    return hmac.digest(server_secret, key.encode("utf-8"), hashlib.sha256)


def listing_prefix(key: str) -> str:
    """The first characters of a key, stored to recognise it in listings (not secret enough
    to matter: 6 random characters of 32)."""
    return key[:LISTING_PREFIX_LEN]


async def lookup_account(conn: asyncpg.Connection | asyncpg.Pool, server_secret: bytes,
                         key: str) -> Account | None:
    """The enabled account whose unrevoked key this is, or None."""
    rec = await conn.fetchrow(LOOKUP_ACCOUNT_BY_KEY_HASH, hash_key(server_secret, key))
    return Account.from_record(rec) if rec is not None else None


async def audit(conn: asyncpg.Connection, *, actor: str, action: str, object_type: str,
                object_id: str | None, detail: dict[str, Any] | None = None) -> None:
    """Write one `audit_log` row (call inside the transaction that makes the change)."""
    await conn.execute(INSERT_AUDIT, actor, action, object_type, object_id, detail)


async def create_key(conn: asyncpg.Connection, server_secret: bytes, account_id: int, *,
                     actor: str) -> tuple[str, ApiKey]:
    """Create and store a key for the account; return (the key, shown once; its record)."""
    key = generate_key()
    async with conn.transaction():
        rec = await conn.fetchrow(INSERT_API_KEY, account_id, hash_key(server_secret, key),
                                  listing_prefix(key))
        stored = ApiKey.from_record(rec)
        await audit(conn, actor=actor, action="api_key_created", object_type="api_key",
                    object_id=str(stored.id),
                    detail={"account_id": account_id, "prefix": stored.prefix})
    return key, stored


async def revoke_key(conn: asyncpg.Connection, account_id: int, key_ref: str, *,
                     actor: str) -> list[ApiKey]:
    """Revoke the account's key given by id or listing prefix; return the revoked keys."""
    async with conn.transaction():
        rows = await conn.fetch(REVOKE_API_KEY, account_id, key_ref)
        revoked = [ApiKey.from_record(r) for r in rows]
        for k in revoked:
            await audit(conn, actor=actor, action="api_key_revoked", object_type="api_key",
                        object_id=str(k.id), detail={"account_id": account_id,
                                                     "prefix": k.prefix})
    return revoked


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool, account_id: int) -> list[ApiKey]:
    """Every key of the account (hashes are never returned)."""
    return [ApiKey.from_record(r) for r in await conn.fetch(LIST_API_KEYS, account_id)]


class DisabledAccounts:
    """Which accounts are disabled, as of at most `max_age_s` ago (≤ `MAX_DISABLED_AGE_S`).

    For checks that do not go through the key lookup (which refuses a disabled account
    itself): an SMPP bind by system_id and every PDU of a bound session. One query reads the
    whole set (one index-less scan of `accounts`, a small table) when the copy is older than
    `max_age_s`; concurrent callers share that read. A read that fails keeps the old copy and
    raises (the caller answers with its transient error)."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, *,
                 max_age_s: float = MAX_DISABLED_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= max_age_s <= MAX_DISABLED_AGE_S:
            raise ValueError(f"max_age_s must be within 0-{MAX_DISABLED_AGE_S} s")
        self._pool = pool
        self._max_age_s = max_age_s
        self._clock = clock
        self._ids: frozenset[int] = frozenset()
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def is_disabled(self, account_id: int) -> bool:
        """True when the account is disabled (as of at most `max_age_s` ago)."""
        if self._clock() - self._read_at > self._max_age_s:
            async with self._lock:
                if self._clock() - self._read_at > self._max_age_s:
                    rows = await self._pool.fetch(DISABLED_ACCOUNTS)
                    self._ids = frozenset(r["id"] for r in rows)
                    self._read_at = self._clock()
        return account_id in self._ids

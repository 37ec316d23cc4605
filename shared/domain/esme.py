"""SMPP credentials of customer ESMEs: system_id = the account's name, a generated password
stored only as a keyed hash, and the account's bind policy (networks, binds, modes).

SMPP 3.4 limits system_id to 15 characters and the password to 8 (4.1.1): an account with a
longer name cannot bind (`smsgw accounts smpp-password` says so). The password is 8
characters drawn from 90 printable ASCII characters (no space, quotes, backquote or
backslash, which ESME configuration files trip over): about 52 bits, shown once and stored as
HMAC-SHA256 under the server secret, so a copy of the table alone cannot check guesses
offline. 52 bits is not much against an online attacker: the receiver rate-limits failed
binds per source address and per system_id, and SECURITY.md says what else protects a
listener beyond loopback (TLS, the account's allowed networks).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import asyncpg

from smsgw.shared.domain.apikeys import Account, audit

SYSTEM_ID_MAX = 15  # SMPP 3.4: C-Octet String of at most 16 octets with its NUL
PASSWORD_LENGTH = 8  # SMPP 3.4: at most 9 octets with its NUL
PASSWORD_ALPHABET = "".join(c for c in string.printable[:94] if c not in "\"'`\\")
BIND_MODES = ("transmitter", "receiver", "transceiver")

# lookup_esme_account: an enabled account by name with its SMPP credentials and bind policy.
LOOKUP_ESME_ACCOUNT = """
SELECT id, name, default_category, rate_per_s, allowed_senders, transliterate, disabled,
       allowed_connectors, smpp_password_hash, smpp_allowed_networks, smpp_max_binds,
       smpp_bind_modes
  FROM accounts WHERE name = $1
"""

# set_smpp_password: store a new password hash; returns the account's id.
SET_SMPP_PASSWORD = """
UPDATE accounts SET smpp_password_hash = $2, updated_at = now() WHERE name = $1 RETURNING id
"""

STATEMENTS: dict[str, str] = {"lookup_esme_account": LOOKUP_ESME_ACCOUNT,
                              "set_smpp_password": SET_SMPP_PASSWORD}


@dataclass(frozen=True, slots=True, kw_only=True)
class EsmeAccount:
    """An account as an ESME binds: its settings (`account`) and its SMPP policy."""

    account: Account
    disabled: bool
    password_hash: bytes | None
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] | None
    max_binds: int | None
    bind_modes: tuple[str, ...] | None

    @classmethod
    def from_record(cls, rec: Any) -> EsmeAccount:
        """Build from a `LOOKUP_ESME_ACCOUNT` row."""
        senders = rec["allowed_senders"]
        nets = rec["smpp_allowed_networks"]
        modes = rec["smpp_bind_modes"]
        return cls(
            account=Account(id=rec["id"], name=rec["name"],
                            default_category=rec["default_category"],
                            rate_per_s=rec["rate_per_s"],
                            allowed_senders=tuple(senders) if senders is not None else None,
                            transliterate=rec["transliterate"], key_id=0,
                            allowed_connectors=tuple(rec["allowed_connectors"] or ())),
            disabled=bool(rec["disabled"]), password_hash=rec["smpp_password_hash"],
            allowed_networks=tuple(nets) if nets is not None else None,
            max_binds=rec["smpp_max_binds"],
            bind_modes=tuple(modes) if modes is not None else None)

    def network_allowed(self, address: str) -> bool:
        """True when a bind from `address` is allowed (no list: from anywhere)."""
        if self.allowed_networks is None:
            return True
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)

    def mode_allowed(self, mode: str) -> bool:
        """True when the account may bind in `mode`."""
        return self.bind_modes is None or mode in self.bind_modes


def generate_password() -> str:
    """A new random SMPP password (8 characters, ~52 bits from `secrets`)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def hash_password(server_secret: bytes, account_id: int, password: str) -> bytes:
    """HMAC-SHA256 of the password under the server secret, bound to the account (so two
    accounts with the same password store different hashes)."""
    msg = f"smpp-password:{account_id}:".encode() + password.encode("latin-1", "replace")
    return hmac.digest(server_secret, msg, hashlib.sha256)


def check_password(server_secret: bytes, esme: EsmeAccount, password: str) -> bool:
    """True when `password` is the account's (constant time; False without a password)."""
    if esme.password_hash is None:
        return False
    given = hash_password(server_secret, esme.account.id, password)
    return hmac.compare_digest(given, bytes(esme.password_hash))


def system_id_problem(name: str) -> str | None:
    """Why an account name cannot be an SMPP system_id, or None."""
    if len(name) > SYSTEM_ID_MAX:
        return (f"the account name {name!r} has {len(name)} characters; SMPP 3.4 allows a "
                f"system_id of at most {SYSTEM_ID_MAX}, so this account cannot bind")
    if not name.isascii() or not name.isprintable():
        return "an SMPP system_id is printable ASCII; this account's name is not"
    return None


async def lookup(conn: asyncpg.Connection | asyncpg.Pool, system_id: str) -> EsmeAccount | None:
    """The account named `system_id` with its SMPP policy, or None."""
    rec = await conn.fetchrow(LOOKUP_ESME_ACCOUNT, system_id)
    return EsmeAccount.from_record(rec) if rec is not None else None


async def set_password(conn: asyncpg.Connection, server_secret: bytes, name: str, *,
                       actor: str) -> str:
    """Generate, store (as its hash) and return a new SMPP password for the account, audited.
    Raises LookupError for an unknown account and ValueError for a name SMPP cannot carry."""
    problem = system_id_problem(name)
    if problem is not None:
        raise ValueError(problem)
    password = generate_password()
    async with conn.transaction():
        rec = await conn.fetchrow("SELECT id FROM accounts WHERE name = $1 FOR UPDATE", name)
        if rec is None:
            raise LookupError(name)
        await conn.execute(SET_SMPP_PASSWORD, name,
                           hash_password(server_secret, rec["id"], password))
        await audit(conn, actor=actor, action="smpp_password_set", object_type="account",
                    object_id=str(rec["id"]), detail={"name": name})
    return password

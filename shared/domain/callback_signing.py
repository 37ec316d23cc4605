"""Signatures on the callbacks smsgw sends to applications, and the per-account secrets.

Every status callback to an account's URL is signed; forwarded MO of a rule is signed when
the rule's forward action names a `secret_env`. Two headers go with each signed request:

    X-Smsgw-Timestamp: <unix seconds>
    X-Smsgw-Signature: sha256=<hex HMAC-SHA256(secret, message)>

where `message` is

* JSON POST (status callbacks, `url` forwards): `"<ts>." + body` (the exact body bytes);
* Kannel-style GET (`dlr-url` status callbacks): `"<ts>." + path_and_query`, the request
  target exactly as sent on the request line (`/dlr?id=42&status=1`, percent-encoding as on
  the wire; no scheme, host or fragment). A GET has no body, so the URL's query — which
  carries the status — is what the signature must cover: changing any parameter breaks it.
  A JSON body starts with `{` or `[`, a path with `/`, so the two messages never coincide.

An application verifies by recomputing the HMAC with its secret over the same message,
comparing in constant time, and refusing timestamps more than a few minutes old (replay).

Account secrets are never stored. Each is derived from the server secret (`[security]
server_secret`, which the receivers and the processor share and the database never holds):

    secret = hex(HMAC-SHA256(server_secret, "callback:<account id>:<generation>"))

`accounts.callback_secret_generation` (default 1, so every account signs from the start) is
the only thing in the database; `smsgw accounts callback-secret NAME` shows the current
secret and `--rotate` moves to the next generation (the old secret stops working at once). A
database dump therefore reveals no callback secret, and the processor needs no query beyond
the generation it already reads with the batch.
"""

from __future__ import annotations

import hashlib
import hmac

from yarl import URL

SECRET_LABEL = "callback"


def account_secret(server_secret: bytes, account_id: int, generation: int) -> str:
    """The account's callback signing secret for `generation` (64 hex characters)."""
    msg = f"{SECRET_LABEL}:{int(account_id)}:{int(generation)}".encode()
    return hmac.new(server_secret, msg, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, message: bytes) -> str:
    """The `X-Smsgw-Signature` value: sha256=<hex HMAC-SHA256(secret, "<ts>." + message)>."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + message, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def request_target(url: str) -> bytes:
    """Path and query of `url` exactly as the HTTP client (aiohttp/yarl) sends them."""
    return URL(url).raw_path_qs.encode("ascii")

"""SSRF guard for URLs that accounts and rules give us (callback and forward URLs).

Two checks, used at two times:

* `check_url(url, allow_private=...)` — at intake (the receiver's `callback_url`, `dlr-url`):
  http(s) only, a host, no credentials, and a literal IP address or `localhost` that is
  loopback, private, link-local, multicast or otherwise reserved is refused. It does not resolve
  names: intake must not wait on DNS, and a name can change its address before we connect.
* `GuardedResolver` — at send time (the processor's callback delivery): an aiohttp resolver that
  refuses the same addresses *for the address the connection will actually use*, so DNS
  rebinding (a name that resolved to a public address at intake and to 127.0.0.1 now) cannot
  slip through. Use it with redirects off (`allow_redirects=False`).

`allow_private=True` (`[webhooks] allow_private_urls`) lifts the address check; tests use it to
call servers on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.errors import SmsGatewayError

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2048
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class UnsafeUrl(SmsGatewayError, ValueError):
    """The URL may not be fetched: bad scheme, credentials, or a non-public address."""


def check_url(url: str, *, allow_private: bool = False) -> str:
    """Return `url` if it is an acceptable http(s) callback URL; raise `UnsafeUrl` otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"URL longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise UnsafeUrl("only http and https URLs are allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeUrl("URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed")
    if port == 0:
        raise UnsafeUrl("port 0 is not allowed")
    if not allow_private:
        if host in _LOCAL_NAMES or host.endswith(".localhost"):
            raise UnsafeUrl("loopback host is not allowed")
        address = _literal_address(host)
        if address is not None and not is_public_address(address):
            raise UnsafeUrl("loopback, private and link-local addresses are not allowed")
    return url


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True if the address is globally routable unicast (not loopback/private/link-local/...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_loopback or address.is_private or address.is_link_local
                or address.is_multicast or address.is_reserved or address.is_unspecified
                or not address.is_global)


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    # inet_aton accepts the legacy forms browsers and libc accept too ("127.1", "0x7f.1",
    # "2130706433"), which ip_address() does not: an SSRF classic.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses non-public addresses unless `allow_private` is set."""

    def __init__(self, *, allow_private: bool = False,
                 inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """Resolve `host` and drop every non-public address; raise `UnsafeUrl` if none is left."""
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        public = [r for r in results if is_public_address(ipaddress.ip_address(r["host"]))]
        if not public:
            raise UnsafeUrl(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


def guarded_connector_kwargs(*, allow_private: bool) -> dict[str, Any]:
    """Keyword arguments for `aiohttp.TCPConnector` that route resolution through the guard."""
    return {"resolver": GuardedResolver(allow_private=allow_private)}

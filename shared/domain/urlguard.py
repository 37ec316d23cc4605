"""SSRF guard for URLs that accounts and rules give us (callback and forward URLs).

The rule: an outgoing request may reach a public unicast address, or an address inside one of
the operator's `[webhooks] allowed_networks` (CIDR list; empty by default, so loopback, private,
link-local, CGNAT, multicast and reserved addresses are all refused unless listed). One
`AddressPolicy` holds that rule; it is applied twice:

* `check_url(url, allowed_networks=...)` — at intake (the receiver's `callback_url`, Kannel
  `dlr-url`): http(s) only, a host, no credentials, no port 0, and the host *exactly as the
  HTTP client will connect to it*. The client (aiohttp) parses the URL with yarl, which
  IDNA/UTS-46-maps a Unicode host: `①②⑦.0.0.1`, `127.0.0.1` in fullwidth digits and
  `127。0。0。1` (ideographic full stops) all become the IP literal `127.0.0.1`, for which
  no resolver is ever asked. So the check parses the URL with the same yarl, takes its
  `raw_host` (the ASCII host on the wire), refuses a host that does not encode or holds
  anything but letters, digits, `.`, `-`, `_` (or is a bracketed IPv6 literal), and then
  parses it as an address — including the legacy IPv4 forms `inet_aton` and browsers accept
  (`127.1`, `0x7f.1`, `2130706433`, `0177.0.0.1`) — and as the local names (`localhost`,
  `*.localhost`). It does not resolve names: intake must not wait on DNS, and a name can
  change its address before we connect. The URL is stored as given: the same parse gives the
  same host again at send time.
* At connect time, for every connection (the HTTP client, `shared.runtime.httpclient`): a name
  is resolved by the client itself and only the addresses `AddressPolicy.allows` are dialled
  (DNS rebinding: public at intake, 127.0.0.1 now), IP literals checked the same way (the
  legacy forms through `host_address`), and the connected peer is checked once more. A
  refused connection raises `UnsafeUrl` or `UnsafeAddress` (an `OSError`); callers map both
  to "refused". Redirects are never followed.

An IPv6 address that embeds an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
`::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged by the IPv4 address too.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

from yarl import URL

from smsgw.shared.core.errors import SmsGatewayError

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2048
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# What a local name reaches: judged as these addresses (allowed only if one of them is).
_LOCAL_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
# A DNS-style host after IDNA encoding; anything else (space, %, control characters) is refused.
_NAME_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeUrl(SmsGatewayError, ValueError):
    """The URL may not be fetched: bad scheme, credentials, or a refused address."""


class UnsafeAddress(OSError):
    """A connection to a refused address, stopped before `connect()` (see the docstring)."""


def parse_network(value: Any) -> Network:
    """One `allowed_networks` entry: a network in CIDR form (host bits clear), not /0."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        net: Network = value
    elif isinstance(value, str):
        try:
            net = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network in CIDR form ({exc})") from exc
    else:
        raise ValueError(f"{value!r} is not a network in CIDR form (a string like "
                         f"\"10.20.0.0/16\")")
    if net.prefixlen == 0:
        raise ValueError(f"{value!r} would allow every address and turn the guard off; "
                         f"list the networks your applications are on")
    return net


class AddressPolicy:
    """Which addresses outgoing requests may reach: public ones and the allowed networks.

    `networks` may be replaced (SIGHUP reload); the resolver and socket factory built from a
    policy see the change at their next connection.
    """

    def __init__(self, networks: Iterable[Any] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(parse_network(n) for n in networks)

    def allows(self, address: Address) -> bool:
        """True if `address` is public, or every form of it is inside an allowed network."""
        forms = _forms(address)
        if all(is_public_address(a) for a in forms):
            return True
        return any(a in net for a in forms for net in self.networks if a.version == net.version)

    def check(self, address: Address, what: str) -> None:
        """Raise `UnsafeUrl` if `address` (shown as `what`) is refused."""
        if not self.allows(address):
            raise UnsafeUrl(f"{what} is a non-public address outside [webhooks] "
                            f"allowed_networks")


def _forms(address: Address) -> list[Address]:
    """The address and any IPv4 address it embeds (see the module docstring)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    if any(address in net for net in _NAT64):
        # NAT64 reaches exactly the embedded IPv4 address: judge that one alone (the prefix
        # itself sits in the IETF-reserved ::/8, which would refuse every NAT64 address).
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    forms: list[Address] = [address]
    if address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        forms.append(address.sixtofour)
    if address in _IPV4_COMPATIBLE:
        forms.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return forms


def is_public_address(address: Address) -> bool:
    """True if the address is globally routable unicast (not loopback/private/link-local/...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_loopback or address.is_private or address.is_link_local
                or address.is_multicast or address.is_reserved or address.is_unspecified
                or not address.is_global)


def client_host(url: str) -> tuple[URL, str]:
    """Parse `url` as the HTTP client does; return it and the ASCII host it will connect to
    (IDNA/UTS-46-mapped, lower case, trailing dots removed). Raise `UnsafeUrl` if the URL
    does not parse or its host does not encode."""
    try:
        parsed = URL(url)
        raw_host = parsed.raw_host
        parsed.explicit_port  # noqa: B018 - raises ValueError on a bad port
    except (ValueError, TypeError) as exc:  # yarl: bad port, bad IPv6, host that fails IDNA
        raise UnsafeUrl(f"not a valid URL ({exc})") from exc
    if not raw_host:
        raise UnsafeUrl("URL has no host")
    host = raw_host.rstrip(".").lower()
    if ":" in host:  # an IPv6 literal (yarl accepts nothing else with a colon in the host)
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise UnsafeUrl(f"host {raw_host!r} is not a valid IPv6 address") from exc
    elif not host.isascii() or not _NAME_RE.match(host):
        raise UnsafeUrl("the host may hold only letters, digits, '.', '-' and '_' once "
                        "IDNA-encoded")
    return parsed, host


def host_address(host: str) -> Address | None:
    """The address an ASCII host (from `client_host`) denotes, or None for a DNS name.

    Legacy IPv4 forms count too: `inet_aton` accepts "127.1", "0x7f.1", "2130706433" and
    "0177.0.0.1", and so do libc resolvers and browsers — an SSRF classic."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_http_url(url: str) -> str:
    """`check_url_form` for a URL an application writes as text (a rule's forward URL, a
    dlr-url, Kannel's X-Kannel-DLR-URL), which must also start with a lower-case `http://` or
    `https://` as Kannel requires; return the host the client will connect to."""
    if not url.startswith(("http://", "https://")):
        raise UnsafeUrl("must start with http:// or https://")
    return check_url_form(url)


def check_url_form(url: str) -> str:
    """Check everything but the address policy (scheme, host encoding, credentials, port);
    return the host the client will connect to. For URLs whose allowed networks are not known
    where they are given (rule forwards, checked again at send time); raise `UnsafeUrl`."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"URL longer than {MAX_URL_LENGTH} characters")
    parsed, host = client_host(url)
    if not parsed.is_absolute() or parsed.scheme.lower() not in ALLOWED_SCHEMES:
        raise UnsafeUrl("only http and https URLs are allowed")
    if parsed.user is not None or parsed.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed")
    if parsed.explicit_port == 0:
        raise UnsafeUrl("port 0 is not allowed")
    return host


def check_url(url: str, *, allowed_networks: Iterable[Any] | AddressPolicy = ()) -> str:
    """Return `url` if it is an acceptable http(s) callback URL; raise `UnsafeUrl` otherwise.

    The host is judged as the HTTP client will see it (see the module docstring)."""
    networks = (allowed_networks.networks if isinstance(allowed_networks, AddressPolicy)
                else _networks(tuple(allowed_networks)))
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"URL longer than {MAX_URL_LENGTH} characters")
    error = _verdict(_origin(url), networks)
    if error is not None:
        raise UnsafeUrl(error)
    return url


def _networks(networks: tuple[Any, ...]) -> tuple[Network, ...]:
    """The parsed networks (the same few configured ones every call: parsed once)."""
    try:
        return _parsed_networks(networks)
    except TypeError:  # an unhashable entry: parse it every time
        return AddressPolicy(networks).networks


@functools.lru_cache(maxsize=16)
def _parsed_networks(networks: tuple[Any, ...]) -> tuple[Network, ...]:
    return AddressPolicy(networks).networks


def _origin(url: str) -> str:
    """What the verdict on an http(s) URL depends on: its scheme and authority, up to the first
    `/`, `?` or `#` after `//` (where yarl, and so the HTTP client, ends the authority). The
    path and query cannot change the host, and they vary per message (a Kannel dlr-url's
    `%d`/`%p` carry the message's own values), so judging the origin lets the cache answer
    every message of a callback host. Any other URL is judged whole."""
    if not url.startswith(("http://", "https://")):
        return url
    start = url.index("//") + 2
    end = len(url)
    for sep in "/?#":
        i = url.find(sep, start)
        if 0 <= i < end:
            end = i
    return url[:end]


@functools.lru_cache(maxsize=1024)
def _verdict(url: str, networks: tuple[Network, ...]) -> str | None:
    # Cached: messages usually repeat a few callback origins (`_origin`; the yarl parse and
    # IDNA mapping are most of the cost). Pure: the same URL and networks, the same verdict.
    try:
        _check(url, AddressPolicy(networks))
    except UnsafeUrl as exc:
        return str(exc)
    return None


def _check(url: str, policy: AddressPolicy) -> None:
    host = check_url_form(url)
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        if not any(policy.allows(a) for a in _LOCAL_ADDRESSES):
            raise UnsafeUrl(f"host {host} is loopback, outside [webhooks] allowed_networks")
        return
    address = host_address(host)
    if address is not None:
        policy.check(address, f"host {host}" + (f" ({address})" if str(address) != host
                                                else ""))

"""A lean HTTP/1.1 client for the gateway's outgoing requests (status callbacks, forwarded MO).

Every forwarded MO and every status callback is one HTTP request (the applications' contract,
as Kannel's get-url and dlr-url). aiohttp's client spent about 85 CPU-µs per such request on
the benchmark machine, more than the rest of the processor's work for the message; this client
does what those requests need for about a third of that:

* keep-alive connections per (scheme, host, port), reused one request at a time; a request that
  finds its reused connection closed by the server before any answer byte is sent once more on
  a fresh connection (a keep-alive race, never a second delivery of an answered request);
* http and https (TLS with the system's trust store and host-name check, SNI);
* the address policy at connect time, for every connection: a name is resolved here and only
  the addresses `AddressPolicy` allows are dialled (no second lookup that DNS rebinding could
  answer differently); IP literals are checked the same way. A refusal raises `UnsafeUrl`;
* bounded everything: connect and total timeouts, 64 KiB of response head, bodies read only up
  to the caller's `read_limit` (beyond it the answer says `too_large` and the connection is
  dropped, never read on), a discarded body read to at most 1 MiB before the connection is
  dropped instead of reused;
* Content-Length, chunked and close-delimited bodies; interim 1xx answers skipped; no
  redirects (a 3xx is an answer like any other), no cookies, no decompression, no proxies.

The request carries the headers aiohttp sent before (Host, the caller's headers in order, then
Accept, Accept-Encoding, Content-Length and Content-Type unless the caller set them), so
applications see the same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from yarl import URL

from smsgw.shared.domain.urlguard import AddressPolicy, UnsafeAddress, UnsafeUrl, host_address

MAX_HEAD: Final = 64 * 1024
DISCARD_LIMIT: Final = 1024 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class HttpError(OSError):
    """The request failed before a complete answer: connection, protocol or size trouble."""


class StaleConnection(HttpError):
    """A reused connection was closed before any byte of the answer arrived."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete answer: status, headers as received (name, value), the body when asked for
    (None when not read, or when longer than the read limit: then `too_large`)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    too_large: bool = False


class _Protocol(asyncio.Protocol):
    """One connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None
        self._got_bytes = False
        self._head_request = False
        self._read_limit: int | None = None
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._mode = ""  # "" head, "length", "chunked", "close", "done"
        self._remaining = 0
        self._body = bytearray()
        self._keep = True
        self._too_large = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._mode == "close":  # a close-delimited body ends here
            self._finish()
            return
        if self._waiter is not None and not self._waiter.done():
            err = (StaleConnection if not self._got_bytes else HttpError)(
                f"connection closed by the server{f' ({exc})' if exc else ''}")
            self._waiter.set_exception(err)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self._keep = False  # bytes nobody asked for: never reuse this connection
            return
        self._got_bytes = True
        self._buf += data
        try:
            self._parse()
        except HttpError as exc:
            self._keep = False
            self._waiter.set_exception(exc)

    # -- one exchange ------------------------------------------------------------------------

    def send(self, raw: bytes, *, head_request: bool,
             read_limit: int | None) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._got_bytes = False
        self._buf.clear()
        self._head_request = head_request
        self._read_limit = read_limit
        self._mode = ""
        self._body = bytearray()
        self._too_large = False
        self.transport.write(raw)
        return self._waiter

    @property
    def reusable(self) -> bool:
        return self._keep and not self.closed and self._mode == "done" and not self._buf

    def _parse(self) -> None:
        while True:
            if self._mode == "":
                if not self._take_head():
                    return
            elif self._mode == "length":
                take = min(self._remaining, len(self._buf))
                self._keep_body(bytes(self._buf[:take]))
                del self._buf[:take]
                self._remaining -= take
                if self._remaining:
                    return
                self._finish()
                return
            elif self._mode == "chunked":
                if not self._take_chunk():
                    return
            elif self._mode == "close":
                self._keep_body(bytes(self._buf))
                self._buf.clear()
                return
            else:
                return

    def _take_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise HttpError(f"answer head longer than {MAX_HEAD} bytes")
            return False
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[:end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        status = int(parts[1])
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(f"malformed answer header: {line[:80]!r}")
            headers.append((name, value.strip()))
        if 100 <= status < 200:  # interim answer (100 Continue, 103): the real one follows
            return True
        self._status, self._headers = status, headers
        lower = {k.lower(): v for k, v in headers}
        conn = lower.get("connection", "").lower()
        self._keep = ("close" not in conn) and (parts[0] == "HTTP/1.1" or "keep-alive" in conn)
        if self._head_request or status in (204, 304):
            self._finish()
        else:
            self._body_mode(lower)
        return True

    def _body_mode(self, lower: dict[str, str]) -> None:
        """How the body of the answer whose head was just read ends."""
        te = lower.get("transfer-encoding", "").lower()
        if "chunked" in te:
            self._mode = "chunked"
            return
        if "content-length" in lower:
            try:
                length = int(lower["content-length"])
            except ValueError:
                raise HttpError("answer Content-Length is not a number") from None
            if length < 0:
                raise HttpError("answer Content-Length is negative")
            if length > (self._read_limit if self._read_limit is not None else DISCARD_LIMIT):
                # too long to read (or, unread, to skip): answer now, drop the connection
                self._too_large = self._read_limit is not None
                self._keep = False
                self._finish()
                return
            self._mode, self._remaining = "length", length
            if length == 0:
                self._finish()
            return
        self._mode = "close"  # delimited by the end of the connection
        self._keep = False

    def _take_chunk(self) -> bool:
        eol = self._buf.find(b"\r\n")
        if eol < 0:
            if len(self._buf) > 1024:
                raise HttpError("chunk size line too long")
            return False
        size_text = bytes(self._buf[:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError("malformed chunk size") from None
        if size == 0:  # last chunk: skip the trailers up to the empty line
            end = self._buf.find(b"\r\n\r\n", eol)
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise HttpError("answer trailers too long")
                return False
            del self._buf[:end + 4]
            self._finish()
            return False
        if len(self._buf) < eol + 2 + size + 2:
            return False
        self._keep_body(bytes(self._buf[eol + 2:eol + 2 + size]))
        del self._buf[:eol + 2 + size + 2]
        return self._mode == "chunked"

    def _keep_body(self, data: bytes) -> None:
        if self._too_large:
            return
        self._body += data
        limit = self._read_limit if self._read_limit is not None else DISCARD_LIMIT
        if len(self._body) > limit:
            # past the caller's limit (or the discard cap): answer now, drop the connection
            self._too_large = self._read_limit is not None
            self._keep = False
            self._finish()

    def _finish(self) -> None:
        self._mode = "done"
        if self._waiter is not None and not self._waiter.done():
            body = (bytes(self._body) if self._read_limit is not None and not self._too_large
                    else None)
            self._waiter.set_result(Answer(self._status, self._headers, body, self._too_large))


class HttpClient:
    """Keep-alive HTTP/1.1 requests under an address policy; see the module docstring.

    `policy` may change at run time (SIGHUP): new connections follow it, idle ones made under
    the old policy are dropped by `set_policy`.
    """

    def __init__(self, policy: AddressPolicy, *, connect_timeout_s: float, timeout_s: float,
                 max_idle_per_host: int = 8, idle_s: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.max_idle_per_host = max_idle_per_host
        self.idle_s = idle_s
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[tuple[float, _Protocol]]] = {}
        self._pruned = time.monotonic()

    def set_policy(self, policy: AddressPolicy) -> None:
        """Apply a new address policy; idle connections (dialled under the old one) close."""
        self.policy = policy
        self.close_idle()

    def close_idle(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for _, proto in idle:
                if proto.transport is not None:
                    proto.transport.close()
        self._idle.clear()

    async def close(self) -> None:
        """Close every idle connection (requests in flight keep theirs until they end)."""
        self.close_idle()

    async def request(self, method: str, url: URL, body: bytes | None,
                      headers: dict[str, str], *, read_limit: int | None = None) -> Answer:
        """Send one request and return the complete answer.

        Raises `UnsafeUrl` / `UnsafeAddress` when the policy refuses every address,
        `HttpError` (an OSError) on connection or protocol trouble, `TimeoutError` when the
        answer did not come within `timeout_s`."""
        scheme = (url.scheme or "").lower()
        host = url.raw_host or ""
        if scheme not in _DEFAULT_PORTS or not host:
            raise UnsafeUrl("only absolute http and https URLs are allowed")
        port = url.port or _DEFAULT_PORTS[scheme]
        raw = _request_bytes(method, url, host, port, scheme, body, headers)
        key = (scheme, host.lower(), port)
        async with asyncio.timeout(self.timeout_s):
            proto, reused = self._take_idle(key), True
            if proto is None:
                proto, reused = await self._connect(scheme, host, port), False
            try:
                answer = await proto.send(raw, head_request=method == "HEAD",
                                          read_limit=read_limit)
            except StaleConnection:
                if not reused:
                    raise
                self._drop(proto)
                proto = await self._connect(scheme, host, port)
                try:
                    answer = await proto.send(raw, head_request=method == "HEAD",
                                              read_limit=read_limit)
                except BaseException:
                    self._drop(proto)
                    raise
            except BaseException:
                self._drop(proto)
                raise
        self._give_back(key, proto)
        return answer

    # -- connections -------------------------------------------------------------------------

    def _take_idle(self, key: tuple[str, str, int]) -> _Protocol | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            since, proto = idle.pop()
            if not proto.closed and now - since < self.idle_s:
                return proto
            self._drop(proto)
        return None

    def _give_back(self, key: tuple[str, str, int], proto: _Protocol) -> None:
        if not proto.reusable:
            self._drop(proto)
            return
        now = time.monotonic()
        if now - self._pruned > self.idle_s:
            self._prune(now)
        idle = self._idle.setdefault(key, deque())
        if len(idle) >= self.max_idle_per_host:
            self._drop(proto)
            return
        idle.append((time.monotonic(), proto))

    def _prune(self, now: float) -> None:
        """Close idle connections past `idle_s` (or closed by their server) and forget hosts
        with none left, so a gateway calling many hosts keeps neither sockets nor entries."""
        self._pruned = now
        for key in list(self._idle):
            idle = self._idle[key]
            keep = deque((since, p) for since, p in idle
                         if not p.closed and now - since < self.idle_s)
            for since, p in idle:
                if p.closed or now - since >= self.idle_s:
                    self._drop(p)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    @staticmethod
    def _drop(proto: _Protocol) -> None:
        if proto.transport is not None and not proto.closed:
            proto.transport.close()

    async def _connect(self, scheme: str, host: str, port: int) -> _Protocol:
        loop = asyncio.get_running_loop()
        addresses = await self._addresses(host, port)
        ssl_ctx = None
        if scheme == "https":
            if self._ssl is None:  # made once: loading the trust store is not cheap
                self._ssl = ssl.create_default_context()
            ssl_ctx = self._ssl
        last: BaseException | None = None
        for family, address in addresses:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _, proto = await loop.create_connection(
                        _Protocol, host=address, port=port, family=family, ssl=ssl_ctx,
                        server_hostname=host if ssl_ctx else None)
            except (OSError, TimeoutError) as exc:
                last = exc
                continue
            peername = proto.transport.get_extra_info("peername") if proto.transport else None
            peer = ipaddress.ip_address(peername[0]) if peername else None
            if peer is None or not self.policy.allows(peer):  # belt and braces: we dialled
                self._drop(proto)                            # an address we had checked
                raise UnsafeAddress(f"connection to {peer} refused: a non-public address "
                                    f"outside [webhooks] allowed_networks")
            return proto
        if isinstance(last, TimeoutError):
            raise HttpError(f"connect to {host}:{port} timed out") from last
        raise HttpError(f"cannot connect to {host}:{port}: {last}") from last

    async def _addresses(self, host: str, port: int) -> list[tuple[int, str]]:
        """The addresses to dial, in resolver order, each allowed by the policy."""
        literal = host_address(host)
        if literal is not None:
            if not self.policy.allows(literal):
                raise UnsafeUrl(f"host {host} is a non-public address outside [webhooks] "
                                f"allowed_networks")
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [(family, str(literal))]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"cannot resolve {host}: {exc}") from exc
        out: list[tuple[int, str]] = []
        for family, _, _, _, sockaddr in infos:
            address = str(sockaddr[0])
            with contextlib.suppress(ValueError):
                if (self.policy.allows(ipaddress.ip_address(address))
                        and (family, address) not in out):
                    out.append((family, address))
        if not out:
            raise UnsafeUrl(f"{host} resolves only to non-public addresses outside "
                            f"[webhooks] allowed_networks")
        return out


def _request_bytes(method: str, url: URL, host: str, port: int, scheme: str,
                   body: bytes | None, headers: dict[str, str]) -> bytes:
    target = url.raw_path_qs or "/"
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    host_header = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    given = set()
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
            raise HttpError(f"header {name[:40]!r} holds a line break, NUL or colon")
        lines.append(f"{name}: {value}")
        given.add(name.lower())
    if "accept" not in given:
        lines.append("Accept: */*")
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: gzip, deflate")
    if body is not None:
        if "content-length" not in given:
            lines.append(f"Content-Length: {len(body)}")
        if "content-type" not in given:
            lines.append("Content-Type: application/octet-stream")
    if any(c in target for c in " \r\n\0"):
        raise HttpError("request target holds a space, line break or NUL")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")  # as aiohttp sent them
    return head + body if body else head

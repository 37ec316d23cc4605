"""Routing: which connector takes an MT.

Order of precedence for one message:

1. a connector forced on the message (`outbound.connector`, or `route_hint` = Kannel `smsc=`);
2. the ported-number override table (`ported_numbers`: number → ordered connectors);
3. the account's own `[[routes]]` (those with `account = <account name>`), longest prefix;
4. the global `[[routes]]` (no `account`), longest prefix (`prefix = ""` is the default route).

A route is an ordered list of connectors. Without `weights`, the first connector that has a
bound session takes the message (failover, and back as soon as the first is bound again).
With `weights`, the bound connectors share the load in proportion to their weights (a weight
of 0 makes a connector a pure standby, used only when no weighted one is bound). When no
connector of the route is bound, `pick` returns None: the message waits (the submitter defers
it and counts it), it is never failed.

A connector an operator stopped or isolated (`smsgw connectors stop|isolate`) is skipped like
an unbound one when the route's `when_stopped` is `failover` (the default); with `wait` it
keeps its place in the route and the message waits for it (the submitter picks among running
and stopped connectors, then defers the message when the pick is a stopped one).

The `Router` is immutable: SIGHUP builds a new one and swaps it in one assignment.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, LiteralString

import asyncpg
import orjson

from smsgw.shared.runtime.config import RouteSettings
from smsgw.shared.smpp.connector import ConnectorSettings


@dataclass(frozen=True, slots=True)
class Route:
    """One `[[routes]]` entry: E.164 digit prefix, ordered connectors, optional weights."""

    prefix: str
    connectors: tuple[str, ...]
    weights: tuple[int, ...] | None = None
    account: str | None = None
    when_stopped: str = "failover"  # or "wait" (module docstring)


@dataclass(frozen=True, slots=True)
class Choice:
    """The route chosen for a message: where it may go, in order (`pick` chooses among them)."""

    connectors: tuple[str, ...]
    weights: tuple[int, ...] | None
    source: str  # forced, ported, account, prefix — for logs and tests
    wait_when_stopped: bool = False  # the route's when_stopped = "wait"


def _digits(number: str) -> str:
    return number[1:] if number.startswith("+") else number


class Router:
    """Longest-prefix routes with per-account routes, forced connectors and ported numbers."""

    def __init__(self, routes: Iterable[Route], known_connectors: Iterable[str]) -> None:
        self.known = frozenset(known_connectors)
        self.routes = tuple(routes)
        # prefix → the Choice its route gives (immutable, so built once, not per message)
        self._global: dict[str, Choice] = {}
        self._per_account: dict[str, dict[str, Choice]] = {}
        for route in self.routes:
            table = (self._global if route.account is None
                     else self._per_account.setdefault(route.account, {}))
            if route.prefix not in table:  # the first definition of a prefix wins
                table[route.prefix] = Choice(route.connectors, route.weights,
                                             "prefix" if route.account is None else "account",
                                             route.when_stopped == "wait")
        self._lengths = sorted({len(p) for p in self._all_prefixes()}, reverse=True)

    @classmethod
    def from_settings(cls, routes: Sequence[RouteSettings],
                      connectors: Sequence[ConnectorSettings]) -> Router:
        """Build from the `[[routes]]` and `[[connectors]]` config models."""
        built = [Route(prefix=r.prefix, connectors=tuple(r.connectors),
                       weights=tuple(r.weights) if r.weights else None,
                       account=r.account, when_stopped=r.when_stopped) for r in routes]
        names = [c.name for c in connectors]
        if not built and names:
            # No routes configured: everything goes through the connectors in config order.
            built = [Route(prefix="", connectors=tuple(names))]
        return cls(built, names)

    def _all_prefixes(self) -> Iterable[str]:
        yield from self._global
        for table in self._per_account.values():
            yield from table

    def unknown_connectors(self) -> list[str]:
        """Connectors named by routes but not configured (a config error to report)."""
        return sorted({c for r in self.routes for c in r.connectors} - self.known)

    def _longest(self, table: Mapping[str, Choice], digits: str) -> Choice | None:
        for n in self._lengths:
            if n <= len(digits):
                choice = table.get(digits[:n])
                if choice is not None:
                    return choice
        return None

    def choose(self, to_addr: str, *, account: str | None = None, forced: str | None = None,
               ported: Sequence[str] | None = None) -> Choice | None:
        """The route for one message; None when no route matches (a configuration gap)."""
        if forced:
            return Choice((forced,), None, "forced")
        if ported:
            return Choice(tuple(ported), None, "ported")
        digits = _digits(to_addr)
        if account is not None and account in self._per_account:
            choice = self._longest(self._per_account[account], digits)
            if choice is not None:
                return choice
        return self._longest(self._global, digits)


def pick(choice: Choice, is_up: Callable[[str], bool],
         rng: Callable[[], float] = random.random) -> str | None:
    """The connector that takes the message now, or None when none of the route is bound.

    Without weights: the first bound connector in order (failover). With weights: a weighted
    random choice among the bound connectors with weight > 0, else the first bound standby.
    """
    if choice.weights is None:
        return next((c for c in choice.connectors if is_up(c)), None)
    live = [(c, w) for c, w in zip(choice.connectors, choice.weights, strict=True) if is_up(c)]
    weighted = [(c, w) for c, w in live if w > 0]
    if not weighted:
        return live[0][0] if live else None
    total = sum(w for _, w in weighted)
    point = rng() * total
    for connector, weight in weighted:
        point -= weight
        if point < 0:
            return connector
    return weighted[-1][0]


# -- ported numbers ------------------------------------------------------------------------------

# name: xid_and_ported
# In a claim's transaction, after the claim: the transaction's id — the expression of
# `outbound.current_xid`, which `outbound.release_unknown` reads — and the override routes of
# the ported numbers among $1 (a JSON array: asyncpg checks each element of a text[] against
# three ABCs, ~0.5 µs a number), in one round trip. At least one row (number NULL: none ported).
XID_AND_PORTED: Final[LiteralString] = """
SELECT pg_current_xact_id()::text AS xid, p.number, p.connectors
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
      SELECT number, connectors FROM ported_numbers
       WHERE number = ANY (ARRAY(SELECT json_array_elements_text($1::text::json)))
  ) AS p ON true
"""

STATEMENTS: Final[dict[str, LiteralString]] = {"routing.xid_and_ported": XID_AND_PORTED}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""


async def xid_and_ported(conn: asyncpg.Connection,
                         numbers: Sequence[str]) -> tuple[int, dict[str, list[str]]]:
    """(the open transaction's id as `outbound.current_xid` gives it, the override routes
    of the ported numbers among `numbers`) in one statement: a claim needs both once it
    has claimed."""
    found = await conn.fetch(XID_AND_PORTED, orjson.dumps(list(numbers)).decode())
    return int(found[0]["xid"]), {r["number"]: list(r["connectors"]) for r in found
                                  if r["number"] is not None}

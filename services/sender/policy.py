"""The sender's policy, pure (inputs → decision, no I/O): when a marketing message may go
(quiet hours in the recipient's zone), and what becomes of a message once every part is answered.

Outcome rules (`decide`), checked in this order (`_RULES`, then `_transient_error`):

1. a part rejected permanently (or ambiguously) → `rejected`, the status in `error_code`;
2. a part without response (timeout, lost connection after the write, generic_nack) → with
   `no_response_policy = "submit_unknown"` that status; else (`resubmit`) queued again once
   the lease would have expired, flagged a possible duplicate (`dead` after `max_attempts`);
3. every part accepted → `submitted`;
4. parts never sent (bind lost, draining) → queued after `not_sent_retry_s`, no attempt counted;
5. throttled / queue full (or never sent) → queued after `throttle_retry_s`, no attempt counted;
6. any other transient status → queued with exponential backoff and full jitter, the first
   rejected part's status in `error_code`; `dead` after `max_attempts`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from datetime import time as dtime
from functools import lru_cache, partial
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

from smsgw.services.sender.records import InFlight, Outcome
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.queue.records import OutboundStatus
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.session import SubmitOutcome, SubmitResult

THROTTLE = frozenset({P.SMPP_ESME_RTHROTTLED, P.SMPP_ESME_RMSGQFUL})
# Outcome(msg_id, status, error_code, error, delay_s, attempts_inc, parts_total, connector,
# parts, row, possible_duplicate) without the frozen __init__: one per submitted message
_make_outcome = P.fast_constructor(Outcome)

# --- quiet hours ---------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _zone_for_prefix(prefix: str, default: str) -> ZoneInfo:
    try:
        number = phonenumbers.parse(prefix.ljust(12, "0") if prefix.startswith("+") else
                                    "+" + prefix.ljust(11, "0"))
        zones = [z for z in pn_timezone.time_zones_for_number(number) if z != "Etc/Unknown"]
        return ZoneInfo(zones[0] if zones else default)
    except (phonenumbers.NumberParseException, ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def recipient_zone(to_addr: str, default: str = "UTC") -> ZoneInfo:
    """The recipient's time zone from the number (first zone of its range; else `default`).

    Cached by the first digits: the zone depends on country and area code, not the line.
    """
    return _zone_for_prefix(to_addr[:7], default)


def quiet_delay_s(now: datetime, zone: ZoneInfo, quiet: tuple[dtime, dtime]) -> float:
    """Seconds until the quiet period ends in `zone`, or 0 when `now` is outside it.

    `quiet` = (start, end) local times; start > end spans midnight (21:00-08:00).
    """
    start, end = quiet
    local = now.astimezone(zone)
    t = local.timetz().replace(tzinfo=None)
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return 0.0
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    end_at = datetime.combine(end_day, end, tzinfo=zone)
    # timestamps, not `end_at - local`: datetimes sharing a tzinfo subtract as wall clocks,
    # which is an hour off across a DST change
    return max(0.0, end_at.timestamp() - now.timestamp())


# --- outcomes ------------------------------------------------------------------------------------


def _backoff(settings: SenderSettings, attempts: int) -> float:
    cap = min(settings.retry_max_s, settings.retry_base_s * 2 ** min(attempts, 30))
    return settings.retry_base_s + random.random() * max(0.0, cap - settings.retry_base_s)


def _part_rows(msg: InFlight) -> tuple[tuple[int, str | None, int | None, str], ...]:
    rows = []
    for no, res in sorted(msg.results.items()):
        if res.outcome is SubmitOutcome.OK:
            rows.append((no, msg.smsc_ids.get(no), res.command_status, "submitted"))
        elif res.outcome is SubmitOutcome.REJECTED and _is_permanent(res):
            rows.append((no, None, res.command_status, "rejected"))
    return tuple(rows)


def _is_permanent(res: SubmitResult) -> bool:
    return res.status_class in ("permanent", "ambiguous")


@dataclass(slots=True)  # not frozen: built once per multi-part message, frozen init is slower
class _Case:
    """One message's answered parts, as the rules read them (never changed)."""

    msg: InFlight
    settings: SenderSettings
    now: datetime
    mk: Callable[..., Outcome]  # an Outcome of this message (id, parts, connector filled in)
    results: list[SubmitResult]
    transient: list[SubmitResult]  # the results that are not OK


def decide(msg: InFlight, settings: SenderSettings, now: datetime) -> Outcome:
    """The write-back for a message whose parts are all answered (or given up)."""
    if len(msg.results) == 1 and msg.parts_total == 1:
        (no, res), = msg.results.items()
        if res.outcome is SubmitOutcome.OK:  # the common case, without the general walk
            row = msg.row
            return _make_outcome(row.id, OutboundStatus.SUBMITTED, None, None, 0.0, 0, 1,
                                 msg.connector,
                                 ((no, msg.smsc_ids.get(no), res.command_status, "submitted"),),
                                 row, False)
    mk = partial(Outcome, msg_id=msg.row.id, parts_total=msg.parts_total,
                 connector=msg.connector, parts=_part_rows(msg), row=msg.row)
    results = list(msg.results.values())
    case = _Case(msg, settings, now, mk, results,
                 [r for r in results if r.outcome is not SubmitOutcome.OK])
    for rule in _RULES:
        outcome = rule(case)
        if outcome is not None:
            return outcome
    return _transient_error(case)


def _permanent_rejection(c: _Case) -> Outcome | None:
    rejected = next((r for r in c.results if r.outcome is SubmitOutcome.REJECTED
                     and _is_permanent(r)), None)
    if rejected is None:
        return None
    return c.mk(status=OutboundStatus.REJECTED, error_code=rejected.command_status,
                error=rejected.reason, attempts_inc=1)


def _no_response(c: _Case) -> Outcome | None:
    unknown = next((r for r in c.results if r.outcome is SubmitOutcome.UNKNOWN), None)
    if unknown is None:
        return None
    reason = unknown.reason
    if c.settings.no_response_policy == "submit_unknown":
        return c.mk(status=OutboundStatus.SUBMIT_UNKNOWN, error=reason, attempts_inc=1)
    lease_until = c.msg.row.lease_until
    lease_left = (lease_until - c.now).total_seconds() if lease_until else 0
    out = _retry(c, f"no response: {reason}", max(0.0, lease_left), 1)
    return replace(out, possible_duplicate=True)


def _all_accepted(c: _Case) -> Outcome | None:
    return None if c.transient else c.mk(status=OutboundStatus.SUBMITTED)


def _not_sent(c: _Case) -> Outcome | None:
    if not all(r.outcome is SubmitOutcome.NOT_SENT for r in c.transient):
        return None
    return _retry(c, c.transient[0].reason or "not sent", c.settings.not_sent_retry_s, 0)


def _throttled(c: _Case) -> Outcome | None:
    if not all(r.outcome is SubmitOutcome.NOT_SENT or r.command_status in THROTTLE
               for r in c.transient):
        return None
    return _retry(c, "throttled", c.settings.throttle_retry_s, 0)


def _transient_error(c: _Case) -> Outcome:
    first = next(r for r in c.transient if r.outcome is SubmitOutcome.REJECTED)
    return _retry(c, first.reason or "transient error",
                  _backoff(c.settings, c.msg.row.attempts), 1, first.command_status)


_RULES: tuple[Callable[[_Case], Outcome | None], ...] = (
    _permanent_rejection, _no_response, _all_accepted, _not_sent, _throttled)


def _retry(c: _Case, error: str, delay_s: float, attempts_inc: int,
           error_code: int | None = None) -> Outcome:
    if attempts_inc and c.msg.row.attempts + attempts_inc >= c.settings.max_attempts:
        return c.mk(status=OutboundStatus.DEAD, error=error, error_code=error_code,
                    attempts_inc=attempts_inc)
    return c.mk(status=OutboundStatus.QUEUED, error=error, error_code=error_code, delay_s=delay_s,
                attempts_inc=attempts_inc)

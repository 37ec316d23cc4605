"""The outcome policy (`services/sender/policy.py`), pure: every decision with the inputs that
reach it, each asserted field by field against values written out here (not recomputed by the
code under test). The backoff's jitter is pinned by seeding `random`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smsgw.services.sender.policy import decide
from smsgw.services.sender.records import InFlight, Outcome
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.queue.records import ClaimedOutbound
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.session import SubmitOutcome, SubmitResult

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OK, REJ, UNK, NS = (SubmitOutcome.OK, SubmitOutcome.REJECTED, SubmitOutcome.UNKNOWN,
                    SubmitOutcome.NOT_SENT)


def settings(**kw: Any) -> SenderSettings:
    """The `[sender]` section with the values these tests pin (max_attempts 5, retries 1-60 s,
    throttled 2 s, not sent 1 s)."""
    base: dict[str, Any] = dict(max_attempts=5, retry_base_s=1.0, retry_max_s=60.0,
                                throttle_retry_s=2.0, not_sent_retry_s=1.0)
    base.update(kw)
    return SenderSettings(**base)


def row(*, attempts: int = 0, lease_until: datetime | None = NOW + timedelta(seconds=90),
        msg_id: int = 7) -> ClaimedOutbound:
    return ClaimedOutbound(id=msg_id, account_id=1, source="api", from_addr="SMSGW",
                   to_addr="+447700900001", body="hi", category="transactional", priority=0,
                   encoding=None, connector=None, route_hint=None, client_ref=None,
                   callback_url=None, dlr_mask=None, meta=None, attempts=attempts,
                   status="sending", lease_until=lease_until, valid_until=None, send_at=None,
                   payload=None, udh=None, smpp=None, reclaimed=False,
                   unhashed=False, done_parts=())


def ok(msg_id: str = "abc") -> SubmitResult:
    return SubmitResult(OK, message_id=msg_id, command_status=0, status_class="ok")


def rejected(status: int, reason: str | None = "smsc said no") -> SubmitResult:
    return SubmitResult(REJ, command_status=status, status_class=P.classify_status(status),
                        reason=reason)


def msg(results: dict[int, SubmitResult], *, parts_total: int | None = None,
        smsc_ids: dict[int, str] | None = None, **row_kw: Any) -> InFlight:
    total = parts_total if parts_total is not None else len(results)
    return InFlight(row=row(**row_kw), connector="c1", parts_total=total, pending=0,
                    results=dict(results), smsc_ids=dict(smsc_ids or {}))


def expect(m: InFlight, **kw: Any) -> Outcome:
    """The Outcome of message `m` with the fields every decision fills in from the message."""
    base: dict[str, Any] = dict(msg_id=m.row.id, parts_total=m.parts_total, connector="c1",
                                row=m.row)
    base.update(kw)
    return Outcome(**base)


# -- submitted --------------------------------------------------------------------------------


def test_one_part_accepted_is_submitted_with_its_smsc_id() -> None:
    m = msg({1: ok()}, smsc_ids={1: "ABC"})
    assert decide(m, settings(), NOW) == expect(
        m, status="submitted", parts=((1, "ABC", 0, "submitted"),))


def test_every_part_accepted_is_submitted_with_parts_in_order() -> None:
    m = msg({2: ok(), 1: ok(), 3: ok()}, smsc_ids={1: "a", 2: "b"})
    assert decide(m, settings(), NOW) == expect(
        m, status="submitted",
        parts=((1, "a", 0, "submitted"), (2, "b", 0, "submitted"), (3, None, 0, "submitted")))


def test_parts_all_accepted_by_an_earlier_attempt_is_submitted() -> None:
    m = msg({}, parts_total=3)
    assert decide(m, settings(), NOW) == expect(m, status="submitted", parts=())


def test_one_answered_part_of_two_takes_the_general_walk() -> None:
    m = msg({2: ok()}, parts_total=2, smsc_ids={2: "x"})
    assert decide(m, settings(), NOW) == expect(
        m, status="submitted", parts=((2, "x", 0, "submitted"),))


# -- rejected -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [P.SMPP_ESME_RINVDSTADR, P.SMPP_ESME_RINVMSGLEN])
def test_a_permanent_rejection_rejects_the_message(status: int) -> None:
    assert P.classify_status(status) == "permanent"
    m = msg({1: ok(), 2: rejected(status, "bad")}, smsc_ids={1: "a"})
    assert decide(m, settings(), NOW) == expect(
        m, status="rejected", error_code=status, error="bad", attempts_inc=1,
        parts=((1, "a", 0, "submitted"), (2, None, status, "rejected")))


def test_an_ambiguous_status_rejects_like_a_permanent_one() -> None:
    amb = SubmitResult(REJ, command_status=0x400, status_class="ambiguous", reason="vendor")
    m = msg({1: amb})
    assert decide(m, settings(), NOW) == expect(
        m, status="rejected", error_code=0x400, error="vendor", attempts_inc=1,
        parts=((1, None, 0x400, "rejected"),))


def test_rejection_wins_over_no_response_and_throttling() -> None:
    m = msg({1: SubmitResult(UNK, reason="timeout"), 2: rejected(P.SMPP_ESME_RTHROTTLED),
             3: rejected(P.SMPP_ESME_RINVDSTADR, "dest")})
    out = decide(m, settings(no_response_policy="submit_unknown"), NOW)
    assert (out.status, out.error_code, out.error) == ("rejected", P.SMPP_ESME_RINVDSTADR, "dest")
    assert not out.possible_duplicate


def test_first_permanent_rejection_in_part_order_is_reported() -> None:
    m = msg({1: rejected(P.SMPP_ESME_RINVSRCADR, "src"), 2: rejected(P.SMPP_ESME_RINVDSTADR)})
    assert decide(m, settings(), NOW).error_code == P.SMPP_ESME_RINVSRCADR


# -- no response -------------------------------------------------------------------------------


def test_no_response_with_policy_submit_unknown_ends_submit_unknown() -> None:
    m = msg({1: ok(), 2: SubmitResult(UNK, reason="timeout")}, smsc_ids={1: "a"})
    assert decide(m, settings(no_response_policy="submit_unknown"), NOW) == expect(
        m, status="submit_unknown", error="timeout", attempts_inc=1,
        parts=((1, "a", 0, "submitted"),))


def test_no_response_resubmits_once_the_lease_would_have_expired() -> None:
    m = msg({1: SubmitResult(UNK, reason="timeout")}, attempts=1,
            lease_until=NOW + timedelta(seconds=42.5))
    assert decide(m, settings(), NOW) == expect(
        m, status="queued", error="no response: timeout", delay_s=42.5, attempts_inc=1,
        possible_duplicate=True)


@pytest.mark.parametrize("lease_until", [None, NOW - timedelta(seconds=5)])
def test_no_response_after_the_lease_or_without_one_resubmits_at_once(
        lease_until: datetime | None) -> None:
    m = msg({1: SubmitResult(UNK, reason="connection lost")}, lease_until=lease_until)
    out = decide(m, settings(), NOW)
    assert (out.status, out.delay_s, out.possible_duplicate) == ("queued", 0.0, True)
    assert out.error == "no response: connection lost"


def test_no_response_reports_the_first_unanswered_part() -> None:
    m = msg({1: SubmitResult(UNK, reason="generic_nack"), 2: SubmitResult(UNK, reason="timeout"),
             3: SubmitResult(NS, reason="draining")})
    assert decide(m, settings(), NOW).error == "no response: generic_nack"


def test_no_response_on_the_last_attempt_is_dead_and_a_possible_duplicate() -> None:
    m = msg({1: SubmitResult(UNK, reason="timeout")}, attempts=4)
    assert decide(m, settings(), NOW) == expect(
        m, status="dead", error="no response: timeout", attempts_inc=1, possible_duplicate=True)


# -- never sent / throttled ------------------------------------------------------------------------


def test_parts_never_sent_are_queued_without_an_attempt() -> None:
    m = msg({1: ok(), 2: SubmitResult(NS, reason="no bound session"),
             3: SubmitResult(NS, reason="draining")}, smsc_ids={1: "a"})
    assert decide(m, settings(not_sent_retry_s=1.5), NOW) == expect(
        m, status="queued", error="no bound session", delay_s=1.5,
        parts=((1, "a", 0, "submitted"),))


def test_never_sent_is_not_dead_even_on_the_last_attempt() -> None:
    m = msg({1: SubmitResult(NS)}, attempts=9)
    assert decide(m, settings(), NOW) == expect(m, status="queued", error="not sent",
                                                delay_s=1.0)


@pytest.mark.parametrize("status", [P.SMPP_ESME_RTHROTTLED, P.SMPP_ESME_RMSGQFUL])
def test_throttled_or_queue_full_is_queued_without_an_attempt(status: int) -> None:
    m = msg({1: rejected(status, "slow down"), 2: SubmitResult(NS, reason="draining")},
            attempts=9)
    assert decide(m, settings(throttle_retry_s=2.5), NOW) == expect(
        m, status="queued", error="throttled", delay_s=2.5)


# -- transient errors ------------------------------------------------------------------------


def test_a_transient_error_retries_with_jittered_backoff() -> None:
    # attempts 2: cap = min(60, 1 x 2^2) = 4, delay = 1 + r x (4 - 1) with r the seeded draw
    random.seed(13)
    r = random.random()
    random.seed(13)
    m = msg({1: rejected(P.SMPP_ESME_RSYSERR, "system error")}, attempts=2)
    assert decide(m, settings(), NOW) == expect(
        m, status="queued", error="system error", error_code=P.SMPP_ESME_RSYSERR,
        delay_s=1.0 + r * 3.0, attempts_inc=1)


def test_backoff_is_capped_at_retry_max() -> None:
    random.seed(5)
    r = random.random()
    random.seed(5)
    m = msg({1: rejected(P.SMPP_ESME_RSYSERR)}, attempts=40)
    out = decide(m, settings(max_attempts=100, retry_base_s=2.0, retry_max_s=30.0), NOW)
    assert out.delay_s == 2.0 + r * 28.0


def test_backoff_never_drops_below_the_base() -> None:
    # retry_max below base x 2^attempts never happens with validated settings, but base x 1
    # (attempts 0) leaves no room for jitter: the delay is exactly the base
    m = msg({1: rejected(P.SMPP_ESME_RSYSERR)}, attempts=0)
    assert decide(m, settings(retry_base_s=3.0, retry_max_s=60.0), NOW).delay_s == 3.0


def test_a_transient_error_without_reason_says_so() -> None:
    m = msg({1: rejected(P.SMPP_ESME_RSYSERR, None)})
    assert decide(m, settings(), NOW).error == "transient error"


def test_a_transient_error_on_the_last_attempt_is_dead() -> None:
    m = msg({1: rejected(P.SMPP_ESME_RSYSERR, "sys")}, attempts=4)
    assert decide(m, settings(), NOW) == expect(
        m, status="dead", error="sys", error_code=P.SMPP_ESME_RSYSERR, attempts_inc=1)


def test_one_attempt_before_the_last_is_still_queued() -> None:
    m = msg({1: rejected(P.SMPP_ESME_RSYSERR, "sys")}, attempts=3)
    assert decide(m, settings(), NOW).status == "queued"


def test_throttled_beside_a_transient_error_counts_an_attempt_reporting_the_first_part() -> None:
    # not all throttled: the transient rule applies; its error is the first rejected part's
    random.seed(1)
    m = msg({1: rejected(P.SMPP_ESME_RTHROTTLED, "throttled by smsc"),
             2: rejected(P.SMPP_ESME_RSYSERR, "sys")})
    out = decide(m, settings(), NOW)
    assert (out.status, out.error, out.error_code, out.attempts_inc) == (
        "queued", "throttled by smsc", P.SMPP_ESME_RTHROTTLED, 1)


def test_a_bind_level_status_is_retried_like_a_transient_one() -> None:
    assert P.classify_status(P.SMPP_ESME_RINVPASWD) == "bind"
    m = msg({1: rejected(P.SMPP_ESME_RINVPASWD, "password")}, attempts=4)
    assert decide(m, settings(), NOW) == expect(
        m, status="dead", error="password", error_code=P.SMPP_ESME_RINVPASWD, attempts_inc=1)

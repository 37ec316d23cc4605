"""kannel_reply, in memory: whatever an application answers, a plan and never an exception;
the parts of a queued plan fit what they promise (Kannel's sms_split sizes, max_messages).

The part sizes are GSM 03.40's (140 octets of user data: 160 septets, 70 UCS-2 characters, 153
and 67 next to a concatenation header), written here as numbers, not taken from the module.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsgw.services.processor.kannel_reply import HEADERS, Answer, build, snapshot
from smsgw.services.processor.rules import ReplyFromBody
from smsgw.shared.smpp.text import gsm_septets, is_gsm

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
TYPES = ["text/plain", "text/plain; charset=utf-8", "text/plain; charset=klingon",
         "text/html", "text/xml", "application/octet-stream", "image/png", None]
header_values = st.one_of(st.sampled_from(["0", "1", "2", "3", "-1", "99999999999", "", "abc",
                                           "0605040b8423f0", "%06%05", "?smpp?x=1",
                                           "+447700900123", "447700900123", "Shop",
                                           "http://127.0.0.1/x", "smsc-a"]),
                          st.text(max_size=30))


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    headers = [(name, draw(header_values))
               for name in draw(st.lists(st.sampled_from(sorted(HEADERS)), max_size=6))]
    ctype = draw(st.sampled_from(TYPES))
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    long_text = st.tuples(st.sampled_from(["word. ", "Grüße! ", "Привет ", "{x} "]),
                          st.integers(20, 120)).map(lambda p: (p[0] * p[1]).encode())
    body = draw(st.one_of(st.binary(max_size=600), long_text,
                          st.text(max_size=600).map(lambda t: t.encode("utf-8", "replace"))))
    return Answer(200, headers, body)


options = st.builds(ReplyFromBody, max_messages=st.integers(0, 5),
                    concatenation=st.booleans(), omit_empty=st.booleans(),
                    accept_x_kannel_headers=st.booleans(),
                    header=st.sampled_from(["", "A:", "[x]"]),
                    split_chars=st.sampled_from(["", " ", ".!"]),
                    split_suffix=st.sampled_from(["", "+", "..."]))


def _fits_one_sms(body: str) -> bool:
    return gsm_septets(body) <= 160 if is_gsm(body) else len(body.encode("utf-16-be")) <= 140


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options, answers())
def test_any_answer_gives_a_plan_within_the_limits(opts: ReplyFromBody, answer: Answer) -> None:
    reply = snapshot(options=opts, sender="80080", recipient="+447700900001", rule_id=1,
                     service="svc")
    plan = build(reply, answer, callback_id=1, inbound_id=1, now=NOW, connectors=["smsc-a"])
    assert plan.outcome in ("queued", "omitted", "refused")
    if plan.outcome != "queued":
        assert not plan.rows and plan.reason
        return
    assert 1 <= len(plan.rows) <= max(1, opts.max_messages)
    if opts.concatenation:
        assert len(plan.rows) == 1
    for i, row in enumerate(plan.rows):
        assert (row["body"] is None) != (row["payload"] is None)
        assert row["to_addr"].startswith("+") or row["to_addr"].isdigit()
        if i > 0:  # sms_split: later parts ask for no DLR
            assert row["callback_url"] is None and row["dlr_mask"] is None
        body = row["body"]
        if body is not None and not opts.concatenation and row["udh"] is None:
            assert _fits_one_sms(body), body
            if opts.header:
                assert body.startswith(opts.header)

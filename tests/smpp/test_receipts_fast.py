"""Receipt parsing fast path: property tests that it changes speed, not results.

* parse_receipt (spec-layout fast path) equals the general path `_parse_receipt_general` on
  generated receipts: hex/decimal ids up to 65 characters, stat words, 10/12-digit dates,
  with and without TLVs (in any order, repeated), text in latin-1 or UCS-2;
* tolerated deviations (key case, `Text:`/`TEXT:`, `submit_date`, extra blanks, missing
  sub/dlvrd, `text:none`, no text) parse like the spec layout they deviate from;
* both equal `_original`, a copy of the strptime-based parser this replaced (the model).

The model shares nothing with the code under test but the `ParsedReceipt` record it fills in: its
own stat table (`_M_STAT_MAP`, written out from SMPP 3.4 5.2.28 / Kannel / Vumi as documented
in `shared/smpp/receipts.py`), its own intermediate-state set and esm_class test, and its own
digit-by-digit id conversions (`_m_apply_mode`), so a bug in `receipts._apply_mode`, the stat
map or `is_intermediate_notification` cannot cancel out. Published receipts with their fields
read by hand are in tests/smpp/test_receipts_published.py.
"""

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsgw.shared.smpp import receipts as R
from smsgw.shared.smpp.pdu import Tag

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
OVERRIDES = [None, {}, {"ACCEPTD": "delivered", "UNKNOWN": "enroute", "delivrd": "rejected"}]
KEYS = ["id", "sub", "dlvrd", "submit date", "done date", "stat", "err", "text"]


# The model: the parser before the fast path (regex + re.sub + strptime), kept verbatim. ------

_M_KEY_RE = re.compile(
    r"(?:^|(?<=\s))(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:",
    re.IGNORECASE,
)


def _m_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    matches = list(_M_KEY_RE.finditer(text))
    for i, m in enumerate(matches):
        key = re.sub(r"[ _]?date", "_date", m.group(1).lower())
        end = len(text) if key == "text" or i + 1 == len(matches) else matches[i + 1].start()
        value = text[m.end() : end]
        fields.setdefault(key, value if key == "text" else value.strip())
        if key == "text":
            break
    return fields


def _m_date(value: str | None, tz: ZoneInfo) -> datetime | None:
    if not value:
        return None
    digits = value.strip()
    fmt = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S", 14: "%Y%m%d%H%M%S"}.get(len(digits))
    if fmt is None or not digits.isdigit():
        return None
    try:
        return datetime.strptime(digits, fmt).replace(tzinfo=tz)
    except ValueError:
        return None


def _m_int(value: str | None) -> int | None:
    return int(value.strip()) if value is not None and value.strip().isdigit() else None


# The model's own stat table: status word -> part state (SMPP 3.4 5.2.28 message states, Kannel
# and Vumi spellings); "enroute" and "accepted" are intermediate (not final).
_M_STAT_MAP: dict[str, str] = {
    "DELIVRD": "delivered", "DELIVERED": "delivered",
    "EXPIRED": "expired",
    "DELETED": "undeliverable", "UNDELIV": "undeliverable", "UNDELIVERABLE": "undeliverable",
    "FAILED": "undeliverable", "SKIPPED": "undeliverable",
    "REJECTD": "rejected", "REJECTED": "rejected",
    "UNKNOWN": "unknown_receipt",
    "ENROUTE": "enroute", "SCHEDULED": "enroute", "BUFFRED": "enroute", "BUFFERD": "enroute",
    "BUFFERED": "enroute", "ACKED": "enroute",
    "ACCEPTD": "accepted", "ACCEPTED": "accepted",
}  # fmt: skip
_M_INTERMEDIATE = {"enroute", "accepted"}
STATS = [*_M_STAT_MAP, "WEIRD", "delivrd", "Undeliv"]


def _m_map_stat(stat: str | None, overrides: Mapping[str, str] | None) -> tuple[Any, bool]:
    key = (stat or "").strip().upper()
    state: Any = None
    if overrides:
        state = overrides.get(key) or overrides.get(stat or "")
    if state is None:
        state = _M_STAT_MAP.get(key, "unknown_receipt")
    return state, state not in _M_INTERMEDIATE


def _m_intermediate_notification(esm_class: int) -> bool:
    """SMPP 3.4 5.2.12: message type bits 5..2 = 1000 (0x20), intermediate notification."""
    return (esm_class >> 2) & 0b1111 == 0b1000


_DIGITS = "0123456789abcdef"


def _m_parse_int(value: str, base: int) -> int | None:
    """`value` as a base-10/16 number (ASCII digits, any case; an optional 0x before hex
    digits, as the SMSCs that print one mean it), else None: digit by digit, no int()."""
    body = value[2:] if base == 16 and value[:2].lower() == "0x" else value
    if not body or any(c.lower() not in _DIGITS[:base] for c in body):
        return None
    n = 0
    for c in body:
        n = n * base + _DIGITS.index(c.lower())
    return n


def _m_format_int(n: int, base: int) -> str:
    out = ""
    while True:
        n, d = divmod(n, base)
        out = _DIGITS[d] + out
        if n == 0:
            return out


def _m_apply_mode(value: str, mode: str) -> str:
    """One id normalisation step, written from its documented meaning (not from receipts.py)."""
    if mode in ("as_is", ""):
        return value
    if mode in ("lower", "upper"):
        return value.lower() if mode == "lower" else value.upper()
    if mode == "strip_zeros":  # leading zeros off; an all-zero id keeps one zero
        stripped = value.lstrip("0")
        return stripped if stripped or not value else "0"
    if mode in ("hex_to_dec", "dec_to_hex", "dec_to_hex_upper"):
        n = _m_parse_int(value, 16 if mode == "hex_to_dec" else 10)
        if n is None:
            return value  # not a number in that base: kept, so matching fails visibly
        out = _m_format_int(n, 10 if mode == "hex_to_dec" else 16)
        return out.upper() if mode == "dec_to_hex_upper" else out
    raise ValueError(f"unknown id normalisation mode {mode!r}")


def _m_normalise(raw: str, mode: str) -> str:
    value = raw.strip().strip("\0").strip()
    for step in mode.split(","):
        value = _m_apply_mode(value, step.strip())
    return value


_M_STATES = {0: "SCHEDULED", 1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED",
             5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD", 9: "SKIPPED"}  # fmt: skip


def _original(
    short_message: bytes,
    tlvs: Any = (),
    esm_class: int = 4,
    *,
    data_coding: int = 0,
    tz: Any = "UTC",
    stat_map: Any = None,
    id_mode: str = "as_is",
) -> R.ParsedReceipt:
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    found: dict[int, bytes] = {}
    for tag, value in tlvs:
        found.setdefault(tag, value)
    payload = short_message or found.get(Tag.MESSAGE_PAYLOAD, b"")
    text = payload.decode("utf-16-be", "replace") if data_coding == 8 else payload.decode("latin-1")
    fields = _m_fields(text)
    message_id = fields.get("id", "")
    if Tag.RECEIPTED_MESSAGE_ID in found:
        message_id = found[Tag.RECEIPTED_MESSAGE_ID].split(b"\0", 1)[0].decode("latin-1")
    stat = fields.get("stat") or None
    state_tlv = found.get(Tag.MESSAGE_STATE)
    message_state = state_tlv[0] if state_tlv else None
    if message_state is not None and message_state in _M_STATES:
        stat = _M_STATES[message_state]
    nec = found.get(Tag.NETWORK_ERROR_CODE)
    network_error = (nec[0], int.from_bytes(nec[1:3], "big")) if nec and len(nec) == 3 else None
    state, final = _m_map_stat(stat, stat_map)
    if _m_intermediate_notification(esm_class):
        final = False
    return R.ParsedReceipt(
        message_id=message_id, normalised_id=_m_normalise(message_id, id_mode), stat=stat,
        state=state, final=final, err=fields.get("err") or None, network_error=network_error,
        message_state=message_state, submit_date=_m_date(fields.get("submit_date"), zone),
        done_date=_m_date(fields.get("done_date"), zone), sub=_m_int(fields.get("sub")),
        dlvrd=_m_int(fields.get("dlvrd")), text=fields.get("text"),
    )  # fmt: skip


# Generators ------------------------------------------------------------------------------


def _strict(r: R.ParsedReceipt) -> tuple[Any, ...]:
    """All fields, dates as (wall time, zone): aware datetimes in different zones compare
    equal when they are the same instant, which would hide a wrong zone."""
    dates = [(d.replace(tzinfo=None), str(d.tzinfo)) if d else None
             for d in (r.submit_date, r.done_date)]  # fmt: skip
    return (*(getattr(r, f) for f in R.ParsedReceipt.__slots__), *dates)


ids = st.one_of(
    st.text("0123456789abcdef", min_size=1, max_size=65),
    st.text("0123456789ABCDEF", min_size=1, max_size=65),
    st.integers(0, 2**128).map(str),
)
# %y's century pivot (68 → 2068, 69 → 1969) gets its own share of the years.
years = st.one_of(st.sampled_from([1969, 1999, 2000, 2068]), st.integers(1969, 2068))
dates = st.tuples(
    st.datetimes(datetime(1969, 1, 1), datetime(2068, 12, 31, 23, 59, 59)), years, st.booleans()
).map(lambda d: d[0].replace(year=d[1], day=min(d[0].day, 28)).strftime(
    "%y%m%d%H%M%S" if d[2] else "%y%m%d%H%M"))  # fmt: skip
bad_dates = st.text("0123456789", min_size=0, max_size=15)  # month 13, 9 digits, leap second …
texts = st.one_of(
    st.just(""), st.just("none"), st.text(max_size=25).map(lambda t: t.replace("\0", ""))
)


@st.composite
def receipts(draw: Any) -> dict[str, Any]:
    """One receipt's parts: the fields, the TLVs and the connector's parsing options."""
    f = {
        "id": draw(ids), "sub": draw(st.sampled_from(["001", "000", "1", "010"])),
        "dlvrd": draw(st.sampled_from(["001", "000", "0"])),
        "submit date": draw(st.one_of(dates, dates, bad_dates)),
        "done date": draw(st.one_of(dates, dates, bad_dates)),
        "stat": draw(st.sampled_from(STATS)), "err": draw(st.sampled_from(["000", "001", "0x1F"])),
        "text": draw(texts),
    }  # fmt: skip
    tlv_id = draw(st.one_of(st.none(), st.just(f["id"]), ids))
    state = draw(st.one_of(st.none(), st.integers(0, 12)))
    tlvs: list[tuple[int, bytes]] = []
    if tlv_id is not None:
        tlvs.append((Tag.RECEIPTED_MESSAGE_ID, tlv_id.encode() + b"\0"))
    if state is not None:
        tlvs.append((Tag.MESSAGE_STATE, bytes([state])))
    if draw(st.booleans()):
        tlvs.append((Tag.NETWORK_ERROR_CODE, draw(st.binary(min_size=2, max_size=4))))
    if tlvs and draw(st.booleans()):  # a repeated tag: the first one wins
        tlvs.append((tlvs[0][0], b"999\0"))
    tlvs = draw(st.permutations(tlvs))
    options = {
        "esm_class": draw(st.sampled_from([0x04, 0x08, 0x20])),
        "tz": draw(st.sampled_from(ZONES).flatmap(lambda z: st.sampled_from([z, ZoneInfo(z)]))),
        "stat_map": draw(st.sampled_from(OVERRIDES)),
        "id_mode": draw(st.sampled_from(["as_is", "lower", "hex_to_dec", "strip_zeros,upper",
                                         "dec_to_hex", "as_is, dec_to_hex_upper"])),
    }  # fmt: skip
    return {"fields": f, "tlvs": tuple((int(t), v) for t, v in tlvs), "options": options,
            "text_key": draw(st.sampled_from(["text", "Text"]))}  # fmt: skip


def spec_text(r: dict[str, Any]) -> str:
    f = r["fields"]
    return " ".join(f"{r['text_key'] if k == 'text' else k}:{f[k]}" for k in KEYS)


def parse_all(text: str, r: dict[str, Any], data_coding: int = 0) -> list[R.ParsedReceipt]:
    """parse_receipt, the general path and the model, on the same PDU fields."""
    body = text.encode("utf-16-be") if data_coding == 8 else text.encode("latin-1", "replace")
    opts = r["options"]
    args = (body, r["tlvs"], opts["esm_class"])
    kwargs = {"data_coding": data_coding, "tz": opts["tz"], "stat_map": opts["stat_map"],
              "id_mode": opts["id_mode"]}  # fmt: skip
    fast = R.parse_receipt(*args, **kwargs)
    _check_core(fast, R.receipt_core(*args, **kwargs), r["tlvs"])
    return [fast, R._parse_receipt_general(*args, **kwargs), _original(*args, **kwargs)]


def _check_core(p: R.ParsedReceipt, got: tuple[Any, ...], tlvs: Any) -> None:
    """receipt_core (the intake's lean parse) gives the ParsedReceipt's stored fields, the
    first message_payload TLV and whether a receipted_message_id came."""
    core, has_id, payload = got
    assert core[:-1] == tuple(getattr(p, f) for f in R.ParsedReceipt.__slots__[:8])
    assert _strict_date(core[-1]) == _strict_date(p.done_date)
    assert has_id == any(t == Tag.RECEIPTED_MESSAGE_ID for t, _ in tlvs)
    assert payload == next((v for t, v in tlvs if t == Tag.MESSAGE_PAYLOAD), None)


# Properties ------------------------------------------------------------------------------


@SETTINGS
@given(receipts(), st.sampled_from([0, 8]))
def test_fast_path_equals_general_path(r, data_coding):
    """Spec-layout receipts (with and without TLVs) take the fast path and parse exactly as
    the general path and the old parser do."""
    text = spec_text(r)
    if data_coding == 0:
        text = text.encode("latin-1", "replace").decode("latin-1")
    assert R._SPEC_RE.match(text) is not None or any(c.isspace() for c in r["fields"]["text"])
    fast, general, model = parse_all(text, r, data_coding)
    assert _strict(fast) == _strict(general) == _strict(model)
    if not r["tlvs"]:
        assert fast.message_id == r["fields"]["id"]


@SETTINGS
@given(receipts(), st.data())
def test_deviations_parse_like_the_spec_layout(r, data):
    """Case variants, `submit_date`, extra blanks, `TEXT:` (general path) give the ParsedReceipt the
    spec layout gives (fast path); a missing sub/dlvrd only loses that field."""
    f = r["fields"]
    case = data.draw(st.sampled_from([str.upper, str.lower, str.title, lambda k: k]))
    sep = data.draw(st.sampled_from([" ", "  ", "\t", " \n"]))
    under = data.draw(st.booleans())
    drop = data.draw(st.sampled_from([(), ("sub",), ("dlvrd",), ("sub", "dlvrd")]))
    f["text"] = f["text"].lstrip()  # a value's leading blanks are the separator's, once varied
    parts = [f"{case(k.replace(' ', '_') if under else k)}:{f[k]}" for k in KEYS if k not in drop]
    deviated = sep.join(parts)
    spec = parse_all(spec_text(r), r)
    dev = parse_all(deviated, r)
    assert _strict(dev[0]) == _strict(dev[1]) == _strict(dev[2])
    expected = {**{s: getattr(spec[0], s) for s in R.ParsedReceipt.__slots__},
                **{k: None for k in drop}}  # fmt: skip
    assert {s: getattr(dev[0], s) for s in R.ParsedReceipt.__slots__} == expected


JUNK = st.lists(
    st.sampled_from(["x", " ", ":", "\t", "\xa0", "\x1c", "id:", " id:", " stat:", " err:",
                     " text:", "Text ", " sub:", "0"]),
    max_size=6,
)  # fmt: skip


@SETTINGS
@given(receipts(), st.sampled_from(["id", "sub", "stat", "err"]), JUNK, st.booleans())
def test_odd_values_inside_the_spec_frame(r, field, junk, prepend):
    """A value holding blanks, colons or key words: the fast pattern must refuse it or agree."""
    value = r["fields"][field]
    r["fields"][field] = "".join(junk) + value if prepend else value + "".join(junk)
    fast, general, model = parse_all(spec_text(r), r)
    assert _strict(fast) == _strict(general) == _strict(model)


@SETTINGS
@given(st.one_of(dates, bad_dates, st.text("0123456789 ", max_size=16)),
       st.sampled_from(ZONES), st.booleans())  # fmt: skip
def test_dates_like_strptime(value, zone, four_digit_year):
    """Digit slicing equals strptime for 10/12/14 digits, valid or not (month 13, 30
    February, leap second, hour 24, year 0000)."""
    tz = ZoneInfo(zone)
    if four_digit_year and len(value) == 12:
        value = ("19" if value[:2] >= "69" else "20") + value
    got = R._parse_date(value, tz)
    assert _strict_date(got) == _strict_date(_m_date(value, tz))


def _strict_date(d: datetime | None) -> Any:
    return (d.replace(tzinfo=None), d.tzinfo) if d else None


@SETTINGS
@given(
    st.text("0123456789abcdefABCDEF \0xz", max_size=20),
    st.lists(st.sampled_from([*R.ID_MODES, " lower ", "bogus"]), min_size=1, max_size=3),
)
def test_cached_id_modes_like_before(raw, steps):
    """The parsed-once mode steps give the same ids, and the same error for an unknown mode."""
    mode = ",".join(steps)
    try:
        expected: Any = _m_normalise(raw, mode)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: Any = R.normalise_id(raw, mode)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


def test_fast_path_is_taken_and_samples():
    """The simulator's receipt matches the spec pattern; the fixed samples decode as expected."""
    text = R.format_receipt_text("0b1c", "DELIVRD", datetime(2026, 1, 2, 3, 4),
                                 datetime(2026, 1, 2, 3, 5), text="hi there")  # fmt: skip
    assert R._SPEC_RE.match(text) is not None
    tlvs = ((Tag.RECEIPTED_MESSAGE_ID, b"0B1C\0"), (Tag.MESSAGE_STATE, b"\x05"))
    r = R.parse_receipt(text.encode(), tlvs, tz="Europe/Berlin", id_mode="lower")
    assert (r.message_id, r.normalised_id, r.stat, r.state, r.final) == (
        "0B1C", "0b1c", "UNDELIV", "undeliverable", True)  # fmt: skip
    assert r.done_date == datetime(2026, 1, 2, 3, 5, tzinfo=ZoneInfo("Europe/Berlin"))
    assert (r.sub, r.dlvrd, r.err, r.text) == (1, 1, "000", "hi there")
    no_text = R.parse_receipt(text.split(" text:")[0].encode())
    assert no_text.text is None and no_text.err == "000" and no_text.message_id == "0b1c"
    # '²' is a digit to str.isdigit but not to int(): the old parser raised here.
    assert R.parse_receipt("id:1 sub:\xb2 stat:DELIVRD".encode("latin-1")).sub is None

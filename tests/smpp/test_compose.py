"""Message composition (`shared/smpp/compose.py`), pure: a message → its submit_sm PDUs.

Expected values are written out from SMPP 3.4 (TON/NPI, esm_class UDHI 0x40, data_coding) and
3GPP TS 23.040 (the 8-bit reference UDH `05 00 03 ref total no`), not recomputed by the code
under test."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.shared.smpp.compose import (
    _build_general,
    _plain,
    build_parts,
    concat_ref,
    source_ton_npi,
)
from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.text import TextTooLong

from .rows import Msg as Row


def conn(**kw: Any) -> ConnectorSettings:
    return ConnectorSettings(name="c1", host="127.0.0.1", port=2775, system_id="smsgw", **kw)



def Msg(**kw: Any) -> Row:
    """A row from the CLI (no receipt wish of its own) unless a test says otherwise."""
    return Row(**{"source": "cli", **kw})


@pytest.mark.parametrize(("addr", "expected"), [
    ("SMSGW", (5, 0, "SMSGW")),  # alphanumeric: the connector's 5/0
    ("VeryLongSenderName", (5, 0, "VeryLongSen")),  # cut to 11 characters
    ("12345", (3, 0, "12345")),  # short code (3-8 digits, no '+'): network specific
    ("+447700900001", (1, 1, "447700900001")),  # international, '+' dropped
    ("07700900001", (1, 1, "07700900001")),  # anything else: the connector's default 1/1
])
def test_source_ton_npi(addr: str, expected: tuple[int, int, str]) -> None:
    assert source_ton_npi(addr, conn()) == expected


def test_listed_short_code_and_connector_defaults() -> None:
    c = conn(short_codes=["+4412345678901"], source_addr_ton=2, source_addr_npi=9,
             alphanumeric_ton=6, alphanumeric_npi=1)
    assert source_ton_npi("+4412345678901", c) == (3, 0, "4412345678901")
    assert source_ton_npi("0123456789", c) == (2, 9, "0123456789")
    assert source_ton_npi("Shop", c) == (6, 1, "Shop")


def test_concat_ref_is_the_low_bits_of_the_id() -> None:
    assert concat_ref(0x1234, "udh8") == 0x34
    assert concat_ref(0x12345, "udh16") == 0x2345
    assert concat_ref(0x12345, "sar") == 0x2345


def test_one_part_plain_gsm() -> None:
    total, parts = build_parts(Msg(), conn())
    assert total == 1 and len(parts) == 1
    no, pdu = parts[0]
    assert no == 1
    assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr) == (5, 0, "SMSGW")
    assert (pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr) == (1, 1, "447700900001")
    assert (pdu.esm_class, pdu.data_coding, pdu.registered_delivery) == (0, 0, 1)
    assert pdu.short_message == b"hello"


def test_long_message_has_udh_with_the_id_reference_and_skips_done_parts() -> None:
    body = "x" * 200  # 153 + 47 septets: two parts with an 8-bit reference UDH
    total, parts = build_parts(Msg(body=body, done_parts=(1,)), conn())
    assert total == 2 and [no for no, _ in parts] == [2]
    pdu = parts[0][1]
    assert pdu.esm_class == 0x40
    assert pdu.short_message[:6] == bytes([0x05, 0x00, 0x03, 0x34, 2, 2])
    assert pdu.short_message[6:] == b"x" * 47


def test_unicode_text_goes_ucs2_and_a_requested_encoding_wins() -> None:
    _, parts = build_parts(Msg(body="привет"), conn())
    assert parts[0][1].data_coding == 8
    assert parts[0][1].short_message == "привет".encode("utf-16-be")
    _, parts = build_parts(Msg(body="hello", encoding="ucs2"), conn())
    assert parts[0][1].data_coding == 8


def test_packed_gsm_and_transliteration() -> None:
    _, parts = build_parts(Msg(body="“hi”"), conn(transliterate=True, gsm7_packed=True))
    # transliterated to "hi" (quotes → '"'), then packed: 4 septets in 4 octets
    assert parts[0][1].data_coding == 0
    assert len(parts[0][1].short_message) == 4


def test_text_that_cannot_be_encoded_raises() -> None:
    with pytest.raises((ValueError, UnicodeError)):
        build_parts(Msg(body="привет"), conn(encodings=["gsm7"]))


# plain ASCII, GSM but not as itself, extension, Latin-1, look-alikes
_TEXT_CHARS = "aZ09 .,!?-:;\n\r@$_€[é\u2019\u00a0"


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(st.none(), st.text(_TEXT_CHARS, max_size=170),
                   st.text("abc 123", min_size=155, max_size=165)),
    encoding=st.sampled_from([None, "gsm7", "ucs2", "latin1"]),
    source=st.sampled_from(["api", "cli", "sendsms"]),
    smpp=st.sampled_from([None, {}, {"pid": 1}, {"receipt": False}]),
    done=st.sampled_from([(), (1,)]),
    c=st.sampled_from([{}, {"encodings": ["ucs2", "gsm7"]}, {"gsm7_packed": True},
                       {"transliterate": True}, {"data_coding_0": "latin1",
                                                 "encodings": ["latin1", "ucs2"]},
                       {"service_type": "CMT"}, {"esm_class_mode": 3, "registered_delivery": 0},
                       {"long_message": "payload", "more_messages_to_send": False}]),
)
def test_plain_fast_path_equals_the_general_walk(body, encoding, source, smpp, done, c) -> None:
    """`build_parts` takes a short cut for one part of ASCII that GSM encodes as itself; it
    gives what the general walk gives for every message and connector (or the same error)."""
    row, connector = Msg(body=body, encoding=encoding, source=source, smpp=smpp,
                         done_parts=done), conn(**c)
    try:
        expected: Any = _build_general(row, connector, None)
    except (ValueError, TextTooLong, UnicodeError) as exc:
        expected = type(exc)
    try:
        got: Any = build_parts(row, connector)
    except (ValueError, TextTooLong, UnicodeError) as exc:
        got = type(exc)
    assert got == expected


def test_plain_fast_path_is_taken() -> None:
    """Positive control for the property above: the common MT takes the short cut."""
    assert _plain(Msg(body="Your code is 123456."), conn()) is not None
    assert _plain(Msg(body="Price: 5$"), conn()) is None  # '$' is GSM 0x02: the general walk

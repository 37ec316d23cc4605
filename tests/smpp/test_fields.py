"""Per-message SMPP fields (`shared/smpp/fields.py`), the client's UDH (`shared/smpp/text.py`
`split_udh`) and their composition into submit_sm (`shared/smpp/compose.py`), pure.

Expected values are written out from the specifications, not recomputed by the code under
test: data_coding from 3GPP TS 23.038 section 4 (the coding groups), times from SMPP 3.4
7.1.1, UDH octets from TS 23.040 9.2.3.24 (IEI 0x00 concatenation, 0x05 16-bit ports), the
dlr-mask mapping and the meta-data format from Kannel 1.4.5 (gw/smsc/smsc_smpp.c msg_to_pdu,
gw/meta_data.c). One composed PDU is also read back with python-smpplib, an independent codec.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import smpplib.smpp

from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.compose import build_parts
from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.fields import (
    TlvCatalog,
    fields_dcs,
    parse_meta_data,
    registered_delivery_for_mask,
    smpp_time,
)
from smsgw.shared.smpp.text import TextTooLong, check_udh, split_udh, udh_elements

from .rows import Msg

PORTS = bytes.fromhex("06050415811581")  # IEI 05 (16-bit ports), 4 octets: 0x1581 → 0x1581
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


# --- data_coding (TS 23.038 4) ------------------------------------------------------------------

@pytest.mark.parametrize(("coding", "kw", "dcs"), [
    (0, {"mclass": 0}, 0xF0),  # flash, GSM 7-bit: data coding/message class group 1111 0 0 00
    (1, {"mclass": 1}, 0xF5),  # class 1 (ME), 8-bit data: 1111 0 1 01
    (0, {"mclass": 2}, 0xF2),  # class 2 (SIM), GSM 7-bit
    (1, {"mclass": 3}, 0xF7),  # class 3 (TE), 8-bit
    (2, {"mclass": 0}, 0x18),  # UCS-2 has no 0xFX form: general group 00 0 1 10 00
    (2, {"mclass": 1}, 0x19),
    (0, {"alt_dcs": 1}, 0xF1),  # the 0xFX form without a class: class 1 (Kannel's default)
    (0, {"mwi": 0}, 0xD8),  # voicemail waiting, active, store, GSM 7-bit: 1101 1 0 00
    (2, {"mwi": 1}, 0xE9),  # fax waiting, active, store, UCS-2: 1110 1 0 01
    (0, {"mwi": 6}, 0xC2),  # e-mail waiting, inactive (Kannel: discard group, sense 0)
    (0, {"mwi": 3, "empty": True}, 0xCB),  # other, active, no text: discard group 1100 1 0 11
    (0, {}, 0x00), (1, {}, 0x04), (2, {}, 0x08),  # no class: the general group
])
def test_fields_dcs(coding: int, kw: dict[str, Any], dcs: int) -> None:
    assert fields_dcs(coding, **kw) == dcs


@pytest.mark.parametrize(("mask", "rd"), [
    (None, 0), (0, 0), (1, 1), (2, 2), (3, 1), (19, 1), (8, 0), (16, 0), (24, 0),
    # the buffered bit (4) asks for intermediate notifications (+16), as Debian's kannel
    # 1.4.5 sends it (tests/kannel: mask 4 → 16, 31 → 17)
    (4, 16), (31, 17), (5, 17), (6, 18), (12, 16), (32, 0), (34, 2)
])
def test_registered_delivery_from_a_dlr_mask(mask: int | None, rd: int) -> None:
    assert registered_delivery_for_mask(mask) == rd


def test_smpp_times() -> None:
    at = datetime(2026, 3, 1, 14, 30, 45, tzinfo=timezone(timedelta(hours=2)))
    assert smpp_time(at, NOW) == "260301123045000+"  # UTC, tenths 0, offset 00, '+'
    later = NOW + timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=1)
    assert smpp_time(later, NOW, relative=True) == "000001020305000R"  # rounded up
    assert smpp_time(NOW + timedelta(seconds=59), NOW, relative=True) == "000000000059000R"
    with pytest.raises(ValueError, match="99 days"):
        smpp_time(NOW + timedelta(days=100), NOW, relative=True)


def test_meta_data_like_kannel() -> None:
    got = parse_meta_data("?smpp?a=1&b=x%20y+z&?Other?k=%00v")
    assert got == {"smpp": {"a": b"1", "b": b"x y z"}, "other": {"k": b"\x00v"}}
    assert parse_meta_data("") == {}
    for bad in ("smpp?a=1", "?smpp", "?smpp?a", "?smpp?a=1=2"):
        with pytest.raises(ValueError):
            parse_meta_data(bad)


def test_tlv_catalogue() -> None:
    defs = ConnectorSettings(name="c", system_id="s", tlvs=[
        {"name": "my_int", "tag": 0x1401, "type": "integer", "length": 2},
        {"name": "my_str", "tag": 0x1402, "type": "nulterminated", "length": 5},
        {"name": "my_oct", "tag": 0x1403, "type": "octetstring", "length": 3}]).tlvs
    cat = TlvCatalog(d.definition() for d in defs)
    # Kannel meta-data values, packed as smpp_pdu_pack packs each type
    assert cat.from_text("my_int", b"42") == ("0x1401", "002a")
    assert cat.from_text("my_str", b"abc") == ("0x1402", "61626300")
    assert cat.from_text("my_oct", b"\x01\x02") == ("0x1403", "0102")
    assert cat.from_text("user_message_reference", b"258") == ("0x0204", "0102")
    for key, value in (("my_int", b"65536"), ("my_int", b"-1"), ("my_str", b"abcdef"),
                       ("my_oct", b"1234"), ("nope", b"1")):
        with pytest.raises(ValueError):  # Kannel wraps or drops these; smsgw refuses
            cat.from_text(key, value)
    # JSON: the octets, by name or tag
    assert cat.from_octets("0x3FFF", b"\xff") == ("0x3fff", "ff")  # a vendor tag
    assert cat.from_octets("source_port", b"\x15\x81") == ("0x020a", "1581")
    for key, value in (("0x0424", b"x"), ("0x020c", b"\x00\x01"),  # smsgw's own
                       ("0x0100", b"x"), ("source_port", b"\x15"), ("0x1400", bytes(256))):
        with pytest.raises(ValueError):
            cat.from_octets(key, value)


def test_two_connectors_disagreeing_on_a_name_refuse_it() -> None:
    a = ConnectorSettings(name="a", system_id="s", tlvs=[{"name": "x", "tag": 0x1401,
                                                          "length": 4}]).tlvs[0]
    b = ConnectorSettings(name="b", system_id="s", tlvs=[{"name": "x", "tag": 0x1402,
                                                          "length": 4}]).tlvs[0]
    with pytest.raises(ValueError, match="differently"):
        TlvCatalog([a.definition(), b.definition()]).from_text("x", b"1")


# --- the client's UDH (TS 23.040 9.2.3.24) --------------------------------------------------------

def test_udh_checks() -> None:
    assert udh_elements(PORTS) == [(0x05, bytes.fromhex("15811581"))]
    assert check_udh(PORTS) is False
    assert check_udh(bytes.fromhex("050003aa0201")) is True  # carries its own concatenation
    for bad in (b"", bytes.fromhex("050003"), bytes.fromhex("030504"),
                bytes.fromhex("0405041581"), bytes([140]) + bytes(140)):
        with pytest.raises(ValueError):
            udh_elements(bad)


def test_binary_split_keeps_the_udh_and_adds_concatenation() -> None:
    data = bytes(range(256)) + bytes(44)  # 300 octets
    parts = split_udh(data, "binary", PORTS, "udh8", ref=0x34)
    # 7 octets of UDH + 5 of concatenation leave 128 per part: 128 + 128 + 44
    assert [len(p.short_message) for p in parts] == [140, 140, 12 + 44]
    for seq, part in enumerate(parts, 1):
        assert part.udhi
        assert part.short_message[:12] == bytes.fromhex("0b05041581158100033403") + bytes([seq])
    assert b"".join(p.short_message[12:] for p in parts) == data
    # one part: the UDH as given
    (one,) = split_udh(data[:133], "binary", PORTS, "udh8")
    assert one.short_message == PORTS + data[:133]
    # 16-bit reference and SAR
    p16 = split_udh(data, "binary", PORTS, "udh16", ref=0x1234)
    assert p16[0].short_message[:13] == bytes.fromhex("0c050415811581080412340301")
    sar = split_udh(data, "binary", PORTS, "sar", ref=7)
    assert [len(p.short_message) for p in sar] == [140, 140, 7 + 300 - 266]
    assert all(p.short_message[:7] == PORTS and p.tlvs for p in sar)
    # message_payload: one PDU, the UDH leading the payload
    (pl,) = split_udh(data, "binary", PORTS, "payload")
    assert pl.short_message == b"" and pl.udhi
    assert pl.tlvs == ((P.Tag.MESSAGE_PAYLOAD, PORTS + data),)


def test_text_split_with_a_udh() -> None:
    # GSM 7-bit: (140 - 7) octets hold 152 septets; with concatenation (140 - 12) → 146
    assert len(split_udh("a" * 152, "gsm7", PORTS)) == 1
    parts = split_udh("a" * 160, "gsm7", PORTS, "udh8", ref=1)
    assert [len(p.text or "") for p in parts] == [146, 14]
    assert parts[0].short_message[:12] == bytes.fromhex("0b050415811581000301020" "1")
    # UCS-2: (140 - 12) // 2 = 64 code units per part
    assert [len(p.text or "") for p in split_udh("ж" * 100, "ucs2", PORTS)] == [64, 36]
    # packed GSM after a 12-octet UDH: 96 bits, so 2 fill bits before the first septet
    packed = split_udh("a" * 160, "gsm7_packed", PORTS, ref=1)[1].short_message[12:]
    assert packed[0] == (0x61 << 2) & 0xFF


def test_own_concatenation_must_fit_one_part() -> None:
    own = bytes.fromhex("050003aa0201")
    assert len(split_udh(bytes(134), "binary", own)) == 1
    with pytest.raises(TextTooLong, match="concatenation"):
        split_udh(bytes(135), "binary", own)


# --- composition ------------------------------------------------------------------------------

def conn(**kw: Any) -> ConnectorSettings:
    return ConnectorSettings(name="c1", system_id="smsgw", **kw)




def one(msg: Msg, connector: ConnectorSettings | None = None) -> P.SubmitSm:
    total, parts = build_parts(msg, connector or conn(), NOW)
    assert total == 1
    return parts[0][1]


def test_a_plain_message_carries_no_extra_field() -> None:
    pdu = one(Msg())
    assert (pdu.service_type, pdu.esm_class, pdu.protocol_id, pdu.priority_flag,
            pdu.schedule_delivery_time, pdu.validity_period, pdu.data_coding,
            pdu.registered_delivery, pdu.tlvs) == ("", 0, 0, 0, "", "", 0, 1, ())


def test_validity_and_schedule_per_connector() -> None:
    msg = Msg(valid_until=NOW + timedelta(hours=1), send_at=NOW + timedelta(minutes=30))
    pdu = one(msg)  # the default: validity sent absolute, the schedule held by the sender
    assert (pdu.validity_period, pdu.schedule_delivery_time) == ("260301130000000+", "")
    pdu = one(msg, conn(schedule_mode="send", time_format="relative"))
    assert (pdu.validity_period, pdu.schedule_delivery_time) == (
        "000000010000000R", "000000003000000R")
    pdu = one(msg, conn(schedule_mode="send", send_validity=False))
    assert (pdu.validity_period, pdu.schedule_delivery_time) == ("", "260301123000000+")
    past = replace(msg, send_at=NOW - timedelta(seconds=1))  # due: no schedule on the wire
    assert one(past, conn(schedule_mode="send")).schedule_delivery_time == ""


@pytest.mark.parametrize(("msg", "connector", "rd"), [
    (Msg(), conn(), 1),  # the API tracks delivery: the connector's value
    (Msg(callback_url="https://x"), conn(registered_delivery=17), 17),
    (Msg(smpp={"receipt": False}), conn(), 0),
    (Msg(source="sendsms"), conn(), 0),  # Kannel: no dlr-mask, no receipt
    (Msg(source="sendsms", dlr_mask=2), conn(), 2),
    (Msg(source="sendsms", dlr_mask=7), conn(), 17),  # buffered (4): intermediate too
    (Msg(source="rule"), conn(registered_delivery=2), 2),
    (Msg(source="sendsms", dlr_mask=3), conn(registered_delivery=0), 0),  # never on this SMSC
])
def test_registered_delivery_from_the_request(msg: Msg, connector: ConnectorSettings,
                                              rd: int) -> None:
    assert one(msg, connector).registered_delivery == rd


def test_every_message_field_on_the_wire() -> None:
    msg = Msg(payload=bytes.fromhex("0102ff00"), udh=PORTS, smpp={
        "mclass": 1, "pid": 0x7F, "rpi": 1, "service_type": "VMA", "priority_flag": 2,
        "tlvs": {"0x1401": "abcd", "0x0204": "0007"}})
    pdu = one(msg, conn(service_type="CMT", esm_class_mode=3))
    assert pdu.service_type == "VMA"
    assert pdu.esm_class == 0x80 | 0x40 | 0x03  # reply path, UDHI, store and forward
    assert (pdu.protocol_id, pdu.priority_flag, pdu.data_coding) == (0x7F, 2, 0xF5)
    assert pdu.short_message == PORTS + bytes.fromhex("0102ff00")
    assert pdu.tlvs == ((0x0204, b"\x00\x07"), (0x1401, b"\xab\xcd"))  # by tag
    assert one(Msg(), conn(service_type="CMT")).service_type == "CMT"


def test_flash_text_is_gsm_whatever_data_coding_0_means() -> None:
    latin = conn(data_coding_0="latin1", encodings=["latin1", "ucs2"])
    pdu = one(Msg(body="hi @", smpp={"mclass": 0}), latin)
    assert (pdu.data_coding, pdu.short_message) == (0xF0, b"hi \x00")  # '@' is septet 0
    assert one(Msg(body="привет", smpp={"mclass": 0}), latin).data_coding == 0x18


def test_user_tlvs_follow_sar_and_a_connector_may_refuse_them() -> None:
    msg = Msg(body="x" * 200, smpp={"tlvs": {"0x1401": "01"}})
    _, parts = build_parts(msg, conn(long_message="sar"), NOW)
    # sar_*, the client's, then more_messages_to_send on every part but the last
    assert [t for t, _ in parts[0][1].tlvs] == [0x020C, 0x020E, 0x020F, 0x1401, 0x0426]
    assert [t for t, _ in parts[-1][1].tlvs] == [0x020C, 0x020E, 0x020F, 0x1401]
    _, parts = build_parts(msg, conn(long_message="sar", more_messages_to_send=False), NOW)
    assert [t for t, _ in parts[0][1].tlvs] == [0x020C, 0x020E, 0x020F, 0x1401]
    with pytest.raises(ValueError, match="send_tlvs"):
        build_parts(msg, conn(send_tlvs=False), NOW)


def test_smpplib_reads_the_fields_we_write() -> None:
    """An independent codec reads every per-message field of one composed submit_sm."""
    msg = Msg(body="flash", valid_until=NOW + timedelta(hours=1), send_at=NOW
              + timedelta(minutes=5), smpp={"mclass": 0, "pid": 65, "service_type": "VMA",
                                            "priority_flag": 3, "rpi": 1,
                                            "tlvs": {"0x0204": "0102"}})
    pdu = one(msg, conn(schedule_mode="send"))
    parsed = smpplib.smpp.parse_pdu(P.encode(pdu, 7), client=type(
        "C", (), {"sequence": 0, "next_sequence": lambda self: 1})())
    assert parsed.service_type == b"VMA"
    assert (parsed.esm_class, parsed.protocol_id, parsed.priority_flag) == (0x80, 65, 3)
    assert parsed.schedule_delivery_time == b"260301120500000+"
    assert parsed.validity_period == b"260301130000000+"
    assert (parsed.registered_delivery, parsed.data_coding) == (1, 0xF0)
    assert parsed.short_message == b"flash"
    assert parsed.user_message_reference == 0x0102

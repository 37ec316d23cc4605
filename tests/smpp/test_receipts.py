"""Receipt parsing: public samples, tolerated deviations, TLV preference, ids, stat mapping."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp import receipts as R


def test_spec_example_layout():
    """SMPP 3.4 Appendix B example layout, with Text: capitalised."""
    text = (b"id:1234567890 sub:001 dlvrd:001 submit date:0610191018 done date:0610191018 "
            b"stat:DELIVRD err:000 Text:Hello world")  # fmt: skip
    r = R.parse_receipt(text, tz="Europe/Berlin")
    assert r.message_id == "1234567890" and r.stat == "DELIVRD"
    assert r.state == "delivered" and r.final
    assert r.sub == 1 and r.dlvrd == 1 and r.err == "000" and r.text == "Hello world"
    assert r.submit_date == datetime(2006, 10, 19, 10, 18, tzinfo=ZoneInfo("Europe/Berlin"))


def test_cloudhopper_receipt_vector():
    """cloudhopper-smpp PduDecoderTest decodeDeliverSmAsDeliveryReceipt: TLV id wins."""
    data = bytes.fromhex(
        "000000BA00000005000000000000000200010134343935313336313932300001013430343034000400000000"
        "000000006E69643A30303539313133393738207375623A30303120646C7672643A303031207375626D6974"
        "20646174653A3130303231303137333020646F6E6520646174653A3130303231303137333120737461743A"
        "44454C49565244206572723A30303020746578743A4024232125262F3A000E0001010006000101001E0008"
        "33383630316661000427000102"
    )
    pdu = P.decode_frame(data)
    assert R.is_receipt(pdu.esm_class)
    r = R.parse_receipt(pdu.short_message, pdu.tlvs, pdu.esm_class)
    assert r.message_id == "38601fa"  # receipted_message_id TLV, not the text's 0059113978
    assert r.message_state == 2 and r.state == "delivered" and r.final
    assert r.done_date == datetime(2010, 2, 10, 17, 31, tzinfo=ZoneInfo("UTC"))


def test_smpplib_receipt_in_message_payload():
    """python-smpplib test_parse_deliver_sm: text in message_payload, id in the TLV."""
    pdu = P.decode_frame(
        b"\x00\x00\x00\xcb\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01\x00"
        b"\x01\x0131600000000\x00\x05\x00XXX YYYY\x00\x04\x00\x00\x00\x00\x00"
        b"\x00\x00\x00\x00\x00\x0e\x00\x01\x01\x00\x06\x00\x01\x01\x00\x1e\x00"
        b"\t1d305b4c\x00\x04'\x00\x01\x02\x04$\x00rid:0489708364 sub:001"
        b" dlvrd:001 submit date:1810151907 done date:1810151907 stat:DELIVRD"
        b" err:000 text:\x04\x1f\x04@\x048\x042\x045\x04B\x04&\x00\x01\x01"
    )
    r = R.parse_receipt(pdu.short_message, pdu.tlvs, pdu.esm_class)
    assert r.message_id == "1d305b4c" and r.stat == "DELIVRD" and r.sub == 1


def test_smpplib_twelve_digit_dates():
    """python-smpplib test_unrecognised_optional_parameters: 12-digit dates, empty text."""
    text = (b"id:795920026 sub:001 dlvrd:001 submit date:200319131913 done date:200319131913 "
            b"stat:DELIVRD err:000 text:")  # fmt: skip
    r = R.parse_receipt(text, tz="Africa/Abidjan")
    assert r.message_id == "795920026"
    assert r.done_date == datetime(2020, 3, 19, 13, 19, 13, tzinfo=ZoneInfo("Africa/Abidjan"))
    assert r.text == ""


@pytest.mark.parametrize(
    "text",
    [
        "id:abc stat:UNDELIV err:005",
        "id:abc submit date:2401011200 done date:2401011205 stat:UNDELIV err:005 text:none",
        "ID:abc SUB:1 DLVRD:0 STAT:UNDELIV ERR:005 TEXT:x",
        "id:abc sub:001 dlvrd:000 submit_date:2401011200 done_date:2401011205 stat:UNDELIV err:005",
    ],
)
def test_tolerated_deviations(text):
    r = R.parse_receipt(text.encode())
    assert (r.message_id, r.stat, r.state, r.err) == ("abc", "UNDELIV", "undeliverable", "005")


def test_long_ids_and_garbage():
    long_id = "a" * 65
    assert R.parse_receipt(f"id:{long_id} stat:DELIVRD".encode()).message_id == long_id
    junk = R.parse_receipt(b"\xff\x00 nothing here")
    assert junk.message_id == "" and junk.state == "unknown_receipt" and junk.final
    assert R.parse_receipt(b"id:1 submit date:99999 stat:DELIVRD").submit_date is None


def test_tlvs_win_and_network_error():
    tlvs = ((P.Tag.RECEIPTED_MESSAGE_ID, b"FF00\0"), (P.Tag.MESSAGE_STATE, b"\x08"),
            (P.Tag.NETWORK_ERROR_CODE, b"\x03\x01\x02"))  # fmt: skip
    r = R.parse_receipt(b"id:1 stat:DELIVRD", tlvs, id_mode="hex_to_dec")
    assert r.message_id == "FF00" and r.normalised_id == "65280"
    assert r.stat == "REJECTD" and r.state == "rejected"
    assert r.network_error == (3, 0x0102)


def test_intermediate_receipts():
    assert R.parse_receipt(b"id:1 stat:ENROUTE").final is False
    assert R.parse_receipt(b"id:1 stat:ACCEPTD").state == "accepted"
    inter = R.parse_receipt(b"id:1 stat:DELIVRD", esm_class=0x20)
    assert inter.state == "delivered" and inter.final is False
    assert R.is_intermediate_notification(0x20) and R.is_receipt(0x20)


def test_is_receipt_by_esm_class_not_text():
    assert R.is_receipt(0x04) and R.is_receipt(0x44) and R.is_receipt(0x08)
    assert not R.is_receipt(0x00) and not R.is_receipt(0x40) and not R.is_receipt(0x03)


def test_stat_overrides_per_connector():
    """Kannel and Vumi disagree on ACCEPTD/UNKNOWN: a connector chooses."""
    vumi_like = {"ACCEPTD": "delivered", "UNKNOWN": "enroute", "0": "delivered"}
    assert R.map_stat("ACCEPTD", vumi_like) == ("delivered", True)
    assert R.map_stat("unknown", vumi_like) == ("enroute", False)
    assert R.map_stat("0", vumi_like) == ("delivered", True)
    assert R.map_stat("WEIRD") == ("unknown_receipt", True)
    assert R.map_stat("BUFFRED") == ("enroute", False)


@pytest.mark.parametrize(
    ("raw", "mode", "expected"),
    [
        ("ABC", "lower", "abc"),
        ("abc", "upper", "ABC"),
        ("000123", "strip_zeros", "123"),
        ("0000", "strip_zeros", "0"),
        ("ff", "hex_to_dec", "255"),
        ("255", "dec_to_hex", "ff"),
        ("255", "dec_to_hex_upper", "FF"),
        ("  0x12\0", "as_is", "0x12"),
        ("00FF", "strip_zeros,lower", "ff"),
        ("zz", "hex_to_dec", "zz"),
    ],
)
def test_normalise_id(raw, mode, expected):
    assert R.normalise_id(raw, mode) == expected


def test_vonage_style_hex_submit_decimal_receipt():
    """Vonage: submit_sm_resp hex, receipt decimal → same normalised id."""
    assert R.normalise_id("0B00000012345678", "hex_to_dec") == R.normalise_id(
        str(0x0B00000012345678), "as_is"
    )

"""Receipts published by SMSC operators and vendors, with every field read off by hand.

The expected values are literals taken from each document (ids, dates, states), and the id
conversions are the documents' own (Vonage: the id "can be in decimal or hexadecimal depending
on your account configuration"; SMPP 3.3 SMSCs print hex ids where 3.4 ones print decimal), so
none of them comes from the code under test. Sources, as each page shows the receipt:

* SMPP 3.4 Appendix B layout (Kannel, cloudhopper and python-smpplib vectors are in
  tests/smpp/test_receipts.py);
* Vonage (Nexmo) help centre, "How to read a Nexmo SMPP delivery receipt";
* smppcenter.com knowledge base, "How to read SMPP delivery receipt" (12-digit dates);
* a receipt quoted in a Q&A thread about SMPP delivery reports (no `text:` field);
* an operator's UNDELIV receipt with err:075 (ESME_RINVDSTNPI) quoted in an SMPP write-up.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from smsgw.shared.smpp import receipts as R

UTC = ZoneInfo("UTC")

PUBLISHED = [
    # (receipt text, id, stat, state, sub, dlvrd, submit date, done date, err, text)
    ("id:0000000012345678 sub:001 dlvrd:001 submit date:1601010100 done date:1601010101 "
     "stat:DELIVRD err:000 text:none",
     "0000000012345678", "DELIVRD", "delivered", 1, 1,
     datetime(2016, 1, 1, 1, 0), datetime(2016, 1, 1, 1, 1), "000", "none"),
    ("id:64567564356765435676 sub:001 dlvrd:001 submit date:190608165232 "
     "done date:190608165237 stat:DELIVRD err:000 text:Hello World",
     "64567564356765435676", "DELIVRD", "delivered", 1, 1,
     datetime(2019, 6, 8, 16, 52, 32), datetime(2019, 6, 8, 16, 52, 37), "000", "Hello World"),
    ("id:40072910491427628 sub:001 dlvrd:001 submit date:1007291049 done date:1007291049 "
     "stat:DELIVRD err:000",
     "40072910491427628", "DELIVRD", "delivered", 1, 1,
     datetime(2010, 7, 29, 10, 49), datetime(2010, 7, 29, 10, 49), "000", None),
    ("id:0911897980 sub:001 dlvrd:000 submit date:1201121551 done date:1201121551 "
     "stat:UNDELIV err:075 text:-PROFILE",
     "0911897980", "UNDELIV", "undeliverable", 1, 0,
     datetime(2012, 1, 12, 15, 51), datetime(2012, 1, 12, 15, 51), "075", "-PROFILE"),
]  # fmt: skip


@pytest.mark.parametrize("receipt", PUBLISHED, ids=lambda r: r[1])
def test_published_receipts_read_as_documented(receipt) -> None:
    """Every field of each published receipt, through both the fast and the general parser."""
    text, mid, stat, state, sub, dlvrd, submitted, done, err, body = receipt
    for parse in (R.parse_receipt, R._parse_receipt_general):
        r = parse(text.encode("latin-1"), tz="UTC")
        assert (r.message_id, r.normalised_id, r.stat, r.state, r.final) == (
            mid, mid, stat, state, True)
        assert (r.sub, r.dlvrd, r.err, r.text) == (sub, dlvrd, err, body)
        assert (r.submit_date, r.done_date) == (submitted.replace(tzinfo=UTC),
                                                done.replace(tzinfo=UTC))


# Id conversions, by hand: 0x12345678 = 305,419,896; 0x0B00000012345678 =
# 11·2^56 + 0x12345678 = 792,633,534,417,207,296 + 305,419,896; decimal 40072910491427628 =
# 0x8E5E198AF5232C; hex 0911897980 = 38,948,927,872.
CONVERSIONS = [
    ("0000000012345678", "hex_to_dec", "305419896"),
    ("0B00000012345678", "hex_to_dec", "792633534722627192"),
    ("0b00000012345678", "hex_to_dec", "792633534722627192"),
    ("0911897980", "hex_to_dec", "38948927872"),
    ("40072910491427628", "dec_to_hex", "8e5e198af5232c"),
    ("40072910491427628", "dec_to_hex_upper", "8E5E198AF5232C"),
    ("305419896", "dec_to_hex", "12345678"),
    ("0000000012345678", "strip_zeros", "12345678"),
    ("0000000012345678", "strip_zeros,hex_to_dec", "305419896"),
    ("0B00000012345678", "lower", "0b00000012345678"),
    ("0b00000012345678", "upper", "0B00000012345678"),
    ("NOT-A-HEX-ID", "hex_to_dec", "NOT-A-HEX-ID"),
    ("12AB", "dec_to_hex", "12AB"),
]


@pytest.mark.parametrize(("raw", "mode", "expected"), CONVERSIONS)
def test_published_ids_convert_as_the_providers_document(raw, mode, expected) -> None:
    """A receipt's id (or a submit_sm_resp id) normalised by each mode, values by hand."""
    assert R.normalise_id(raw, mode) == expected
    text = (f"id:{raw} sub:001 dlvrd:001 submit date:1601010100 done date:1601010101 "
            "stat:DELIVRD err:000 text:none")
    assert R.parse_receipt(text.encode(), id_mode=mode).normalised_id == expected


def test_hex_submit_id_matches_decimal_receipt_id() -> None:
    """Vonage: an account whose submit_sm_resp ids are hex gets receipts with the decimal id;
    hex_to_dec on the submit side and as_is on the receipt side meet at the same string."""
    submit_resp_id = "0B00000012345678"
    receipt = R.parse_receipt(b"id:792633534722627192 sub:001 dlvrd:001 submit date:1601010100"
                              b" done date:1601010101 stat:DELIVRD err:000 text:none")
    assert R.normalise_id(submit_resp_id, "hex_to_dec") == receipt.normalised_id

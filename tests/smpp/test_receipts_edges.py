"""Receipt details the mutation run (tests/mutation/smpp_receipts.toml) found untested, each
checked against the SMPP 3.4 text rather than against our code."""

import dataclasses
from datetime import datetime

import pytest

from smsgw.shared.smpp import receipts as R


@pytest.mark.parametrize("mode", [0b00, 0b01, 0b10, 0b11])
@pytest.mark.parametrize("gsm", [0x00, 0x80])
def test_message_type_is_read_through_the_mode_and_gsm_bits(mode: int, gsm: int) -> None:
    """SMPP 3.4 5.2.12: esm_class bits 1-0 are the messaging mode and bits 7-6 GSM features;
    only bits 5-2 say "receipt". An SMSC that sets the mode or reply-path bits on a receipt
    still sends a receipt, and an MO stays an MO."""
    extra = mode | gsm
    for receipt_type in (0x04, 0x08, 0x20):  # SMSC receipt, SME ack, intermediate notification
        assert R.is_receipt(receipt_type | extra), hex(receipt_type | extra)
    assert R.is_intermediate_notification(0x20 | extra)
    for not_receipt in (0x00, 0x10, 0x18, 0x40):  # default, manual ack, conversation abort, UDHI
        assert not R.is_receipt(not_receipt | extra), hex(not_receipt | extra)
        assert not R.is_intermediate_notification(not_receipt | extra)
    assert not R.is_intermediate_notification(0x04 | extra)


def test_connector_override_keyed_by_the_word_as_received() -> None:
    """A connector's stat table may name a word as the SMSC spells it ("delivrd") or upper case;
    either is found, the exact spelling when the upper-case key is absent."""
    assert R.map_stat("delivrd", {"delivrd": "rejected"}) == ("rejected", True)
    assert R.map_stat("Acceptd", {"ACCEPTD": "delivered"}) == ("delivered", True)
    assert R.map_stat("ACCEPTD", {"acceptd": "expired"}) == ("accepted", False)  # not its word


def test_simulator_receipt_text_holds_the_first_20_characters() -> None:
    """SMPP 3.4 Appendix B: `Text:` holds the first 20 characters of the original message."""
    original = "abcdefghijklmnopqrstuvwxyz"
    text = R.format_receipt_text("7", "DELIVRD", datetime(2026, 1, 2, 3, 4),
                                 datetime(2026, 1, 2, 3, 5), text=original)
    assert text.endswith(" text:abcdefghijklmnopqrst")
    assert R.parse_receipt(text.encode()).text == original[:20]


def test_a_parsed_receipt_cannot_be_changed() -> None:
    """Receipts are shared between the intake and the matcher: the record is frozen."""
    r = R.parse_receipt(b"id:1 stat:DELIVRD")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.state = "rejected"  # type: ignore[misc]

"""Golden byte strings from public sources ↔ our PDU dataclasses (no sockets).

Every vector names where it comes from. None was produced by our own encoder:
- CH: twitter-archive/cloudhopper-smpp, src/test/java/com/cloudhopper/smpp/transcoder/
  PduDecoderTest.java (Apache-2.0), the hex strings with the field values it asserts;
- SL: python-smpplib/python-smpplib, smpplib/tests/test_command.py (LGPL-2.1).
Canonical vectors (no optional trailing bytes) must also re-encode to the same bytes.
"""

import pytest

from smsgw.shared.smpp import pdu as P

CH = "cloudhopper-smpp PduDecoderTest.java"
SL = "python-smpplib smpplib/tests/test_command.py"

# (source, test name there, hex, expected class, expected fields, re-encodes exactly)
VECTORS = [
    (CH, "decodeEnquireLink", "0000001000000015000000000a342ee7", P.EnquireLink,
     {"sequence_number": 171192039}, True),
    (CH, "decodeEnquireLinkResp", "0000001080000015000000000a342eed", P.EnquireLinkResp,
     {"sequence_number": 171192045}, True),
    (CH, "decodeMaxSequenceNumber", "0000001000000015000000007fffffff", P.EnquireLink,
     {"sequence_number": 0x7FFFFFFF}, True),
    (CH, "decodeTooBigSequenceNumber", "00000010000000150000000080000000", P.EnquireLink,
     {"sequence_number": 0x80000000}, True),
    (CH, "decodeSubmitSmResp", "0000001c80000004000000000a342ee1393432353834333135393400",
     P.SubmitSmResp, {"sequence_number": 171192033, "message_id": "94258431594"}, True),
    (CH, "decodeSubmitSmRespWithNoMessageId", "0000001080000004000000000a342ee1",
     P.SubmitSmResp, {"sequence_number": 171192033, "message_id": ""}, False),
    (CH, "decodeSubmitSmRespWithEmptyMessageId", "0000001180000004000000000a342ee100",
     P.SubmitSmResp, {"message_id": ""}, True),
    (CH, "decodeDeliverSmResp", "0000001c800000050000000000116ac7393432353834333135393400",
     P.DeliverSmResp, {"sequence_number": 1141447, "message_id": "94258431594"}, True),
    (CH, "decodeDeliverSmRespWithNoMessageId", "00000010800000050000000000116ac7",
     P.DeliverSmResp, {"message_id": ""}, False),
    (CH, "decodeDataSmResp", "0000001c800001030000000000116ac7393432353834333135393400",
     P.DataSmResp, {"sequence_number": 1141447, "message_id": "94258431594"}, True),
    (CH, "decodeBindTransceiverResp",
     "0000001f800000090000000000039951536d73632053696d756c61746f7200",
     P.BindTransceiverResp, {"sequence_number": 235857, "system_id": "Smsc Simulator"}, True),
    (CH, "decodeBindTransceiverRespFailedButWithSystemId",
     "00000015800000090000000e00004db3534d534300", P.BindTransceiverResp,
     {"command_status": P.SMPP_ESME_RINVPASWD, "sequence_number": 19891, "system_id": "SMSC"},
     True),
    (CH, "decodeBindTransceiverRespWithOptionalParams",
     "0000001d800000090000000000039943536d7363204757000210000134", P.BindTransceiverResp,
     {"system_id": "Smsc GW", "tlvs": ((P.Tag.SC_INTERFACE_VERSION, b"\x34"),)}, True),
    (CH, "decodeBindTransmitterRespWithOptionalParams",
     "0000001d80000002000000000003995f54574954544552000210000134", P.BindTransmitterResp,
     {"system_id": "TWITTER", "tlvs": ((0x0210, b"\x34"),)}, True),
    (CH, "decodeBindReceiverRespWithOptionalParams",
     "0000001d80000001000000000003996274776974746572000210000134", P.BindReceiverResp,
     {"sequence_number": 235874, "system_id": "twitter"}, True),
    (CH, "decodeBindTransceiver",
     "00000023000000090000000000039951414c4c5f545700414c4c5f5457000034010200",
     P.BindTransceiver, {"system_id": "ALL_TW", "password": "ALL_TW", "system_type": "",
                         "interface_version": 0x34, "addr_ton": 1, "addr_npi": 2,
                         "address_range": ""}, True),
    (CH, "decodeBindTransmitter",
     "0000002500000002000000000003995f747769747465720074776974746572000034000000",
     P.BindTransmitter, {"sequence_number": 235871, "system_id": "twitter",
                         "password": "twitter"}, True),
    (CH, "decodeBindReceiver",
     "00000025000000010000000000039961747769747465720074776974746572000034000000",
     P.BindReceiver, {"sequence_number": 235873, "system_id": "twitter"}, True),
    (CH, "decodeDeliverSm",
     "000000400000000500000000000000030002013837363534333231000409343034303400000000000000"
     "000000084024232125262F3A000E0001010006000101", P.DeliverSm,
     {"sequence_number": 3, "source_addr_ton": 2, "source_addr_npi": 1,
      "source_addr": "87654321", "dest_addr_ton": 4, "dest_addr_npi": 9,
      "destination_addr": "40404", "esm_class": 0,
      "short_message": bytes.fromhex("4024232125262f3a"),
      "tlvs": ((P.Tag.SOURCE_NETWORK_TYPE, b"\x01"), (P.Tag.DEST_NETWORK_TYPE, b"\x01"))}, True),
    (CH, "decodeDeliverSmAsDeliveryReceipt",
     "000000BA00000005000000000000000200010134343935313336313932300001013430343034000400000000"
     "000000006E69643A30303539313133393738207375623A30303120646C7672643A303031207375626D6974"
     "20646174653A3130303231303137333020646F6E6520646174653A3130303231303137333120737461743A"
     "44454C49565244206572723A30303020746578743A4024232125262F3A000E0001010006000101001E0008"
     "33383630316661000427000102", P.DeliverSm,
     {"sequence_number": 2, "source_addr": "44951361920", "destination_addr": "40404",
      "esm_class": 4, "tlvs": ((0x000E, b"\x01"), (0x0006, b"\x01"), (0x001E, b"38601fa\x00"),
                               (0x0427, b"\x02"))}, True),
    (CH, "decodeSubmitSm",
     "00000039000000040000000000004FE80001013430343034000101343439353133363139323000000000"
     "000001000000084024232125262F3A", P.SubmitSm,
     {"sequence_number": 20456, "source_addr": "40404", "destination_addr": "44951361920",
      "registered_delivery": 1, "data_coding": 0, "short_message": b"@$#!%&/:", "tlvs": ()},
     True),
    (CH, "decodeUnbind", "00000010000000060000000000000001", P.Unbind, {"sequence_number": 1},
     True),
    (CH, "decodeUnbindResp", "00000010800000060000000000000001", P.UnbindResp,
     {"sequence_number": 1}, True),
    (CH, "decodeGenericNak", "00000010800000000000000100082a77", P.GenericNack,
     {"command_status": P.SMPP_ESME_RINVMSGLEN, "sequence_number": 535159}, True),
    (CH, "decodeDeliverSmWithOptionalMessagePayload",
     "000000640000000500000000000547EB0002013434393531333631393200040934303430340000000000"
     "000000000000000E000101000600010104240026404D616964656E6D616E363634207761732069742073"
     "617070793F2026526F6D616E7469633F", P.DeliverSm,
     {"sequence_number": 346091, "short_message": b"",
      "tlvs": ((0x000E, b"\x01"), (0x0006, b"\x01"),
               (0x0424, bytes.fromhex("404d616964656e6d616e363634207761732069742073617070793f"
                                      "2026526f6d616e7469633f")))}, True),
    (CH, "decodeDeliverSmWith1BytePayload",
     "0000003F000000050000000000657E4E00020134343935313336313932000409343034303400000000000000"
     "00000000000E0001010006000101042400014F", P.DeliverSm,
     {"sequence_number": 6651470, "tlvs": ((0x000E, b"\x01"), (0x0006, b"\x01"),
                                           (0x0424, b"O"))}, True),
]  # fmt: skip

SMPPLIB_DELIVER_SM = (
    b"\x00\x00\x00\xcb\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01\x00"
    b"\x01\x0131600000000\x00\x05\x00XXX YYYY\x00\x04\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x0e\x00\x01\x01\x00\x06\x00\x01\x01\x00\x1e\x00"
    b"\t1d305b4c\x00\x04'\x00\x01\x02\x04$\x00rid:0489708364 sub:001"
    b" dlvrd:001 submit date:1810151907 done date:1810151907 stat:DELIVRD"
    b" err:000 text:\x04\x1f\x04@\x048\x042\x045\x04B\x04&\x00\x01\x01"
)  # SL test_parse_deliver_sm
SMPPLIB_UNKNOWN_TLVS = (
    b"\x00\x00\x00\xa8\x00\x00\x00\x05\x00\x00\x00\x00/p\xc6"
    b"\x9a\x00\x00\x0022549909028\x00\x01\x00\x00\x04\x00\x00"
    b"\x00\x00\x00\x00\x00\x00iid:795920026 sub:001 dlvrd:001 "
    b"submit date:200319131913 done date:200319131913 stat:DELIVRD err:000 text:"
    b"\x14\x03\x00\x07(null)\x00\x14\x02\x00\x04612\x00"
)  # SL test_unrecognised_optional_parameters


@pytest.mark.parametrize(
    ("source", "name", "hexstr", "cls", "fields", "canonical"),
    VECTORS,
    ids=[v[1] for v in VECTORS],
)
def test_public_vector_decodes(source, name, hexstr, cls, fields, canonical):
    """1. feed the public bytes to the Decoder; 2. compare the asserted fields;
    3. canonical vectors re-encode to the same bytes."""
    data = bytes.fromhex(hexstr)
    decoder = P.Decoder()
    decoder.feed(data)
    pdu = decoder.next_pdu()
    assert type(pdu) is cls, source
    for key, value in fields.items():
        assert getattr(pdu, key) == value, (name, key)
    assert decoder.next_pdu() is None and decoder.buffered == 0
    if canonical:
        assert P.encode(pdu) == data


def test_smpplib_deliver_sm_vector():
    """SL test_parse_deliver_sm: TLVs in order, receipt in message_payload, re-encodes."""
    pdu = P.decode_frame(SMPPLIB_DELIVER_SM)
    assert pdu.source_addr_ton == 1 and pdu.source_addr_npi == 1
    assert pdu.source_addr == "31600000000"
    assert pdu.destination_addr == "XXX YYYY"
    assert P.get_tlv(pdu, P.Tag.RECEIPTED_MESSAGE_ID) == b"1d305b4c\0"
    assert P.get_tlv(pdu, P.Tag.SOURCE_NETWORK_TYPE) == b"\x01"
    assert P.get_tlv(pdu, P.Tag.MESSAGE_STATE) == b"\x02"
    assert P.get_tlv(pdu, P.Tag.USER_MESSAGE_REFERENCE) is None
    assert [t for t, _ in pdu.tlvs] == [0x000E, 0x0006, 0x001E, 0x0427, 0x0424, 0x0426]
    assert P.encode(pdu) == SMPPLIB_DELIVER_SM


def test_smpplib_unknown_tlvs_are_preserved():
    """SL test_unrecognised_optional_parameters: unknown tags 0x1403/0x1402 kept, in order."""
    pdu = P.decode_frame(SMPPLIB_UNKNOWN_TLVS)
    assert pdu.tlvs == ((0x1403, b"(null)\0"), (0x1402, b"612\0"))
    assert pdu.short_message.startswith(b"id:795920026 sub:001")
    assert P.encode(pdu) == SMPPLIB_UNKNOWN_TLVS


def test_cloudhopper_partial_stream_needs_more_data():
    """CH decodeLessThan4Bytes / decodeOnly4Bytes / decodeLessThan16Bytes and
    decodeTwoEnquireLinkRespButWithReadRequiredInBetween."""
    for partial in ("000000", "00000010", "0000001000000015000000000a342e"):
        decoder = P.Decoder()
        decoder.feed(bytes.fromhex(partial))
        assert decoder.next_pdu() is None
        assert decoder.buffered == len(partial) // 2
    decoder = P.Decoder()
    decoder.feed(bytes.fromhex("0000001080000015000000000a342eed0000001080000015000000000a342e"))
    assert decoder.next_pdu().sequence_number == 171192045
    assert decoder.next_pdu() is None
    decoder.feed(b"\xf1")
    assert decoder.next_pdu().sequence_number == 171192049


def test_cloudhopper_unknown_command_is_skipped_and_next_pdu_decodes():
    """CH decodeBadPduButSkipAllDataInBuffer: an unknown command id consumes its frame."""
    decoder = P.Decoder()
    decoder.feed(
        bytes.fromhex("0000001100000110000000000a342ee70F0000001000000015000000000a342ee7")
    )
    first = decoder.next_pdu()
    assert isinstance(first, P.UnknownPdu) and first.command_id == 0x110
    second = decoder.next_pdu()
    assert isinstance(second, P.EnquireLink) and second.sequence_number == 171192039


def test_cloudhopper_negative_length_is_a_framing_error():
    """CH decodeSignedIntLength: command_length 0xF0000011 is unrecoverable."""
    decoder = P.Decoder()
    decoder.feed(bytes.fromhex("F000001100000110000000000a342ee7"))
    with pytest.raises(P.SmppFramingError):
        decoder.next_pdu()
    with pytest.raises(P.SmppFramingError):  # and it stays broken
        decoder.next_pdu()


def test_cloudhopper_missing_nul_is_a_pdu_error():
    """CH decodeSubmitSmRespWithNoNullByteForMessageId: frame consumed, error reported."""
    decoder = P.Decoder()
    decoder.feed(bytes.fromhex("0000001180000004000000000a342ee139"))
    with pytest.raises(P.SmppPduError) as info:
        decoder.next_pdu()
    assert info.value.sequence_number == 171192033
    assert info.value.status == P.SMPP_ESME_RINVMSGID
    assert decoder.buffered == 0


def test_status_names_and_classes_follow_the_documented_table():
    """docs/ARCHITECTURE.md "SMPP status classes and receipts"."""
    assert P.status_name(0x58) == "ESME_RTHROTTLED"
    expected = {
        0x00: "ok", 0x01: "permanent", 0x04: "transient", 0x05: "bind", 0x08: "transient",
        0x0A: "permanent", 0x0B: "permanent", 0x0D: "bind", 0x0E: "bind", 0x0F: "bind",
        0x14: "transient", 0x45: "ambiguous", 0x48: "permanent", 0x51: "permanent",
        0x58: "transient", 0x61: "permanent", 0x62: "permanent", 0x64: "transient",
        0x65: "permanent", 0x66: "permanent", 0xC0: "permanent", 0xC4: "permanent",
        0xFE: "ambiguous", 0xFF: "ambiguous",
    }  # fmt: skip
    for code, cls in expected.items():
        assert P.classify_status(code) == cls, hex(code)

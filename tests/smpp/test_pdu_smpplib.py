"""Cross-check against an independent codec: python-smpplib.

Our encoder's bytes must parse in smpplib to the same field values, and smpplib's bytes must
decode with ours to the same values — for every PDU type both support. This keeps the
simulator (built on our codec) from hiding a symmetric bug (docs/ARCHITECTURE.md "Testing").
"""

import struct

import pytest
import smpplib.command
import smpplib.smpp
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.shared.smpp import pdu as P


def cstr(max_len: int) -> st.SearchStrategy[str]:
    """Printable ASCII without NUL, shorter than the C-octet string maximum."""
    return st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=max_len - 1
    )


u8 = st.integers(0, 255)


class _SeqSource:
    """smpplib numbers new PDUs through a client object; parsing overwrites the number."""

    sequence = 0

    def next_sequence(self) -> int:
        return 1


def smpplib_parse(data: bytes):
    return smpplib.smpp.parse_pdu(data, client=_SeqSource())


def smpplib_bytes(value):
    """smpplib parses C-octet strings to bytes (and leaves absent ones None)."""
    return value.decode("latin-1") if isinstance(value, bytes) else (value or "")


def smpplib_make(name: str, seq: int, status: int = 0, **fields):
    pdu = smpplib.smpp.make_pdu(name, client=_SeqSource(), **fields)
    # smpplib ignores a `sequence=` keyword when its client has a number; set it directly.
    pdu.sequence = seq
    pdu.status = status
    return pdu.generate()


# --- bodies without variable parts -----------------------------------------------------------

SIMPLE = [
    (P.EnquireLink, "enquire_link"),
    (P.EnquireLinkResp, "enquire_link_resp"),
    (P.Unbind, "unbind"),
    (P.UnbindResp, "unbind_resp"),
]


@pytest.mark.parametrize(("cls", "name"), SIMPLE)
@given(seq=st.integers(1, 0x7FFFFFFF))
@settings(max_examples=20, deadline=None)
def test_header_only_pdus_both_ways(cls, name, seq):
    ours = P.encode(cls(seq))
    theirs = smpplib_parse(ours)
    assert theirs.command == name and theirs.sequence == seq and theirs.status == 0
    assert P.decode_frame(smpplib_make(name, seq)) == cls(seq)


@given(seq=st.integers(1, 0x7FFFFFFF), status=st.integers(1, 0xFF))
@settings(max_examples=20, deadline=None)
def test_generic_nack_both_ways(seq, status):
    theirs = smpplib_parse(P.encode(P.GenericNack(seq, status)))
    assert theirs.command == "generic_nack" and theirs.status == status
    assert P.decode_frame(smpplib_make("generic_nack", seq, status)) == P.GenericNack(seq, status)


# --- binds --------------------------------------------------------------------------------

BINDS = [
    (P.BindTransmitter, "bind_transmitter"),
    (P.BindReceiver, "bind_receiver"),
    (P.BindTransceiver, "bind_transceiver"),
]


@pytest.mark.parametrize(("cls", "name"), BINDS)
@given(
    seq=st.integers(1, 0x7FFFFFFF), system_id=cstr(16), password=cstr(9),
    system_type=cstr(13), ton=u8, npi=u8, address_range=cstr(41),
)  # fmt: skip
@settings(max_examples=25, deadline=None)
def test_bind_both_ways(cls, name, seq, system_id, password, system_type, ton, npi, address_range):
    fields = dict(system_id=system_id, password=password, system_type=system_type,
                  addr_ton=ton, addr_npi=npi, address_range=address_range)  # fmt: skip
    theirs = smpplib_parse(P.encode(cls(seq, **fields)))
    assert theirs.command == name
    for key, value in fields.items():
        got = getattr(theirs, key)
        assert (smpplib_bytes(got) if isinstance(value, str) else got) == value, key
    assert theirs.interface_version == 0x34
    ours = P.decode_frame(smpplib_make(name, seq, **fields))
    assert ours == cls(seq, **fields)


@pytest.mark.parametrize(
    ("cls", "name"),
    [(P.BindTransmitterResp, "bind_transmitter_resp"), (P.BindReceiverResp, "bind_receiver_resp"),
     (P.BindTransceiverResp, "bind_transceiver_resp")],
)  # fmt: skip
@given(seq=st.integers(1, 0x7FFFFFFF), system_id=cstr(16), version=st.sampled_from([None, 0x34]))
@settings(max_examples=20, deadline=None)
def test_bind_resp_both_ways(cls, name, seq, system_id, version):
    tlvs = () if version is None else ((P.Tag.SC_INTERFACE_VERSION, bytes((version,))),)
    theirs = smpplib_parse(P.encode(cls(seq, 0, system_id=system_id, tlvs=tlvs)))
    assert smpplib_bytes(theirs.system_id) == system_id
    assert theirs.sc_interface_version == version
    kwargs = {"system_id": system_id}
    if version is not None:
        kwargs["sc_interface_version"] = version
    assert P.decode_frame(smpplib_make(name, seq, **kwargs)) == cls(seq, 0, system_id, tlvs)


# --- message ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name"),
    [(P.SubmitSmResp, "submit_sm_resp"), (P.DeliverSmResp, "deliver_sm_resp"),
     (P.DataSmResp, "data_sm_resp")],
)  # fmt: skip
@given(seq=st.integers(1, 0x7FFFFFFF), message_id=cstr(65))
@settings(max_examples=25, deadline=None)
def test_message_id_responses_both_ways(cls, name, seq, message_id):
    theirs = smpplib_parse(P.encode(cls(seq, 0, message_id)))
    assert theirs.command == name and smpplib_bytes(theirs.message_id) == message_id
    assert P.decode_frame(smpplib_make(name, seq, message_id=message_id)) == cls(seq, 0, message_id)


@given(seq=st.integers(1, 0x7FFFFFFF), message_id=cstr(65).filter(bool), ton=u8, npi=u8,
       source=cstr(21))  # fmt: skip
@settings(max_examples=25, deadline=None)
def test_query_sm_both_ways(seq, message_id, ton, npi, source):
    pdu = P.QuerySm(seq, 0, message_id, ton, npi, source)
    theirs = smpplib_parse(P.encode(pdu))
    assert smpplib_bytes(theirs.message_id) == message_id
    assert (theirs.source_addr_ton, theirs.source_addr_npi) == (ton, npi)
    assert smpplib_bytes(theirs.source_addr) == source
    raw = smpplib_make("query_sm", seq, message_id=message_id, source_addr_ton=ton,
                       source_addr_npi=npi, source_addr=source)  # fmt: skip
    assert P.decode_frame(raw) == pdu


@given(seq=st.integers(1, 0x7FFFFFFF), message_id=cstr(65), final_date=cstr(17),
       state=st.integers(1, 255), error=u8)  # fmt: skip
@settings(max_examples=25, deadline=None)
def test_query_sm_resp_both_ways(seq, message_id, final_date, state, error):
    pdu = P.QuerySmResp(seq, 0, message_id, final_date, state, error)
    theirs = smpplib_parse(P.encode(pdu))
    assert smpplib_bytes(theirs.message_id) == message_id
    assert smpplib_bytes(theirs.final_date) == final_date
    assert (theirs.message_state, theirs.error_code) == (state, error)
    raw = smpplib_make("query_sm_resp", seq, message_id=message_id, final_date=final_date,
                       message_state=state, error_code=error)  # fmt: skip
    assert P.decode_frame(raw) == pdu


# --- submit_sm / deliver_sm / data_sm -----------------------------------------------------

SM_FIELDS = st.fixed_dictionaries(
    {
        "service_type": cstr(6),
        "source_addr_ton": u8,
        "source_addr_npi": u8,
        "source_addr": cstr(21),
        "dest_addr_ton": u8,
        "dest_addr_npi": u8,
        "destination_addr": cstr(21),
        "esm_class": u8,
        "protocol_id": u8,
        "priority_flag": u8,
        "schedule_delivery_time": st.sampled_from(["", "260101120000000+"]),
        "validity_period": st.sampled_from(["", "000001000000000R"]),
        "registered_delivery": u8,
        "replace_if_present_flag": u8,
        "data_coding": u8,
        "sm_default_msg_id": u8,
        "short_message": st.binary(min_size=1, max_size=254),
    }
)
# TLVs smpplib knows for both submit_sm and deliver_sm, with their smpplib names and packers.
SAR = st.tuples(st.integers(0, 0xFFFF), st.integers(1, 255), st.integers(1, 255))


def _sar_tlvs(sar):
    if sar is None:
        return (), {}
    ref, total, seq = sar
    tlvs = (
        (P.Tag.SAR_MSG_REF_NUM, struct.pack(">H", ref)),
        (P.Tag.SAR_TOTAL_SEGMENTS, bytes((total,))),
        (P.Tag.SAR_SEGMENT_SEQNUM, bytes((seq,))),
    )
    return tlvs, {"sar_msg_ref_num": ref, "sar_total_segments": total, "sar_segment_seqnum": seq}


@pytest.mark.parametrize(("cls", "name"), [(P.SubmitSm, "submit_sm"), (P.DeliverSm, "deliver_sm")])
@given(seq=st.integers(1, 0x7FFFFFFF), fields=SM_FIELDS, sar=st.none() | SAR)
@settings(max_examples=40, deadline=None)
def test_short_message_pdus_both_ways(cls, name, seq, fields, sar):
    tlvs, sar_kwargs = _sar_tlvs(sar)
    pdu = cls(seq, 0, tlvs=tlvs, **fields)
    theirs = smpplib_parse(P.encode(pdu))
    assert theirs.command == name
    for key, value in fields.items():
        got = getattr(theirs, key)
        assert (smpplib_bytes(got) if isinstance(value, str) else got) == value, key
    for key, value in sar_kwargs.items():
        assert getattr(theirs, key) == value
    raw = smpplib_make(name, seq, **fields, **sar_kwargs)
    ours = P.decode_frame(raw)
    assert {t: v for t, v in ours.tlvs} == dict(tlvs)
    assert ours == cls(seq, 0, tlvs=ours.tlvs, **fields)


@given(
    seq=st.integers(1, 0x7FFFFFFF), fields=SM_FIELDS, payload=st.binary(min_size=1, max_size=300)
)
@settings(max_examples=20, deadline=None)
def test_message_payload_both_ways(seq, fields, payload):
    fields = {**fields, "short_message": b""}
    pdu = P.SubmitSm(seq, tlvs=((P.Tag.MESSAGE_PAYLOAD, payload),), **fields)
    theirs = smpplib_parse(P.encode(pdu))
    assert theirs.message_payload == payload and not theirs.short_message
    raw = smpplib_make("submit_sm", seq, **fields, message_payload=payload)
    assert P.decode_frame(raw) == pdu


@given(
    # SMPP 3.4 allows 64-character data_sm addresses, but smpplib's DataSM declares 21 and
    # truncates, so the cross-check stays within what both accept (ours: test_pdu_properties).
    seq=st.integers(1, 0x7FFFFFFF), service_type=cstr(6), ton=u8, npi=u8, source=cstr(21),
    dest=cstr(21), esm=u8, reg=u8, dc=u8, payload=st.binary(min_size=1, max_size=200),
)  # fmt: skip
@settings(max_examples=25, deadline=None)
def test_data_sm_both_ways(seq, service_type, ton, npi, source, dest, esm, reg, dc, payload):
    fields = dict(service_type=service_type, source_addr_ton=ton, source_addr_npi=npi,
                  source_addr=source, dest_addr_ton=npi, dest_addr_npi=ton,
                  destination_addr=dest, esm_class=esm, registered_delivery=reg,
                  data_coding=dc)  # fmt: skip
    pdu = P.DataSm(seq, tlvs=((P.Tag.MESSAGE_PAYLOAD, payload),), **fields)
    theirs = smpplib_parse(P.encode(pdu))
    for key, value in fields.items():
        got = getattr(theirs, key)
        assert (smpplib_bytes(got) if isinstance(value, str) else got) == value, key
    assert theirs.message_payload == payload
    raw = smpplib_make("data_sm", seq, **fields, message_payload=payload)
    assert P.decode_frame(raw) == pdu


def test_receipt_tlvs_both_ways():
    """deliver_sm receipt TLVs (receipted_message_id, message_state, network_error_code)."""
    tlvs = ((P.Tag.RECEIPTED_MESSAGE_ID, b"abc123\0"), (P.Tag.MESSAGE_STATE, b"\x05"),
            (P.Tag.NETWORK_ERROR_CODE, b"\x03\x00\x0b"))  # fmt: skip
    pdu = P.DeliverSm(7, esm_class=4, short_message=b"id:abc123 stat:UNDELIV", tlvs=tlvs)
    theirs = smpplib_parse(P.encode(pdu))
    assert theirs.receipted_message_id == b"abc123"
    assert theirs.message_state == 5
    assert theirs.network_error_code == b"\x03\x00\x0b"

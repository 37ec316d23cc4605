"""Property tests of the codec: round trips, limits, framing, and bounded fuzzing."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.shared.core.errors import SmppProtocolError
from smsgw.shared.smpp import pdu as P


def cstr(max_len: int) -> st.SearchStrategy[str]:
    # Latin-1 without NUL: what a C-octet string can carry byte for byte.
    latin1 = st.characters(min_codepoint=1, max_codepoint=0xFF)
    return st.text(alphabet=latin1, max_size=max_len - 1)


u8 = st.integers(0, 255)
tlvs = st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=64)), max_size=4).map(tuple)
seq = st.integers(0, 0xFFFFFFFF)
status = st.integers(0, 0xFFFFFFFF)

PDUS = st.one_of(
    st.builds(P.SubmitSm, seq, status, cstr(6), u8, u8, cstr(21), u8, u8, cstr(21), u8, u8, u8,
              cstr(17), cstr(17), u8, u8, u8, u8, st.binary(max_size=254), tlvs),
    st.builds(P.DeliverSm, seq, status, cstr(6), u8, u8, cstr(21), u8, u8, cstr(21), u8, u8, u8,
              cstr(17), cstr(17), u8, u8, u8, u8, st.binary(max_size=254), tlvs),
    st.builds(P.DataSm, seq, status, cstr(6), u8, u8, cstr(65), u8, u8, cstr(65), u8, u8, u8,
              tlvs),
    st.builds(P.SubmitSmResp, seq, status, cstr(65), tlvs),
    st.builds(P.DeliverSmResp, seq, status, cstr(65), tlvs),
    st.builds(P.DataSmResp, seq, status, cstr(65), tlvs),
    st.builds(P.BindTransceiver, seq, status, cstr(16), cstr(9), cstr(13), u8, u8, u8, cstr(41),
              tlvs),
    st.builds(P.BindTransmitterResp, seq, status, cstr(16), tlvs),
    st.builds(P.Outbind, seq, status, cstr(16), cstr(9)),
    st.builds(P.QuerySm, seq, status, cstr(65), u8, u8, cstr(21)),
    st.builds(P.QuerySmResp, seq, status, cstr(65), cstr(17), u8, u8),
    st.builds(P.EnquireLink, seq, status),
    st.builds(P.GenericNack, seq, status),
    st.builds(P.UnbindResp, seq, status),
)  # fmt: skip


@given(PDUS)
@settings(max_examples=400, deadline=None)
def test_round_trip(pdu):
    """encode → decode gives the same PDU, and the frame length is in the header."""
    data = P.encode(pdu)
    assert int.from_bytes(data[:4], "big") == len(data)
    assert P.decode_frame(data) == pdu


@given(st.lists(PDUS, min_size=1, max_size=8), st.data())
@settings(max_examples=100, deadline=None)
def test_stream_split_anywhere(pdus, data):
    """The same PDUs come out however the stream is cut into chunks."""
    stream = b"".join(P.encode(p) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = P.Decoder()
    out = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[prev:cut])
        prev = cut
        out.extend(decoder)
    assert out == pdus


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"source_addr": "1" * 21}, "source_addr"),
        ({"destination_addr": "1" * 21}, "destination_addr"),
        ({"service_type": "abcdef"}, "service_type"),
        ({"short_message": b"x" * 255}, "short_message"),
        ({"source_addr": "a\0b"}, "source_addr"),
        ({"destination_addr": "€"}, "destination_addr"),
    ],
)
def test_limits_enforced_at_construction(kwargs, field):
    with pytest.raises(P.SmppEncodeError, match=field):
        P.SubmitSm(**kwargs)


def test_max_lengths_are_accepted():
    pdu = P.SubmitSm(source_addr="1" * 20, destination_addr="2" * 20, service_type="abcde",
                     short_message=b"x" * 254)  # fmt: skip
    assert P.decode_frame(P.encode(pdu)) == pdu
    assert P.SubmitSmResp(message_id="x" * 64).message_id == "x" * 64
    with pytest.raises(P.SmppEncodeError):
        P.SubmitSmResp(message_id="x" * 65)


def test_integer_overflow_is_an_encode_error():
    with pytest.raises(P.SmppEncodeError):
        P.encode(P.SubmitSm(esm_class=256))


def test_oversized_and_undersized_frames_are_framing_errors():
    for length in (0, 15, P.DEFAULT_MAX_PDU_LENGTH + 1, 0xFFFFFFFF):
        decoder = P.Decoder()
        decoder.feed(length.to_bytes(4, "big") + b"\0" * 12)
        with pytest.raises(P.SmppFramingError):
            decoder.next_pdu()
    small = P.Decoder(max_length=100)
    small.feed((101).to_bytes(4, "big"))
    with pytest.raises(P.SmppFramingError):
        small.next_pdu()


def test_truncated_bodies_are_pdu_errors_and_the_stream_continues():
    """Every prefix of a submit_sm body (with an honest length) is rejected cleanly."""
    full = P.encode(P.SubmitSm(5, source_addr="123", destination_addr="456", short_message=b"hi",
                               tlvs=((0x1234, b"ab"),)))  # fmt: skip
    for cut in range(16, len(full)):
        if cut == len(full) - 6:
            continue  # the body without its (optional) TLV is a valid submit_sm
        frame = cut.to_bytes(4, "big") + full[4:cut]
        decoder = P.Decoder()
        decoder.feed(frame + P.encode(P.EnquireLink(9)))
        with pytest.raises(P.SmppPduError) as info:
            decoder.next_pdu()
        assert info.value.sequence_number == 5
        assert decoder.next_pdu() == P.EnquireLink(9)


def test_response_for():
    req = P.SubmitSm(77, source_addr="1")
    assert P.response_for(req, message_id="abc") == P.SubmitSmResp(77, 0, "abc")
    assert P.response_for(P.EnquireLink(3)) == P.EnquireLinkResp(3)
    assert P.response_for(P.Outbind(4)) == P.GenericNack(4, P.SMPP_ESME_RINVCMDID)


@given(st.sampled_from([P.DeliverSm, P.DataSm]), st.integers(0, 0x7FFFFFFF),
       st.integers(0, 0xFFFFFFFF))
def test_encode_deliver_resp_is_the_encoded_response(cls, seq, status):
    """The receipt answer's short cut gives the bytes of the response PDU, decoding to it."""
    req = cls(seq, source_addr="1", esm_class=4)
    wire = P.encode_deliver_resp(req, status)
    assert wire == P.encode(P.response_for(req, status))
    assert P.decode_frame(wire) == P.response_for(req, status)


def _mutations(rng: random.Random, seeds: list[bytes]) -> bytes:
    base = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(4)
        pos = rng.randrange(len(base) + 1)
        if op == 0 and base:
            base[min(pos, len(base) - 1)] = rng.randrange(256)
        elif op == 1:
            base[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2 and base:
            del base[pos : pos + rng.randint(1, 8)]
        else:
            base = base[:pos]
    return bytes(base)


def test_fuzz_decoder_bounded():
    """2,000 random and mutated streams: only SmppProtocolError, never a hang or other crash."""
    rng = random.Random(1234)
    seeds = [P.encode(p) for p in (
        P.SubmitSm(1, source_addr="123", destination_addr="456", short_message=b"hi",
                   tlvs=((0x0424, b"x"),)),
        P.DeliverSm(2, esm_class=4, short_message=b"id:1 stat:DELIVRD"),
        P.BindTransceiver(3, system_id="a", password="b"),
        P.SubmitSmResp(4, 0, "abc"),
        P.QuerySmResp(5, 0, "x", "", 2, 0),
    )]  # fmt: skip
    outcomes = {"pdu": 0, "error": 0}
    for i in range(2000):
        stream = rng.randbytes(rng.randint(0, 64)) if i % 4 == 0 else _mutations(rng, seeds)
        decoder = P.Decoder(max_length=4096)
        decoder.feed(stream)
        for _ in range(len(stream) + 2):  # every step consumes a frame or stops
            try:
                if decoder.next_pdu() is None:
                    break
                outcomes["pdu"] += 1
            except P.SmppFramingError:
                outcomes["error"] += 1
                break
            except SmppProtocolError:
                outcomes["error"] += 1
        else:
            pytest.fail("decoder did not make progress")
        assert decoder.buffered <= max(len(stream), 4096)
    assert outcomes["pdu"] > 100 and outcomes["error"] > 100

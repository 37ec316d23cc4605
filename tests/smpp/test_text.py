"""Text encodings and splitting: public vectors, limits, and properties over any Unicode text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.shared.smpp import text as T
from smsgw.shared.smpp.pdu import Tag

# --- public vectors ----------------------------------------------------------------------


def test_gsm_packed_hellohello():
    """'hellohello' packs to E8329BFD4697D9EC37: the worked example of
    http://www.gsm-modem.de/sms-pdu-mode.html (also in many modem libraries' tests)."""
    assert T.encode_text("hellohello", "gsm7_packed") == bytes.fromhex("E8329BFD4697D9EC37")
    assert T.decode_text(bytes.fromhex("E8329BFD4697D9EC37"), "gsm7_packed") == "hellohello"


@pytest.mark.parametrize(("text", "encoded"), [("@", b"\x00"), ("^", b"\x1b\x14")])
def test_smpplib_gsm_vectors(text, encoded):
    """python-smpplib smpplib/tests/test_gsm.py test_gsm_encode."""
    assert T.encode_text(text, "gsm7") == encoded
    assert T.decode_text(encoded, "gsm7") == text


def test_smpplib_multipart_vector():
    """python-smpplib test_make_parts_multiple: '@' * 306 with reference 0x42 → two parts of
    05 00 03 42 02 0n + 153 * 0x00."""
    parts = T.split("@" * 306, "gsm7", "udh8", ref=0x42)
    assert [p.short_message for p in parts] == [
        b"\x05\x00\x03\x42\x02\x01" + b"\x00" * 153,
        b"\x05\x00\x03\x42\x02\x02" + b"\x00" * 153,
    ]
    assert all(p.udhi for p in parts)


def test_smpplib_part_count_vector():
    """python-smpplib test_part_number: 'Привет мир!\\n' * 10 is two UCS-2 parts."""
    assert T.estimate("Привет мир!\n" * 10) == ("ucs2", 2)


def test_gsm_tables_cover_the_spec_characters():
    """3GPP TS 23.038 6.2.1: `§` is 0x5F, '¤' 0x24, backtick is not GSM (smpplib gets both
    wrong, per the issue), '€' is ESC 0x65."""
    assert T.encode_text("§", "gsm7") == b"\x5f"
    assert T.encode_text("¤", "gsm7") == b"\x24"
    assert T.encode_text("€", "gsm7") == b"\x1b\x65"
    assert not T.is_gsm("`")
    everything = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ÄÖÑÜ§¿äöñüà"
    everything += "ABCXYZabcxyz\f^{}\\[~]|€"
    assert T.decode_text(T.encode_text(everything, "gsm7"), "gsm7") == everything


# --- choosing and limits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, ("gsm7", 1)),
        ("a" * 161, ("gsm7", 2)),
        ("a" * 306, ("gsm7", 2)),
        ("a" * 307, ("gsm7", 3)),
        ("€" * 80, ("gsm7", 1)),
        ("€" * 81, ("gsm7", 2)),
        ("ж" * 70, ("ucs2", 1)),
        ("ж" * 71, ("ucs2", 2)),
        ("ж" * 134, ("ucs2", 2)),
        ("ж" * 135, ("ucs2", 3)),
        ("😀" * 35, ("ucs2", 1)),
        ("😀" * 36, ("ucs2", 2)),
    ],
)
def test_estimate_limits(text, expected):
    assert T.estimate(text) == expected


def test_udh16_and_sar_limits():
    assert T.estimate("a" * 305, method="udh16") == ("gsm7", 3)  # 152 per part
    assert T.estimate("a" * 304, method="udh16") == ("gsm7", 2)
    assert T.estimate("a" * 320, method="sar") == ("gsm7", 2)  # no UDH: 160 per part


def test_transliteration_keeps_promotions_single_part():
    """One smart quote turns GSM into UCS-2 (three parts here); transliterated it is one."""
    promo = "Don\u2019t miss our sale \u2013 50% off everything\u2026 ends today! " * 2
    assert T.estimate(promo)[0] == "ucs2"
    assert T.estimate(promo, translit=True) == ("gsm7", 1)
    assert T.transliterate("“quoted”\u00a0text") == '"quoted" text'


def test_latin1_when_allowed():
    assert T.choose_encoding("café ` déjà", ("gsm7", "latin1", "ucs2")) == "latin1"
    assert T.choose_encoding("café", ("gsm7", "latin1", "ucs2")) == "gsm7"  # é is GSM
    with pytest.raises(ValueError):
        T.choose_encoding("ж", ("gsm7", "latin1"))


def test_data_coding_for():
    assert T.data_coding_for("gsm7") == 0
    assert T.data_coding_for("ucs2") == 8
    assert T.data_coding_for("latin1") == 3
    assert T.data_coding_for("latin1", "latin1") == 0
    with pytest.raises(ValueError):
        T.data_coding_for("gsm7", "latin1")


def test_split_methods():
    text = "x" * 200
    sar = T.split(text, "gsm7", "sar", ref=0x1234)
    assert len(sar) == 2 and not sar[0].udhi
    assert dict(sar[1].tlvs) == {Tag.SAR_MSG_REF_NUM: b"\x12\x34", Tag.SAR_TOTAL_SEGMENTS: b"\x02",
                                 Tag.SAR_SEGMENT_SEQNUM: b"\x02"}  # fmt: skip
    payload = T.split(text, "gsm7", "payload")
    assert len(payload) == 1 and payload[0].short_message == b""
    assert dict(payload[0].tlvs)[Tag.MESSAGE_PAYLOAD] == b"x" * 200
    udh16 = T.split(text, "gsm7", "udh16", ref=0xABCD)
    assert udh16[0].short_message[:7] == b"\x06\x08\x04\xab\xcd\x02\x01"
    with pytest.raises(T.TextTooLong):
        T.split("x" * 153 * 256, "gsm7")


def test_split_bytes():
    parts = T.split_bytes(bytes(range(256)) * 2, "udh8", ref=7)
    assert [len(p.short_message) for p in parts] == [140, 140, 140, 116]
    assert b"".join(p.short_message[6:] for p in parts) == bytes(range(256)) * 2


# --- properties --------------------------------------------------------------------------

gsm_text = st.text(alphabet=st.sampled_from(sorted(T._GSM_CHARS)), max_size=700)
any_text = st.text(max_size=600)
methods = st.sampled_from(["udh8", "udh16", "sar"])


def _payload(part: T.Part) -> bytes:
    data = part.short_message
    return data[1 + data[0] :] if part.udhi else data


def _air_octets(part: T.Part, encoding: str) -> int:
    """Octets on the air: UDH + user data, with GSM septets packed."""
    data = _payload(part)
    udh = len(part.short_message) - len(data)
    if encoding == "gsm7":
        return (udh * 8 + ((7 - udh * 8 % 7) % 7) + len(data) * 7 + 7) // 8
    return udh + len(data)


@given(any_text, methods)
@settings(max_examples=300, deadline=None)
def test_any_text_splits_and_rejoins(text, method):
    """Any Unicode text: cheapest encoding, parts ≤ 140 octets on the air, rejoins exactly."""
    enc = T.choose_encoding(text)
    parts = T.split(text, enc, method, ref=0x42)
    assert "".join(p.text for p in parts) == text
    assert "".join(T.decode_text(_payload(p), enc) for p in parts) == text
    assert all(_air_octets(p, enc) <= 140 for p in parts)
    assert len(parts) == T.estimate(text, method=method)[1]
    if len(parts) > 1:
        concat = [T.concat_info(p.short_message, 0x40 if p.udhi else 0, p.tlvs) for p in parts]
        assert [c.seq for c in concat] == list(range(1, len(parts) + 1))
        assert {(c.total, c.reference & 0xFF) for c in concat} == {(len(parts), 0x42)}


@given(gsm_text)
@settings(max_examples=200, deadline=None)
def test_gsm_escapes_never_split(text):
    for part in T.split(text, "gsm7"):
        payload = _payload(part)
        assert not payload.endswith(b"\x1b") or payload.endswith(b"\x1b\x1b")
        assert T.decode_text(payload, "gsm7") == part.text


@given(st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)) | any_text)
@settings(max_examples=200, deadline=None)
def test_surrogate_pairs_never_split(text):
    for part in T.split(text, "ucs2"):
        payload = _payload(part)
        assert len(payload) % 2 == 0
        last = int.from_bytes(payload[-2:], "big") if payload else 0
        assert not 0xD800 <= last <= 0xDBFF  # never ends on a high surrogate
        assert payload.decode("utf-16-be") == part.text


@given(gsm_text.filter(lambda t: not t.endswith("\r")), methods)
@settings(max_examples=150, deadline=None)
def test_packed_gsm_round_trip(text, method):
    parts = T.split(text, "gsm7_packed", method)
    assert all(len(p.short_message) <= 140 for p in parts)
    decoded = [T.decode_message(p.short_message, 0, 0x40 if p.udhi else 0, p.tlvs,
                                data_coding_0="gsm7_packed").text for p in parts]  # fmt: skip
    assert "".join(decoded) == text


# --- MO decoding -------------------------------------------------------------------------


def test_decode_mo_data_codings():
    assert T.decode_message(b"Hi \x1b\x65", 0).text == "Hi €"
    assert T.decode_message("Hé".encode("latin-1"), 0, data_coding_0="latin1").text == "Hé"
    assert T.decode_message("ж😀".encode("utf-16-be"), 8).text == "ж😀"
    assert T.decode_message(b"\xff\xfe", 0x04).text is None  # binary, not UTF-8
    binary = T.decode_message(b"\xff\x00", 0xF4)  # 0xF0 group, bit 2: 8-bit data
    assert binary.encoding == "binary" and binary.raw == b"\xff\x00"
    assert T.decode_message(b"abc", 0xF0).text == "abc"  # 0xF0 group, GSM 7-bit, class 0
    assert T.decode_message(b"", 0, tlvs=((Tag.MESSAGE_PAYLOAD, b"long"),)).text == "long"
    assert T.decode_message(b"\x80", 0).text == "\ufffd"


def test_decode_mo_concat_udh_and_sar():
    m = T.decode_message(b"\x05\x00\x03\x42\x03\x02hello", 0, esm_class=0x40)
    assert m.concat == T.Concat(0x42, 3, 2) and m.text == "hello"
    assert m.udh == b"\x05\x00\x03\x42\x03\x02"
    m16 = T.decode_message(b"\x06\x08\x04\x12\x34\x02\x01hi", 0, esm_class=0x40)
    assert m16.concat == T.Concat(0x1234, 2, 1)
    sar = ((Tag.SAR_MSG_REF_NUM, b"\x00\x09"), (Tag.SAR_TOTAL_SEGMENTS, b"\x02"),
           (Tag.SAR_SEGMENT_SEQNUM, b"\x01"))  # fmt: skip
    assert T.decode_message(b"hi", 0, tlvs=sar).concat == T.Concat(9, 2, 1)
    assert T.decode_message(b"hi", 0).concat is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400),
       st.lists(st.sampled_from(["gsm7", "latin1", "ascii", "ucs2"]), min_size=1, max_size=4,
                unique=True),
       st.sampled_from(["udh8", "udh16", "sar", "payload"]))
def test_estimate_shortcut_agrees_with_the_comparison(text, allowed, method):
    """`estimate` answers a text its first choice holds in one part without comparing the
    others: the same answer as the full comparison (choose_encoding), or the same error."""
    try:
        enc = T.choose_encoding(text, allowed, method)
    except ValueError:
        with pytest.raises(ValueError):
            T.estimate(text, allowed, method)
        return
    assert T.estimate(text, allowed, method) == (
        enc, T._count_parts(T._units(text, enc), enc, method))

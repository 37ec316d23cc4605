"""Kannel dlr-url escapes, escape by escape, against values worked out by hand from Kannel
1.4.5's source (each test names the lines it follows) and, for the whole-URL cases, the exact
queries Debian's kannel 1.4.5 (bearerbox + smsbox, `dlr-storage = internal`, one smpp smsc
`sim` with system-id `kannelsys`, sendsms-user `tester`) sent to a recording application for
the same requests and receipts, with only the per-run values (%I, %t, %T, the port in %R)
replaced.

The cases are module constants so the differential suite can reuse them: `TEMPLATE` is the
dlr-url every case uses, `KANNEL_*` Kannel's queries, `*_MSG` the `DlrMsg` smsgw builds.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from smsgw.shared.domain import kannel as K

ESCAPES = "aAbBcCdDeFfiIkmMnoOpPqQrRsStTuvV"
TEMPLATE = ("http://127.0.0.1:50637/dlr?" + "&".join(f"{c}=%{c}" for c in ESCAPES)
            + "&g=%#orig_msg#dlr_mask#&pc=%%&unk=%x")
R = quote(TEMPLATE, safe="-_.!~*'()")  # %R: the template, octstr_url_encode'd
RECEIPT = (b"id:1 sub:001 dlvrd:001 submit date:2612071303 done date:2612071303"
           b" stat:DELIVRD err:000 text:")
RECEIPT_ENC = ("id%3A1+sub%3A001+dlvrd%3A001+submit+date%3A2612071303+done+date%3A2612071303"
               "+stat%3ADELIVRD+err%3A000+text%3A")
UUID = "bd6fdf8d-cc04-49cf-99ef-717c58542105"

# sendsms to=00491701234567 from=0049301234 dlr-mask=31, the SMSC's receipt (with the
# receipted_message_id and message_state TLVs, no network_error_code) for id 1
KANNEL_RECEIPT = (
    f"http://127.0.0.1:50637/dlr?a={RECEIPT_ENC}&A={RECEIPT_ENC}&b={RECEIPT_ENC}&B=&c=-1"
    "&C=UTF-8&d=1&D=%3Forig_msg%3Fdlr_mask%3D31%26%3Fsmpp%3Fdlr_err%3D%2503%2500%2500%26"
    "&e=69643A31207375623A30303120646C7672643A303031207375626D697420646174653A32363132303731"
    "33303320646F6E6520646174653A3236313230373133303320737461743A44454C49565244206572723A30"
    "303020746578743A"
    f"&F=1&f=&i=sim&I={UUID}&k=id%3A1&m=-1&M=-1&n=tester&o=kannelsys&O=00&p=00491701234567"
    "&P=0049301234&q=%2B491701234567&Q=%2B49301234"
    "&r=sub%3A001+dlvrd%3A001+submit+date%3A2612071303+done+date%3A2612071303+stat%3ADELIVRD"
    f"+err%3A000+text%3A&R={R}&s=sub%3A001&S=dlvrd:001&t=2026-12-07+13:03:24&T=1796648604"
    "&u=&v=&V=&g=31&pc=%&unk=%x")
RECEIPT_MSG = K.DlrMsg(
    dlr_type=K.DLR_SUCCESS, receiver="00491701234567", sender="0049301234", msgdata=RECEIPT,
    time=1796648604, smsc_id="sim", foreign_id="1", service="tester", account="kannelsys",
    meta_data=K.receipt_meta(31, K.dlr_err("000", RECEIPT)), dlr_url=TEMPLATE, id=UUID)

# the same, the SMSC answering submit_sm with ESME_RINVDSTADR
KANNEL_NACK = (
    "http://127.0.0.1:50637/dlr?a=NACK%2F0x0000000b%2FInvalid+Destination+Address"
    "&A=NACK%2F0x0000000b%2FInvalid+Destination+Address"
    "&b=NACK%2F0x0000000b%2FInvalid+Destination+Address&B=&c=-1&C=UTF-8&d=16"
    "&D=%3Fsmpp_resp%3F%3Forig_msg%3Fdlr_mask%3D31%26"
    "&e=4E41434B2F307830303030303030622F496E76616C69642044657374696E6174696F6E2041646472657373"
    f"&F=&f=&i=sim&I={UUID}&k=NACK%2F0x0000000b%2FInvalid&m=-1&M=-1&n=tester&o=&O=00"
    "&p=00491701234567&P=0049301234&q=%2B491701234567&Q=%2B49301234&r=Destination+Address"
    f"&R={R}&s=Destination&S=Address&t=2026-12-07+13:03:36&T=1796648616&u=&v=&V=&g=31&pc=%"
    "&unk=%x")
NACK_MSG = K.DlrMsg(
    dlr_type=K.DLR_SMSC_FAIL, receiver="00491701234567", sender="0049301234",
    msgdata=K.nack_text(command_status=0x0B), time=1796648616, smsc_id="sim", foreign_id=None,
    service="tester", meta_data=K.ack_meta(None, 31, submit_resp=True), dlr_url=TEMPLATE,
    id=UUID)

# the ACK of the same one-part message (id 1)
KANNEL_ACK = (
    "http://127.0.0.1:50637/dlr?a=ACK%2F&A=ACK%2F&b=ACK%2F&B=&c=-1&C=UTF-8&d=8"
    f"&D=%3Fsmpp_resp%3F%3Forig_msg%3Fdlr_mask%3D31%26&e=41434B2F&F=1&f=&i=sim&I={UUID}"
    "&k=ACK%2F&m=-1&M=-1&n=tester&o=&O=00&p=00491701234567&P=0049301234&q=%2B491701234567"
    f"&Q=%2B49301234&r=&R={R}&s=&S=&t=2026-12-07+13:03:23&T=1796648603&u=&v=&V=&g=31&pc=%"
    "&unk=%x")
ACK_MSG = K.DlrMsg(
    dlr_type=K.DLR_SMSC_SUCCESS, receiver="00491701234567", sender="0049301234", msgdata=K.ACK,
    time=1796648603, smsc_id="sim", foreign_id="1", service="tester",
    meta_data=K.ack_meta(None, 31, submit_resp=True), dlr_url=TEMPLATE, id=UUID)


@pytest.mark.parametrize(("msg", "kannel"), [(RECEIPT_MSG, KANNEL_RECEIPT),
                                             (NACK_MSG, KANNEL_NACK), (ACK_MSG, KANNEL_ACK)],
                         ids=["receipt", "nack", "ack"])
def test_whole_urls_equal_kannels(msg: K.DlrMsg, kannel: str) -> None:
    """Every escape of one template, for the three kinds of DLR, byte for byte as Kannel sent
    them (urltrans_fill_escape_codes, gw/urltrans.c)."""
    assert K.fill_escape_codes(TEMPLATE, msg) == kannel


def _msg(**kw: object) -> K.DlrMsg:
    base: dict[str, object] = {"dlr_type": 1, "receiver": "+447700900123",
                               "sender": "Brand", "msgdata": b"", "time": 0}
    base.update(kw)
    return K.DlrMsg(**base)  # type: ignore[arg-type]


def fill(template: str, now: float | None = None, **kw: object) -> str:
    return K.fill_escape_codes(template, _msg(**kw), now=now)


def test_url_encoding_is_octstr_url_encode() -> None:
    """gwlib/octstr.c urlcode_init: safe = letters, digits and "-_.!~*'()"; octstr_url_encode:
    ' ' → '+', other bytes %XX in upper case (hexits "0123456789ABCDEF"), byte by byte."""
    text = "a b-_.!~*'()/?&=+%é\x00\xff"
    assert fill("%b", msgdata=text.encode("latin-1")) == (
        "a+b-_.!~*'()%2F%3F%26%3D%2B%25%E9%00%FF")
    assert fill("%b", msgdata="é".encode()) == "%C3%A9"  # the bytes, not the characters


def test_words_a_k_s_S_r() -> None:
    """urltrans.c: the text is split on isspace (octstr_split_words); %a all words joined
    by '+'; %k the first; %s the next unused (nextarg from 1, shared with %S); %S raw with
    '*' → '~'; %r the words from nextarg on, without using them up."""
    text = b" hello\tbig *world*\n a/b  "
    assert fill("%a", msgdata=text) == "hello+big+*world*+a%2Fb"
    assert fill("%k", msgdata=text) == "hello"
    assert fill("%s|%S|%r|%s|%s", msgdata=text) == "big|~world~|a%2Fb|a%2Fb|"
    assert fill("%r", msgdata=text) == "big+*world*+a%2Fb"
    assert fill("%a%k%s%S%r", msgdata=b"") == ""  # no words: all empty


def test_A_and_b_are_the_whole_text_and_e_its_hex() -> None:
    """%A and %b: octstr_url_encode(msgdata); %e: octstr_binary_to_hex(msgdata, 1)."""
    assert fill("%A|%b|%e", msgdata=b"ACK/") == "ACK%2F|ACK%2F|41434B2F"
    assert fill("%e", msgdata=b"") == ""


def test_numbers_p_P_q_Q() -> None:
    """%p receiver, %P sender (URL-encoded; a DLR is not swapped); %q/%Q: a number starting
    "00" gives "%2B" + the rest (octstr_format "%%2B%S"), any other is %p/%P."""
    assert fill("%p|%q|%P|%Q", receiver="0049170", sender="+4930") == \
        "0049170|%2B49170|%2B4930|%2B4930"
    assert fill("%q|%Q", receiver="49170", sender="My Brand") == "49170|My+Brand"


def test_times_t_T() -> None:
    """%t: gw_gmtime, "%04d-%02d-%02d+%02d:%02d:%02d" — a literal '+', never encoded;
    %T: "%ld" of the time, nothing when it is MSG_PARAM_UNDEFINED."""
    assert fill("%t|%T", time=1795782605) == "2026-11-27+12:30:05|1795782605"
    assert fill("%T", time=-1) == ""


def test_unset_fields_of_a_dlr() -> None:
    """A DLR is msg_create(sms): integers -1, strings NULL. %c %m %M: octstr_append_decimal
    → "-1"; %C with no charset and coding DC_UNDEF → "UTF-8"; %B %o %f %u %F %i %n %D %R:
    empty; %v %V: nothing when undefined."""
    assert fill("%c|%m|%M|%C|%B|%o|%f|%u|%F|%i|%n|%D|%R|%v|%V") == "-1|-1|-1|UTF-8|||||||||||"


def test_O_defaults_the_coding_that_c_reads_after_it() -> None:
    """%O: fields_to_dcs(msg, alt_dcs) (gw/sms.c) with "%02d"; it sets sms.coding to DC_7BIT
    (8-bit with a UDH) when undefined, so a later %c reads 0 — the same message."""
    assert fill("%c|%O|%c|%C") == "-1|00|0|UTF-8"
    assert fill("%O|%c", udhdata=b"\x05\x00\x03\x01\x02\x01") == "04|1"
    assert fill("%O", mclass=1, coding=2) == "25"  # 0x10|1 | 2<<2 = 0x19
    assert fill("%O", alt_dcs=1, coding=0) == "241"  # mode 1: 0xF0 | 1 (ME specific)
    assert fill("%O", mwi=0, msgdata=b"x") == "216"  # active, 7-bit: 0x08|0xD0


def test_C_by_charset_then_coding() -> None:
    """%C: the message's charset if set, else by coding: 8-bit "8-BIT", UCS-2 "UTF-16BE"."""
    assert fill("%C", coding=1) == "8-BIT"
    assert fill("%C", coding=2) == "UTF-16BE"
    assert fill("%C", charset="ISO-8859-1", coding=2) == "ISO-8859-1"


def test_d_F_i_n_o_I_u_B_f() -> None:
    """%d: "%ld" of sms.dlr_mask, URL-encoded; %F %i %n %o %B %f %u: octstr_url_encode of
    foreign_id, smsc_id, service, account, binfo, smsc_number, udhdata; %I: uuid_unparse."""
    assert fill("%d|%F|%i|%n|%o|%B|%f|%u|%I", dlr_type=34, foreign_id="a b/1", smsc_id="sim 1",
                service="user&1", account="sys id", binfo="b=1", smsc_number="+44",
                udhdata=b"\x05\x00", id="00000000-0000-0000-0000-00000000002a") == \
        "34|a+b%2F1|sim+1|user%261|sys+id|b%3D1|%2B44|%05%00|00000000-0000-0000-0000-00000000002a"


def test_percent_unknown_and_trailing() -> None:
    """urltrans.c: "%%" → '%'; an unknown escape is copied ("%%%c"); a '%' as the last
    character is copied (the scan only stops at '%' with a character after it)."""
    assert fill("a%%b%Zc%") == "a%b%Zc%"
    assert fill("%") == "%"
    assert fill("x%5") == "x%5"


def test_meta_data_escapes() -> None:
    """%D: octstr_url_encode(meta_data); %#group#key#: meta_data_get_value (group compared
    case-blind, the value URL-decoded by meta_data_unpack and encoded again); a missing value
    adds nothing; "%#" without a second '#' adds nothing; without a third, Kannel's index
    arithmetic (pos = k + 1, pos++, then pos += 2) skips the three characters after the
    second '#'."""
    meta = "?orig_msg?dlr_mask=31&?smpp?dlr_err=%03%00%01&name=a+b%2F&"
    assert fill("%D", meta_data="?smpp?x=1&") == "%3Fsmpp%3Fx%3D1%26"
    assert fill("%#orig_msg#dlr_mask#|%#SMPP#dlr_err#|%#smpp#name#", meta_data=meta) == \
        "31|%03%00%01|a+b%2F"
    assert fill("[%#smpp#none#]", meta_data=meta) == "[]"
    assert fill("[%#smpp#x#]") == "[]"  # no meta-data at all
    assert fill("[%#abc]") == "[abc]"
    assert fill("[%#grp#abcdef]", meta_data=meta) == "[def]"


def test_v_V_minutes_left() -> None:
    """%v / %V: "%ld" of (validity - time(NULL)) / 60, C division (toward zero)."""
    assert fill("%v|%V", now=1000, validity=1000 + 605, deferred=1000 - 90) == "10|-1"


def test_meta_data_of_each_report() -> None:
    """dlr_find starts a receipt's meta-data empty and sets ?orig_msg?dlr_mask=; handle_dlr
    adds ?smpp?dlr_err= (a group not there yet goes second: meta_data_set_value). An
    ACK/NACK keeps the message's own meta-data, then submit_sm_resp's empty ?smpp_resp? (a
    one-part message) and create_dlr_from_msg's ?orig_msg? — each new group second."""
    assert K.receipt_meta(31, b"\x03\x00\x00") == "?orig_msg?dlr_mask=31&?smpp?dlr_err=%03%00%00&"
    assert K.receipt_meta(3, None) == "?orig_msg?dlr_mask=3&"
    assert K.ack_meta(None, 31, submit_resp=True) == "?smpp_resp??orig_msg?dlr_mask=31&"
    assert K.ack_meta(None, 31, submit_resp=False) == "?orig_msg?dlr_mask=31&"
    # observed from Kannel with meta-data=?smpp?foo=bar&
    assert K.ack_meta("?smpp?foo=bar&", 31, submit_resp=True) == \
        "?smpp?foo=bar&?orig_msg?dlr_mask=31&?smpp_resp?"
    assert K.ack_meta("?orig_msg?dlr_mask=1&", 8, submit_resp=False) == \
        "?orig_msg?dlr_mask=8&"  # replaced (meta_data_set_value, replace=1)


def test_dlr_err_from_the_stored_error() -> None:
    """handle_dlr: the network_error_code TLV's 3 bytes (smsgw stores "type:code" when the
    text has no err); else GSM (3) + err_int (sscanf "%d" of err:%3[^ ], only when the text
    matched the 7-field sscanf; 0 on the fallback path) as 2 bytes; nothing without an err."""
    text = (b"id:9 sub:001 dlvrd:000 submit date:2612071303 done date:2612071303"
            b" stat:UNDELIV err:260")
    assert K.dlr_err("260", text) == b"\x03\x01\x04"
    assert K.dlr_err("260", b"id:9 stat:UNDELIV err:260") == b"\x03\x00\x00"  # fallback path
    assert K.dlr_err("3:1", None) == b"\x03\x00\x01"
    assert K.dlr_err("1:300", None) == b"\x01\x01\x2c"
    assert K.dlr_err(None, text) is None


def test_receipt_types() -> None:
    """handle_dlr, text: DELIVRD → 1; ACCEPTD ACKED BUFFRED BUFFERD ENROUTE → 4; anything
    else → 2 (DLR_FAIL). SMPP 3.4 message_state TLV: 1, 6 → 4; 2 → 1; 3 → DLR_EXPIRED
    (0x20|DLR_FAIL = 34, gw/dlr.h); 4, 5, 7, 8 → 2; 0, 9 (SMPP 5.0) → the text decides."""
    assert [K.receipt_type(s) for s in ("delivered", "enroute", "accepted", "undeliverable",
                                        "expired", "rejected", "unknown_receipt")] == \
        [1, 4, 4, 2, 2, 2, 2]
    assert [K.receipt_type("delivered", m) for m in range(10)] == \
        [1, 4, 1, 34, 2, 2, 4, 2, 2, 1]


def test_mask_filtering() -> None:
    """bb_smscconn_sent: ACK (8) if DLR_IS_SMSC_SUCCESS(mask). bb_smscconn_send_failed: NACK
    (16) if DLR_IS_SMSC_FAIL(mask) || DLR_IS_FAIL(mask) (bits 16, 2, 0x20, 0x40). dlr_add only
    with DLR_IS_ENABLED_DEVICE (bits 1, 2, 4, 0x20, 0x40); dlr_find reports when type & mask."""
    assert K.wants_ack(8) and K.wants_ack(31) and not K.wants_ack(23) and not K.wants_ack(None)
    assert K.wants_nack(16) and K.wants_nack(2) and K.wants_nack(0x20)
    assert not K.wants_nack(1 | 4 | 8) and not K.wants_nack(0) and not K.wants_nack(-1)
    assert K.wants_receipt(4, 4) and not K.wants_receipt(4, 1) and not K.wants_receipt(8, 1)
    assert K.wants_receipt(2, K.DLR_EXPIRED) and K.wants_receipt(0x20, K.DLR_EXPIRED)
    assert not K.wants_receipt(16, 2) and K.wants_receipt(19, 2)


def test_nack_texts() -> None:
    """handle_pdu: "0x%08lx/%s" of command_status and smpp_error_to_string (gw/smsc/
    smpp_pdu.c; 0x400-0x4FF "Vendor-specific…", any other unknown "Unknown/Reserved");
    bearerbox's own reasons; handle_split passes none ("NACK/")."""
    assert K.nack_text(command_status=0x45) == b"NACK/0x00000045/Submit failed"
    assert K.nack_text(command_status=0x401) == \
        b"NACK/0x00000401/Vendor-specific error, please refer to your SMPP provider"
    assert K.nack_text(command_status=0x99) == b"NACK/0x00000099/Unknown/Reserved"
    assert K.nack_text(K.REASON_EXPIRED) == b"NACK/validity expired"
    assert K.nack_text() == b"NACK/"


def test_message_uuid() -> None:
    """smsgw's %I: the message id in uuid_unparse's 8-4-4-4-12 lower-case form."""
    assert K.message_uuid(42) == "00000000-0000-0000-0000-00000000002a"

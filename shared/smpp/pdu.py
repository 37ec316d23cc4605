"""SMPP 3.4 codec, sans-IO in the style of h11: bytes in → PDU objects out, PDU objects → bytes.

No sockets and no asyncio here. `Decoder.feed()` takes whatever the transport delivered and
`Decoder.next_pdu()` returns complete PDUs one at a time (None when it needs more bytes);
`encode(pdu, seq)` returns the wire bytes.

PDUs are frozen slotted dataclasses and are *valid by construction*: a generated `__init__`
checks the
C-octet string fields against their SMPP 3.4 maximum lengths (the maximum includes the
terminating NUL, as in the specification's tables), so `encode` does no validation on the hot
path. The decoder checks the same limits while parsing and builds PDUs through a generated
constructor that skips those checks (a frozen dataclass's own `__init__` costs ~2.5 µs for
twenty fields, more than the whole parse).

Errors: `SmppFramingError` means the byte stream itself is broken (command_length below 16 or
above the configured maximum) and the connection must be closed; `SmppPduError` means one frame
was consumed but its body is invalid — it carries the command id, sequence number and the
command_status to answer with, and the stream can continue.
"""

import dataclasses
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Literal

from smsgw.shared.core.errors import SmppProtocolError

__all__ = [
    "DEFAULT_MAX_PDU_LENGTH",
    "BindReceiver",
    "BindReceiverResp",
    "BindTransceiver",
    "BindTransceiverResp",
    "BindTransmitter",
    "BindTransmitterResp",
    "CancelSm",
    "CancelSmResp",
    "CommandId",
    "DataSm",
    "DataSmResp",
    "Decoder",
    "DeliverSm",
    "DeliverSmResp",
    "EnquireLink",
    "EnquireLinkResp",
    "GenericNack",
    "Outbind",
    "Pdu",
    "QuerySm",
    "QuerySmResp",
    "SmppFramingError",
    "SmppPduError",
    "SubmitMulti",
    "SubmitMultiResp",
    "SubmitSm",
    "SubmitSmResp",
    "Tag",
    "Unbind",
    "UnbindResp",
    "UnknownPdu",
    "classify_status",
    "decode_frame",
    "encode",
    "encode_deliver_resp",
    "encode_submit_sm",
    "error_response",
    "fast_constructor",
    "get_tlv",
    "response_for",
    "status_name",
]

DEFAULT_MAX_PDU_LENGTH = 64 * 1024
HEADER_LENGTH = 16


class CommandId(IntEnum):
    """SMPP 3.4 command_id values (section 5.1.2.1); names as in smpplib's command_codes."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


# command_status values; the names are smpplib's (smpplib/consts.py), the values SMPP 3.4 5.1.3.
SMPP_ESME_ROK = 0x00000000
SMPP_ESME_RINVMSGLEN = 0x00000001
SMPP_ESME_RINVCMDLEN = 0x00000002
SMPP_ESME_RINVCMDID = 0x00000003
SMPP_ESME_RINVBNDSTS = 0x00000004
SMPP_ESME_RALYBND = 0x00000005
SMPP_ESME_RINVPRTFLG = 0x00000006
SMPP_ESME_RINVREGDLVFLG = 0x00000007
SMPP_ESME_RSYSERR = 0x00000008
SMPP_ESME_RINVSRCADR = 0x0000000A
SMPP_ESME_RINVDSTADR = 0x0000000B
SMPP_ESME_RINVMSGID = 0x0000000C
SMPP_ESME_RBINDFAIL = 0x0000000D
SMPP_ESME_RINVPASWD = 0x0000000E
SMPP_ESME_RINVSYSID = 0x0000000F
SMPP_ESME_RCANCELFAIL = 0x00000011
SMPP_ESME_RREPLACEFAIL = 0x00000013
SMPP_ESME_RMSGQFUL = 0x00000014
SMPP_ESME_RINVSERTYP = 0x00000015
SMPP_ESME_RINVNUMDESTS = 0x00000033
SMPP_ESME_RINVDLNAME = 0x00000034
SMPP_ESME_RINVDESTFLAG = 0x00000040
SMPP_ESME_RINVSUBREP = 0x00000042
SMPP_ESME_RINVESMCLASS = 0x00000043
SMPP_ESME_RCNTSUBDL = 0x00000044
SMPP_ESME_RSUBMITFAIL = 0x00000045
SMPP_ESME_RINVSRCTON = 0x00000048
SMPP_ESME_RINVSRCNPI = 0x00000049
SMPP_ESME_RINVDSTTON = 0x00000050
SMPP_ESME_RINVDSTNPI = 0x00000051
SMPP_ESME_RINVSYSTYP = 0x00000053
SMPP_ESME_RINVREPFLAG = 0x00000054
SMPP_ESME_RINVNUMMSGS = 0x00000055
SMPP_ESME_RTHROTTLED = 0x00000058
SMPP_ESME_RINVSCHED = 0x00000061
SMPP_ESME_RINVEXPIRY = 0x00000062
SMPP_ESME_RINVDFTMSGID = 0x00000063
SMPP_ESME_RX_T_APPN = 0x00000064
SMPP_ESME_RX_P_APPN = 0x00000065
SMPP_ESME_RX_R_APPN = 0x00000066
SMPP_ESME_RQUERYFAIL = 0x00000067
SMPP_ESME_RINVOPTPARSTREAM = 0x000000C0
SMPP_ESME_ROPTPARNOTALLWD = 0x000000C1
SMPP_ESME_RINVPARLEN = 0x000000C2
SMPP_ESME_RMISSINGOPTPARAM = 0x000000C3
SMPP_ESME_RINVOPTPARAMVAL = 0x000000C4
SMPP_ESME_RDELIVERYFAILURE = 0x000000FE
SMPP_ESME_RUNKNOWNERR = 0x000000FF

_STATUS_NAMES: dict[int, str] = {
    value: name.removeprefix("SMPP_")
    for name, value in list(globals().items())
    if name.startswith("SMPP_ESME_")
}


def status_name(code: int) -> str:
    """Return the symbolic name of command_status `code` (e.g. 'ESME_RTHROTTLED'), or hex."""
    return _STATUS_NAMES.get(code, f"0x{code:08X}")


StatusClass = Literal["ok", "transient", "permanent", "bind", "ambiguous"]

# Retry classes: docs/ARCHITECTURE.md "SMPP status classes and receipts" (after SMPP 3.4
# section 5.1.3 and Kannel's and Jasmin's defaults). Codes not listed are treated as
# permanent: an SMSC that invents a status is more often rejecting the message than asking us
# to retry.
_TRANSIENT = frozenset(
    {
        SMPP_ESME_RINVBNDSTS,  # wrong bind state: rebind, then retry
        SMPP_ESME_RSYSERR,
        SMPP_ESME_RMSGQFUL,
        SMPP_ESME_RTHROTTLED,
        SMPP_ESME_RX_T_APPN,
    }
)
_BIND = frozenset(
    {SMPP_ESME_RALYBND, SMPP_ESME_RBINDFAIL, SMPP_ESME_RINVPASWD, SMPP_ESME_RINVSYSID}
)
_AMBIGUOUS = frozenset({SMPP_ESME_RSUBMITFAIL, SMPP_ESME_RDELIVERYFAILURE, SMPP_ESME_RUNKNOWNERR})


def classify_status(code: int) -> StatusClass:
    """Classify a response's command_status for retry policy.

    `code` is the command_status of a response. Returns "ok", "transient" (retry later, maybe
    after pausing or rebinding), "bind" (credentials/bind-level: back off, alert), "ambiguous"
    (limited retry; the SMSC may or may not have accepted it) or "permanent".
    """
    if code == SMPP_ESME_ROK:
        return "ok"
    if code in _TRANSIENT:
        return "transient"
    if code in _BIND:
        return "bind"
    if code in _AMBIGUOUS:
        return "ambiguous"
    return "permanent"


class Tag(IntEnum):
    """Optional parameter (TLV) tags used by the gateway (SMPP 3.4 section 5.3.2)."""

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    USER_MESSAGE_REFERENCE = 0x0204
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    DPF_RESULT = 0x0420
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427


Tlvs = tuple[tuple[int, bytes], ...]


class SmppFramingError(SmppProtocolError):
    """The byte stream cannot be split into PDUs any more; close the connection."""


class SmppPduError(SmppProtocolError):
    """One frame was consumed but its body is invalid; the stream itself is still usable.

    `command_id` and `sequence_number` come from the frame's header, `status` is the
    command_status to answer with (a response for a known request, generic_nack otherwise).
    """

    def __init__(self, message: str, command_id: int, sequence_number: int, status: int) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.status = status


class SmppEncodeError(SmppProtocolError, ValueError):
    """A PDU's field does not fit the SMPP 3.4 limits."""


# --- field specifications ------------------------------------------------------------------
# A body is a sequence of fields: C-octet strings (name, max length *including* the NUL, the
# status to answer when it is invalid), single octets, and the sm_length/short_message pair.
_CSTR, _U8, _SM = 0, 1, 2

FieldSpec = tuple[str, int, int, int]  # (name, kind, max_len, error_status)


def _c(name: str, max_len: int, status: int = SMPP_ESME_RSYSERR) -> FieldSpec:
    return (name, _CSTR, max_len, status)


def _u8(name: str) -> FieldSpec:
    return (name, _U8, 1, SMPP_ESME_RINVCMDLEN)


_BIND_FIELDS = (
    _c("system_id", 16, SMPP_ESME_RINVSYSID),
    _c("password", 9, SMPP_ESME_RINVPASWD),
    _c("system_type", 13, SMPP_ESME_RINVSYSTYP),
    _u8("interface_version"),
    _u8("addr_ton"),
    _u8("addr_npi"),
    _c("address_range", 41),
)
_BIND_RESP_FIELDS = (_c("system_id", 16, SMPP_ESME_RINVSYSID),)
_SM_FIELDS = (
    _c("service_type", 6, SMPP_ESME_RINVSERTYP),
    _u8("source_addr_ton"),
    _u8("source_addr_npi"),
    _c("source_addr", 21, SMPP_ESME_RINVSRCADR),
    _u8("dest_addr_ton"),
    _u8("dest_addr_npi"),
    _c("destination_addr", 21, SMPP_ESME_RINVDSTADR),
    _u8("esm_class"),
    _u8("protocol_id"),
    _u8("priority_flag"),
    _c("schedule_delivery_time", 17, SMPP_ESME_RINVSCHED),
    _c("validity_period", 17, SMPP_ESME_RINVEXPIRY),
    _u8("registered_delivery"),
    _u8("replace_if_present_flag"),
    _u8("data_coding"),
    _u8("sm_default_msg_id"),
    ("short_message", _SM, 254, SMPP_ESME_RINVMSGLEN),
)
_MSGID_FIELDS = (_c("message_id", 65, SMPP_ESME_RINVMSGID),)
_DATA_SM_FIELDS = (
    _c("service_type", 6, SMPP_ESME_RINVSERTYP),
    _u8("source_addr_ton"),
    _u8("source_addr_npi"),
    _c("source_addr", 65, SMPP_ESME_RINVSRCADR),
    _u8("dest_addr_ton"),
    _u8("dest_addr_npi"),
    _c("destination_addr", 65, SMPP_ESME_RINVDSTADR),
    _u8("esm_class"),
    _u8("registered_delivery"),
    _u8("data_coding"),
)
_QUERY_SM_FIELDS = (
    _c("message_id", 65, SMPP_ESME_RINVMSGID),
    _u8("source_addr_ton"),
    _u8("source_addr_npi"),
    _c("source_addr", 21, SMPP_ESME_RINVSRCADR),
)
_CANCEL_SM_FIELDS = (
    _c("service_type", 6, SMPP_ESME_RINVSERTYP),
    _c("message_id", 65, SMPP_ESME_RINVMSGID),
    _u8("source_addr_ton"),
    _u8("source_addr_npi"),
    _c("source_addr", 21, SMPP_ESME_RINVSRCADR),
    _u8("dest_addr_ton"),
    _u8("dest_addr_npi"),
    _c("destination_addr", 21, SMPP_ESME_RINVDSTADR),
)
_QUERY_SM_RESP_FIELDS = (
    _c("message_id", 65, SMPP_ESME_RINVMSGID),
    _c("final_date", 17),
    _u8("message_state"),
    _u8("error_code"),
)


class _PduBase:
    """Behaviour shared by every PDU class (the dataclass fields are declared per class)."""

    __slots__ = ()
    command_id: ClassVar[int]
    _fields_spec: ClassVar[tuple[FieldSpec, ...]] = ()
    # Responses may legitimately arrive with no body at all (e.g. submit_sm_resp with an error
    # status; cloudhopper-smpp's decoder accepts a 16-octet submit_sm_resp).
    _body_optional: ClassVar[bool] = False

    sequence_number: int
    command_status: int

    @property
    def is_response(self) -> bool:
        """True for response PDUs (command_id has the high bit set)."""
        return bool(self.command_id & 0x80000000)


def _validate(obj: Any) -> None:
    """Slow path of the generated __init__: find the offending field and say which."""
    for name, kind, max_len, _status in obj._fields_spec:
        value = getattr(obj, name)
        if kind == _CSTR:
            if not isinstance(value, str) or len(value) >= max_len or "\0" in value:
                raise SmppEncodeError(f"{name}={value!r} does not fit C-octet string[{max_len}]")
            if not (value.isascii() or max(value) <= "\xff"):
                raise SmppEncodeError(f"{name}={value!r} is not Latin-1")
        elif kind == _SM and (not isinstance(value, bytes) or len(value) > max_len):
            raise SmppEncodeError(f"{name} must be bytes of at most {max_len} octets")
    for tag, value in getattr(obj, "tlvs", ()):
        if not 0 <= tag <= 0xFFFF or not isinstance(value, bytes) or len(value) > 0xFFFF:
            raise SmppEncodeError(f"TLV {tag!r} out of range")


def _generated_init(cls: type[Any]) -> Callable[..., None]:
    """Generate a validating __init__ that is several times faster than the frozen default.

    A frozen dataclass assigns through object.__setattr__ per field (~150 ns each); this one
    sets the slots through their descriptors and checks all C-octet strings with one combined
    test, falling back to `_validate` (which names the field) only when something is off.
    """
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    params = ", ".join(f"{n}=_d_{n}" for n in names)
    cstrs = [(name, max_len) for name, kind, max_len, _ in cls._fields_spec if kind == _CSTR]
    sms = [(name, max_len) for name, kind, max_len, _ in cls._fields_spec if kind == _SM]
    lines = [f"def __init__(self, {params}):"]
    lines += [f"    _s_{n}(self, {n})" for n in names]
    checks = [f"len({n}) >= {m}" for n, m in cstrs] + [f"len({n}) > {m}" for n, m in sms]
    if cstrs:
        joined = " + ".join(n for n, _ in cstrs)
        checks.append(f"not ({joined}).isascii()")
        checks.append(f"'\\0' in ({joined})")
    if "tlvs" in names:
        checks.append("(tlvs and not _tlvs_ok(tlvs))")
    if checks:
        lines.append(f"    if {' or '.join(checks)}:")
        lines.append("        _validate(self)")
    namespace: dict[str, Any] = {"_validate": _validate, "_tlvs_ok": _tlvs_ok}
    for f in fields:
        namespace[f"_d_{f.name}"] = f.default
        namespace[f"_s_{f.name}"] = getattr(cls, f.name).__set__
    exec("\n".join(lines), namespace)
    return namespace["__init__"]  # type: ignore[no-any-return]


def _tlvs_ok(tlvs: Any) -> bool:
    return all(0 <= tag <= 0xFFFF and len(value) <= 0xFFFF for tag, value in tlvs)


def _pdu(command_id: int, spec: tuple[FieldSpec, ...] = (), body_optional: bool = False) -> Any:
    """Class decorator: attach the command id and field spec, make a frozen slotted dataclass."""

    def wrap(cls: type) -> type:
        cls.command_id = command_id  # type: ignore[attr-defined]
        cls._fields_spec = spec  # type: ignore[attr-defined]
        cls._body_optional = body_optional  # type: ignore[attr-defined]
        new_cls = dataclass(frozen=True, slots=True)(cls)
        new_cls.__init__ = _generated_init(new_cls)
        return new_cls

    return wrap


@_pdu(CommandId.BIND_TRANSMITTER, _BIND_FIELDS)
class BindTransmitter(_PduBase):
    """bind_transmitter (4.1.1). `password` is sent in clear text, as SMPP 3.4 requires."""

    sequence_number: int = 0
    command_status: int = 0
    system_id: str = ""
    password: str = dataclasses.field(default="", repr=False)
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.BIND_RECEIVER, _BIND_FIELDS)
class BindReceiver(_PduBase):
    """bind_receiver (4.1.3)."""

    sequence_number: int = 0
    command_status: int = 0
    system_id: str = ""
    password: str = dataclasses.field(default="", repr=False)
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.BIND_TRANSCEIVER, _BIND_FIELDS)
class BindTransceiver(_PduBase):
    """bind_transceiver (4.1.5)."""

    sequence_number: int = 0
    command_status: int = 0
    system_id: str = ""
    password: str = dataclasses.field(default="", repr=False)
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.BIND_TRANSMITTER_RESP, _BIND_RESP_FIELDS, body_optional=True)
class BindTransmitterResp(_PduBase):
    """bind_transmitter_resp (4.1.2); TLV sc_interface_version optional."""

    sequence_number: int = 0
    command_status: int = 0
    system_id: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.BIND_RECEIVER_RESP, _BIND_RESP_FIELDS, body_optional=True)
class BindReceiverResp(_PduBase):
    """bind_receiver_resp (4.1.4)."""

    sequence_number: int = 0
    command_status: int = 0
    system_id: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.BIND_TRANSCEIVER_RESP, _BIND_RESP_FIELDS, body_optional=True)
class BindTransceiverResp(_PduBase):
    """bind_transceiver_resp (4.1.6)."""

    sequence_number: int = 0
    command_status: int = 0
    system_id: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.OUTBIND, (_c("system_id", 16, SMPP_ESME_RINVSYSID), _c("password", 9)))
class Outbind(_PduBase):
    """outbind (4.1.7): the SMSC asks the ESME to bind as a receiver."""

    sequence_number: int = 0
    command_status: int = 0
    system_id: str = ""
    password: str = dataclasses.field(default="", repr=False)


@_pdu(CommandId.UNBIND)
class Unbind(_PduBase):
    """unbind (4.2.1)."""

    sequence_number: int = 0
    command_status: int = 0


@_pdu(CommandId.UNBIND_RESP)
class UnbindResp(_PduBase):
    """unbind_resp (4.2.2)."""

    sequence_number: int = 0
    command_status: int = 0


@_pdu(CommandId.ENQUIRE_LINK)
class EnquireLink(_PduBase):
    """enquire_link (4.11.1)."""

    sequence_number: int = 0
    command_status: int = 0


@_pdu(CommandId.ENQUIRE_LINK_RESP)
class EnquireLinkResp(_PduBase):
    """enquire_link_resp (4.11.2)."""

    sequence_number: int = 0
    command_status: int = 0


@_pdu(CommandId.GENERIC_NACK)
class GenericNack(_PduBase):
    """generic_nack (4.3.1): the answer to a PDU that could not be understood."""

    sequence_number: int = 0
    command_status: int = 0


@_pdu(CommandId.SUBMIT_SM, _SM_FIELDS)
class SubmitSm(_PduBase):
    """submit_sm (4.4.1). `short_message` holds raw octets (already encoded, UDH included)."""

    sequence_number: int = 0
    command_status: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: Tlvs = ()


@_pdu(CommandId.SUBMIT_SM_RESP, _MSGID_FIELDS, body_optional=True)
class SubmitSmResp(_PduBase):
    """submit_sm_resp (4.4.2); `message_id` is the SMSC's id for the message ("" if absent)."""

    sequence_number: int = 0
    command_status: int = 0
    message_id: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.DELIVER_SM, _SM_FIELDS)
class DeliverSm(_PduBase):
    """deliver_sm (4.6.1): MO messages and delivery receipts (told apart by esm_class)."""

    sequence_number: int = 0
    command_status: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: Tlvs = ()


@_pdu(CommandId.DELIVER_SM_RESP, _MSGID_FIELDS, body_optional=True)
class DeliverSmResp(_PduBase):
    """deliver_sm_resp (4.6.2); message_id is unused and normally empty."""

    sequence_number: int = 0
    command_status: int = 0
    message_id: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.DATA_SM, _DATA_SM_FIELDS)
class DataSm(_PduBase):
    """data_sm (4.7.1); the payload travels in the message_payload TLV."""

    sequence_number: int = 0
    command_status: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: Tlvs = ()


@_pdu(CommandId.DATA_SM_RESP, _MSGID_FIELDS, body_optional=True)
class DataSmResp(_PduBase):
    """data_sm_resp (4.7.2)."""

    sequence_number: int = 0
    command_status: int = 0
    message_id: str = ""
    tlvs: Tlvs = ()


@_pdu(CommandId.QUERY_SM, _QUERY_SM_FIELDS)
class QuerySm(_PduBase):
    """query_sm (4.8.1)."""

    sequence_number: int = 0
    command_status: int = 0
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""


@_pdu(CommandId.QUERY_SM_RESP, _QUERY_SM_RESP_FIELDS, body_optional=True)
class QuerySmResp(_PduBase):
    """query_sm_resp (4.8.2)."""

    sequence_number: int = 0
    command_status: int = 0
    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


@_pdu(CommandId.CANCEL_SM, _CANCEL_SM_FIELDS)
class CancelSm(_PduBase):
    """cancel_sm (4.9.1): cancel a message still waiting (by message_id, or every message
    from source_addr to destination_addr when message_id is empty)."""

    sequence_number: int = 0
    command_status: int = 0
    service_type: str = ""
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""


@_pdu(CommandId.CANCEL_SM_RESP)
class CancelSmResp(_PduBase):
    """cancel_sm_resp (4.9.2): header only."""

    sequence_number: int = 0
    command_status: int = 0


# submit_multi's destinations: (dest_flag, ton, npi, address); dest_flag 1 is an SME address,
# 2 a distribution list name (ton/npi 0). Its response's unsuccess_sme entries:
# (ton, npi, address, error_status_code).
MultiDest = tuple[int, int, int, str]
Unsuccess = tuple[int, int, str, int]
MAX_MULTI_DESTS = 254  # number_of_dests is one octet (SMPP 3.4 5.2.24: at most 254)


@_pdu(CommandId.SUBMIT_MULTI, (_c("service_type", 6, SMPP_ESME_RINVSERTYP),
                               _c("source_addr", 21, SMPP_ESME_RINVSRCADR),
                               _c("schedule_delivery_time", 17, SMPP_ESME_RINVSCHED),
                               _c("validity_period", 17, SMPP_ESME_RINVEXPIRY),
                               ("short_message", _SM, 254, SMPP_ESME_RINVMSGLEN)))
class SubmitMulti(_PduBase):
    """submit_multi (4.5.1): one message to up to 254 destinations (`dests`)."""

    sequence_number: int = 0
    command_status: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dests: tuple[MultiDest, ...] = ()
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: Tlvs = ()


@_pdu(CommandId.SUBMIT_MULTI_RESP, _MSGID_FIELDS, body_optional=True)
class SubmitMultiResp(_PduBase):
    """submit_multi_resp (4.5.2): the message id and the destinations refused."""

    sequence_number: int = 0
    command_status: int = 0
    message_id: str = ""
    unsuccess: tuple[Unsuccess, ...] = ()


@dataclass(frozen=True, slots=True)
class UnknownPdu:
    """A well-framed PDU whose command_id this codec does not know; `body` is kept raw.

    A session answers it with generic_nack ESME_RINVCMDID (or ignores it, for a response).
    """

    command_id: int
    sequence_number: int = 0
    command_status: int = 0
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        """True when the unknown command_id has the response bit set."""
        return bool(self.command_id & 0x80000000)


Pdu = (
    BindTransmitter
    | BindReceiver
    | BindTransceiver
    | BindTransmitterResp
    | BindReceiverResp
    | BindTransceiverResp
    | Outbind
    | Unbind
    | UnbindResp
    | EnquireLink
    | EnquireLinkResp
    | GenericNack
    | SubmitSm
    | SubmitSmResp
    | DeliverSm
    | DeliverSmResp
    | DataSm
    | DataSmResp
    | QuerySm
    | QuerySmResp
    | CancelSm
    | CancelSmResp
    | SubmitMulti
    | SubmitMultiResp
    | UnknownPdu
)

_ALL_CLASSES: tuple[type[Any], ...] = (
    BindTransmitter,
    BindReceiver,
    BindTransceiver,
    BindTransmitterResp,
    BindReceiverResp,
    BindTransceiverResp,
    Outbind,
    Unbind,
    UnbindResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    SubmitSm,
    SubmitSmResp,
    DeliverSm,
    DeliverSmResp,
    DataSm,
    DataSmResp,
    QuerySm,
    QuerySmResp,
    CancelSm,
    CancelSmResp,
    SubmitMulti,
    SubmitMultiResp,
)
PDU_CLASSES: dict[int, type[Any]] = {cls.command_id: cls for cls in _ALL_CLASSES}

_RESPONSE_CLASS: dict[type[Any], type[Any]] = {
    BindTransmitter: BindTransmitterResp,
    BindReceiver: BindReceiverResp,
    BindTransceiver: BindTransceiverResp,
    Unbind: UnbindResp,
    EnquireLink: EnquireLinkResp,
    SubmitSm: SubmitSmResp,
    DeliverSm: DeliverSmResp,
    DataSm: DataSmResp,
    QuerySm: QuerySmResp,
    CancelSm: CancelSmResp,
    SubmitMulti: SubmitMultiResp,
}


def response_for(request: Any, command_status: int = SMPP_ESME_ROK, **fields: Any) -> Any:
    """Build the response PDU to `request` with the same sequence number.

    `command_status` is the status to answer with; `fields` are the response's body fields
    (e.g. `message_id=` for submit_sm_resp). A request without a response type (outbind,
    unknown commands) gets a generic_nack.
    """
    cls = _RESPONSE_CLASS.get(type(request))
    if cls is None:
        return GenericNack(request.sequence_number, command_status or SMPP_ESME_RINVCMDID)
    return cls(request.sequence_number, command_status, **fields)


def error_response(error: "SmppPduError") -> Any:
    """The PDU answering an undecodable request: its own response type carrying
    `error.status` when the command is known, generic_nack otherwise; None for a response
    (responses are never answered)."""
    if error.command_id & 0x80000000:
        return None
    cls = _RESPONSE_CLASS.get(PDU_CLASSES.get(error.command_id))  # type: ignore[arg-type]
    if cls is None:
        return GenericNack(error.sequence_number, error.status)
    return cls(error.sequence_number, error.status)


def get_tlv(pdu: Any, tag: int) -> bytes | None:
    """Return the value of the first TLV with `tag` in `pdu` (None if the PDU has none)."""
    for t, value in getattr(pdu, "tlvs", ()):
        if t == tag:
            return value
    return None


# --- fast constructors ---------------------------------------------------------------------


def fast_constructor(cls: type[Any]) -> Callable[..., Any]:
    """Generate `make(*values)` that fills a frozen slotted dataclass without its __init__:
    every field positionally, in declaration order, no defaults, no validation.

    The decoder uses it for PDUs (it has already validated every field), the session and the
    sender for their per-message records. Setting each slot through its member descriptor is
    about twice as fast as the frozen dataclass __init__ (object.__setattr__ per field).
    """
    names = [f.name for f in dataclasses.fields(cls)]
    args = ", ".join(names)
    lines = [f"def make({args}):", "    o = _new(_cls)"]
    lines += [f"    _s_{n}(o, {n})" for n in names]
    lines.append("    return o")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_s_{n}": getattr(cls, n).__set__ for n in names})
    exec("\n".join(lines), namespace)
    return namespace["make"]  # type: ignore[no-any-return]


_MAKERS: dict[type[Any], Callable[..., Any]] = {cls: fast_constructor(cls) for cls in _ALL_CLASSES}

# --- encoding ------------------------------------------------------------------------------

_HDR = struct.Struct(">IIII")
_U32 = struct.Struct(">I")
_TLV_HDR = struct.Struct(">HH")
_HDR_PACK = _HDR.pack
_NUL = b"\0"


def _encode_tlvs(tlvs: Tlvs) -> bytes:
    pack = _TLV_HDR.pack
    return b"".join([pack(tag, len(value)) + value for tag, value in tlvs])


_SM_STRUCTS: dict[tuple[int, ...], struct.Struct] = {}


def _sm_struct(key: tuple[int, ...]) -> struct.Struct:
    """A Struct for one combination of submit_sm/deliver_sm variable field lengths.

    `Ns` pads with NULs, so each C-octet string is packed as its bytes into len+1 octets and
    the terminator comes for free. Senders use a handful of combinations; the cache is
    cleared if odd traffic ever fills it.
    """
    st, sa, da, sd, vp, sm = key
    fmt = f">IIII{st + 1}sBB{sa + 1}sBB{da + 1}sBBB{sd + 1}s{vp + 1}sBBBBB{sm}s"
    if len(_SM_STRUCTS) >= 4096:
        _SM_STRUCTS.clear()
    compiled = _SM_STRUCTS[key] = struct.Struct(fmt)
    return compiled


def _encode_sm_frame(p: Any, seq: int) -> bytes:
    """Whole submit_sm / deliver_sm frame in one struct.pack: the sender's hot path."""
    st = p.service_type
    st = st.encode("latin-1") if st else b""
    sa = p.source_addr.encode("latin-1")
    da = p.destination_addr.encode("latin-1")
    sd = p.schedule_delivery_time
    sd = sd.encode("latin-1") if sd else b""
    vp = p.validity_period
    vp = vp.encode("latin-1") if vp else b""
    sm = p.short_message
    n = len(sm)
    key = (len(st), len(sa), len(da), len(sd), len(vp), n)
    packer = _SM_STRUCTS.get(key) or _sm_struct(key)
    tlvs = _encode_tlvs(p.tlvs) if p.tlvs else b""
    frame = packer.pack(
        packer.size + len(tlvs), p.command_id, p.command_status, seq,
        st, p.source_addr_ton, p.source_addr_npi, sa,
        p.dest_addr_ton, p.dest_addr_npi, da,
        p.esm_class, p.protocol_id, p.priority_flag, sd, vp,
        p.registered_delivery, p.replace_if_present_flag, p.data_coding, p.sm_default_msg_id,
        n, sm,
    )  # fmt: skip
    return frame + tlvs if tlvs else frame


def _encode_generic_body(p: Any) -> bytes:
    parts: list[bytes] = []
    for name, kind, _max, _status in p._fields_spec:
        value = getattr(p, name)
        if kind == _CSTR:
            parts.append(value.encode("latin-1") + _NUL)
        elif kind == _U8:
            parts.append(bytes((value,)))
        else:
            parts.append(bytes((len(value),)) + value)
    tlvs = getattr(p, "tlvs", ())
    if tlvs:
        parts.append(_encode_tlvs(tlvs))
    return b"".join(parts)


def _encode_msgid_body(p: Any) -> bytes:
    if p.tlvs:
        return p.message_id.encode("latin-1") + _NUL + _encode_tlvs(p.tlvs)
    return p.message_id.encode("latin-1") + _NUL


def _encode_empty_body(p: Any) -> bytes:
    return b""


_BODY_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {
    cls: _encode_generic_body for cls in _ALL_CLASSES
}
_BODY_ENCODERS.update({c: _encode_msgid_body for c in (SubmitSmResp, DeliverSmResp, DataSmResp)})
_BODY_ENCODERS.update(
    {c: _encode_empty_body for c in (Unbind, UnbindResp, EnquireLink, EnquireLinkResp, GenericNack,
                                     CancelSmResp)}
)


def _encode_submit_multi(p: Any) -> bytes:
    def c(v: str) -> bytes:
        return v.encode("latin-1") + _NUL
    if len(p.dests) > MAX_MULTI_DESTS:
        raise SmppEncodeError(f"submit_multi takes at most {MAX_MULTI_DESTS} destinations")
    parts = [c(p.service_type), bytes((p.source_addr_ton, p.source_addr_npi)), c(p.source_addr),
             bytes((len(p.dests),))]
    for flag, ton, npi, addr in p.dests:
        parts.append(bytes((flag, ton, npi)) + c(addr) if flag == 1 else bytes((flag,)) + c(addr))
    parts += [bytes((p.esm_class, p.protocol_id, p.priority_flag)),
              c(p.schedule_delivery_time), c(p.validity_period),
              bytes((p.registered_delivery, p.replace_if_present_flag, p.data_coding,
                     p.sm_default_msg_id, len(p.short_message))), p.short_message,
              _encode_tlvs(p.tlvs) if p.tlvs else b""]
    return b"".join(parts)


def _encode_submit_multi_resp(p: Any) -> bytes:
    parts = [p.message_id.encode("latin-1") + _NUL, bytes((len(p.unsuccess),))]
    for ton, npi, addr, status in p.unsuccess:
        parts.append(bytes((ton, npi)) + addr.encode("latin-1") + _NUL + _U32.pack(status))
    return b"".join(parts)


_BODY_ENCODERS[SubmitMulti] = _encode_submit_multi
_BODY_ENCODERS[SubmitMultiResp] = _encode_submit_multi_resp


def encode(pdu: Any, sequence_number: int | None = None) -> bytes:
    """Encode `pdu` to wire bytes.

    `sequence_number`, when given, replaces the PDU's own (so a session can number a
    pre-built PDU without copying the frozen object). Raises SmppEncodeError when an integer
    field does not fit its octet(s) or the PDU exceeds what command_length can carry.
    """
    seq = pdu.sequence_number if sequence_number is None else sequence_number
    try:
        cls = type(pdu)
        if cls is SubmitSm or cls is DeliverSm:
            return _encode_sm_frame(pdu, seq)
        body = pdu.body if cls is UnknownPdu else _BODY_ENCODERS[cls](pdu)
        return _HDR_PACK(16 + len(body), pdu.command_id, pdu.command_status, seq) + body
    except (struct.error, OverflowError, UnicodeEncodeError, TypeError) as exc:
        raise SmppEncodeError(f"cannot encode {type(pdu).__name__}: {exc}") from exc


def encode_deliver_resp(request: Any, command_status: int) -> bytes:
    """`encode(response_for(request, command_status))` for a deliver_sm or data_sm (its
    response has an empty message_id and no TLVs) without building the response: what an
    ESME sends per receipt. `command_status` must be a valid 32-bit status."""
    return _HDR_PACK(17, request.command_id | 0x80000000, command_status,
                     request.sequence_number) + _NUL


def encode_submit_sm(pdu: SubmitSm, sequence_number: int) -> bytes:
    """Fast path of `encode` for submit_sm (what a sender calls per part)."""
    try:
        return _encode_sm_frame(pdu, sequence_number)
    except (struct.error, OverflowError, UnicodeEncodeError, TypeError) as exc:
        raise SmppEncodeError(f"cannot encode submit_sm: {exc}") from exc


# --- decoding ------------------------------------------------------------------------------


class _BodyError(Exception):
    """Internal: raised inside a body parser, turned into SmppPduError with the header."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _decode_tlvs(frame: bytes, pos: int) -> Tlvs:
    end = len(frame)
    if pos == end:
        return ()
    tlvs = []
    unpack = _TLV_HDR.unpack_from
    while pos < end:
        if pos + 4 > end:
            raise _BodyError("truncated TLV header", SMPP_ESME_RINVOPTPARSTREAM)
        tag, length = unpack(frame, pos)
        pos += 4
        if pos + length > end:
            raise _BodyError(f"TLV 0x{tag:04X} overruns the PDU", SMPP_ESME_RINVOPTPARSTREAM)
        tlvs.append((tag, frame[pos : pos + length]))
        pos += length
    return tuple(tlvs)


def _cstr(frame: bytes, pos: int, max_len: int, status: int) -> tuple[str, int]:
    nul = frame.find(0, pos, pos + max_len)
    if nul < 0:
        raise _BodyError(f"C-octet string at {pos} unterminated within {max_len}", status)
    return frame[pos:nul].decode("latin-1"), nul + 1


def _decode_sm(cls: type[Any], frame: bytes, status: int, seq: int) -> Any:
    """submit_sm / deliver_sm body, hand-unrolled: receipts and MO arrive through here."""
    find = frame.find
    p = 16
    n = find(0, p, p + 6)
    if n < 0:
        raise _BodyError("service_type unterminated", SMPP_ESME_RINVSERTYP)
    service_type = frame[p:n].decode("latin-1")
    src_ton, src_npi = frame[n + 1], frame[n + 2]
    p = n + 3
    n = find(0, p, p + 21)
    if n < 0:
        raise _BodyError("source_addr unterminated", SMPP_ESME_RINVSRCADR)
    source_addr = frame[p:n].decode("latin-1")
    dst_ton, dst_npi = frame[n + 1], frame[n + 2]
    p = n + 3
    n = find(0, p, p + 21)
    if n < 0:
        raise _BodyError("destination_addr unterminated", SMPP_ESME_RINVDSTADR)
    destination_addr = frame[p:n].decode("latin-1")
    esm_class, protocol_id, priority_flag = frame[n + 1], frame[n + 2], frame[n + 3]
    p = n + 4
    if frame[p] == 0:  # the usual case: no schedule_delivery_time
        schedule, p = "", p + 1
    else:
        schedule, p = _cstr(frame, p, 17, SMPP_ESME_RINVSCHED)
    if frame[p] == 0:
        validity, p = "", p + 1
    else:
        validity, p = _cstr(frame, p, 17, SMPP_ESME_RINVEXPIRY)
    registered, replace_flag, data_coding, default_id, sm_length = frame[p : p + 5]
    p += 5
    if sm_length > 254 or p + sm_length > len(frame):
        raise _BodyError("short_message overruns the PDU", SMPP_ESME_RINVMSGLEN)
    short_message = frame[p : p + sm_length]
    tlvs = _decode_tlvs(frame, p + sm_length)
    return _MAKERS[cls](
        seq, status, service_type, src_ton, src_npi, source_addr, dst_ton, dst_npi,
        destination_addr, esm_class, protocol_id, priority_flag, schedule, validity,
        registered, replace_flag, data_coding, default_id, short_message, tlvs,
    )  # fmt: skip


def _decode_msgid(cls: type[Any], frame: bytes, status: int, seq: int) -> Any:
    """submit_sm_resp / deliver_sm_resp / data_sm_resp: message_id plus optional TLVs."""
    if len(frame) == 16:
        return _MAKERS[cls](seq, status, "", ())
    n = frame.find(0, 16, 16 + 65)
    if n < 0:
        raise _BodyError("message_id unterminated", SMPP_ESME_RINVMSGID)
    message_id = frame[16:n].decode("latin-1")
    if n + 1 == len(frame):
        return _MAKERS[cls](seq, status, message_id, ())
    return _MAKERS[cls](seq, status, message_id, _decode_tlvs(frame, n + 1))


def _decode_generic(cls: type[Any], frame: bytes, status: int, seq: int) -> Any:
    spec = cls._fields_spec
    if len(frame) == 16 and cls._body_optional:
        return cls(seq, status)
    values: list[Any] = [seq, status]
    p = 16
    for _name, kind, max_len, err in spec:
        if kind == _CSTR:
            value, p = _cstr(frame, p, max_len, err)
        elif kind == _U8:
            value = frame[p]
            p += 1
        else:  # pragma: no cover - only submit_sm/deliver_sm carry short_message
            raise AssertionError("sm fields use _decode_sm")
        values.append(value)
    if "tlvs" in cls.__dataclass_fields__:
        values.append(_decode_tlvs(frame, p))
    elif p != len(frame):
        raise _BodyError(f"{len(frame) - p} trailing octets", SMPP_ESME_RINVCMDLEN)
    return _MAKERS[cls](*values)


def _decode_empty(cls: type[Any], frame: bytes, status: int, seq: int) -> Any:
    if len(frame) != 16:
        raise _BodyError("unexpected body", SMPP_ESME_RINVCMDLEN)
    return _MAKERS[cls](seq, status)


_DECODERS: dict[int, tuple[Callable[[type[Any], bytes, int, int], Any], type[Any]]] = {}
for _cls in _ALL_CLASSES:
    _DECODERS[_cls.command_id] = (_decode_generic, _cls)
for _cls in (SubmitSm, DeliverSm):
    _DECODERS[_cls.command_id] = (_decode_sm, _cls)
for _cls in (SubmitSmResp, DeliverSmResp, DataSmResp):
    _DECODERS[_cls.command_id] = (_decode_msgid, _cls)
for _cls in (Unbind, UnbindResp, EnquireLink, EnquireLinkResp, GenericNack, CancelSmResp):
    _DECODERS[_cls.command_id] = (_decode_empty, _cls)
del _cls


def _decode_submit_multi(cls: type[Any], frame: bytes, status: int, seq: int) -> Any:
    """submit_multi: the destination list, then the submit_sm fields after source_addr."""
    service_type, p = _cstr(frame, 16, 6, SMPP_ESME_RINVSERTYP)
    src_ton, src_npi = frame[p], frame[p + 1]
    source_addr, p = _cstr(frame, p + 2, 21, SMPP_ESME_RINVSRCADR)
    count = frame[p]
    p += 1
    if count == 0 or count > MAX_MULTI_DESTS:
        raise _BodyError(f"number_of_dests {count}", SMPP_ESME_RINVNUMDESTS)
    dests: list[MultiDest] = []
    for _ in range(count):
        flag = frame[p]
        if flag == 1:
            ton, npi = frame[p + 1], frame[p + 2]
            addr, p = _cstr(frame, p + 3, 21, SMPP_ESME_RINVDSTADR)
            dests.append((1, ton, npi, addr))
        elif flag == 2:
            name, p = _cstr(frame, p + 1, 21, SMPP_ESME_RINVDLNAME)
            dests.append((2, 0, 0, name))
        else:
            raise _BodyError(f"dest_flag {flag}", SMPP_ESME_RINVDESTFLAG)
    esm_class, protocol_id, priority_flag = frame[p], frame[p + 1], frame[p + 2]
    schedule, p = _cstr(frame, p + 3, 17, SMPP_ESME_RINVSCHED)
    validity, p = _cstr(frame, p, 17, SMPP_ESME_RINVEXPIRY)
    registered, replace_flag, data_coding, default_id, sm_length = frame[p : p + 5]
    p += 5
    if p + sm_length > len(frame):
        raise _BodyError("short_message overruns the PDU", SMPP_ESME_RINVMSGLEN)
    short_message = frame[p : p + sm_length]
    tlvs = _decode_tlvs(frame, p + sm_length)
    return _MAKERS[cls](
        seq, status, service_type, src_ton, src_npi, source_addr, tuple(dests), esm_class,
        protocol_id, priority_flag, schedule, validity, registered, replace_flag, data_coding,
        default_id, short_message, tlvs)


def _decode_submit_multi_resp(cls: type[Any], frame: bytes, status: int, seq: int) -> Any:
    if len(frame) == 16:
        return _MAKERS[cls](seq, status, "", ())
    message_id, p = _cstr(frame, 16, 65, SMPP_ESME_RINVMSGID)
    if p == len(frame):
        return _MAKERS[cls](seq, status, message_id, ())
    count = frame[p]
    p += 1
    out: list[Unsuccess] = []
    for _ in range(count):
        ton, npi = frame[p], frame[p + 1]
        addr, p = _cstr(frame, p + 2, 21, SMPP_ESME_RINVDSTADR)
        (code,) = _U32.unpack_from(frame, p)
        p += 4
        out.append((ton, npi, addr, code))
    return _MAKERS[cls](seq, status, message_id, tuple(out))


_DECODERS[SubmitMulti.command_id] = (_decode_submit_multi, SubmitMulti)
_DECODERS[SubmitMultiResp.command_id] = (_decode_submit_multi_resp, SubmitMultiResp)


def decode_frame(frame: bytes) -> Any:
    """Decode one complete PDU (`frame` starts with its command_length and ends with it).

    Returns a PDU dataclass, or UnknownPdu for a command id this codec does not know.
    Raises SmppPduError when the body is invalid (the caller answers with its `.status`).
    """
    _length, command_id, status, seq = _HDR.unpack_from(frame)
    entry = _DECODERS.get(command_id)
    if entry is None:
        return UnknownPdu(command_id, seq, status, frame[16:])
    parse, cls = entry
    try:
        return parse(cls, frame, status, seq)
    except _BodyError as exc:
        raise SmppPduError(str(exc), command_id, seq, exc.status) from None
    except (IndexError, ValueError, struct.error) as exc:
        # A mandatory field runs past the end of the frame.
        raise SmppPduError(
            f"truncated body: {exc}", command_id, seq, SMPP_ESME_RINVCMDLEN
        ) from None


class Decoder:
    """Splits a byte stream into PDUs (h11's receive_data / next_event shape).

    `max_length` bounds command_length (and with it memory per connection): a frame above it,
    or below the 16-octet header, is a framing error after which the decoder stays broken —
    the only safe answer is to close the connection.
    """

    __slots__ = ("_broken", "_buf", "_max")

    def __init__(self, max_length: int = DEFAULT_MAX_PDU_LENGTH) -> None:
        self._buf = bytearray()
        self._max = max_length
        self._broken: SmppFramingError | None = None

    def feed(self, data: bytes) -> None:
        """Append bytes received from the transport."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Number of octets received but not yet returned as PDUs."""
        return len(self._buf)

    def next_pdu(self) -> Any:
        """Return the next complete PDU, or None when more bytes are needed.

        Raises SmppFramingError (fatal for the stream) or SmppPduError (this frame is
        consumed and invalid; keep calling next_pdu afterwards).
        """
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _U32.unpack_from(buf)
        if length < HEADER_LENGTH or length > self._max:
            self._broken = SmppFramingError(
                f"command_length {length} outside [{HEADER_LENGTH}, {self._max}]"
            )
            self._buf = bytearray()
            raise self._broken
        if len(buf) < length:
            return None
        frame = bytes(buf[:length])
        # bytearray deletes from the front in O(1) (it moves its start pointer).
        del buf[:length]
        return decode_frame(frame)

    def __iter__(self) -> Iterator[Any]:
        """Yield complete PDUs until more bytes are needed (errors propagate as in next_pdu)."""
        while (pdu := self.next_pdu()) is not None:
            yield pdu

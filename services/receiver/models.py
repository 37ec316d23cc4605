"""Request and response models of the HTTP API (validation and the OpenAPI schemas).

Validation happens once, at the edge, with pydantic (`extra="forbid"`: an unknown field is an
error naming it); the common MT body (`to`, `from`, `text`, maybe `client_ref`, every value a
string within its limits) skips the model (`plain_message`): what the model would accept
unchanged, at a sixth of the cost; anything else, valid or not, goes through the model.
Errors become `{"error": ..., "errors": [{"field": ..., "message": ...}]}` where `field` is a
dotted path (`messages[2].to`), never a stack trace.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

Category = Literal["transactional", "marketing"]
EncodingName = Literal["auto", "gsm7", "latin1", "ucs2"]

MAX_TEXT_CHARS = 10_000  # before the parts check (max_parts), to bound the work per request
MAX_BINARY_OCTETS = 10_000  # the same bound for binary content
_HEX = r"^([0-9A-Fa-f]{2})*$"


class MessageIn(BaseModel):
    """One MT to send (`POST /v1/messages`, alone or in `messages`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(min_length=1, max_length=32,
                    description="Recipient: E.164 (+447700900123), national with the "
                                "configured default country, or a short code (3-6 digits). "
                                "Letters, extensions and vanity numbers are refused.")
    from_: str = Field(alias="from", min_length=1, max_length=32,
                       description="Sender id: a number, a short code, or alphanumeric "
                                   "(up to 11 characters).")
    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS,
                             description="The message text. Either `text` or `binary`.")
    binary: str | None = Field(default=None, max_length=2 * MAX_BINARY_OCTETS, pattern=_HEX,
                               description="8-bit binary content in hex (data_coding 4), "
                                           "instead of `text`; empty only with a `udh`.")
    udh: str | None = Field(default=None, min_length=2, max_length=280, pattern=_HEX,
                            description="User data header in hex, its length octet first "
                                        "(e.g. port addressing `06050415811581`); kept in "
                                        "every part, the concatenation element added to it.")
    flash: StrictBool = Field(default=False,
                        description="Flash SMS (message class 0), shown and not stored.")
    mclass: StrictInt | None = Field(default=None, ge=0, le=3,
                               description="Message class 0-3 in data_coding (0 = flash).")
    pid: StrictInt | None = Field(default=None, ge=0, le=255, description="SMPP protocol_id.")
    service_type: str | None = Field(default=None, max_length=5, pattern=r"^[ -~]*$",
                                     description="SMPP service_type (else the connector's).")
    smpp_priority: StrictInt | None = Field(default=None, ge=0, le=3,
                                      description="SMPP priority_flag 0-3 (on the wire; "
                                                  "`priority` orders the queue).")
    tlvs: dict[str, str] | None = Field(
        default=None, max_length=16,
        description="SMPP optional parameters: an SMPP 3.4 name (e.g. "
                    "`user_message_reference`), a connector's `tlvs` name or a vendor tag "
                    "(`0x1400`-`0x3FFF`) → the value's octets in hex.")
    receipt: StrictBool = Field(default=True,
                          description="Ask the SMSC for a delivery receipt (registered_"
                                      "delivery); false: the message ends `submitted`.")
    category: Category | None = Field(default=None,
                                      description="Default: the account's category.")
    client_ref: str | None = Field(default=None, min_length=1, max_length=128,
                                   description="Idempotency key, unique per account.")
    callback_url: str | None = Field(default=None, min_length=1, max_length=2048,
                                     description="http(s) URL for status callbacks.")
    priority: int = Field(default=0, ge=0, le=9, description="Higher is sent first.")
    validity: int | None = Field(default=None, ge=60, le=7 * 86400,
                                 description="Seconds the message stays deliverable (also "
                                             "the SMSC's validity_period).")
    send_at: AwareDatetime | None = Field(default=None,
                                          description="Schedule (RFC 3339, with offset); "
                                                      "held here, or passed to the SMSC on "
                                                      "connectors that take schedules.")
    encoding: EncodingName | None = Field(default=None,
                                          description="Default auto: the cheapest that fits.")
    connector: str | None = Field(default=None, min_length=1, max_length=64,
                                  description="Force this connector instead of the routes "
                                              "(only one the account is allowed to force).")

    @field_validator("to", "from_", "text", "client_ref", "callback_url")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # Postgres text cannot hold U+0000; refuse it here rather than fail at the insert.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain the NUL character")
        return value

    @field_validator("tlvs")
    @classmethod
    def _tlv_values(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, hexed in (value or {}).items():
            if not 1 <= len(key) <= 64 or len(hexed) > 510 or len(hexed) % 2 or any(
                    c not in "0123456789abcdefABCDEF" for c in hexed):
                raise ValueError("each key a TLV name or tag (1-64 characters), each value "
                                 "up to 255 octets in hex")
        return value


class PlainMessage:
    """A `MessageIn` of the common shape, built without pydantic (`plain_message`): `to`,
    `from` and `text`, and maybe `client_ref`, as given; every other attribute is
    `MessageIn`'s default (set on the class below, from the model, so they cannot drift)."""

    __slots__ = ("client_ref", "from_", "text", "to")

    def __init__(self, to: str, from_: str, text: str, client_ref: str | None) -> None:
        self.to = to
        self.from_ = from_
        self.text = text
        self.client_ref = client_ref


for _name, _field in MessageIn.model_fields.items():
    if _name not in PlainMessage.__slots__:
        assert _field.default_factory is None and not isinstance(_field.default, dict | list)
        setattr(PlainMessage, _name, _field.default)


def _length_bounds(name: str) -> tuple[int, int]:
    """(min_length, max_length) of a `MessageIn` string field, from the model."""
    meta = MessageIn.model_fields[name].metadata
    return (next(m.min_length for m in meta if hasattr(m, "min_length")),
            next(m.max_length for m in meta if hasattr(m, "max_length")))


_TO_MIN, _TO_MAX = _length_bounds("to")
_FROM_MIN, _FROM_MAX = _length_bounds("from_")
_TEXT_MIN, _TEXT_MAX = _length_bounds("text")
_REF_MIN, _REF_MAX = _length_bounds("client_ref")


def plain_message(data: dict[str, Any]) -> PlainMessage | None:
    """`data` as a `PlainMessage` when it is exactly `{"to", "from", "text"}` (+ `client_ref`),
    every value a string within its field's length limits and without NUL — what
    `MessageIn.model_validate` would accept unchanged, at a sixth of its cost; else None, and
    the caller validates with the model (which names every error)."""
    ref = data.get("client_ref")
    if len(data) != (3 if ref is None else 4):
        return None
    to, from_, text = data.get("to"), data.get("from"), data.get("text")
    if type(to) is not str or type(from_) is not str or type(text) is not str:
        return None
    if not (_TO_MIN <= len(to) <= _TO_MAX and _FROM_MIN <= len(from_) <= _FROM_MAX
            and _TEXT_MIN <= len(text) <= _TEXT_MAX):
        return None
    if "\x00" in to or "\x00" in from_ or "\x00" in text:
        return None
    if ref is not None and (type(ref) is not str or not _REF_MIN <= len(ref) <= _REF_MAX
                            or "\x00" in ref):
        return None
    return PlainMessage(to, from_, text, ref)


def plain_batch(data: dict[str, Any]) -> list[PlainMessage] | None:
    """A batch body `{"messages": [...]}` whose every message is plain (`plain_message`),
    else None (the caller validates with `BatchIn`)."""
    messages = data.get("messages")
    if len(data) != 1 or type(messages) is not list or not messages:
        return None
    out = []
    for m in messages:
        plain = plain_message(m) if type(m) is dict else None
        if plain is None:
            return None
        out.append(plain)
    return out


class BatchIn(BaseModel):
    """Several MTs in one request."""

    model_config = ConfigDict(extra="forbid")

    messages: list[MessageIn] = Field(min_length=1)


class FieldError(BaseModel):
    """One invalid field."""

    field: str
    message: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx body."""

    error: str
    message: str | None = None
    errors: list[FieldError] | None = None
    id: int | None = None


class AcceptedOut(BaseModel):
    """202 for one message (also each entry of a batch answer)."""

    id: int
    status: Literal["queued", "duplicate", "conflict"]
    parts: int
    encoding: str
    client_ref: str | None = None
    index: int | None = None
    error: str | None = None


class BatchAcceptedOut(BaseModel):
    """202 for a batch: one entry per message, in request order."""

    messages: list[AcceptedOut]
    accepted: int
    duplicates: list[int]
    conflicts: list[int]


class PartOut(BaseModel):
    """One submitted part of an MT."""

    part_no: int
    parts_total: int
    status: str
    connector: str | None
    smsc_id: str | None
    command_status: int | None
    err: str | None
    submitted_at: str | None
    done_at: str | None


class ReceiptOut(BaseModel):
    """One delivery receipt matched to a part."""

    part_no: int | None
    stat: str | None
    state: str | None
    final: bool
    err: str | None
    done_date: str | None
    received_at: str | None


class MessageOut(BaseModel):
    """`GET /v1/messages/{id}`."""

    id: int
    status: str
    to: str
    from_: str = Field(alias="from")
    category: str
    priority: int
    encoding: str | None
    client_ref: str | None
    parts_total: int | None
    connector: str | None
    error_code: int | None
    error: str | None
    attempts: int
    send_at: str | None
    valid_until: str | None
    submitted_at: str | None
    done_at: str | None
    created_at: str | None
    updated_at: str | None
    parts: list[PartOut]
    receipts: list[ReceiptOut]


class GenericInboundIn(BaseModel):
    """`POST /v1/inbound/generic`: one MO from a generic HTTP provider."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1, max_length=128, description="The provider's message id.")
    from_: str = Field(alias="from", min_length=1, max_length=32)
    to: str = Field(min_length=1, max_length=32)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    meta: dict[str, Any] | None = None


class InboundOut(BaseModel):
    """Answer to a generic webhook."""

    id: int | None
    duplicate: bool
    complete: bool


def field_path(loc: tuple[int | str, ...]) -> str:
    """Dotted field path of a pydantic error location (`messages[2].from`)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = "from" if part == "from_" else part
            out += f".{name}" if out else name
    return out or "body"


def field_errors(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[dict[str, str]]:
    """Pydantic errors as `[{"field", "message"}]` (no input values echoed back)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        out.append({"field": field_path(prefix + tuple(err["loc"])), "message": msg})
    return out

"""`[[connectors]]`: one SMSC link, shared by the sender (tx/trx binds) and receiver (rx binds).

Timer and reconnect settings follow Jasmin's `SMPPClientConfig` (enquire_link interval,
response timeout, reconnect delays), expressed as a pydantic model with `extra="forbid"`.
The password is never written in the file: `password_env` / `password_file` name where it
lives and `password()` reads it when a session binds (so a rotated credential file is picked
up on the next reconnect) and returns a `SecretStr`, which never shows in repr or logs.
"""

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from smsgw.shared.smpp.fields import RESERVED_TAGS, TlvDef, TlvType
from smsgw.shared.smpp.pdu import SMPP_ESME_RX_T_APPN
from smsgw.shared.smpp.receipts import ID_MODES
from smsgw.shared.smpp.session import BindMode, SessionConfig
from smsgw.shared.smpp.text import Encoding

ReceiptState = Literal[
    "delivered", "undeliverable", "expired", "rejected", "unknown_receipt", "enroute", "accepted"
]

__all__ = ["BIND_KEYS", "ConnectorSettings", "TlvSetting"]

# The keys a bind is opened with (and the window its lane is sized by): a SIGHUP that changes
# one of them rebinds that connector's sessions; any other change (rates, text, receipts,
# per-message fields, `binds`) applies to the live binds in place.
BIND_KEYS = frozenset({
    "host", "port", "system_id", "password_env", "password_file", "system_type", "bind_mode",
    "address_range", "window", "enquire_link_s", "response_timeout_s", "connect_timeout_s",
    "reconnect_min_s", "reconnect_max_s", "transient_mo_status", "handler_concurrency",
    "max_pdu_length", "tls", "tls_ca_file", "tls_verify"})


class TlvSetting(BaseModel):
    """One named optional parameter clients may set through Kannel's meta-data
    (`?smpp?name=value`), as a Kannel `smpp-tlv` group declares it: `tag`, `type` (how the
    value is packed) and `length` (octets of an integer; the most octets of a string)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tag: int = Field(ge=1, le=0xFFFF)
    type: TlvType = "octetstring"
    length: int = Field(ge=1, le=255)

    @field_validator("tag")
    @classmethod
    def _not_ours(cls, value: int) -> int:
        if value in RESERVED_TAGS:
            raise ValueError("smsgw sets this tag itself (concatenation, message_payload)")
        return value

    @model_validator(mode="after")
    def _integer_size(self) -> "TlvSetting":
        if self.type == "integer" and self.length not in (1, 2, 4):
            raise ValueError("an integer TLV is 1, 2 or 4 octets long")
        return self

    def definition(self) -> TlvDef:
        """The catalogue entry (`shared.smpp.fields.TlvCatalog`)."""
        lo = self.length if self.type == "integer" else 0
        return TlvDef(self.name, self.tag, self.type, lo, self.length)


class ConnectorSettings(BaseModel):
    """One `[[connectors]]` entry. Every key has a sensible default except name and system_id.

    Rates: `tps` is the connector's global rate (all binds, all instances; the sender splits
    it per held bind slot), `burst` the token bucket capacity (0 = strictly spaced), `window`
    the outstanding submits per bind. Text: `data_coding_0` is what data_coding 0 means on
    this SMSC, `encodings` the allowed encodings in order of preference (the cheapest that
    holds the text wins), `transliterate` replaces look-alikes (smart quotes, dashes, ellipsis,
    NBSP) so they stay GSM,
    `long_message` the concatenation method. Per-message fields: `service_type` is sent when
    the message names none, `esm_class_mode` the messaging mode bits of esm_class,
    `send_validity` puts the message's validity in validity_period, `schedule_mode` "send"
    passes a future `send_at` as schedule_delivery_time (else the sender holds the message),
    `time_format` writes both absolute (UTC) or relative, `send_tlvs` False refuses messages
    with TLVs, `tlvs` names optional parameters for Kannel's meta-data (its `smpp-tlv`),
    `more_messages_to_send` marks every part of a split message but the last (TLV 0x0426).
    Receipts: `submit_id_mode`/`receipt_id_mode` normalise the ids on each side (e.g.
    "hex_to_dec" on submit ids when receipts carry decimal), `registered_delivery` is what
    a message that wants a receipt asks for (0: never ask on this connector), `stat_map`
    overrides the stat → state table, `time_zone` is the zone of the receipt dates.
    `operator` groups sibling connectors whose receipts may cross over.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str = "127.0.0.1"
    port: int = Field(default=2775, ge=1, le=65535)
    system_id: str = Field(max_length=15)
    password_env: str | None = None
    password_file: str | None = None
    system_type: str = Field(default="", max_length=12)
    bind_mode: BindMode = BindMode.TRANSCEIVER
    binds: int = Field(default=1, ge=1, le=64)
    address_range: str = Field(default="", max_length=40)

    window: int = Field(default=10, ge=1, le=10_000)
    tps: float | None = Field(default=None, gt=0)
    burst: int = Field(default=1, ge=0)
    throttle_pause_s: float = Field(default=1.0, ge=0)
    throttle_retries: int = Field(default=3, ge=0)

    data_coding_0: Literal["gsm7", "latin1", "ascii"] = "gsm7"
    encodings: list[Encoding] = Field(default_factory=lambda: ["gsm7", "ucs2"], min_length=1)
    gsm7_packed: bool = False
    transliterate: bool = False
    long_message: Literal["udh8", "udh16", "sar", "payload"] = "udh8"

    source_addr_ton: int = Field(default=1, ge=0, le=255)
    source_addr_npi: int = Field(default=1, ge=0, le=255)
    alphanumeric_ton: int = Field(default=5, ge=0, le=255)
    alphanumeric_npi: int = Field(default=0, ge=0, le=255)
    dest_addr_ton: int = Field(default=1, ge=0, le=255)
    dest_addr_npi: int = Field(default=1, ge=0, le=255)
    short_codes: list[str] = Field(default_factory=list)
    registered_delivery: int = Field(default=1, ge=0, le=255)
    default_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")

    # Per-message fields on the wire (shared/smpp/fields.py), and what an SMSC refuses.
    service_type: str = Field(default="", max_length=5, pattern=r"^[ -~]*$")
    esm_class_mode: Literal[0, 3] = 0  # 0 SMSC default mode, 3 store and forward (Kannel's)
    send_validity: bool = True  # validity_period from the message's validity, else local only
    schedule_mode: Literal["hold", "send"] = "hold"  # hold until send_at, or send it on
    time_format: Literal["absolute", "relative"] = "absolute"  # SMPP 3.4 7.1.1
    send_tlvs: bool = True  # False: a message with TLVs is refused here, never sent without
    tlvs: list[TlvSetting] = Field(default_factory=list, max_length=64)
    # more_messages_to_send (0x0426) = 1 on every part of a split message but the last, as
    # Kannel's msg_to_pdu sets it for SMPP 3.4; False for an SMSC that refuses the TLV
    more_messages_to_send: bool = True

    submit_id_mode: str = "as_is"
    receipt_id_mode: str = "as_is"
    stat_map: dict[str, ReceiptState] = Field(default_factory=dict)
    time_zone: str = "UTC"
    operator: str | None = None

    tls: bool = False
    tls_ca_file: str | None = None
    tls_verify: bool = True

    enquire_link_s: float = Field(default=30.0, ge=0)
    response_timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    transient_mo_status: int = Field(default=SMPP_ESME_RX_T_APPN, ge=1, le=0xFFFFFFFF)
    handler_concurrency: int = Field(default=64, ge=1)
    max_pdu_length: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)

    @field_validator("submit_id_mode", "receipt_id_mode")
    @classmethod
    def _known_modes(cls, value: str) -> str:
        for step in value.split(","):
            if step.strip() not in ID_MODES:
                raise ValueError(f"unknown id mode {step.strip()!r}; known: {', '.join(ID_MODES)}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("stat_map")
    @classmethod
    def _upper_stats(cls, value: dict[str, ReceiptState]) -> dict[str, ReceiptState]:
        return {k.strip().upper(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> "ConnectorSettings":
        if self.password_env and self.password_file:
            raise ValueError("set either password_env or password_file, not both")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if "gsm7" in self.encodings and self.data_coding_0 != "gsm7":
            raise ValueError("encoding gsm7 needs data_coding_0 = 'gsm7'")
        names = [t.name for t in self.tlvs]
        if len(set(names)) != len(names) or len({t.tag for t in self.tlvs}) != len(names):
            raise ValueError("tlvs: each name and each tag at most once")
        return self

    def rebind_keys(self, new: "ConnectorSettings") -> list[str]:
        """The `BIND_KEYS` whose value differs in `new` (empty: no rebind needed)."""
        return sorted(k for k in BIND_KEYS if getattr(self, k) != getattr(new, k))

    @property
    def operator_name(self) -> str:
        """The operator group for receipt matching (the connector's own name by default)."""
        return self.operator or self.name

    @property
    def zone(self) -> ZoneInfo:
        """The receipt dates' time zone."""
        return ZoneInfo(self.time_zone)

    def password(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """Read the bind password now from `password_env` or `password_file`.

        `env` defaults to os.environ. No source configured means an empty password.
        Raises ValueError naming the source (never the value) when it cannot be read.
        """
        env = os.environ if env is None else env
        if self.password_env:
            if self.password_env not in env:
                raise ValueError(f"connector {self.name}: ${self.password_env} is not set")
            return SecretStr(env[self.password_env])
        if self.password_file:
            try:
                return SecretStr(Path(self.password_file).read_text("utf-8").rstrip("\r\n"))
            except OSError as exc:
                raise ValueError(
                    f"connector {self.name}: cannot read {self.password_file}: {exc.strerror}"
                ) from exc
        return SecretStr("")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for this SMSC, or None for plain TCP."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def session_config(
        self,
        *,
        bind_mode: BindMode | None = None,
        tps: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SessionConfig:
        """Build the SessionConfig for one bind.

        `bind_mode` overrides the connector's (the receiver opens receiver binds); `tps` is
        this bind's share of the connector rate (default: the whole rate); `env` is passed
        to password().
        """
        return SessionConfig(
            host=self.host,
            port=self.port,
            system_id=self.system_id,
            password=self.password(env).get_secret_value(),
            system_type=self.system_type,
            bind_mode=bind_mode or self.bind_mode,
            address_range=self.address_range,
            window=self.window,
            tps=self.tps if tps is None else tps,
            burst=self.burst,
            throttle_pause_s=self.throttle_pause_s,
            throttle_retries=self.throttle_retries,
            enquire_link_s=self.enquire_link_s,
            response_timeout_s=self.response_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            transient_mo_status=self.transient_mo_status,
            handler_concurrency=self.handler_concurrency,
            max_pdu_length=self.max_pdu_length,
            ssl=self.ssl_context(),
            name=self.name,
        )

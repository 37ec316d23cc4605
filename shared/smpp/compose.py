"""Message composition: one outbound message → the submit_sm PDUs a connector gets.

Pure and SMPP-level (no I/O): the sender calls `build_parts` for each message it queues on a
connector's lane. The encoding is the message's own when the connector allows it, else the
cheapest the connector allows (`shared.smpp.text`); the text is split with the connector's
concatenation method under a reference derived from the message id (`concat_ref`, stable
across retries); the sender id gets its TON/NPI from its form (`source_ton_npi`). Parts an
earlier attempt already got accepted are skipped.
"""

from __future__ import annotations

import re
from typing import Protocol

from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.text import choose_encoding, data_coding_for, split, transliterate

# Basic GSM 03.38 characters that cost one septet (no escapes), for the one-part fast path.
_PLAIN_GSM = re.compile(
    "[@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,\\-./0-9:;<=>?¡A-ZÄÖÑÜ§¿a-zäöñüà]*")


class Composable(Protocol):
    """What composition reads of a message (the sender's claimed row has these fields)."""

    @property
    def id(self) -> int: ...
    @property
    def body(self) -> str | None: ...
    @property
    def encoding(self) -> str | None: ...
    @property
    def from_addr(self) -> str: ...
    @property
    def to_addr(self) -> str: ...
    @property
    def done_parts(self) -> tuple[int, ...]: ...


def _is_alnum(addr: str) -> bool:
    return not addr.lstrip("+").isdigit()


def source_ton_npi(addr: str, connector: ConnectorSettings) -> tuple[int, int, str]:
    """TON/NPI and on-the-wire form of a sender id.

    Alphanumeric → the connector's alphanumeric TON/NPI (5/0); a short code (listed in the
    connector's `short_codes`, or 3-8 digits without '+') → 3/0 (network specific); an
    international number (+E.164) → 1/1 without the '+'; anything else → the connector's
    default source TON/NPI.
    """
    if _is_alnum(addr):
        return connector.alphanumeric_ton, connector.alphanumeric_npi, addr[:11]
    digits = addr.lstrip("+")
    if addr in connector.short_codes or (not addr.startswith("+") and 3 <= len(digits) <= 8):
        return 3, 0, digits
    if addr.startswith("+"):
        return 1, 1, digits
    return connector.source_addr_ton, connector.source_addr_npi, digits


def concat_ref(msg_id: int, method: str) -> int:
    """The concatenation reference of a message: stable across retries (from its id)."""
    return msg_id & (0xFF if method == "udh8" else 0xFFFF)


def build_parts(row: Composable,
                connector: ConnectorSettings) -> tuple[int, list[tuple[int, P.SubmitSm]]]:
    """Split a message for `connector`: (parts in total, [(part_no, submit_sm)]), skipping
    the parts an earlier attempt already got accepted.

    Raises ValueError/TextTooLong/UnicodeEncodeError when the text cannot be sent (the
    caller rejects the message).
    """
    text = row.body or ""
    if connector.transliterate:
        text = transliterate(text)
    allowed = connector.encodings
    if row.encoding in allowed:
        enc = row.encoding
    elif allowed[0] == "gsm7" and len(text) <= 160 and _PLAIN_GSM.fullmatch(text):
        enc = "gsm7"  # one part of basic GSM characters: nothing can beat it
    else:
        enc = choose_encoding(text, allowed, connector.long_message)
    if enc == "gsm7" and connector.gsm7_packed:
        enc = "gsm7_packed"
    pieces = split(text, enc, connector.long_message, concat_ref(row.id, connector.long_message))
    dc = data_coding_for(enc, connector.data_coding_0)
    ston, snpi, source = source_ton_npi(row.from_addr, connector)
    dest = row.to_addr.lstrip("+")
    out = []
    for no, piece in enumerate(pieces, 1):
        if no in row.done_parts:
            continue
        out.append((no, P.SubmitSm(
            source_addr_ton=ston, source_addr_npi=snpi, source_addr=source,
            dest_addr_ton=connector.dest_addr_ton, dest_addr_npi=connector.dest_addr_npi,
            destination_addr=dest, esm_class=0x40 if piece.udhi else 0,
            registered_delivery=connector.registered_delivery, data_coding=dc,
            short_message=piece.short_message, tlvs=piece.tlvs)))
    return len(pieces), out

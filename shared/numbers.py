"""Phone number normalisation at intake (DESIGN.md guarantee 8): everything becomes E.164.

Numbers are normalised before dedupe, suppression, quotas and ordering, or a STOP from a national
number never suppresses the international one. Short codes and alphanumeric sender ids are not
phone numbers and stay as they are (digits only / the text itself).

`phonenumbers` (libphonenumber's metadata) does the parsing. We check that a number is
*possible* (its length fits the country's plan), not *valid* (in an allocated range): an SMS
gateway must not refuse a range that was allocated after the library's metadata was built.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import phonenumbers

from shared.errors import SmsGatewayError

# SMPP 3.4 type_of_number values (5.2.5)
TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_NETWORK_SPECIFIC = 3
TON_SUBSCRIBER = 4
TON_ALPHANUMERIC = 5
TON_ABBREVIATED = 6

SHORT_CODE_MAX_LEN = 6
SENDER_ALNUM_MAX_LEN = 11  # GSM 03.40 TP-OA: 11 characters of GSM 7-bit in 7 octets
_SEPARATORS_RE = re.compile(r"[\s().\-/]")
_DIGITS_RE = re.compile(r"^\d+$")
_LETTER_RE = re.compile(r"[^\W\d_]")  # any letter, in any script
# GSM 7-bit default alphabet characters that operators accept in an alphanumeric sender id
_ALNUM_SENDER_RE = re.compile(r"^[A-Za-z0-9 ._\-&@!#%*+/:;=?'\"(),]+$")


class InvalidNumber(SmsGatewayError, ValueError):
    """The value is not a usable phone number, short code or sender id; the API answers 422."""


def normalise(number: str, *, default_country: str | None = None, ton: int | None = None,
              npi: int | None = None, prefix_rules: Sequence[tuple[str, str]] | None = None,
              short_code_max_len: int = SHORT_CODE_MAX_LEN,
              assume_international: bool = False) -> str:
    """Return `number` as E.164 (`+<digits>`), or unchanged if it is a short code/alphanumeric.

    `default_country` (ISO 3166 alpha-2, e.g. "GB") is the region national numbers are read in;
    `ton`/`npi` are the SMPP address type (international numbers may arrive without '+');
    `prefix_rules` are (prefix, replacement) rewrites applied first, the first match wins (e.g.
    ("0", "+44") for an SMSC that sends national numbers with TON unknown).
    `assume_international` reads bare digits without a national trunk prefix ("4915112345678")
    as international, as Kannel-era applications send them (otherwise they are read as national
    numbers of `default_country`). Raises `InvalidNumber` with a message fit for an API error.
    """
    del npi  # ISDN (E.164) is the only numbering plan we route; kept for the contract's signature
    raw = number.strip()
    if not raw:
        raise InvalidNumber("empty number")
    if ton == TON_ALPHANUMERIC or _is_alphanumeric(raw):
        return raw
    value = _SEPARATORS_RE.sub("", raw)
    value = _apply_prefix_rules(value, prefix_rules)
    if ton in (TON_NETWORK_SPECIFIC, TON_ABBREVIATED):
        return _check_digits(value)
    if ton == TON_INTERNATIONAL and not value.startswith("+"):
        value = "+" + value.removeprefix("00")
    elif value.startswith("00"):
        value = "+" + value[2:]
    if not value.startswith("+") and _DIGITS_RE.match(value):
        if len(value) <= short_code_max_len:
            return value
        if assume_international and not value.startswith("0"):
            value = "+" + value
    return _to_e164(value, (default_country or "").upper() or None)


def normalise_sender(sender: str, *, default_country: str | None = None,
                     prefix_rules: Sequence[tuple[str, str]] | None = None) -> str:
    """Normalise a sender id: an alphanumeric id (≤ 11 characters) as is, a number to E.164."""
    raw = sender.strip()
    if raw and _is_alphanumeric(raw):
        if len(raw) > SENDER_ALNUM_MAX_LEN:
            raise InvalidNumber(
                f"alphanumeric sender id longer than {SENDER_ALNUM_MAX_LEN} characters")
        if not _ALNUM_SENDER_RE.match(raw):
            raise InvalidNumber("sender id has characters operators do not accept")
        return raw
    return normalise(raw, default_country=default_country, prefix_rules=prefix_rules)


def _is_alphanumeric(value: str) -> bool:
    # A letter anywhere makes it an alphanumeric id ("+" and separators do not count).
    return _LETTER_RE.search(value) is not None


def _apply_prefix_rules(value: str, rules: Sequence[tuple[str, str]] | None) -> str:
    for prefix, replacement in rules or ():
        if value.startswith(prefix):
            return replacement + value[len(prefix):]
    return value


def _check_digits(value: str) -> str:
    if not _DIGITS_RE.match(value):
        raise InvalidNumber("short code must be digits")
    return value


@lru_cache(maxsize=65536)
def _to_e164(value: str, region: str | None) -> str:
    # Cached: parsing costs tens of microseconds and the same numbers recur at intake.
    if not value.startswith("+") and region is None:
        raise InvalidNumber("national number without a country: use +<country code><number>")
    if not _DIGITS_RE.match(value.removeprefix("+")):
        raise InvalidNumber("number must be digits, optionally with a leading '+'")
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"not a phone number ({exc._msg})") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidNumber("not a possible phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

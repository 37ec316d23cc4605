"""Phone number normalisation at intake (docs/ARCHITECTURE.md, guarantee 8): everything becomes
E.164.

Numbers are normalised before dedupe, suppression, quotas and ordering, or a STOP from a national
number never suppresses the international one. Short codes and alphanumeric sender ids are not
phone numbers and stay as they are (digits only / the text itself).

`phonenumbers` (libphonenumber's metadata) does the parsing. We check that a number is
*possible* (its length fits the country's plan), not *valid* (in an allocated range): an SMS
gateway must not refuse a range that was allocated after the library's metadata was built.

Most traffic is already strict international form ("+" and digits) and a promotion is mostly
distinct numbers, so the parse cache rarely hits. `_fast_e164` answers those numbers from the
same metadata without building a PhoneNumber (~17 µs → ~1 µs), and only when it can show that
`phonenumbers` would answer exactly the input; anything else takes `_to_e164_slow`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata

from smsgw.shared.core.errors import SmsGatewayError

# SMPP 3.4 type_of_number values (5.2.5)
TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_NETWORK_SPECIFIC = 3
TON_SUBSCRIBER = 4
TON_ALPHANUMERIC = 5
TON_ABBREVIATED = 6

SHORT_CODE_MAX_LEN = 6
SHORT_CODE_MIN_LEN = 3  # a recipient short code: 3 to `short_code_max_len` ASCII digits
SENDER_ALNUM_MAX_LEN = 11  # GSM 03.40 TP-OA: 11 characters of GSM 7-bit in 7 octets
_SEPARATORS_RE = re.compile(r"[\s().\-/]")
_DIGITS_RE = re.compile(r"^\d+$")
_LETTER_RE = re.compile(r"[^\W\d_]")  # any letter, in any script
# What a recipient may look like before normalisation: an optional '+', ASCII digits and the
# separators people write between them. No letters (vanity numbers, "x"/";ext=" extensions),
# no other digits (fullwidth, Arabic-Indic) and no other punctuation.
_RECIPIENT_RE = re.compile(r"^\+?[0-9][0-9 \t().\-/]*$", re.ASCII)
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


def normalise_recipient(number: str, *, default_country: str | None = None,
                        prefix_rules: Sequence[tuple[str, str]] | None = None,
                        short_code_max_len: int = SHORT_CODE_MAX_LEN,
                        assume_international: bool = False) -> str:
    """Normalise an MT destination: E.164 (`+<digits>`) or a short code, nothing else.

    Alphanumeric addresses are valid only as senders. `normalise` keeps any value with a letter
    in it as it is (an alphanumeric sender id); a recipient like "+447700900999x",
    "+1-800-FLOWERS" or "+447700900999;ext=1" must be refused instead, or it is stored and
    submitted raw and escapes suppression (hashed over the stored string), erasure and flood
    control, which all key on the E.164 form. Raises `InvalidNumber` (an API 422).
    """
    if not prefix_rules:
        fast = _fast_e164(number)  # most traffic: "+<digits>", answered without a regex
        if fast is not None:
            return fast
    raw = number.strip()
    if not raw:
        raise InvalidNumber("empty number")
    if not _RECIPIENT_RE.match(raw):
        raise InvalidNumber("a recipient must be a phone number ('+', digits and separators) "
                            "or a short code; letters, extensions and other characters are "
                            "not allowed")
    value = normalise(raw, default_country=default_country, prefix_rules=prefix_rules,
                      short_code_max_len=short_code_max_len,
                      assume_international=assume_international)
    if value.startswith("+"):
        return value  # phonenumbers' E.164 format: '+' and ASCII digits
    if not (value.isascii() and value.isdigit()
            and SHORT_CODE_MIN_LEN <= len(value) <= short_code_max_len):
        raise InvalidNumber(f"a short code must be {SHORT_CODE_MIN_LEN} to "
                            f"{short_code_max_len} digits")
    return value


# The formats an HTTP provider writes numbers in (docs/ARCHITECTURE.md "Provider webhooks"):
# Twilio `From`/`To` are "+<E.164>"; Vonage `msisdn`/`to` are international digits without the
# '+' ("447700900001" in Vonage's API reference); a generic source declares its own format.
NUMBER_FORMATS = ("e164", "international_digits", "national")


def normalise_provider(number: str, number_format: str, *, default_country: str | None = None,
                       short_code_max_len: int = SHORT_CODE_MAX_LEN) -> str:
    """Read a provider's address field in the provider's own `number_format` → E.164.

    * "e164": "+<country code><number>" ("00" instead of "+" is read too);
    * "international_digits": the same digits without the '+' (a '+' or "00" is read too);
    * "national": a number of `default_country` (international forms are read too).

    In every format a short code (up to `short_code_max_len` digits) and an alphanumeric sender
    id stay as they are, as in `normalise`. Anything else raises `InvalidNumber` saying which
    format was expected; the caller decides what to do with the message (the webhooks store it
    with the raw value and a flag rather than lose it).
    """
    fast = _fast_e164(number)  # "+<digits>" is E.164 in every format: the common case
    if fast is not None:
        return fast
    raw = number.strip()
    if not raw:
        raise InvalidNumber("empty number")
    if _is_alphanumeric(raw):
        return raw
    value = _SEPARATORS_RE.sub("", raw)
    if value.startswith("+"):
        return _to_e164(value, None)
    if not _DIGITS_RE.match(value):
        raise InvalidNumber("number must be digits, optionally with a leading '+'")
    if len(value) <= short_code_max_len:
        return value
    if number_format == "national":
        if not default_country:
            raise InvalidNumber("national number without a country: set default_country")
        return normalise(value, default_country=default_country,
                         short_code_max_len=short_code_max_len)
    if value.startswith("00"):
        return _to_e164("+" + value[2:], None)
    if number_format == "international_digits" and not value.startswith("0"):
        return _to_e164("+" + value, None)
    expected = ("+<country code><number>" if number_format == "e164"
                else "<country code><number> without a national prefix")
    raise InvalidNumber(f"not in the {number_format} format: expected {expected}")


def is_recipient(value: str) -> bool:
    """True if `value` is already a normalised recipient (E.164 or a short code)."""
    try:
        return normalise_recipient(value) == value
    except InvalidNumber:
        return False


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


def _to_e164(value: str, region: str | None) -> str:
    fast = _fast_e164(value)
    if fast is not None:
        return fast
    return _to_e164_slow(value, region)


@lru_cache(maxsize=65536)
def _to_e164_slow(value: str, region: str | None) -> str:
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


# --- Fast path -------------------------------------------------------------------------------
#
# For "+<digits>" (ASCII digits; the default region plays no part once there is a '+'),
# `_to_e164_slow` returns "+" + calling code + national significant number (NSN), where
#   * the calling code is the shortest prefix of 1-3 digits, not starting with 0, that is in
#     COUNTRY_CODE_TO_REGION_CODE (otherwise: an error);
#   * the NSN is the rest, unless the national-prefix-for-parsing rule of the calling code's
#     main region strips or transforms its start (e.g. +44 0…, +7 8…, +54 …15…) — leading zeros
#     that are kept are kept in the output too (Italian leading zero);
#   * the number is possible if the NSN's length is in the main region's general possible
#     lengths (or its local-only lengths) — for a shared code (+1, +7, +44 …) that main region
#     is the only one consulted, by parse and by is_possible_number alike.
# So when the rule does not touch the NSN and its length is a possible length, the answer is the
# input itself. Any other case goes to the slow path: every error, every match of the prefix rule
# (even when parse would then keep the digits) and local-only lengths (possible, but rare for
# international traffic; libphonenumber keeps them disjoint from the possible lengths anyway).

_NSN_MIN_LEN = 2  # phonenumbers' _MIN_LENGTH_FOR_NSN
_NSN_MAX_LEN = 17  # phonenumbers' _MAX_LENGTH_FOR_NSN
_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


class _FastRule:
    """What the fast path needs from one calling code's metadata (built on first use)."""

    __slots__ = ("lengths", "prefix", "transform")

    def __init__(self, lengths: frozenset[int], prefix: re.Pattern[str] | None,
                 transform: bool) -> None:
        self.lengths = lengths  # NSN lengths that are possible (not local-only)
        self.prefix = prefix  # national_prefix_for_parsing, compiled
        self.transform = transform  # a national_prefix_transform_rule exists

    def keeps(self, nsn: str) -> bool:
        """True if parse would leave `nsn` as it is and is_possible_number accept it."""
        if len(nsn) not in self.lengths:
            return False
        if self.prefix is None:
            return True
        m = self.prefix.match(nsn)
        if m is None:
            return True
        if m.end() != 0:
            return False  # a prefix might be stripped: let phonenumbers decide
        # An empty match strips nothing, unless a transform rule rewrites it.
        groups = m.groups()
        return not self.transform or (bool(groups) and groups[-1] is None)


_FAST_RULES: dict[str, _FastRule | None] = {}


def _fast_rule(code: str) -> _FastRule | None:
    try:
        return _FAST_RULES[code]
    except KeyError:
        pass
    rule = _build_fast_rule(int(code))
    _FAST_RULES[code] = rule
    return rule


def _build_fast_rule(code: int) -> _FastRule | None:
    region = phonenumbers.region_code_for_country_code(code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None or metadata.general_desc is None:
        return None
    lengths = tuple(metadata.general_desc.possible_length or ())
    # _test_number_length reads the first entry as the minimum and the last as the maximum:
    # only an ascending list makes "in the list" the same as "possible".
    if not lengths or lengths[0] == -1 or list(lengths) != sorted(set(lengths)):
        return None
    local_only = set(metadata.general_desc.possible_length_local_only or ())
    usable = frozenset(n for n in lengths
                       if _NSN_MIN_LEN <= n <= _NSN_MAX_LEN and n not in local_only)
    if not usable:
        return None
    pattern = metadata.national_prefix_for_parsing
    return _FastRule(usable, re.compile(pattern) if pattern else None,
                     bool(metadata.national_prefix_transform_rule))


def _fast_e164(value: str) -> str | None:
    """`value` if it is "+<digits>" that `_to_e164_slow` would return unchanged, else None."""
    if not value.startswith("+"):
        return None
    digits = value[1:]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 3 + _NSN_MAX_LEN:
        return None
    for end in (1, 2, 3):
        code = digits[:end]
        if code in _CALLING_CODES:  # no code starts with 0, as phonenumbers requires
            rule = _fast_rule(code)
            if rule is not None and rule.keeps(digits[end:]):
                return value
            return None
    return None

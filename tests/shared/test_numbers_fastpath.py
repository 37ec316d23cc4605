"""The E.164 fast path in shared/domain/numbers.py answers exactly what phonenumbers answers.

`_fast_e164` returns the input for "+<digits>" when it can show that parse + is_possible_number +
format_number would return the same string, and None otherwise (then `_to_e164_slow` runs). Every
check compares against the uncached slow path: the fast answer, when there is one, must be the
slow path's success, and `_to_e164` (fast, then slow) must give the same result or the same
InvalidNumber message for every input and default region.
"""

from __future__ import annotations

from collections.abc import Iterator

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata, PhoneNumberFormat, PhoneNumberType

from smsgw.shared.domain import numbers
from smsgw.shared.domain.numbers import TON_INTERNATIONAL, InvalidNumber

_slow_uncached = numbers._to_e164_slow.__wrapped__

# Default regions to read the numbers in: none, a few ordinary ones, a shared-code territory,
# the non-geographic "001" and one that does not exist. With a '+' none of them may matter.
_REGIONS = (None, "GB", "US", "CA", "IT", "AR", "RU", "KZ", "JE", "001", "ZZ")

_CALLING_CODES = sorted(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)

_DESC_ATTRS = ("general_desc", "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
               "personal_number", "voip", "pager", "uan", "voicemail", "no_international_dialling")


def _outcome(fn, value: str, region: str | None) -> tuple[str, str]:
    try:
        return ("ok", fn(value, region))
    except InvalidNumber as exc:
        return ("invalid", str(exc))


def _assert_same(value: str, regions: tuple[str | None, ...] = _REGIONS) -> None:
    fast = numbers._fast_e164(value)
    for region in regions:
        expected = _outcome(_slow_uncached, value, region)
        if fast is not None:
            assert expected == ("ok", fast), (value, region)
        assert _outcome(numbers._to_e164, value, region) == expected, (value, region)


def _example_numbers() -> Iterator[str]:
    """Every example number phonenumbers ships, as E.164: all regions, all types, non-geo."""
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for numtype in PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, numtype)
            if example is not None:
                yield phonenumbers.format_number(example, PhoneNumberFormat.E164)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        metadata = PhoneMetadata.metadata_for_nongeo_region(code)
        for attr in _DESC_ATTRS:
            desc = getattr(metadata, attr, None)
            if desc is not None and desc.example_number:
                yield f"+{code}{desc.example_number}"


def _variations(e164: str) -> Iterator[str]:
    """The number, one digit more or fewer, and a leading 0 (or 00, 1, 8, 9) after the code."""
    code = str(phonenumbers.parse(e164).country_code)
    nsn = e164[1 + len(code):]
    yield e164
    for digit in "0159":
        yield e164 + digit
    yield e164[:-1]
    yield e164[:-2]
    yield f"+{code}{nsn[1:]}"
    for lead in ("0", "00", "1", "8", "9"):
        yield f"+{code}{lead}{nsn}"
        yield f"+{code}{lead}{nsn[:-1]}"


_EXAMPLES = sorted(set(_example_numbers()))
_ALL_VARIATIONS = sorted({v for e164 in _EXAMPLES for v in _variations(e164)})


def test_example_numbers_are_many_and_mobiles_go_fast() -> None:
    """The data is what we think it is, and the fast path covers the ordinary numbers."""
    assert len(_EXAMPLES) > 900
    mobiles = [phonenumbers.format_number(example, PhoneNumberFormat.E164)
               for region in sorted(phonenumbers.SUPPORTED_REGIONS)
               if (example := phonenumbers.example_number_for_type(
                   region, PhoneNumberType.MOBILE)) is not None]
    fast = [m for m in mobiles if numbers._fast_e164(m) is not None]
    assert len(fast) == len(mobiles)


def test_every_example_number_and_variation_matches_the_slow_path() -> None:
    """All example numbers of all regions and types, plus ±1 digit and leading digits."""
    fast = 0
    for value in _ALL_VARIATIONS:
        _assert_same(value)
        fast += numbers._fast_e164(value) is not None
    # Both paths are exercised: the fast one answers many, the slow one the rest.
    assert 0 < fast < len(_ALL_VARIATIONS)


@pytest.mark.parametrize(("value", "why"), [
    ("+4407700900123", "national prefix 0 after +44: parse strips it"),
    ("+78005553535", "+7 8…: RU's national prefix 8 matches"),
    ("+541115123456", "+54 11 15…: AR's prefix rule consumes digits"),
    ("+12015550123" + "4", "11 digits after +1: not a possible length"),
    ("+15550123", "7 digits after +1: possible only locally"),
    ("+٤٤٧٧٠٠٩٠٠١٢٣", "non-ASCII digits: phonenumbers converts them"),
    ("+0447700900123", "no calling code starts with 0"),
    ("+44", "too short"),
    ("+999123456", "999 is not a calling code"),
])
def test_slow_path_cases(value: str, why: str) -> None:
    """Inputs the fast path must leave alone, for each of the reasons it declines."""
    assert numbers._fast_e164(value) is None, why
    _assert_same(value)


@pytest.mark.parametrize("value", [
    "+447700900123", "+12015550123", "+390612345678", "+3933812345678", "+5491123456789",
    "+8613812345678", "+79123456789", "+77012345678", "+4915112345678", "+61412345678",
    "+33612345678", "+5511912345678", "+525512345678", "+80012345678",
])
def test_fast_path_cases(value: str) -> None:
    """Ordinary international numbers (Italian leading zero, +7 KZ, +54 9, non-geo 800) go fast."""
    assert numbers._fast_e164(value) == value
    _assert_same(value)


_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=16)
_SETTINGS = settings(max_examples=2000, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(digits=_DIGITS)
def test_random_plus_digits(digits: str) -> None:
    """'+' and 1..16 random digits (2..17 characters): same result or same InvalidNumber."""
    _assert_same("+" + digits)


@_SETTINGS
@given(code=st.sampled_from(_CALLING_CODES), cut=st.integers(min_value=1, max_value=3),
       zeros=st.text(alphabet="0", max_size=3),
       rest=st.text(alphabet="0123456789", max_size=16))
def test_calling_code_prefixes(code: str, cut: int, zeros: str, rest: str) -> None:
    """A real calling code (or the start of one), maybe leading zeros, then random digits."""
    _assert_same(("+" + code[:cut] + zeros + rest)[:20])


@settings(max_examples=300, deadline=None, database=None)
@given(digits=st.text(alphabet=st.characters(whitelist_categories=("Nd",)), min_size=1,
                      max_size=16))
def test_unicode_digits(digits: str) -> None:
    """Digits from any script take the slow path (phonenumbers maps them to ASCII)."""
    value = "+" + digits
    if not digits.isascii():
        assert numbers._fast_e164(value) is None
    _assert_same(value, regions=(None, "GB"))


@pytest.mark.parametrize(("raw", "kw"), [
    ("+44 7700 900123", {}),
    ("0044-7700-900123", {}),
    ("447700900123", {"ton": TON_INTERNATIONAL}),
    ("00447700900123", {"ton": TON_INTERNATIONAL}),
    ("4915112345678", {"default_country": "DE", "assume_international": True}),
    ("7700900123", {"prefix_rules": [("7", "+447")]}),
    ("+44 (0) 7700 900123", {}),
    ("+1 (201) 555-0123", {"default_country": "US"}),
    ("07700900123", {"default_country": "GB"}),
    ("+1", {}),
    ("+44770090012345678", {}),
])
def test_normalise_with_and_without_fast_path(raw: str, kw: dict[str, object],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """normalise() end to end: the same answer (or message) with the fast path switched off."""
    def run() -> tuple[str, str]:
        numbers._to_e164_slow.cache_clear()
        try:
            return ("ok", numbers.normalise(raw, **kw))  # type: ignore[arg-type]
        except InvalidNumber as exc:
            return ("invalid", str(exc))

    with_fast = run()
    monkeypatch.setattr(numbers, "_fast_e164", lambda value: None)
    assert run() == with_fast

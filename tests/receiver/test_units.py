"""Pure helpers: number normalisation, the URL guard, API keys."""

from __future__ import annotations

import pytest

from smsgw.shared.domain.apikeys import KEY_RANDOM_BYTES, generate_key, hash_key
from smsgw.shared.domain.numbers import (
    TON_INTERNATIONAL,
    InvalidNumber,
    normalise,
    normalise_sender,
)
from smsgw.shared.domain.urlguard import UnsafeUrl, check_url


@pytest.mark.parametrize(("raw", "kw", "expected"), [
    ("+44 7700 900123", {}, "+447700900123"),
    ("07700900123", {"default_country": "GB"}, "+447700900123"),
    ("447700900123", {"ton": TON_INTERNATIONAL}, "+447700900123"),
    ("0044-7700-900123", {}, "+447700900123"),
    ("60060", {}, "60060"),
    ("MyBank", {}, "MyBank"),
    ("7700900123", {"prefix_rules": [("7", "+447")]}, "+447700900123"),
    ("4915112345678", {"default_country": "DE", "assume_international": True},
     "+4915112345678"),
    ("015112345678", {"default_country": "DE", "assume_international": True},
     "+4915112345678"),
])
def test_normalise(raw: str, kw: dict[str, object], expected: str) -> None:
    """National, international, prefixed, short code and alphanumeric forms."""
    assert normalise(raw, **kw) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["", "07700900123", "+44770090012345678", "+1"])
def test_normalise_rejects(raw: str) -> None:
    """Empty, national without a country, impossible lengths."""
    with pytest.raises(InvalidNumber):
        normalise(raw)


def test_sender_ids() -> None:
    """Alphanumeric up to 11 characters; numbers become E.164."""
    assert normalise_sender("Brand 2") == "Brand 2"
    assert normalise_sender("07700900123", default_country="GB") == "+447700900123"
    with pytest.raises(InvalidNumber):
        normalise_sender("TwelveChars!")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://127.1/", "http://2130706433/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://10.0.0.1/", "http://192.168.1.1/",
    "http://169.254.169.254/", "http://localhost/", "http://a.localhost/", "ftp://example.com/",
    "http://user:pw@example.com/", "http:///nohost", "http://0.0.0.0/"])
def test_urlguard_refuses(url: str) -> None:
    """Loopback, private, link-local, unspecified, credentials, non-http schemes."""
    with pytest.raises(UnsafeUrl):
        check_url(url)


def test_urlguard_allows() -> None:
    """Public URLs always; private ones only inside an allowed network."""
    assert check_url("https://example.com/cb?x=1")
    assert check_url("http://127.0.0.1:8080/cb", allowed_networks=["127.0.0.1/32"])


def test_api_keys_have_enough_entropy() -> None:
    """Keys carry ≥ 128 random bits, differ, and hash deterministically under the secret."""
    assert KEY_RANDOM_BYTES * 8 >= 128
    a, b = generate_key(), generate_key()
    assert a != b and len(a) >= 32
    assert hash_key(b"s", a) == hash_key(b"s", a) != hash_key(b"t", a)

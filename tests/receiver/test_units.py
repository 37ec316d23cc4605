"""Pure helpers: number normalisation, the URL guard, API keys, the plain-message fast path."""

from __future__ import annotations

from typing import Any

import pytest

from smsgw.services.receiver.models import BatchIn, MessageIn, plain_batch, plain_message
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


_PLAIN_CASES: list[object] = [
    {"to": "+447700900123", "from": "BENCH", "text": "hello"},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "client_ref": "r-1"},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "client_ref": None},
    {"to": "1" * 32, "from": "f" * 32, "text": "t" * 10_000, "client_ref": "c" * 128},
    {"to": "1" * 33, "from": "BENCH", "text": "hello"},
    {"to": "+447700900123", "from": "f" * 33, "text": "hello"},
    {"to": "+447700900123", "from": "BENCH", "text": "t" * 10_001},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "client_ref": "c" * 129},
    {"to": "", "from": "BENCH", "text": "hello"},
    {"to": "+447700900123", "from": "", "text": "hello"},
    {"to": "+447700900123", "from": "BENCH", "text": ""},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "client_ref": ""},
    {"to": "+4477\x00", "from": "BENCH", "text": "hello"},
    {"to": "+447700900123", "from": "B\x00", "text": "hello"},
    {"to": "+447700900123", "from": "BENCH", "text": "he\x00llo"},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "client_ref": "\x00"},
    {"to": 447700900123, "from": "BENCH", "text": "hello"},
    {"to": "+447700900123", "from": ["BENCH"], "text": "hello"},
    {"to": "+447700900123", "from": "BENCH", "text": 5},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "client_ref": 7},
    {"to": "+447700900123", "from_": "BENCH", "text": "hello"},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "flash": True},
    {"to": "+447700900123", "from": "BENCH", "text": "hello", "bogus": 1},
    {"to": "+447700900123", "from": "BENCH"},
    {"to": "+447700900123", "from": "BENCH", "binary": "00"},
    {"to": "+447700900123", "from": "BENCH", "text": "Привет 😀"},
    {"messages": [{"to": "+447700900123", "from": "BENCH", "text": "hello"}] * 3},
    {"messages": [{"to": "+447700900123", "from": "BENCH", "text": "hello"},
                  {"to": "+447700900123", "from": "BENCH", "text": "hello", "pid": 1}]},
    {"messages": []},
    {"messages": {"to": "+447700900123"}},
    {"messages": ["x"]},
    {"messages": [{"to": "+447700900123", "from": "BENCH", "text": "hi"}], "extra": 1},
]


@pytest.mark.parametrize("data", _PLAIN_CASES)
def test_plain_messages_are_what_the_model_accepts_unchanged(data: dict[str, Any]) -> None:
    """The pydantic-free fast path (`plain_message`, `plain_batch`) takes a body only when
    `MessageIn`/`BatchIn` accepts it, and then gives the very same values for every field;
    everything else it leaves to the model (which names the errors)."""
    batch = "messages" in data
    plain = plain_batch(data) if batch else plain_message(data)
    if plain is None:
        return  # validated by the model, errors and all
    model = BatchIn.model_validate(data).messages if batch else [MessageIn.model_validate(data)]
    ours = plain if isinstance(plain, list) else [plain]
    assert len(ours) == len(model)
    for fast, slow in zip(ours, model, strict=True):
        for name in MessageIn.model_fields:
            assert getattr(fast, name) == getattr(slow, name), name


def test_plain_fast_path_takes_the_common_shapes() -> None:
    """The shapes the fast path exists for do take it (the test above would pass vacuously
    if it never did)."""
    assert plain_message(_PLAIN_CASES[0]) is not None  # type: ignore[arg-type]
    assert plain_message(_PLAIN_CASES[1]) is not None  # type: ignore[arg-type]
    assert plain_message(_PLAIN_CASES[3]) is not None  # type: ignore[arg-type]
    assert plain_batch(_PLAIN_CASES[26]) is not None  # type: ignore[arg-type]
    assert plain_message(_PLAIN_CASES[4]) is None  # type: ignore[arg-type]

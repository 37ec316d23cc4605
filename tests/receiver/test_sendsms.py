"""Kannel-compatible /cgi-bin/sendsms over real HTTP (dlr-url rendering: tests/sender/
test_kannel_dlr.py)."""

from __future__ import annotations

from urllib.parse import quote

import asyncpg
import pytest

from .conftest import AccountFactory, Receiver


async def test_sendsms_get_two_recipients_with_dlr(receiver: Receiver,
                                                   account_factory: AccountFactory,
                                                   pool: asyncpg.Pool) -> None:
    """1. GET with two recipients (space-separated), dlr-mask 19 and a dlr-url template
    2. `202 0: Accepted for delivery`; two rows with the template and mask, kannel style."""
    _, key = await account_factory("kannel_app")
    dlr = "http://127.0.0.1:9999/dlr?id=42&status=%d&to=%p&at=%t"
    qs = (f"username=kannel_app&password={quote(key)}&from=MyBrand"
          f"&to={quote('+447700900123 07700900124')}&text={quote('Héllo wörld')}"
          f"&dlr-mask=19&dlr-url={quote(dlr)}&priority=1")  # smsc=: test_forced_connector
    status, body = await receiver.get("/cgi-bin/sendsms?" + qs)
    assert (status, body) == (202, "0: Accepted for delivery")
    rows = await pool.fetch("SELECT * FROM outbound ORDER BY id")
    assert [r["to_addr"] for r in rows] == ["+447700900123", "+447700900124"]
    assert all(r["callback_url"] == dlr and r["dlr_mask"] == 19 for r in rows)
    assert rows[0]["meta"]["callback_style"] == "kannel" and rows[0]["source"] == "sendsms"
    assert rows[0]["body"] == "Héllo wörld" and rows[0]["route_hint"] is None


async def test_sendsms_post_form_and_charset(receiver: Receiver, account_factory: AccountFactory,
                                             pool: asyncpg.Pool) -> None:
    """A form POST with text in ISO-8859-1 (charset=ISO-8859-1) is decoded with that charset."""
    _, key = await account_factory("latin_app")
    body = (f"username=latin_app&password={quote(key)}&from=Shop&to=%2B447700900123"
            f"&charset=ISO-8859-1&text=caf%E9").encode()
    status, text = await receiver.post(
        "/cgi-bin/sendsms", data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 202, text
    assert await pool.fetchval("SELECT body FROM outbound") == "café"


async def test_sendsms_errors_as_kannel(receiver: Receiver, account_factory: AccountFactory,
                                        pool: asyncpg.Pool) -> None:
    """Wrong password → 403 Kannel text; missing/invalid parameters → 400 naming them."""
    _, key = await account_factory("app3")
    base = f"username=app3&password={quote(key)}&from=Shop&text=hi"
    status, body = await receiver.get("/cgi-bin/sendsms?username=app3&password=x&to=1&text=a")
    assert (status, body) == (403, "Authorization failed for sendsms")
    status, body = await receiver.get("/cgi-bin/sendsms?" + base.replace("app3&", "app4&", 1)
                                      + "&to=%2B447700900123")
    assert status == 403
    for extra, field in (("&to=abc", "to"), ("&to=%2B447700900123&coding=7", "coding"),
                         ("&to=%2B447700900123&dlr-url=ftp://x", "dlr-url"),
                         ("&to=%2B447700900123&dlr-mask=99", "dlr-mask")):
        status, body = await receiver.get("/cgi-bin/sendsms?" + base + extra)
        assert status == 400 and field in body, (extra, body)
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0


def test_query_pairs_read_as_parse_qsl_read_them() -> None:
    """The handler's own query reader gives what `parse_qsl(…, keep_blank_values=True,
    encoding="latin-1")` gave (first value of a repeated name, `+` a space, blank values kept,
    bad escapes left as they are, a name decoded, a value as raw bytes), and refuses the same
    characters (a value outside Latin-1)."""
    from urllib.parse import parse_qsl

    from smsgw.services.receiver.sendsms import _add_pairs

    def reference(query: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, encoding="latin-1"):
            out.setdefault(name, value.encode("latin-1"))
        return out

    for query in ["", "a", "a&&b=", "=x", "a+b=c+d%2B", "x=%zz%4", "t=\u00e9%E9", "a=1;b=2",
                  "&", "a=1&a=2", "n%41me=v", "\u20ac=1", "%E2%82%AC=2", "x=%00", "\udce2=1",
                  "dlr-url=http%3A%2F%2Fh%2Fd%3Fs%3D%25d%26t%3D%25T&to=%2B44&text=a+b"]:
        got: dict[str, bytes] = {}
        _add_pairs(got, query)
        assert got == reference(query), query
    for query in ["t=\u20ac", "t=\udce2"]:
        with pytest.raises(UnicodeEncodeError):
            reference(query)
        with pytest.raises(UnicodeEncodeError):
            _add_pairs({}, query)

"""What a Kannel application does that smsgw must take as Kannel 1.4.5 takes it, over real HTTP:
`user`/`pass` for `username`/`password`, the POST interface with `X-Kannel-*` headers and the
text as the body, and Kannel's answer texts and status codes.

The oracle is Kannel's own source, gw/smsbox.c of 1.4.5: `default_authorise_user` (aliases and
their precedence), `smsbox_sendsms_post` and `get_x_kannel_from_headers` (the POST interface,
content types, header names compared case-blind), `smsbox_req_sendsms`,
`smsbox_req_handle` and `delayed_http_reply` (the answer texts). When Debian's `kannel` package
is installed, every expected text is also checked against the strings of its `smsbox` binary.
"""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import quote

import asyncpg
import pytest

from .conftest import AccountFactory, Receiver

PATH = "/cgi-bin/sendsms"
KANNEL_TEXTS = {
    "accepted": "0: Accepted for delivery",
    "auth": "Authorization failed for sendsms",
    "no_to": "Missing receiver number, rejected",
    "no_to_post": "Missing receiver(s) number(s), rejected",
    "empty_to": "Empty receiver number not allowed, rejected",
    "no_from": "Sender missing and no global set, rejected",
    "unsupported_type": "Unsupported content-type, rejected",
    "invalid_type": "Invalid content-type",
    "temporal": "Temporal failure, try again later.",
}


def test_expected_texts_are_kannels() -> None:
    """Each text these tests expect is one the installed Kannel smsbox answers with."""
    smsbox = shutil.which("smsbox") or ("/usr/sbin/smsbox" if shutil.which(
        "/usr/sbin/smsbox") else None)
    if smsbox is None:
        pytest.skip("Kannel's smsbox is not installed (apt-get install kannel)")
    strings = set(subprocess.run(["strings", smsbox], capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    assert {t for t in KANNEL_TEXTS.values() if t not in strings} == set()


async def test_user_and_pass_are_aliases(receiver: Receiver, account_factory: AccountFactory,
                                         pool: asyncpg.Pool) -> None:
    """1. GET with `user`/`pass` → 202 "0: Accepted for delivery"; a form POST too
    2. as in Kannel, `username` is read before `user` and `password` before `pass`: a wrong
       `username` with a right `user` → 403, a right `username` with a wrong `user` → 202."""
    _, key = await account_factory("kannel_alias")
    msg = "&from=Shop&to=%2B447700900123&text=hi"
    status, body = await receiver.get(f"{PATH}?user=kannel_alias&pass={quote(key)}{msg}")
    assert (status, body) == (202, KANNEL_TEXTS["accepted"])
    status, body = await receiver.post(PATH, data=f"user=kannel_alias&pass={quote(key)}{msg}",
                                       headers={"Content-Type":
                                                "application/x-www-form-urlencoded"})
    assert (status, body) == (202, KANNEL_TEXTS["accepted"])
    status, body = await receiver.get(
        f"{PATH}?username=other&user=kannel_alias&pass={quote(key)}{msg}")
    assert (status, body) == (403, KANNEL_TEXTS["auth"])
    status, body = await receiver.get(
        f"{PATH}?username=kannel_alias&user=other&password={quote(key)}&pass=x{msg}")
    assert (status, body) == (202, KANNEL_TEXTS["accepted"])
    status, body = await receiver.get(
        f"{PATH}?user=kannel_alias&password=x&pass={quote(key)}{msg}")
    assert (status, body) == (403, KANNEL_TEXTS["auth"])
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 3


async def test_post_with_x_kannel_headers(receiver: Receiver, account_factory: AccountFactory,
                                          pool: asyncpg.Pool) -> None:
    """Kannel's POST: the body is the text, every other parameter an X-Kannel header.
    1. text/plain with X-Kannel-Username/-Password/-From/-To (two recipients)/-DLR-Mask/
       -DLR-URL, header names in mixed case → 202; two rows with those values
    2. `charset=ISO-8859-1` in Content-Type decodes the body; X-Kannel-Coding: 2 reads a
       UTF-16BE body
    3. credentials in the query string of such a POST are not read (Kannel reads only the
       headers) → 403."""
    _, key = await account_factory("kannel_post")
    dlr = "http://127.0.0.1:9999/dlr?type=%d&to=%p"
    headers = {"Content-Type": "text/plain", "X-Kannel-Username": "kannel_post",
               "x-kannel-password": key, "X-KANNEL-FROM": "Shop",
               "X-Kannel-To": "+447700900123 +447700900124", "X-Kannel-DLR-Mask": "3",
               "X-Kannel-DLR-URL": dlr}
    status, body = await receiver.post(PATH, data=b"Hello from a Kannel app",
                                       headers=headers)
    assert (status, body) == (202, KANNEL_TEXTS["accepted"])
    rows = await pool.fetch("SELECT * FROM outbound ORDER BY id")
    assert [(r["to_addr"], r["from_addr"], r["body"], r["dlr_mask"], r["callback_url"])
            for r in rows] == [
        ("+447700900123", "Shop", "Hello from a Kannel app", 3, dlr),
        ("+447700900124", "Shop", "Hello from a Kannel app", 3, dlr)]
    latin = {**headers, "Content-Type": "text/plain; charset=ISO-8859-1",
             "X-Kannel-To": "+447700900125"}
    status, _ = await receiver.post(PATH, data=b"caf\xe9", headers=latin)
    assert status == 202
    ucs2 = {**headers, "X-Kannel-To": "+447700900126", "X-Kannel-Coding": "2"}
    status, _ = await receiver.post(PATH, data="Привет".encode("utf-16-be"), headers=ucs2)
    assert status == 202
    bodies = await pool.fetch("SELECT to_addr, body FROM outbound WHERE to_addr IN "
                              "('+447700900125', '+447700900126') ORDER BY to_addr")
    assert [r["body"] for r in bodies] == ["café", "Привет"]
    status, body = await receiver.post(
        f"{PATH}?username=kannel_post&password={quote(key)}&to=%2B447700900127", data=b"hi",
        headers={"Content-Type": "text/plain", "X-Kannel-From": "Shop"})
    assert (status, body) == (403, KANNEL_TEXTS["auth"])
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 4


async def test_kannel_answer_texts_and_codes(receiver: Receiver,
                                             account_factory: AccountFactory,
                                             pool: asyncpg.Pool) -> None:
    """Kannel 1.4.5's texts and codes, in Kannel's order (the password first, then `to`):
    no credentials and no `to` → 403; no `to` → 400 (GET and POST texts differ); an empty
    `to`; no `from`; a POST of an unsupported type (text/xml: Kannel's XML interface is not
    taken) → 415; of an unknown type → 400; the outbound queue over its watermark → 503
    "Temporal failure, try again later." with Retry-After."""
    _, key = await account_factory("kannel_texts")
    auth = f"username=kannel_texts&password={quote(key)}"
    cases = [
        (f"{PATH}?to=&text=hi", (403, KANNEL_TEXTS["auth"])),
        (f"{PATH}?{auth}&from=Shop&text=hi", (400, KANNEL_TEXTS["no_to"])),
        (f"{PATH}?{auth}&from=Shop&text=hi&to=", (400, KANNEL_TEXTS["empty_to"])),
        (f"{PATH}?{auth}&text=hi&to=%2B447700900123", (400, KANNEL_TEXTS["no_from"])),
    ]
    for url, want in cases:
        assert await receiver.get(url) == want, url
    posted = {"X-Kannel-Username": "kannel_texts", "X-Kannel-Password": key,
              "X-Kannel-From": "Shop"}
    status, body = await receiver.post(PATH, data=b"hi",
                                       headers={**posted, "Content-Type": "text/plain"})
    assert (status, body) == (400, KANNEL_TEXTS["no_to_post"])
    for ctype, want in (("text/xml", (415, KANNEL_TEXTS["unsupported_type"])),
                        ("text/html", (415, KANNEL_TEXTS["unsupported_type"])),
                        ("application/json", (400, KANNEL_TEXTS["invalid_type"]))):
        status, body = await receiver.post(PATH, data=b"<x/>", headers={
            **posted, "X-Kannel-To": "+447700900123", "Content-Type": ctype})
        assert (status, body) == want, ctype
    receiver.ctx.admission.set_snapshot("outbound", depth=10**6, oldest_age_s=0)
    status, body = await receiver.get(f"{PATH}?{auth}&from=Shop&text=hi&to=%2B447700900123")
    assert (status, body) == (503, KANNEL_TEXTS["temporal"])
    assert int(receiver.last_headers["Retry-After"]) >= 1
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0

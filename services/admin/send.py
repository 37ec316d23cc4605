"""`smsgw send --to NUMBER --text TEXT`: send one test MT.

By default through the HTTP API, exactly as an application would (`POST /v1/messages` with a
bearer key): the API URL and key default to `smsgw up`'s (its `endpoints.json` and
`demo-api-key` in the data folder). `--direct` skips HTTP and enqueues straight into `outbound`
(source `cli`, no account) through the queue core, for checking the sender and the SMSC when
the receiver is not running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp
import asyncpg

from smsgw.services.admin import dbcli
from smsgw.services.admin.erase import load_hasher
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.domain.numbers import InvalidNumber, normalise_recipient, normalise_sender
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import store

HTTP_TIMEOUT_S = 15.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw send", description=__doc__.split("\n\n")[1],
                                epilog=dbcli.TARGET_EPILOG + " The API and its key likewise: "
                                "up's endpoints.json and demo-api-key.")
    p.add_argument("--to", required=True, help="destination number (E.164, e.g. +447700900123)")
    p.add_argument("--from", dest="from_", default="smsgw",
                   help="sender id: number, short code or alphanumeric (%(default)s)")
    p.add_argument("--text", required=True, help="message text")
    p.add_argument("--client-ref", help="idempotency key (a repeat sends nothing new)")
    p.add_argument("--api", help="receiver API base URL (default: smsgw up's, else "
                                 "http://127.0.0.1:8080)")
    p.add_argument("--key", help="API key (default: smsgw up's demo key)")
    p.add_argument("--direct", action="store_true",
                   help="enqueue into outbound directly instead of using the HTTP API")
    dbcli.add_common_args(p)
    return p


def _api_and_key(args: argparse.Namespace) -> tuple[str, str | None]:
    data = dbcli.data_dir(args)
    api = args.api
    if api is None and (data / "endpoints.json").is_file():
        api = json.loads((data / "endpoints.json").read_text()).get("api")
    key = args.key
    if key is None and (data / "demo-api-key").is_file():
        key = (data / "demo-api-key").read_text().strip()
    return (api or "http://127.0.0.1:8080").rstrip("/"), key


async def send_http(api: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST one message; return (HTTP status, JSON answer)."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            f"{api}/v1/messages", json=body,
            headers={"Authorization": f"Bearer {key}"}) as resp:
        try:
            answer = await resp.json(content_type=None)
        except (aiohttp.ContentTypeError, json.JSONDecodeError):
            answer = {"error": (await resp.text())[:500]}
        return resp.status, answer


async def send_direct(conn: asyncpg.Connection, body: dict[str, Any],
                      hasher: NumberHasher | None = None) -> int:
    """Enqueue one MT into outbound (source 'cli'); return its id. `hasher` (the server
    secret's) stores the recipient's keyed hash; without it the sender computes it."""
    row: dict[str, Any] = {"source": "cli", "to_addr": normalise_recipient(body["to"]),
                           "from_addr": normalise_sender(body["from"]), "body": body["text"],
                           "client_ref": body.get("client_ref")}
    if hasher is not None:
        row["to_hash"] = hasher(row["to_addr"])
    results = await store.enqueue(conn, "outbound", [row])  # one NOTIFY wakes the sender
    return int(results[0].id)


def _hasher(args: argparse.Namespace) -> NumberHasher | None:
    try:
        return load_hasher(args)
    except ConfigError:  # the database config was read already: only the secret is missing
        return None


def _print(args: argparse.Namespace, ok: bool, answer: dict[str, Any]) -> None:
    if args.json:
        dbcli.dump_json(answer)
    elif ok:
        sys.stdout.write(f"accepted: id {answer.get('id')} ({answer.get('parts', '?')} part(s)); "
                         f"follow it with: smsgw trace {answer.get('id')} --mt\n")
    else:
        sys.stderr.write(f"refused: {json.dumps(answer)}\n")


def main(argv: list[str]) -> int:
    """Entry point of `smsgw send`."""
    args = _parser().parse_args(argv)
    body: dict[str, Any] = {"to": args.to, "from": args.from_, "text": args.text}
    if args.client_ref:
        body["client_ref"] = args.client_ref
    if args.direct:
        async def direct(conn: asyncpg.Connection) -> int:
            try:
                msg_id = await send_direct(conn, body, _hasher(args))
            except InvalidNumber as exc:
                raise dbcli.UsageError(str(exc)) from exc
            _print(args, True, {"id": msg_id, "status": "queued", "direct": True})
            return dbcli.EXIT_OK
        return dbcli.run(direct, args)
    api, key = _api_and_key(args)
    if not key:
        sys.stderr.write(f"error: no API key: pass --key KEY, or run this next to a running "
                         f"`smsgw up` (its key is {dbcli.data_dir(args) / 'demo-api-key'}, not "
                         f"found; --data-dir DIR names up's data folder)\n")
        return dbcli.EXIT_USAGE
    try:
        status, answer = asyncio.run(send_http(api, key, body))
    except (aiohttp.ClientError, TimeoutError) as exc:
        sys.stderr.write(f"error: {api}: {exc} (is the receiver running? --api URL names "
                         f"another)\n")
        return dbcli.EXIT_FAILURE
    ok = 200 <= status < 300
    _print(args, ok, {"http_status": status, **answer})
    return dbcli.EXIT_OK if ok else dbcli.EXIT_FAILURE

"""Kannel and smsgw side by side on loopback, each bound to its own recording SMSC simulator.

What the differential suite (`test_differential.py`) drives:

- `RecordingSimulator`: the project's SMSC simulator (`services.smsc_sim.server.Simulator`, which
  already keeps every submit_sm PDU whole: `SubmitRecord.pdu` has every mandatory field and
  every TLV) with wall-clock arrival times, so validity and schedule times can be compared as
  instants. One per gateway, so each gateway's traffic is recorded apart.
- `Recorder`: a local HTTP application that records every dlr-url and get-url request (raw
  query string and decoded parameters, headers, arrival time) and answers a get-url request
  with the reply a test registered for that MO (a Kannel sms-service application's body).
- `KannelGateway`: Debian's `bearerbox` + `smsbox` with a generated `kannel.conf` (one `smpp`
  smsc group to its simulator, a `sendsms-user`, an `sms-service` with a get-url to the
  recorder, `dlr-storage = internal`), every port on 127.0.0.1.
- `SmsgwGateway`: the benchmark `Stack` (the daemons under `smsgw up`'s supervisor) with its
  connector pointed at our simulator, an account whose API key is the Kannel sendsms-user's
  password, a forward rule standing in for the sms-service, and loopback in
  `[webhooks] allowed_networks`.

Nothing here imports Kannel code; the binaries come from `apt-get install -y kannel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from smsgw.services.bench.kannel_bench import (
    conf_groups,
    find_binary,
    free_port,
    terminate,
    wait_port,
)
from smsgw.services.bench.stack import BENCH_ACCOUNT, Stack, StackOptions
from smsgw.services.smsc_sim.server import SimConfig, Simulator

INSTALL_LINE = "apt-get update && apt-get install -y kannel"
ACCOUNT = BENCH_ACCOUNT  # the smsgw account name = the Kannel sendsms-user username
CONNECTOR = "sim"  # the smsgw connector name = the Kannel smsc-id (both render as %i)
SERVICE = "kannel-service"  # the Kannel sms-service name = the smsgw rule name (%n)
SYSTEM_ID = "esme1"  # both gateways bind with it (Kannel renders it as the MO's %o account)
SHORT_CODE = "12345"  # MO destination: the sms-service's / forward rule's number
# A vendor TLV for `meta-data=?smpp?…`: Kannel packs only TLVs declared in an smpp-tlv group
# (gw/smsc/smpp_pdu.c, smpp_pdu_pack → smpp_tlv_get_by_name); smsgw is given the same name.
TLV_NAME, TLV_TAG, TLV_LEN = "my_tlv", 0x1400, 32
WAIT_S = 20.0


async def wait_until(pred: Callable[[], bool], within_s: float, step: float = 0.05) -> bool:
    """Poll `pred` (cheap, in-process state) until it holds; False on timeout."""
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


# --- the SMSC side ---------------------------------------------------------------------------


class RecordingSimulator(Simulator):
    """The project's simulator; `SubmitRecord.t` is wall-clock time (time.time()) here, so a
    validity_period or schedule_delivery_time can be turned into an offset from arrival."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self._clock = time.time

    def submits_to(self, destination_addr: str) -> list[Any]:
        """Every recorded submit (SubmitRecord) to one number, in arrival order."""
        want = destination_addr.lstrip("+")
        return [r for r in self.submits if r.pdu.destination_addr.lstrip("+") == want]


def new_simulator() -> RecordingSimulator:
    return RecordingSimulator(SimConfig(
        host="127.0.0.1", port=0, keep_submits=True, receipt_delay_s=0.3,
        receipt_stats={"DELIVRD": 1.0}, receipt_retries=3, receipt_retry_s=1.0,
        bind_timeout_s=None, idle_timeout_s=None, seed=15))


# --- the application side --------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """One request the recorder received: `/{kind}/{gw}/{case}?…`."""

    kind: str  # "dlr" | "mo"
    gw: str  # "kannel" | "smsgw"
    case: str
    t: float
    method: str
    raw_query: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Reply:
    """What the recorder answers a get-url request with (a Kannel sms-service reply)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {
        "Content-Type": "text/plain; charset=utf-8"})


class Recorder:
    """The dlr-url and get-url application of both gateways."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.replies: dict[str, Reply] = {}  # case → reply (both gateways get the same)
        # MO cases are told apart by their sender (the %p escape, digits only): the get-url
        # path is the same for every MO, as in an operator's sms-service
        self.mo_cases: dict[str, str] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, kind: str, gw: str, case: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{gw}/{case}"

    def of(self, kind: str, gw: str, case: str) -> list[Call]:
        return [c for c in self.calls if (c.kind, c.gw, c.case) == (kind, gw, case)]

    async def _handle(self, request: web.Request) -> web.Response:
        kind, gw, case = (request.match_info[k] for k in ("kind", "gw", "case"))
        raw = request.rel_url.raw_query_string
        body = await request.read()
        params = dict(parse_qsl(raw, keep_blank_values=True, encoding="utf-8",
                                errors="backslashreplace"))
        if kind == "mo":
            case = self.mo_cases.get(re.sub(r"\D", "", params.get("ep", "")), case)
        self.calls.append(Call(
            kind=kind, gw=gw, case=case, t=time.time(), method=request.method, raw_query=raw,
            params=params, headers=dict(request.headers), body=body))
        if kind == "mo":
            reply = self.replies.get(case, Reply())
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        return web.Response(text="OK")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{kind}/{gw}/{case}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- Kannel ----------------------------------------------------------------------------------

# Every escape urltrans_fill_escape_codes (gw/urltrans.c) knows, one parameter each; `%#g#p#`
# reads one meta-data value. Used as the dlr-url of sendsms cases and the get-url of MO cases.
ESCAPES = "aAbBcCdDfFiIkmMnoOpPqQrRsStTuvV"


def escape_query() -> str:
    return "&".join(f"e{c}=%{c}" for c in ESCAPES) + f"&meta=%#smpp#{TLV_NAME}#"


class KannelGateway:
    """bearerbox + smsbox on loopback ports, configured the way a Kannel operator would."""

    name = "kannel"

    def __init__(self, folder: Path, sim: RecordingSimulator, recorder: Recorder,
                 password: str) -> None:
        self.folder = folder
        self.sim = sim
        self.recorder = recorder
        self.password = password
        self.admin_port, self.box_port, self.sendsms_port = free_port(), free_port(), free_port()
        self.procs: list[asyncio.subprocess.Process] = []
        self.conf_path = folder / "kannel.conf"

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"

    def conf(self) -> str:
        f = self.folder
        return conf_groups([
            ("core", {"admin-port": self.admin_port, "admin-interface": "127.0.0.1",
                      "admin-password": "kannel-admin", "admin-allow-ip": "127.0.0.1",
                      "smsbox-port": self.box_port, "smsbox-interface": "127.0.0.1",
                      "box-allow-ip": "127.0.0.1", "log-file": str(f / "bearerbox.log"),
                      "log-level": 0, "access-log": str(f / "bearerbox-access.log"),
                      "dlr-storage": "internal"}),
            ("smsc", {"smsc": "smpp", "smsc-id": CONNECTOR, "host": "127.0.0.1",
                      "port": self.sim.port, "transceiver-mode": True, "system-id": SYSTEM_ID,
                      "smsc-password": "kannel", "system-type": "", "enquire-link-interval": 30,
                      "reconnect-delay": 1, "log-file": str(f / "smsc-sim.log"),
                      "log-level": 0}),
            ("smpp-tlv", {"name": TLV_NAME, "tag": hex(TLV_TAG), "type": "octetstring",
                          "length": TLV_LEN, "smsc-id": CONNECTOR}),
            ("smsbox", {"bearerbox-host": "127.0.0.1", "bearerbox-port": self.box_port,
                        "sendsms-port": self.sendsms_port, "sendsms-interface": "127.0.0.1",
                        "log-file": str(f / "smsbox.log"), "log-level": 0,
                        "access-log": str(f / "smsbox-access.log"), "http-request-retry": 0}),
            ("sendsms-user", {"username": ACCOUNT, "password": self.password,
                              "max-messages": 10, "concatenation": True}),
            # the default service: every MO to any keyword; the body of the answer is sent
            # back as an SMS (Kannel's default for get-url services)
            ("sms-service", {"name": SERVICE, "keyword": "default", "catch-all": True,
                             "get-url": self.recorder.url("mo", self.name, "svc") + "?"
                             + escape_query(),
                             "max-messages": 3, "concatenation": True,
                             "accept-x-kannel-headers": True}),
        ])

    async def start(self) -> None:
        bearerbox, smsbox = find_binary("bearerbox"), find_binary("smsbox")
        if bearerbox is None or smsbox is None:
            raise RuntimeError(f"Kannel is not installed: {INSTALL_LINE}")
        self.conf_path.write_text(self.conf())
        await self._spawn(bearerbox, "bearerbox")
        await wait_port(self.box_port, WAIT_S, "bearerbox", self._alive)
        await self._spawn(smsbox, "smsbox")
        await wait_port(self.sendsms_port, WAIT_S, "smsbox", self._alive)
        if not await wait_until(lambda: self.sim.bind_count >= 1, WAIT_S):
            raise RuntimeError(f"bearerbox did not bind to the simulator:\n{self.log_tail()}")

    async def _spawn(self, binary: str, name: str) -> None:
        # opened before the child starts, closed once it holds the descriptor
        out = open(self.folder / f"{name}.stdout", "wb")  # noqa: SIM115, ASYNC230
        try:
            proc = await asyncio.create_subprocess_exec(
                binary, "-v", "1", str(self.conf_path), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        self.procs.append(proc)

    def _alive(self) -> bool:
        return all(p.returncode is None for p in self.procs)

    def log_tail(self, n: int = 2000) -> str:
        parts = []
        for name in ("bearerbox.log", "smsbox.log", "bearerbox.stdout", "smsbox.stdout"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {name}\n{(self.folder / name).read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    async def stop(self) -> None:
        await terminate(list(reversed(self.procs)))  # smsbox first, then bearerbox


# --- smsgw -----------------------------------------------------------------------------------


class _OwnSimStack(Stack):
    """The benchmark stack with the connector on our in-process simulator instead of the
    simctl child (whose control site records no PDU)."""

    def __init__(self, opts: StackOptions, sim: RecordingSimulator) -> None:
        super().__init__(opts)
        self.own_sim = sim

    def _children(self) -> list[Any]:
        return [c for c in super()._children() if c.daemon != "smsc-sim"]

    async def wait_bound(self, timeout_s: float = 30.0) -> None:
        if not await wait_until(lambda: self.own_sim.bind_count >= 1, timeout_s):
            raise RuntimeError("the smsgw sender did not bind to the simulator in time")


def forward_action(get_url: str, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The smsgw forward action for the sms-service, with what this build accepts.

    The suite runs against whatever has landed: a get-url parameter whose escape the rule
    model refuses, or a forward option it does not know, is left out (and listed in the second
    value), so the MO cases report that difference instead of the stack failing to start.
    """
    from pydantic import ValidationError

    from smsgw.services.processor.rules import ForwardAction
    from smsgw.services.processor.templates import TemplateError

    refused = (ValidationError, ValueError, TemplateError)
    skipped: list[str] = []
    base, _, query = get_url.partition("?")
    kept = []
    for pair in query.split("&"):
        try:
            ForwardAction.model_validate({"type": "forward", "get_url": f"{base}?{pair}"})
        except refused:
            skipped.append(pair)
            continue
        kept.append(pair)
    action: dict[str, Any] = {"type": "forward", "get_url": base + "?" + "&".join(kept)}
    for key, value in options.items():
        try:
            ForwardAction.model_validate({**action, key: value})
        except refused:
            skipped.append(f"{key}={value!r}")
            continue
        action[key] = value
    return action, skipped


def connector_options(options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The `[[connectors]]` keys of `options` this build knows (the others are listed)."""
    from pydantic import ValidationError

    from smsgw.shared.smpp.connector import ConnectorSettings

    kept: dict[str, Any] = {}
    skipped = []
    for key, value in options.items():
        try:
            ConnectorSettings.model_validate({"name": "x", "system_id": "x", key: value})
        except ValidationError:
            skipped.append(f"{key}={value!r}")
            continue
        kept[key] = value
    return kept, skipped


class SmsgwGateway:
    """smsgw's three daemons on a fresh database, with the same application as Kannel."""

    name = "smsgw"

    def __init__(self, folder: Path, sim: RecordingSimulator, recorder: Recorder,
                 database_url: str, connector: dict[str, Any],
                 forward: dict[str, Any]) -> None:
        self.sim = sim
        self.recorder = recorder
        self.forward, self.skipped = forward_action(
            recorder.url("mo", self.name, "svc") + "?" + escape_query(), forward)
        self.connector, skipped = connector_options(connector)
        self.skipped += skipped
        rule = {"name": SERVICE, "default": True, "match": {"to": [SHORT_CODE]},
                "actions": [self.forward]}
        self.stack = _OwnSimStack(StackOptions(
            data_dir=folder, keep=True, database_url=database_url, receipt_delay_s=0.3,
            connector={"name": CONNECTOR, "port": sim.port, "system_id": SYSTEM_ID,
                       "window": 10, **self.connector},
            rules=[rule], log_level="info"), sim)

    @property
    def api_key(self) -> str:
        return self.stack.api_key

    @property
    def sendsms_url(self) -> str:
        return f"{self.stack.api_url}/cgi-bin/sendsms"

    def log_tail(self, n: int = 3000) -> str:
        logs = self.stack.data_dir / "logs"
        parts = []
        for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    async def start(self) -> None:
        await self.stack.start()

    async def stop(self) -> None:
        await self.stack.stop()

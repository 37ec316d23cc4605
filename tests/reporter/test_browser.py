"""Each kind's HTML page opened from disk in a real browser (headless Chromium), opt-in:

    apt-get install -y chromium
    SMSGW_TEST_DATABASE_URL=… .venv/bin/python -m pytest tests/reporter -m browser
    (SMSGW_SCREENSHOTS=DIR keeps the screenshots there)

Chromium is driven over the DevTools protocol (aiohttp's websocket client, no extra package):
every request the page makes is recorded (Network.requestWillBeSent) and must be none but the
page's own file:// URL; the charts are measured in the rendered page (each <svg> has a size,
its series have drawn points or bars of non-zero height); a screenshot is taken and must not
be blank (its PNG is decoded here and counted for non-white pixels). A positive control page
that loads an image from the network shows the request check would see one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from smsgw.shared.queue import report_requests as rq

from .conftest import CAMPAIGN, seed
from .test_kinds import make

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MEASURE = """
JSON.stringify(Array.from(document.querySelectorAll('svg')).map(svg => {
  const box = svg.getBoundingClientRect();
  const lines = Array.from(svg.querySelectorAll('polyline.series')).map(
      p => p.points.numberOfItems);
  const bars = Array.from(svg.querySelectorAll('rect.bar')).filter(
      r => r.getBoundingClientRect().height > 0).length;
  return {w: box.width, h: box.height, lines: lines, bars: bars,
          title: svg.getAttribute('aria-label')};
}))
"""


class Page:
    """One DevTools page session: commands and the events seen so far."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.replies:
                self.replies.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, 30)
        assert "error" not in reply, reply
        return dict(reply.get("result", {}))

    async def open(self, url: str) -> list[str]:
        """Navigate, wait for the load event; the URLs of every request the page made."""
        start = len(self.events)
        await self.call("Page.navigate", url=url)
        async with asyncio.timeout(30):
            while not any(  # noqa: ASYNC110 - polling the browser's events
                    e["method"] == "Page.loadEventFired" for e in self.events[start:]):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # late subresources would show up here
        return [e["params"]["request"]["url"] for e in self.events[start:]
                if e["method"] == "Network.requestWillBeSent"]


def _ready(port_file: Path) -> bool:
    return port_file.exists() and bool(port_file.read_text().strip())


def _read_text(path: Path) -> str:
    return path.read_text()


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _folder(path: str | Path) -> Path:
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[Page]:
    profile = tmp / "profile"
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1200,900", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(30):
            while not _ready(port_file):  # noqa: ASYNC110 - Chromium writes it when ready
                await asyncio.sleep(0.1)
        port = int(_read_text(port_file).split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(url, max_msg_size=64 << 20) as ws:
                page = Page(ws)
                await page.call("Network.enable")
                await page.call("Page.enable")
                yield page
                page.reader.cancel()
    finally:
        proc.kill()
        await proc.wait()


def non_white_share(png: bytes) -> float:
    """The share of pixels that are not white in an 8-bit RGB(A) PNG (decoded by hand)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride, prev, colored = w * bpp, bytearray(w * bpp), 0
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) \
                    & 0xFF
        colored += sum(1 for x in range(0, stride, bpp) if line[x:x + 3] != b"\xff\xff\xff")
        prev = line
    return colored / (w * h)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
async def test_every_kind_renders_its_charts_offline(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """1. Make the four kinds' reports over the test data.
    2. Positive control: a page loading an image over HTTP shows that request.
    3. Each report page: the only request is its own file:// URL; every chart has a size and
       drawn data (points of each line, bars of non-zero height); the screenshot is not blank.
    """
    await seed(pool)
    for kind, kw in (("traffic", {}), ("campaign", {"campaign": CAMPAIGN}), ("inbound", {}),
                     ("optouts", {})):
        await make(pool, tmp_path / "reports", kind, **kw)
    shots = _folder(os.environ.get("SMSGW_SCREENSHOTS") or tmp_path / "shots")
    control = _write(tmp_path / "control.html",
                     '<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    async with chromium(tmp_path) as page:
        assert any(u.startswith("http://127.0.0.1:9/") for u in await page.open(
            control.as_uri()))
        for req in await rq.list_reports(pool, account_id=None):
            assert req.files is not None
            path = Path(req.files["html"]["path"])
            requests = await page.open(path.as_uri())
            assert requests == [path.as_uri()], requests
            charts = json.loads((await page.call("Runtime.evaluate", expression=MEASURE,
                                                 returnByValue=True))["result"]["value"])
            assert charts, req.kind
            for chart in charts:
                assert chart["w"] > 300 and chart["h"] > 100, chart
                assert any(n > 0 for n in chart["lines"]) or chart["bars"] > 0, (req.kind, chart)
            shot = base64.b64decode((await page.call(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True))["data"])
            _write_bytes(shots / f"report-{req.kind}.png", shot)
            assert non_white_share(shot) > 0.02, req.kind

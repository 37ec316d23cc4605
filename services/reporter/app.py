"""The reporter's composition root: claims report requests and makes them, a few at a time.

Workers:
- `report_loop`: reclaims reports whose lease expired, then leases queued ones while fewer
  than `concurrency` run in this instance (fair across accounts: `report_requests.claim`),
  each made by `runner.run_report` in its own task. It waits for a NOTIFY on
  'smsgw_reports' (sent by every new request), a finished report, or the `poll_s` timer.

Periodic jobs: `report_retention` (one instance at a time) deletes reports past their expiry,
with their stored copies; `report_sweep` (every instance, its own folder) removes the files of
reports that no longer exist, and temporary files a killed reporter left.

Drain (SIGTERM): no new report is claimed; running ones get until 80 % of `drain_s` to finish;
those still running are cancelled (their transaction rolls back, their temporary files go) and
`release()` hands them back to the queue, where another reporter (or this one, restarted) makes
them again from the start. A kill -9 leaves the lease to expire: `reclaim` takes it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Final

import asyncpg

from smsgw.services.reporter.kinds import Progress
from smsgw.services.reporter.metrics import ReporterMetrics
from smsgw.services.reporter.runner import run_report
from smsgw.services.reporter.settings import ReporterSettings
from smsgw.shared.core.aio import sleep_or_stop
from smsgw.shared.core.db import DATABASE_ERRORS
from smsgw.shared.queue import report_requests as rq
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import ReportRequest
from smsgw.shared.runtime.config import AppConfig
from smsgw.shared.runtime.daemon import Daemon

CHANNEL: Final = CHANNELS["reports"]
DRAIN_SHARE: Final = 0.8  # of drain_s that running reports get to finish
STALE_TMP_S: Final = 3600.0  # a temporary file this old belongs to no running report


class ReporterDaemon(Daemon[ReporterSettings]):
    """`smsgw reporter`: campaign, traffic, inbound and opt-out reports in the background."""

    name = "reporter"
    settings_model = ReporterSettings
    listen_channels = (CHANNEL,)
    reload_help = "the [reporter] keys (concurrency, limits, retention)"

    rmetrics: ReporterMetrics

    async def setup(self) -> None:
        """Create the reports area, add the loop and the retention jobs."""
        self.rmetrics = ReporterMetrics.create(self.registry)
        self._lower_priority()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._released: list[int] = []
        if not await asyncio.to_thread(_prepare_dir, Path(self.settings.dir)):
            self.log.error("reports_dir_not_writable", dir=self.settings.dir)
        self.add_worker("report_loop", self._loop)
        self.add_periodic("report_retention", lambda: self.settings.retention_interval_s,
                          self._retention)
        self.add_periodic("report_sweep", lambda: self.settings.retention_interval_s,
                          self._sweep, locked=False)

    def _lower_priority(self) -> None:
        """`nice` below the message path (under systemd the unit's Nice= does it: its
        seccomp filter refuses setpriority)."""
        want = self.settings.nice
        try:
            now = os.getpriority(os.PRIO_PROCESS, 0)
            if now < want:
                os.setpriority(os.PRIO_PROCESS, 0, want)
        except OSError as exc:
            self.log.info("nice_not_changed", want=want, error=exc.strerror)

    async def _loop(self) -> None:
        assert self.listener is not None
        backoff = 0.5
        while not self.stop.is_set():
            try:
                await self._claim_pass()
                backoff = 0.5
            except DATABASE_ERRORS as exc:
                self.log.warning("report_claim_failed", error=str(exc)[:200])
                await sleep_or_stop(self.stop, backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            await self.wait_for_work(CHANNEL)
        await self._drain()

    async def _claim_pass(self) -> None:
        async with self.pool.acquire() as conn:
            for report_id, status in await rq.reclaim(conn,
                                                      max_attempts=self.settings.max_attempts):
                self.log.warning("report_reclaimed", report_id=report_id, status=status)
            free = self.settings.concurrency - len(self._running)
            claimed = await rq.claim(conn, owner=self.worker_id, limit=free,
                                     lease_s=self.settings.lease_s)
        for req in claimed:
            self._running[req.id] = asyncio.create_task(self._run(req),
                                                        name=f"reporter.{req.id}")
        self.rmetrics.running.set(len(self._running))

    async def _run(self, req: ReportRequest) -> None:
        started = time.monotonic()
        progress = Progress()
        self.log.info("report_started", report_id=req.id, kind=req.kind, attempt=req.attempts)
        outcome = "failed"
        try:
            outcome = await run_report(self.pool, req, progress, owner=self.worker_id,
                                       settings=self.settings)
        except asyncio.CancelledError:
            outcome = "released"
            self._released.append(req.id)
            raise
        except Exception:  # a report's own boundary: one report, not the daemon
            self.log.exception("report_crashed", report_id=req.id)
            with contextlib.suppress(*DATABASE_ERRORS):
                await rq.fail(self.pool, req.id, owner=self.worker_id,
                              status=rq.ReportStatus.FAILED, reason="internal error (see the "
                              "reporter's log)", keep_s=self.settings.keep_s)
        finally:
            self._running.pop(req.id, None)
            self.rmetrics.running.set(len(self._running))
            self.rmetrics.reports.labels(kind=req.kind, outcome=outcome).inc()
            self.rmetrics.rows.labels(kind=req.kind).inc(progress.scanned)
            self.rmetrics.duration.labels(kind=req.kind).observe(time.monotonic() - started)
            self.log.info("report_ended", report_id=req.id, kind=req.kind, outcome=outcome,
                          rows=progress.scanned, seconds=round(time.monotonic() - started, 3))
            if self.listener is not None:
                self.listener.event(CHANNEL).set()  # a slot is free: claim again

    async def _drain(self) -> None:
        tasks = list(self._running.values())
        if not tasks:
            return
        self.log.info("reports_draining", running=sorted(self._running))
        _, pending = await asyncio.wait(tasks, timeout=self.settings.drain_s * DRAIN_SHARE)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def release(self) -> None:
        """After the drain: hand the reports cancelled by the drain back to the queue."""
        if getattr(self, "_released", None):
            ids = await rq.release(self.pool, self._released, owner=self.worker_id)
            self.log.info("reports_released", report_ids=ids)

    async def _retention(self, conn: asyncpg.Connection) -> None:
        ids = await rq.purge(conn)
        await asyncio.to_thread(_sweep_dirs, [Path(self.settings.dir) / str(i) for i in ids], [])
        if ids:
            self.log.info("reports_expired", count=len(ids))

    async def _sweep(self, conn: asyncpg.Connection) -> None:
        """This instance's folder: folders of reports gone from the database, and temporary
        files nobody is writing any more."""
        found = await asyncio.to_thread(_report_dirs, Path(self.settings.dir))
        if not found:
            return
        keep = await rq.known_ids(conn, list(found))
        gone = [path for report_id, path in found.items() if report_id not in keep]
        idle = [path for report_id, path in found.items()
                if report_id in keep and report_id not in self._running]
        await asyncio.to_thread(_sweep_dirs, gone, idle)

    async def on_reload(self, new: AppConfig[ReporterSettings]) -> None:
        """SIGHUP: the new [reporter] keys apply to the next claim and report."""
        self.log.info("reporter_reloaded", concurrency=new.daemon.concurrency)


def _prepare_dir(folder: Path) -> bool:
    """Create the reports area (0750); True when this process may write into it."""
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    return os.access(folder, os.W_OK | os.X_OK)


def _report_dirs(folder: Path) -> dict[int, Path]:
    """The per-report folders in the reports area, by report id."""
    try:
        return {int(p.name): p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()}
    except OSError:
        return {}


def _sweep_dirs(gone: list[Path], idle: list[Path]) -> None:
    """Remove the folders of reports that are gone, and stale temporary files of the others."""
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    for path in idle:
        for tmp in path.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                    tmp.unlink()

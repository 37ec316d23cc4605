"""One report, start to finish: read in one snapshot, write the files atomically, store them.

1. **Read**: one `REPEATABLE READ READ ONLY` transaction (a consistent snapshot, no row lock,
   `statement_timeout` and `work_mem` of `[reporter]`), in which the kind (`kinds.py`) runs its
   queries and writes its CSV files; then the HTML page.
2. **Write**: every file goes to `<dir>/<id>/.<name>.tmp` (mode `file_mode`), is flushed and
   fsynced, then renamed to its final name and the folder fsynced: a reader of the reports
   area sees a whole file or none. An `OSError` (a full disk, an unwritable folder) fails the
   report with that reason and removes the temporary files.
3. **Store**: in one transaction, every file in chunks of 1 MiB (`report_chunks`) and the
   `done` status, fenced by the lease: nothing is served before it is complete.

A `Heartbeat` runs beside it: every `progress_s` it records the progress, which renews the
lease, and reads `cancel_requested`; a cancel, or a lease another reporter took, cancels the
report task (its transaction rolls back, its temporary files go).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import asyncpg
import structlog

from smsgw.services.reporter import kinds
from smsgw.services.reporter.htmlout import write_page
from smsgw.services.reporter.settings import ReporterSettings
from smsgw.shared.domain.reports import ReportInputError, ReportParams, parse_request
from smsgw.shared.queue import report_requests as rq
from smsgw.shared.queue.records import ReportRequest

log = structlog.get_logger("smsgw.reporter.runner")
CONTENT_TYPES: Final = {"csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}
ACCOUNT_ID: Final = """
-- account_id: the account a traffic report is limited to
SELECT id FROM accounts WHERE name = $1
"""


class Pause:
    """Keeps a report's share of the time at most `share`: after each 50 ms of work it sleeps
    in proportion (its Postgres backend waits meanwhile, so both yield the CPU)."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.since = time.monotonic()

    async def __call__(self) -> None:
        if self.share >= 1.0:
            return
        busy = time.monotonic() - self.since
        if busy >= 0.05:
            await asyncio.sleep(busy * (1.0 / self.share - 1.0))
            self.since = time.monotonic()


class ReportFailed(Exception):
    """The report cannot be made; the message is the reason stored in `last_error`."""


class LeaseLost(Exception):
    """Another reporter holds the report now (this one stops without writing anything)."""


@dataclass(slots=True)
class Outputs:
    """The files of one report in its folder: opened as temporaries, published by rename."""

    folder: Path
    report_id: int
    mode: int
    opened: dict[str, tuple[Path, Path, IO[str]]] = field(default_factory=dict)

    def open_text(self, name: str, ext: str) -> IO[str]:
        """A new UTF-8 text file `name` (e.g. "csv", "entries_csv") with extension `ext`."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        final = self.folder / f"report-{self.report_id}-{name.replace('_', '-')}.{ext}"
        tmp = self.folder / f".{final.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, self.mode)
        os.fchmod(fd, self.mode)  # the umask may have taken bits away
        fh = os.fdopen(fd, "w", encoding="utf-8", newline="", buffering=1 << 16)
        self.opened[name] = (tmp, final, fh)
        return fh

    def publish(self) -> dict[str, Any]:
        """Flush, fsync and rename every file into place; their descriptions."""
        files: dict[str, Any] = {}
        for name, (tmp, final, fh) in self.opened.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            files[name] = _describe(tmp, final)
        for tmp, final, _ in self.opened.values():
            tmp.replace(final)
        dfd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return files

    def discard(self) -> None:
        """Close and remove the temporary files (a failed or cancelled report)."""
        for tmp, _, fh in self.opened.values():
            with contextlib.suppress(OSError):
                fh.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.opened.clear()


def _describe(tmp: Path, final: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with open(tmp, "rb") as fh:
        while chunk := fh.read(rq.CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    ext = final.suffix.lstrip(".")
    return {"path": str(final), "filename": final.name, "bytes": size,
            "sha256": digest.hexdigest(), "content_type": CONTENT_TYPES[ext]}


async def _chunks(files: dict[str, Any]) -> AsyncIterator[tuple[str, int, bytes]]:
    """Each file's chunks in order, read off the loop (a file can be gigabytes)."""
    for name, meta in files.items():
        fh = await asyncio.to_thread(open, meta["path"], "rb")
        try:
            no = 0
            while chunk := await asyncio.to_thread(fh.read, rq.CHUNK_BYTES):
                yield name, no, chunk
                no += 1
            if no == 0:
                yield name, 0, b""
        finally:
            fh.close()


class Heartbeat:
    """Records a running report's progress every `progress_s` (renewing its lease); cancels
    `task` when a cancel is asked for or the lease is gone."""

    def __init__(self, pool: asyncpg.Pool, req: ReportRequest, progress: kinds.Progress, *,
                 owner: str, settings: ReporterSettings) -> None:
        self.pool, self.req, self.progress = pool, req, progress
        self.owner, self.settings = owner, settings
        self.reason: str | None = None  # "cancelled" / "lease_lost" once it cancelled the task

    async def run(self, task: asyncio.Task[Any]) -> None:
        """Until `task` ends."""
        while not task.done():
            await asyncio.wait({task}, timeout=self.settings.progress_s)
            if task.done():
                return
            try:
                cancel = await self.beat()
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("report_heartbeat_failed", report_id=self.req.id,
                            error=str(exc)[:200])
                continue
            if cancel is None or cancel:
                self.reason = "lease_lost" if cancel is None else "cancelled"
                task.cancel()
                return

    async def beat(self) -> bool | None:
        """One progress update; see `report_requests.heartbeat`."""
        p = self.progress
        return await rq.heartbeat(self.pool, self.req.id, owner=self.owner,
                                  rows_scanned=p.scanned, rows_estimated=p.estimated,
                                  progress=p.percent, lease_s=self.settings.lease_s)


async def generate(pool: asyncpg.Pool, req: ReportRequest, progress: kinds.Progress,
                   outputs: Outputs, settings: ReporterSettings) -> dict[str, Any]:
    """Read and write one report; returns its files (published). Raises `ReportFailed`."""
    try:
        params = ReportParams.from_json(req.kind, req.params)
        parse_request(req.kind, start=params.start, end=params.end, tz=params.tz,
                      campaign=params.campaign, account=params.account,
                      max_range_days=settings.max_range_days)
    except (ReportInputError, KeyError, ValueError) as exc:
        raise ReportFailed(f"bad request: {exc}") from None
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        # both values are validated numbers / a validated size pattern, never caller input
        await conn.execute("SELECT set_config('statement_timeout', $1, true),"
                           " set_config('work_mem', $2, true)",
                           str(int(settings.statement_timeout_s * 1000)), settings.work_mem)
        account_id = req.account_id
        if params.account is not None:
            found = await conn.fetchval(ACCOUNT_ID, params.account)
            if found is None or (account_id is not None and found != account_id):
                raise ReportFailed(f"account: unknown account {params.account!r}")
            account_id = found
        ctx = kinds.Ctx(conn=conn, params=params, account_id=account_id, progress=progress,
                        open_text=outputs.open_text, fetch_rows=settings.fetch_rows,
                        pause=Pause(settings.busy_share))
        page = await kinds.KINDS[req.kind](ctx)
    page.facts.append(("report", f"#{req.id}, {req.kind}, requested by {req.requested_by}"))
    write_page(outputs.open_text("html", "html"), title=page.title, facts=page.facts,
               charts=page.charts, tables=page.tables)
    return outputs.publish()


async def run_report(pool: asyncpg.Pool, req: ReportRequest, progress: kinds.Progress, *,
                     owner: str, settings: ReporterSettings) -> str:
    """Make `req` and write its outcome back; returns the outcome (done, failed, cancelled,
    lease_lost). Cancelling the calling task (the drain) leaves the row to `release`."""
    outputs = Outputs(Path(settings.dir) / str(req.id), req.id, settings.mode)
    task = asyncio.create_task(generate(pool, req, progress, outputs, settings),
                               name=f"reporter.report.{req.id}")
    beat = Heartbeat(pool, req, progress, owner=owner, settings=settings)
    beat_task = asyncio.create_task(beat.run(task))
    try:
        files = await task
    except asyncio.CancelledError:
        outputs.discard()
        if beat.reason is None:  # our own cancellation (the drain): pass it on
            raise
        if beat.reason == "cancelled":
            await rq.fail(pool, req.id, owner=owner, status=rq.ReportStatus.CANCELLED,
                          reason="cancelled", keep_s=settings.keep_s)
        return beat.reason
    except ReportFailed as exc:
        return await _fail(pool, req, outputs, owner, settings, str(exc))
    except OSError as exc:
        where = exc.filename or settings.dir
        return await _fail(pool, req, outputs, owner, settings,
                           f"writing the reports area {where}: {exc.strerror or exc}")
    except asyncpg.QueryCanceledError:
        return await _fail(pool, req, outputs, owner, settings,
                           f"a query ran longer than statement_timeout_s "
                           f"({settings.statement_timeout_s:g} s)")
    except Exception:
        outputs.discard()  # no temporary file outlives a crash of the report
        raise
    finally:
        beat_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat_task
    try:
        async with pool.acquire() as conn, conn.transaction():
            stored = await rq.store_and_finish(conn, req.id, owner=owner, files=files,
                                               chunks=_chunks(files), rows=progress.scanned,
                                               keep_s=settings.keep_s)
            if not stored:
                raise LeaseLost  # rolls the chunks back
    except LeaseLost:
        return "lease_lost"
    return "done"


async def _fail(pool: asyncpg.Pool, req: ReportRequest, outputs: Outputs, owner: str,
                settings: ReporterSettings, reason: str) -> str:
    outputs.discard()
    log.warning("report_failed", report_id=req.id, kind=req.kind, reason=reason)
    await rq.fail(pool, req.id, owner=owner, status=rq.ReportStatus.FAILED, reason=reason,
                  keep_s=settings.keep_s)
    return "failed"

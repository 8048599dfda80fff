"""Where generated reports are kept: a row of metadata each, and the file.

Files go under `report_dir` on the embedded default, or into the row itself
(`report_storage = "database"`) where instances share no disk. A file is written to a
temporary name and renamed once complete, so a failed run (a full disk, say) leaves no
half-written report behind. Old reports are removed by type after `report_retention_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.errors import UnknownReport
from livedash.reports.generation import ReportRequest
from livedash.store.models import ReportRecord
from livedash.timeutil import as_aware, naive_utc

ERROR_LENGTH = 500


class ReportInfo(BaseModel):
    """A report's metadata, as the API lists it."""

    id: int
    report_type: str
    department: str | None
    period_start: datetime
    period_end: datetime
    period_label: str
    time_zone: str
    format: str
    parameters: dict[str, Any]
    requested_by: str
    schedule_id: int | None
    status: str  # queued, running, done, failed
    error: str | None
    size: int | None
    sha256: str | None
    figures_sha256: str | None
    feed_position: int | None
    generator_version: str
    created_at: datetime
    finished_at: datetime | None


_INFO_COLUMNS = [getattr(ReportRecord, name) for name in ReportInfo.model_fields]


def _info(row: Any) -> ReportInfo:
    values = dict(row._mapping)
    for name in ("period_start", "period_end", "created_at", "finished_at"):
        if values[name] is not None:
            values[name] = as_aware(values[name])
    return ReportInfo.model_validate(values)


class ReportArchive:
    """The reports table and the files it points to."""

    def __init__(
        self,
        database: AsyncEngine,
        directory: Path,
        *,
        in_database: bool,
        retention_days: dict[str, int],
    ) -> None:
        self._database = database
        self._directory = directory
        self._in_database = in_database
        self._retention = retention_days

    async def open(
        self, request: ReportRequest, now: datetime, *, generator: str, schedule_id: int | None
    ) -> ReportInfo:
        """A new report, queued."""
        values = {
            "report_type": request.report_type,
            "department": request.scope.code,
            "period_start": naive_utc(request.period.start),
            "period_end": naive_utc(request.period.end),
            "period_label": request.period.label[:64],
            "time_zone": request.period.zone,
            "format": request.format,
            "parameters": request.described(),
            "requested_by": request.requested_by,
            "schedule_id": schedule_id,
            "status": "queued",
            "generator_version": generator,
            "created_at": naive_utc(now),
        }
        async with self._database.begin() as connection:
            result = await connection.execute(insert(ReportRecord).values(**values))
            ident = int(result.inserted_primary_key[0])  # type: ignore[index]
        return await self.get(ident)

    async def started(self, ident: int) -> None:
        await self._set(ident, status="running")

    async def store(
        self,
        ident: int,
        content: bytes,
        *,
        extension: str,
        feed_position: int,
        figures_sha256: str,
        now: datetime,
    ) -> ReportInfo:
        """Keep the finished file and mark the report done; a failure leaves no file."""
        path: str | None = None
        if not self._in_database:
            target = self._directory / f"report-{ident}.{extension}"
            await asyncio.to_thread(_write_whole, target, content)
            path = str(target)
        try:
            await self._set(
                ident,
                status="done",
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                figures_sha256=figures_sha256,
                feed_position=feed_position,
                path=path,
                content=content if self._in_database else None,
                finished_at=naive_utc(now),
                error=None,
            )
        except BaseException:
            # The report will be marked failed: a file no row points to would never expire.
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(os.remove, path)
            raise
        return await self.get(ident)

    async def fail(self, ident: int, message: str, now: datetime) -> ReportInfo:
        await self._set(
            ident, status="failed", error=message[:ERROR_LENGTH], finished_at=naive_utc(now)
        )
        return await self.get(ident)

    async def interrupted(self, now: datetime) -> int:
        """Mark reports a stopped process left queued or running as failed."""
        async with self._database.begin() as connection:
            result = await connection.execute(
                update(ReportRecord)
                .where(ReportRecord.status.in_(("queued", "running")))
                .values(
                    status="failed",
                    error="interrupted: the service stopped while generating it",
                    finished_at=naive_utc(now),
                )
            )
            return int(result.rowcount)

    async def get(self, ident: int) -> ReportInfo:
        async with self._database.connect() as connection:
            row = (
                await connection.execute(select(*_INFO_COLUMNS).where(ReportRecord.id == ident))
            ).first()
        if row is None:
            raise UnknownReport(f"no report {ident}", report=ident)
        return _info(row)

    async def content(self, ident: int) -> bytes:
        """The report's file; `UnknownReport` if it has none (not done, or removed)."""
        async with self._database.connect() as connection:
            row = (
                await connection.execute(
                    select(ReportRecord.status, ReportRecord.path, ReportRecord.content).where(
                        ReportRecord.id == ident
                    )
                )
            ).first()
        if row is None or row.status != "done":
            raise UnknownReport(f"report {ident} has no file (not generated)", report=ident)
        if row.content is not None:
            return bytes(row.content)
        try:
            return await asyncio.to_thread(Path(row.path).read_bytes)
        except OSError as error:
            raise UnknownReport(f"report {ident}'s file is gone", report=ident) from error

    async def listed(
        self,
        *,
        report_type: str | None = None,
        department: Sequence[str | None] | None = None,
        status: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[ReportInfo]:
        """Newest first; `department`: only these scopes (None: hospital-wide)."""
        query = select(*_INFO_COLUMNS).order_by(ReportRecord.id.desc()).limit(limit)
        if report_type is not None:
            query = query.where(ReportRecord.report_type == report_type)
        if status is not None:
            query = query.where(ReportRecord.status == status)
        if before_id is not None:
            query = query.where(ReportRecord.id < before_id)
        if department is not None:
            codes = [code for code in department if code is not None]
            in_codes = ReportRecord.department.in_(codes)
            query = query.where(
                in_codes | ReportRecord.department.is_(None) if None in department else in_codes
            )
        async with self._database.connect() as connection:
            return [_info(row) for row in await connection.execute(query)]

    async def expire(self, now: datetime) -> int:
        """Remove reports older than their type's retention; returns how many.

        Only the old rows are read: one condition per type with its own retention, and one
        for every other type with the default."""
        default = self._retention.get("default", 90)
        own = {kind: days for kind, days in self._retention.items() if kind != "default"}

        def cutoff(days: int) -> datetime:
            return naive_utc(now) - timedelta(days=days)

        too_old = or_(
            *(
                (ReportRecord.report_type == kind) & (ReportRecord.created_at < cutoff(days))
                for kind, days in own.items()
            ),
            ReportRecord.report_type.not_in(own) & (ReportRecord.created_at < cutoff(default)),
        )
        async with self._database.begin() as connection:
            old = list(
                await connection.execute(select(ReportRecord.id, ReportRecord.path).where(too_old))
            )
            if old:
                await connection.execute(
                    delete(ReportRecord).where(ReportRecord.id.in_([ident for ident, _ in old]))
                )
        for _ident, path in old:
            if path:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(os.remove, path)
        return len(old)

    async def _set(self, ident: int, **values: Any) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                update(ReportRecord).where(ReportRecord.id == ident).values(**values)
            )


def _write_whole(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise

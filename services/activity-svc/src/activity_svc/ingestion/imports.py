"""Running one import: stage, authorise, validate and merge, record, publish; in one transaction.

Either the whole import commits (records, monthly measures, the import's report and
its events together) or nothing does, except the report of a rejected import, which is
kept so that ``GET /imports/{id}`` can explain the rejection.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc import events
from activity_svc.indicators.changes import publish_indicator_changes
from activity_svc.ingestion.merge import STAGING_TABLE, MergeOutcome, merge_statement, staging_ddl
from activity_svc.ingestion.staging import MalformedFile, Stager
from activity_svc.models import ImportRejection, OrgUnit, RecordImport
from activity_svc.settings import Settings
from ght_shared.audit import record_audit
from ght_shared.auth import Principal
from ght_shared.db import Database
from ght_shared.errors import Forbidden
from ght_shared.outbox import add_events

_log = logging.getLogger(__name__)


class OnError(StrEnum):
    REJECT_FILE = "reject_file"
    """Any rejected row rejects the whole import: nothing is merged."""
    SKIP_ROW = "skip_row"
    """Rejected rows are reported; the others are merged."""


class ImportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    JSON = "json"


@dataclass(frozen=True)
class ImportRequest:
    format: ImportFormat
    on_error: OnError
    filename: str | None = None


_MERGES = {
    flag: merge_statement(reject_file=flag).replace(":import_id", "$1").replace(":now", "$2")
    for flag in (True, False)
}


async def run_import(
    database: Database,
    settings: Settings,
    principal: Principal,
    stager: Stager,
    request: ImportRequest,
) -> RecordImport:
    """Import the rows ``stager`` provides; return the import's report (persisted).

    Raises :class:`Forbidden` (nothing written) when a row belongs to an establishment
    the principal does not act for. A structurally broken file is recorded as a
    rejected import (its report says where it broke).
    """
    import_id = uuid.uuid4()
    started = time.perf_counter()
    now = datetime.now(UTC)
    report = RecordImport(
        id=import_id,
        format=request.format,
        on_error=request.on_error,
        status="completed",
        filename=request.filename,
        submitted_by=principal.sub,
        establishments=[],
        received=0,
        accepted=0,
        rejected=0,
        unchanged=0,
        months=[],
        created_at=now,
    )
    try:
        async with database.transaction() as session:
            await _prepare(session, settings)
            connection = await _asyncpg_connection(session)
            await stager.copy_into(connection, settings.import_statement_timeout_s)
            staged = time.perf_counter()
            establishments = await _authorise(session, principal)
            await _lock(session, establishments)
            session.add(report)
            await session.flush()
            # Straight through asyncpg: the pool's command timeout is for requests; an
            # import has its own (the server-side statement_timeout is set to match).
            row = await connection.fetchrow(
                _MERGES[request.on_error is OnError.REJECT_FILE],
                import_id,
                now,
                timeout=settings.import_statement_timeout_s,
            )
            outcome = MergeOutcome.from_row(row)
            merged = time.perf_counter()
            _fill_report(report, outcome, request.on_error, started)
            if report.status != "rejected":
                await _publish(session, report, outcome)
            _log.info(
                "import merged",
                extra={
                    "import_id": str(import_id),
                    "rows": outcome.received,
                    "stage_ms": round((staged - started) * 1000),
                    "merge_ms": round((merged - staged) * 1000),
                    "publish_ms": round((time.perf_counter() - merged) * 1000),
                },
            )
            await record_audit(
                session,
                principal,
                "records.imported",
                f"import/{import_id}",
                establishment=establishments[0] if len(establishments) == 1 else None,
                detail={
                    "format": request.format,
                    "status": report.status,
                    "accepted": report.accepted,
                    "rejected": report.rejected,
                },
            )
    except MalformedFile as broken:
        return await _record_malformed(database, report, broken, started)
    return report


async def _prepare(session: AsyncSession, settings: Settings) -> None:
    # SET LOCAL does not take bind parameters; the values are validated settings.
    await session.execute(text(f"SET LOCAL TimeZone = '{settings.local_timezone}'"))
    timeout_ms = int(settings.import_statement_timeout_s * 1000)
    await session.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
    await session.execute(text(f"SET LOCAL work_mem = '{settings.import_work_mem}'"))
    await session.execute(text(staging_ddl()))


async def _asyncpg_connection(session: AsyncSession) -> asyncpg.Connection:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def _authorise(session: AsyncSession, principal: Principal) -> list[str]:
    """The establishments the import writes for; 403 if one is not the principal's."""
    # Normalised as the merge reads it: " 420000010" is that establishment too.
    named = (
        await session.scalars(
            text(f"SELECT DISTINCT nullif(btrim(finess), '') FROM {STAGING_TABLE}")
        )
    ).all()
    known = set(
        (
            await session.scalars(
                select(OrgUnit.code).where(
                    OrgUnit.kind == "establishment", OrgUnit.code.in_([f for f in named if f])
                )
            )
        ).all()
    )
    forbidden = sorted(f for f in known if not principal.may_act_for(f))
    if forbidden:
        raise Forbidden(
            f"Not allowed to write records for establishment {', '.join(forbidden)}: an"
            " establishment's system writes its own establishment's records only.",
            establishments=forbidden,
        )
    return sorted(known)


async def _lock(session: AsyncSession, establishments: list[str]) -> None:
    # Imports of one establishment merge one after the other, so that the figures each
    # publishes include everything committed before it. Sorted: no deadlock between two.
    for finess in establishments:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"activity-merge:{finess}"},
        )


def _fill_report(
    report: RecordImport, outcome: MergeOutcome, on_error: OnError, started: float
) -> None:
    report.received = outcome.received
    report.rejected = outcome.rejected
    report.establishments = sorted(outcome.establishments)
    if outcome.rejected and on_error is OnError.REJECT_FILE:
        report.status = "rejected"
        report.accepted = 0
        report.unchanged = 0
        report.detail = (
            f"{outcome.rejected} of {outcome.received} rows were rejected: nothing was imported"
            " (on_error=reject_file)."
        )
    else:
        report.status = "completed_with_rejections" if outcome.rejected else "completed"
        report.accepted = outcome.valid
        report.unchanged = outcome.unchanged
        report.months = sorted({month for _, month in outcome.cells})
        if outcome.valid != outcome.distinct_valid:
            report.detail = (
                f"{outcome.valid - outcome.distinct_valid} rows repeated a record already"
                " sent earlier in the same import: the last one was kept."
            )
    report.finished_at = datetime.now(UTC)
    report.duration_ms = int((time.perf_counter() - started) * 1000)


async def _publish(session: AsyncSession, report: RecordImport, outcome: MergeOutcome) -> None:
    period = _period(report.months)
    batch_events = [
        events.batch_ingested(
            {
                "batch": str(report.id),
                "source": outcome.sources[0] if len(outcome.sources) == 1 else None,
                "sources": outcome.sources,
                "establishment": finess,
                "period": period,
                "accepted": accepted,
                "rejected": rejected,
                "format": report.format,
            },
            finess,
        )
        for finess, (accepted, rejected) in sorted(outcome.establishments.items())
    ]
    await add_events(session, batch_events)
    measures: set[str] = set().union(*outcome.cells.values()) if outcome.cells else set()
    await publish_indicator_changes(session, set(outcome.cells), measures, report.id)


def _period(months: list[date]) -> dict[str, str] | None:
    if not months:
        return None
    return {"from": months[0].strftime("%Y-%m"), "to": months[-1].strftime("%Y-%m")}


async def _record_malformed(
    database: Database, report: RecordImport, broken: MalformedFile, started: float
) -> RecordImport:
    report.status = "rejected"
    report.detail = broken.message + (f" (line {broken.line})" if broken.line else "")
    report.finished_at = datetime.now(UTC)
    report.duration_ms = int((time.perf_counter() - started) * 1000)
    report.rejected = 1
    async with database.transaction() as session:
        session.add(report)
        await session.flush()
        session.add(
            ImportRejection(
                import_id=report.id,
                line=broken.line or 0,
                field="file",
                reason=broken.message,
                source_id=None,
            )
        )
    _log.info("import rejected: malformed file", extra={"import_id": str(report.id)})
    return report

"""Running one import: stage, authorise, validate and merge, record, publish.

Either the whole import commits (records, monthly measures, the import's report and
its events together) or nothing does, except the report of a rejected import, which is
kept so that ``GET /imports/{id}`` can explain the rejection. A large file is merged in
parts on several connections, whose prepared transactions follow the import's own
(``ingestion.parts``, ADR 0011).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc import reactions
from activity_svc.access import ensure_may_write_records
from activity_svc.catalogue import BED_DAYS, MEASURE_NAMES
from activity_svc.completeness import record_received
from activity_svc.errors import ImportTooLarge
from activity_svc.events import SOURCE
from activity_svc.ingestion.merge import (
    REJECTIONS_STATEMENT,
    STAGING_TABLE,
    MergeOutcome,
    apply_statement,
    part_statement,
    shared_staging_table,
    staging_ddl,
    staging_part,
)
from activity_svc.ingestion.parts import (
    PreparedParts,
    drop_staging,
    free_prepared_slots,
    import_lock_key,
    recover_imports,
    run_part,
)
from activity_svc.ingestion.staging import LimitExceeded, MalformedFile, Stager
from activity_svc.models import (
    ImportFormat,
    ImportRejection,
    ImportStatus,
    OnError,
    OrgUnit,
    OrgUnitKind,
    RecordImport,
)
from activity_svc.settings import Settings
from ght_shared.audit import record_audit
from ght_shared.auth import Principal
from ght_shared.db import Database, driver_connection
from ght_shared.outbox import add_events
from ght_shared.payloads.activity import BatchIngested, ImportPeriod

_log = logging.getLogger(__name__)

APPLY_STATEMENT = apply_statement()
ALL_MEASURES = frozenset(MEASURE_NAMES | {BED_DAYS})


@dataclass(frozen=True)
class ImportRequest:
    format: ImportFormat
    on_error: OnError
    filename: str | None = None
    complete_up_to: date | None = None
    """The day the sender declares its establishments' data complete up to."""


def merge_lock_key(finess: str) -> str:
    """The advisory lock an establishment's imports and withdrawals take, one at a time."""
    return f"activity-merge:{finess}"


def import_location(import_id: uuid.UUID) -> str:
    """Where an import's report is read: relative, so that it resolves the same on the
    service and behind the gateway's prefix."""
    return f"imports/{import_id}"


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
    rejected import (its report says where it broke); so is a file beyond one of its
    limits, which then raises :class:`ImportTooLarge` (413).

    A file is staged in a table of its own, so that a large one can be merged in parts
    on several connections (see :mod:`activity_svc.ingestion.parts`); a JSON batch is
    staged in a temporary table and merged on the import's own connection.
    """
    import_id = uuid.uuid4()
    started = time.perf_counter()
    now = datetime.now(UTC)
    report = RecordImport(
        id=import_id,
        format=request.format,
        on_error=request.on_error,
        status=ImportStatus.COMPLETED,
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
    shared = request.format is not ImportFormat.JSON and settings.import_parts > 1
    staging = shared_staging_table(import_id) if shared else STAGING_TABLE
    reject_file = request.on_error is OnError.REJECT_FILE
    parts = PreparedParts(database, import_id)
    try:
        async with database.transaction() as session:
            await _prepare(session, settings)
            connection = await driver_connection(session)
            # Held until this transaction ends: recovery leaves a running import alone.
            await _advisory_lock(session, import_lock_key(import_id))
            rows = await _stage(database, settings, connection, stager, staging, shared)
            staged = time.perf_counter()
            establishments = await _authorise(session, principal, staging)
            for finess in establishments:
                # Imports of one establishment merge one after the other, so that the
                # figures each publishes include everything committed before it.
                # Sorted: no deadlock between two.
                await _advisory_lock(session, merge_lock_key(finess))
            # The previous import of these establishments has committed, but its parts
            # may not be yet (or never, if its process died): settle them first, so that
            # its records are there before this merge reads and writes them.
            await recover_imports(database)
            session.add(report)
            await session.flush()
            count = await _parts_for(settings, connection, rows, shared)
            outcome = await _merge(
                settings, connection, parts, staging, count, reject_file, (import_id, now)
            )
            merged = time.perf_counter()
            _fill_report(report, outcome, request.on_error, started)
            if report.status is not ImportStatus.REJECTED:
                moved = await record_received(
                    session,
                    establishments,
                    outcome.last_days,
                    request.complete_up_to,
                    principal.sub,
                    now,
                )
                await _publish(session, report, outcome, moved)
            _log.info(
                "import merged",
                extra={
                    "import_id": str(import_id),
                    "rows": outcome.received,
                    "parts": count,
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
        await _record_malformed(database, report, broken, started)
        if isinstance(broken, LimitExceeded):
            raise ImportTooLarge(
                broken.message,
                import_id=str(import_id),
                import_url=import_location(import_id),
                field=broken.field,
                limit=broken.limit,
                value=broken.value,
                line=broken.line,
            ) from broken
        return report
    finally:
        # The report is committed or not: the parts follow it.
        try:
            await parts.settle()
        except Exception:
            _log.exception("import parts left to recovery", extra={"import_id": str(import_id)})
        if shared:
            await drop_staging(database, staging)
    return report


async def _stage(
    database: Database,
    settings: Settings,
    connection: asyncpg.Connection,
    stager: Stager,
    staging: str,
    shared: bool,
) -> int:
    """Stage the rows (in the import's transaction, or committed for parts); their count."""
    if not shared:
        await connection.execute(staging_ddl())
        return await stager.copy_into(connection, staging, settings.import_statement_timeout_s)
    async with database.transaction() as session:
        await _prepare(session, settings)
        staging_connection = await driver_connection(session)
        await staging_connection.execute(staging_ddl(staging, parts=settings.import_parts))
        rows = await stager.copy_into(
            staging_connection, staging, settings.import_statement_timeout_s
        )
        if rows >= settings.import_parallel_min_rows:
            # Rough statistics (a small sample), so that the parts' plans know the size of
            # what they merge: without them, the units are joined by nested loops.
            tables = ", ".join(staging_part(staging, part) for part in range(settings.import_parts))
            await staging_connection.execute(
                f"SET LOCAL default_statistics_target = 10; ANALYZE {tables}"
            )
        return rows


async def _parts_for(
    settings: Settings, connection: asyncpg.Connection, rows: int, shared: bool
) -> int:
    """How many parts to merge in: one for a batch, a small file, or a server that cannot
    hold the parts prepared (``max_prepared_transactions``)."""
    count = settings.import_parts if shared else 1
    if count == 1 or rows < settings.import_parallel_min_rows:
        return 1
    return count if await free_prepared_slots(connection) >= count else 1


async def _merge(
    settings: Settings,
    connection: asyncpg.Connection,
    parts: PreparedParts,
    staging: str,
    count: int,
    reject_file: bool,
    args: tuple[uuid.UUID, datetime],
) -> MergeOutcome:
    """Merge the staged rows in ``count`` parts, store the first rejections and add the
    parts' contributions to the monthly measures (unless ``reject_file`` rejects it)."""
    timeout = settings.import_statement_timeout_s
    statements = [
        part_statement(
            staging_part(staging, part) if count > 1 else staging, reject_file=reject_file
        )
        for part in range(count)
    ]
    if count == 1:
        # Straight through asyncpg: the pool's command timeout is for requests; an import
        # has its own (the server-side statement_timeout matches it).
        outcomes = [await run_part(connection, statements[0], args, timeout)]
    else:
        setup = "; ".join(_session_settings(settings))
        try:
            outcomes = await parts.merge(statements, setup, args, timeout)
        except asyncpg.ConfigurationLimitExceededError:
            # Another import took the last prepared-transaction slots meanwhile: merge
            # on this connection instead.
            _log.warning("no prepared transaction slot left: import merged on one connection")
            await parts.abandon()
            statement = part_statement(staging, reject_file=reject_file)
            outcomes = [await run_part(connection, statement, args, timeout)]
    import_id, now = args
    await connection.execute(REJECTIONS_STATEMENT, import_id, [o.rejections for o in outcomes])
    applied = None
    if not (reject_file and any(o.rejected for o in outcomes)):
        applied = await connection.fetchval(
            APPLY_STATEMENT,
            [o.deltas for o in outcomes],
            now,
            [o.cube for o in outcomes],
            [o.days for o in outcomes],
            timeout=timeout,
        )
    return MergeOutcome.of(outcomes, applied)


def _session_settings(settings: Settings) -> list[str]:
    # SET LOCAL takes no bind parameters; the values are validated settings.
    timeout_ms = int(settings.import_statement_timeout_s * 1000)
    return [
        f"SET LOCAL TimeZone = '{settings.local_timezone}'",
        f"SET LOCAL statement_timeout = {timeout_ms}",
        f"SET LOCAL work_mem = '{settings.import_work_mem}'",
    ]


async def _prepare(session: AsyncSession, settings: Settings) -> None:
    """Begin the session's transaction with the import's settings."""
    for statement in _session_settings(settings):
        await session.execute(text(statement))


async def _authorise(session: AsyncSession, principal: Principal, staging: str) -> list[str]:
    """The establishments the import writes for; 403 if one is not the principal's."""
    # Normalised as the merge reads it: " 420000010" is that establishment too.
    named = (
        await session.scalars(text(f"SELECT DISTINCT nullif(btrim(finess), '') FROM {staging}"))
    ).all()
    known = set(
        (
            await session.scalars(
                select(OrgUnit.code).where(
                    OrgUnit.kind == OrgUnitKind.ESTABLISHMENT,
                    OrgUnit.code.in_([f for f in named if f]),
                )
            )
        ).all()
    )
    ensure_may_write_records(principal, known)
    return sorted(known)


async def _advisory_lock(session: AsyncSession, key: str) -> None:
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
    )


def _fill_report(
    report: RecordImport, outcome: MergeOutcome, on_error: OnError, started: float
) -> None:
    report.received = outcome.received
    report.rejected = outcome.rejected
    report.establishments = sorted(outcome.establishments)
    if outcome.rejected and on_error is OnError.REJECT_FILE:
        report.status = ImportStatus.REJECTED
        report.accepted = 0
        report.unchanged = 0
        report.detail = (
            f"{outcome.rejected} of {outcome.received} rows were rejected: nothing was imported"
            " (on_error=reject_file)."
        )
    else:
        report.status = (
            ImportStatus.COMPLETED_WITH_REJECTIONS if outcome.rejected else ImportStatus.COMPLETED
        )
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


async def _publish(
    session: AsyncSession,
    report: RecordImport,
    outcome: MergeOutcome,
    moved: Mapping[str, tuple[date | None, date | None]],
) -> None:
    period = _period(report.months)
    batch_events = [
        BatchIngested(
            batch=report.id,
            source=outcome.sources[0] if len(outcome.sources) == 1 else None,
            sources=outcome.sources,
            establishment=finess,
            period=period,
            accepted=accepted,
            rejected=rejected,
            format=report.format,
        ).event(source=SOURCE, establishment=finess)
        for finess, (accepted, rejected) in sorted(outcome.establishments.items())
    ]
    await add_events(session, batch_events)
    measures: set[str] = set().union(*outcome.cells.values()) if outcome.cells else set()
    cells = set(outcome.cells)
    completed = await reactions.cells_completed(session, moved)
    if completed:
        # Months now complete (or partial again): every figure of theirs reads otherwise.
        cells |= completed
        measures |= ALL_MEASURES
    await reactions.figures_changed(session, cells, measures, report.id)


def _period(months: list[date]) -> ImportPeriod | None:
    if not months:
        return None
    return ImportPeriod.model_validate(
        {"from": months[0].strftime("%Y-%m"), "to": months[-1].strftime("%Y-%m")}
    )


async def _record_malformed(
    database: Database, report: RecordImport, broken: MalformedFile, started: float
) -> RecordImport:
    report.status = ImportStatus.REJECTED
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

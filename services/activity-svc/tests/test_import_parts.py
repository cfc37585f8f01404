"""A file import merged in parts on several connections (two-phase commit), and recovery.

The service here merges any file in three parts (``import_parallel_min_rows=1``); the
figures must be those of a merge on one connection, all-or-nothing must hold across
the parts, and an import interrupted between its parts' PREPARE and COMMIT must be
settled by ``recover_imports`` as its committed report says.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from activity_testing import ALEMBIC_INI, CHU
from fastapi import FastAPI
from sqlalchemy import text
from test_ingestion import _csv, act, import_file, record_count, stay

from activity_svc.ingestion.merge import GID_PREFIX, shared_staging_table, staging_ddl
from activity_svc.ingestion.parts import import_lock_key, recover_imports
from activity_svc.main import create_app
from activity_svc.models import RecordImport
from activity_svc.settings import Settings
from ght_shared.db import Database
from ght_shared.testing.plugin import running_app
from ght_shared.urls import plain_url

pytestmark = pytest.mark.usefixtures("territory")

PARTS = 3


@pytest.fixture
async def activity_settings(make_settings: Any) -> Settings:
    settings: Settings = await make_settings(
        Settings, ALEMBIC_INI, import_parts=PARTS, import_parallel_min_rows=1
    )
    return settings


def _file() -> bytes:
    """Stays and acts over two units and two months, a record sent twice (the second
    wins), and two bad rows."""
    records = [stay(f"S{i}", unit="2101" if i % 2 else "1101") for i in range(40)]
    records += [act(f"A{i}", date="2025-02-03", coded_on="2025-02-05") for i in range(30)]
    records += [
        act("A7", date="2025-02-03", coded_on="2025-02-05", amount=99.0),
        act("BAD1", date="2025-13-01"),
        stay("BAD2", discharged_at="2025-01-01T08:00:00+01:00"),
    ]
    return _csv(records)


def _corrections() -> bytes:
    """Sent after ``_file``: a third of its stays moved to another unit, acts with a new
    amount, the same acts unchanged, and new acts."""
    records = [stay(f"S{i}", unit="2101") for i in range(0, 40, 3)]
    records += [
        act(f"A{i}", date="2025-02-03", coded_on="2025-02-05", amount=31.5) for i in range(10)
    ]
    records += [act(f"A{i}", date="2025-02-03", coded_on="2025-02-05") for i in range(10, 20)]
    records += [act(f"N{i}", date="2025-01-20", coded_on="2025-01-21") for i in range(15)]
    return _csv(records)


async def _state(database: Database) -> dict[str, Any]:
    """Everything an import writes, comparable across two runs."""
    async with database.transaction() as session:
        months = (
            await session.execute(text("SELECT * FROM unit_month ORDER BY unit, month"))
        ).mappings()
        cube = await session.execute(
            text("SELECT * FROM activity_cube ORDER BY unit, month, kind, mode, severity")
        )
        days = await session.execute(text("SELECT * FROM unit_day ORDER BY unit, day"))
        records = await session.execute(
            text("SELECT source_id, amount, unit, month FROM activity_record ORDER BY source_id")
        )
        rejections = await session.execute(
            text("SELECT line, field, reason FROM import_rejection ORDER BY line")
        )
        return {
            "unit_month": [{k: v for k, v in row.items() if k != "updated_at"} for row in months],
            "activity_cube": [tuple(row) for row in cube],
            "unit_day": [tuple(row) for row in days],
            "records": [tuple(row) for row in records],
            "rejections": [tuple(row) for row in rejections],
        }


async def _wipe(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(
            text(
                "TRUNCATE activity_record, unit_month, activity_cube, unit_day, record_import"
                " CASCADE"
            )
        )


async def _leftovers(database: Database) -> tuple[int, int]:
    """Prepared transactions and staging tables left in the database."""
    async with database.transaction() as session:
        prepared = await session.scalar(
            text("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'activity-import:%'")
        )
        tables = await session.scalar(
            text("SELECT count(*) FROM pg_class WHERE relname LIKE 'import\\_staging%'")
        )
    return int(prepared or 0), int(tables or 0)


@pytest.fixture
async def one_connection(activity_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same service, merging on one connection, on the same database."""
    app: FastAPI = create_app(activity_settings.model_copy(update={"import_parts": 1}))
    async with running_app(app) as client:
        yield client


async def test_a_file_merged_in_parts_gives_the_figures_of_a_merge_on_one_connection(
    activity: httpx.AsyncClient,
    one_connection: httpx.AsyncClient,
    auth: Any,
    database: Database,
) -> None:
    # The first file is inserted (no stored record), the second upserted over it.
    headers = auth("it_system", CHU)
    states = []
    for client in (activity, one_connection):
        await _wipe(database)
        reports = []
        for body in (_file(), _corrections()):
            response = await import_file(client, headers, body, on_error="skip_row")
            assert response.status_code == 201, response.text
            reports.append(response.json())
        states.append((reports, await _state(database)))
    (parted, in_parts), (single, in_one) = states

    fields = ("status", "received", "accepted", "rejected", "unchanged", "months")
    for in_parts_report, single_report in zip(parted, single, strict=True):
        for field in fields:
            assert in_parts_report[field] == single_report[field], field
    assert [r["rejected"] for r in parted] == [2, 0]
    assert parted[1]["unchanged"] == 17  # 10 acts, 7 stays already in unit 2101
    assert in_parts == in_one
    assert in_parts["unit_day"] and in_parts["activity_cube"]
    amounts = {r[0]: float(r[1]) for r in in_parts["records"]}
    assert amounts["A7"] == 31.5 and amounts["A15"] == 25.0 and "N3" in amounts
    assert await _leftovers(database) == (0, 0)


async def test_a_rejected_row_in_one_part_rejects_the_whole_file(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    body = _file()
    response = await import_file(activity, auth("it_system", CHU), body, on_error="reject_file")
    assert response.status_code == 422, response.text
    assert await record_count(database) == 0
    async with database.transaction() as session:
        for table in ("unit_month", "activity_cube", "unit_day"):
            assert await session.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
        assert await session.scalar(text("SELECT count(*) FROM import_rejection")) == 2
    assert await _leftovers(database) == (0, 0)


async def _prepare_part(dsn: str, import_id: uuid.UUID, probe: str) -> None:
    """A part left prepared by a process that died: it creates table ``probe``."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("BEGIN")
        await conn.execute(f"CREATE TABLE {probe} (id int)")
        await conn.execute(f"PREPARE TRANSACTION '{GID_PREFIX}{import_id}:0'")
    finally:
        await conn.close()


async def _report(database: Database, import_id: uuid.UUID, status: str) -> None:
    async with database.transaction() as session:
        session.add(
            RecordImport(
                id=import_id,
                format="csv",
                on_error="skip_row",
                status=status,
                submitted_by="test",
                establishments=[CHU],
                received=1,
                accepted=1,
                rejected=0,
                unchanged=0,
                months=[],
                created_at=datetime.now(UTC),
            )
        )


async def _exists(database: Database, table: str) -> bool:
    async with database.transaction() as session:
        return bool(await session.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}))


async def test_recovery_settles_the_parts_of_an_interrupted_import_as_its_report_says(
    activity_settings: Settings, database: Database
) -> None:
    dsn = plain_url(activity_settings.database_url)
    completed, unreported, running = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for import_id, probe in ((completed, "probe_a"), (unreported, "probe_b"), (running, "probe_c")):
        await _prepare_part(dsn, import_id, probe)
    await _report(database, completed, "completed")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(staging_ddl(shared_staging_table(unreported), parts=2))
    finally:
        await conn.close()

    # The running import's own transaction holds its lock: recovery leaves it alone.
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("BEGIN")
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", import_lock_key(running)
        )
        assert await recover_imports(database) == 2
    finally:
        await holder.close()

    assert await _exists(database, "probe_a")  # its report is committed: committed
    assert not await _exists(database, "probe_b")  # no report: rolled back
    assert not await _exists(database, shared_staging_table(unreported))
    assert await _leftovers(database) == (1, 0)  # the running one's part

    assert await recover_imports(database) == 1  # once it is no longer running
    assert not await _exists(database, "probe_c")
    assert await _leftovers(database) == (0, 0)


async def test_an_import_first_settles_the_parts_of_the_previous_one(
    activity: httpx.AsyncClient, activity_settings: Settings, auth: Any, database: Database
) -> None:
    # The previous import committed its report, but its part is still prepared (its
    # process is about to commit it, or died): the next import commits it before merging.
    previous = uuid.uuid4()
    await _prepare_part(plain_url(activity_settings.database_url), previous, "probe_d")
    await _report(database, previous, "completed")
    response = await activity.post(
        "/records", json={"records": [stay("S1")]}, headers=auth("it_system", CHU)
    )
    assert response.status_code == 201, response.text
    assert await _exists(database, "probe_d")
    assert await _leftovers(database) == (0, 0)

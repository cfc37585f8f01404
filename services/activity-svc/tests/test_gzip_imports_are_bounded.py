"""A file import is bounded after decompression, reads every gzip member, and leaves the
event loop free while it is decompressed and parsed.

The limits are those of a service built with small ones (``limited``); the default
service takes the large file of the event loop's test.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from activity_testing import CHU
from fastapi import FastAPI
from sqlalchemy import select
from test_ingestion import _csv, act, import_file, record_count

from activity_svc.main import create_app
from activity_svc.models import ImportRejection, RecordImport
from activity_svc.settings import Settings
from ght_shared.db import Database
from ght_shared.testing.plugin import running_app

pytestmark = pytest.mark.usefixtures("territory")

MAX_BYTES = 1_048_576
MAX_ROWS = 1000
GZIP = {"content-encoding": "gzip"}


@pytest.fixture
async def limited(activity_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service with small limits, on the same database."""
    small = {"import_max_bytes": MAX_BYTES, "import_max_rows": MAX_ROWS}
    app: FastAPI = create_app(activity_settings.model_copy(update=small))
    async with running_app(app) as client:
        yield client


def _acts(count: int, prefix: str = "A") -> list[dict[str, Any]]:
    return [act(f"{prefix}{i}") for i in range(count)]


def _ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


async def _rejected_report(database: Database) -> tuple[RecordImport, list[ImportRejection]]:
    async with database.transaction() as session:
        report = (await session.scalars(select(RecordImport))).one()
        rejections = (await session.scalars(select(ImportRejection))).all()
    return report, list(rejections)


async def _refused(
    response: httpx.Response, database: Database, field: str, limit: int
) -> dict[str, Any]:
    """The 413 names the limit; nothing is written but the rejected import's report."""
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert (problem["code"], problem["field"], problem["limit"]) == (
        "payload_too_large",
        field,
        limit,
    )
    assert problem["value"] > limit
    assert await record_count(database) == 0
    report, rejections = await _rejected_report(database)
    assert (str(report.id), report.status) == (problem["import_id"], "rejected")
    assert [r.field for r in rejections] == ["file"]
    return problem


# --- limits after decompression ---------------------------------------------------------


async def test_a_gzip_body_expanding_beyond_the_byte_limit_is_refused_with_413(
    limited: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    # 64 kB of gzip, 64 MB once expanded (in lines within their limit, fewer than the rows'):
    # a bomb, produced and counted piece by piece, never whole.
    lines = (b"x" * 32_767 + b"\n") * 2048
    bomb = gzip.compress(b"kind,source,source_id,finess,unit\n" + lines)
    assert len(bomb) < 100_000
    response = await import_file(limited, {**auth("it_system", CHU), **GZIP}, bomb)
    problem = await _refused(response, database, "bytes", MAX_BYTES)
    assert str(MAX_BYTES) in problem["detail"]


async def test_a_file_of_more_rows_than_the_limit_is_refused_with_413(
    limited: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    body = gzip.compress(_csv(_acts(MAX_ROWS + 1)))
    response = await import_file(limited, {**auth("it_system", CHU), **GZIP}, body)
    problem = await _refused(response, database, "rows", MAX_ROWS)
    assert str(MAX_ROWS) in problem["detail"]


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-ndjson"])
async def test_a_file_of_exactly_the_row_limit_is_imported(
    limited: httpx.AsyncClient, auth: Any, database: Database, content_type: str
) -> None:
    records = _acts(MAX_ROWS)
    body = _csv(records) if content_type == "text/csv" else _ndjson(records)
    response = await import_file(limited, auth("it_system", CHU), body, content_type)
    assert response.status_code == 201, response.text
    assert response.json()["accepted"] == MAX_ROWS


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-ndjson"])
async def test_a_line_longer_than_the_limit_is_refused_naming_it(
    activity: httpx.AsyncClient,
    activity_settings: Settings,
    auth: Any,
    database: Database,
    content_type: str,
) -> None:
    # 100 kB of gzip holding a last line of 100 MB, without end.
    records = _acts(2)
    body = _csv(records) if content_type == "text/csv" else _ndjson(records)
    body += b"x" * 100 * 1_048_576
    response = await import_file(
        activity, {**auth("it_system", CHU), **GZIP}, gzip.compress(body), content_type
    )
    line = 4 if content_type == "text/csv" else 3
    problem = await _refused(response, database, "line", activity_settings.import_max_line_bytes)
    assert problem["line"] == line
    assert f"Line {line} " in problem["detail"]


# --- gzip members and their end -----------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-ndjson"])
async def test_every_member_of_a_multi_member_gzip_file_is_imported(
    activity: httpx.AsyncClient, auth: Any, database: Database, content_type: str
) -> None:
    # As `cat january.gz february.gz` writes it.
    first, second = _acts(30, "J"), _acts(20, "F")
    if content_type == "text/csv":
        head, tail = _csv(first), _csv(second).split(b"\n", 1)[1]
    else:
        head, tail = _ndjson(first), _ndjson(second)
    body = gzip.compress(head) + gzip.compress(b"") + gzip.compress(tail)
    response = await import_file(activity, {**auth("it_system", CHU), **GZIP}, body, content_type)
    assert response.status_code == 201, response.text
    assert response.json()["accepted"] == 50
    assert await record_count(database) == 50


async def test_data_after_the_last_gzip_member_refuses_the_file(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    body = gzip.compress(_csv(_acts(10))) + b"trailing garbage"
    response = await import_file(activity, {**auth("it_system", CHU), **GZIP}, body)
    assert response.status_code == 422, response.text
    assert "after gzip member 1" in response.json()["detail"]
    assert await record_count(database) == 0


@pytest.mark.parametrize("member", [1, 2])
async def test_a_truncated_gzip_member_refuses_the_file(
    activity: httpx.AsyncClient, auth: Any, database: Database, member: int
) -> None:
    whole = gzip.compress(_csv(_acts(10)))
    more = _csv(_acts(5, "B")).split(b"\n", 1)[1]
    body = whole[:-4] if member == 1 else whole + gzip.compress(more)[:-4]
    response = await import_file(activity, {**auth("it_system", CHU), **GZIP}, body)
    assert response.status_code == 422, response.text
    assert "truncated" in response.json()["detail"]
    assert await record_count(database) == 0


# --- the event loop -----------------------------------------------------------------------


async def test_the_event_loop_answers_while_a_large_gzip_file_is_imported(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    # 150 000 NDJSON rows (40 MB): decompressed and parsed in one go, they held the loop
    # for about two seconds.
    rows = 150_000
    body = gzip.compress(_ndjson(_acts(rows)), compresslevel=1)
    importing = asyncio.create_task(
        import_file(activity, {**auth("it_system", CHU), **GZIP}, body, "application/x-ndjson")
    )
    # The time between two answers of a trivial route polled every 5 ms, request included.
    longest, answered = 0.0, time.perf_counter()
    while not importing.done():
        await asyncio.sleep(0.005)
        assert (await activity.get("/health/live")).status_code == 200
        longest = max(longest, time.perf_counter() - answered)
        answered = time.perf_counter()
    response = await importing
    assert response.status_code == 201, response.text
    assert response.json()["accepted"] == rows
    # A bound ten times what a turn of the loop takes here, so that a busy machine does not
    # fail it; parsing the file in one go fails it.
    assert longest < 0.2, f"/health/live waited {longest * 1000:.0f} ms"

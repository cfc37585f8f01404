"""Routes of ingestion: JSON record batches and file imports, with their reports."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.access import AUTH_RESPONSES, NOT_FOUND, Reader, Writer, may_read_import
from activity_svc.completeness import declared_day
from activity_svc.errors import (
    ImportNotFound,
    ImportRejected,
    InvalidInput,
    InvalidRows,
    UnsupportedMediaType,
)
from activity_svc.ingestion.imports import ImportRequest, import_location, run_import
from activity_svc.ingestion.schemas import (
    COMPLETE_UP_TO,
    MAX_WITHDRAWN_RECORDS,
    ImportRead,
    ImportReport,
    RecordBatch,
    RecordKeyIn,
    RejectionRead,
    Text,
    WithdrawalBatch,
    WithdrawalRead,
)
from activity_svc.ingestion.staging import (
    CsvStager,
    ImportLimits,
    NdjsonStager,
    RecordsStager,
    Stager,
    bounded,
    gunzip,
)
from activity_svc.ingestion.withdrawals import RecordKey, Withdrawal, withdraw_records
from activity_svc.models import (
    ImportFormat,
    ImportRejection,
    ImportStatus,
    OnError,
    RecordImport,
)
from activity_svc.settings import Settings
from ght_shared.auth import Principal, readable_by
from ght_shared.db import SessionDep, database_of
from ght_shared.exports import (
    EXPORT_RESPONSES,
    Column,
    ColumnKind,
    ExportFormat,
    ExportFormatDep,
    Table,
    export_response,
)
from ght_shared.identifiers import Finess
from ght_shared.pagination import Cursor, Limit, Page, decode_cursor
from ght_shared.schemas import IsoDate, Printable

router = APIRouter(tags=["ingestion"], responses=AUTH_RESPONSES)

REPORTED_REJECTIONS = 100
"""Rejected rows returned with an import's report; the rest are paged."""

_CSV_TYPES = ("text/csv", "application/csv", "text/plain")
_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


OnErrorQuery = Annotated[
    OnError,
    Query(
        description="`reject_file`: any bad row rejects the whole import (the default);"
        " `skip_row`: bad rows are reported, the others merged."
    ),
]


@router.post(
    "/records",
    status_code=201,
    response_model=ImportReport,
    summary="Send a batch of records (JSON, up to 10 000)",
    responses={413: {"description": "The body exceeds the batch limit."}},
)
async def post_records(
    batch: RecordBatch,
    request: Request,
    response: Response,
    principal: Writer,
    on_error: OnErrorQuery = OnError.REJECT_FILE,
) -> ImportReport:
    """Records are keyed by `(source, source_id)`: resending a record replaces it."""
    settings: Settings = request.app.state.settings
    if len(batch.records) > settings.max_batch_records:
        raise InvalidInput(
            f"A batch holds at most {settings.max_batch_records} records; send a file to"
            " POST /imports for more.",
            field="records",
            rule="max_length",
        )
    records = [r.model_dump(mode="json", exclude_none=True) for r in batch.records]
    return await _import(
        request,
        response,
        principal,
        RecordsStager(records),
        ImportRequest(ImportFormat.JSON, on_error, None, declared_day(batch.complete_up_to)),
    )


@router.delete(
    "/records",
    response_model=WithdrawalRead,
    summary="Withdraw one record (a PMSI correction, a record sent by mistake)",
)
async def delete_record(
    request: Request,
    principal: Writer,
    finess: Annotated[Finess, Query(description="The establishment's FINESS number.")],
    source: Annotated[Text, Query(description="The system that sent it.")],
    source_id: Annotated[Text, Query(description="Its id in that system.")],
) -> WithdrawalRead:
    """Deletes the record and takes it from the figures; a record already absent changes
    nothing (`withdrawn` 0, `absent` 1): the call can be repeated."""
    result = await withdraw_records(
        database_of(request), principal, [RecordKey(finess, source, source_id)]
    )
    return _withdrawal_read(result)


@router.post(
    "/records/withdrawals",
    response_model=WithdrawalRead,
    summary="Withdraw records named in a JSON list (up to 10 000)",
)
async def withdraw_listed(
    batch: WithdrawalBatch, request: Request, principal: Writer
) -> WithdrawalRead:
    """The records named by `(finess, source, source_id)` that are stored are deleted and
    taken from the figures, in one transaction; those already absent are counted in
    `absent`. A record of another establishment refuses the whole list (403)."""
    keys = [RecordKey(r.finess, r.source, r.source_id) for r in batch.records]
    return _withdrawal_read(await withdraw_records(database_of(request), principal, keys))


@router.post(
    "/withdrawals",
    response_model=WithdrawalRead,
    summary="Withdraw the records a CSV file names (up to 100 000)",
    responses={
        415: {"description": "Not a CSV body."},
        422: {"description": "A bad row (its line and field), a header without the fields."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def withdraw_file(request: Request, principal: Writer) -> WithdrawalRead:
    """CSV with a header naming `finess`, `source` and `source_id` (any order, `,` or `;`,
    UTF-8 with or without BOM). Every row is checked first: a bad row is a 422 naming its
    line and field, and nothing is withdrawn."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _CSV_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not a withdrawal file: send text/csv"
            " (or a JSON list to POST /records/withdrawals).",
            accepted=list(_CSV_TYPES[:1]),
        )
    keys = _withdrawal_rows(await request.body())
    return _withdrawal_read(await withdraw_records(database_of(request), principal, keys))


_KEY_ROW = TypeAdapter(RecordKeyIn)
_KEY_FIELDS = ("finess", "source", "source_id")


def _withdrawal_rows(body: bytes) -> list[RecordKey]:
    """The records a CSV withdrawal names; 422 naming the first bad rows otherwise."""
    try:
        content = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("The file is not UTF-8 text.", field="body", rule="encoding") from None
    first_line = content.split("\n", 1)[0]
    if not first_line.strip():
        raise InvalidInput(
            "The file is empty: a header line comes first.", field="body", rule="header"
        )
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in _KEY_FIELDS if name not in header]
    if missing:
        raise InvalidInput(
            f"The header must name {', '.join(_KEY_FIELDS)} (missing: {', '.join(missing)}).",
            field="header",
            rule="required",
        )
    reader.fieldnames = header
    try:
        return _keys_of(reader)
    except csv.Error as broken:
        raise InvalidInput(f"The file is not CSV: {broken}.", field="body", rule="csv") from None


def _keys_of(reader: csv.DictReader[str]) -> list[RecordKey]:
    keys: list[RecordKey] = []
    errors: list[dict[str, Any]] = []
    for count, row in enumerate(reader, start=1):
        if count > MAX_WITHDRAWN_RECORDS:
            raise InvalidInput(
                f"A withdrawal names at most {MAX_WITHDRAWN_RECORDS} records.",
                field="body",
                rule="max_rows",
            )
        try:
            key = _KEY_ROW.validate_python({f: (row.get(f) or "").strip() for f in _KEY_FIELDS})
        except ValidationError as invalid:
            if len(errors) < REPORTED_REJECTIONS:
                errors += [
                    {
                        "line": count + 1,
                        "field": str(error["loc"][0]),
                        "rule": error["type"],
                        "message": error["msg"],
                    }
                    for error in invalid.errors()
                ]
            continue
        keys.append(RecordKey(key.finess, key.source, key.source_id))
    if errors:
        raise InvalidRows(
            f"{len(errors)} field(s) of the file are invalid: nothing was withdrawn.",
            errors=errors[:REPORTED_REJECTIONS],
        )
    if not keys:
        raise InvalidInput("The file names no record.", field="body", rule="min_rows")
    return keys


def _withdrawal_read(result: Withdrawal) -> WithdrawalRead:
    return WithdrawalRead(
        requested=result.requested,
        withdrawn=result.withdrawn,
        absent=result.absent,
        months=result.months,
        sources=result.sources,
    )


@router.post(
    "/imports",
    status_code=201,
    response_model=ImportReport,
    summary="Import a CSV or NDJSON file of records",
    responses={
        413: {
            "description": "The file exceeds the upload limit, or once decompressed a limit"
            " of bytes, rows or line length (`field`, `limit`)."
        },
        415: {"description": "Not a CSV or NDJSON body, or an unsupported Content-Encoding."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def post_import(
    request: Request,
    response: Response,
    principal: Writer,
    on_error: OnErrorQuery = OnError.REJECT_FILE,
    filename: Annotated[Printable | None, Query(max_length=200)] = None,
    complete_up_to: Annotated[IsoDate | None, Query(description=COMPLETE_UP_TO)] = None,
) -> ImportReport:
    """The body is the file itself, streamed into PostgreSQL as it arrives.

    CSV: a header line names the fields (any order, `,` or `;`), one record per line.
    NDJSON: one JSON object per line. `Content-Encoding: gzip` is accepted.
    """
    declared = declared_day(complete_up_to)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    chunks: AsyncIterator[bytes] = request.stream()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        chunks = gunzip(chunks)
    elif encoding not in ("identity", ""):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported (gzip is).")
    if media in _CSV_TYPES:
        file_format = ImportFormat.CSV
    elif media in _NDJSON_TYPES:
        file_format = ImportFormat.NDJSON
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not an import format: send text/csv or"
            " application/x-ndjson.",
            accepted=[*_CSV_TYPES[:1], *_NDJSON_TYPES[:1]],
        )
    settings: Settings = request.app.state.settings
    limits = ImportLimits(
        settings.import_max_bytes, settings.import_max_rows, settings.import_max_line_bytes
    )
    csv_file = file_format is ImportFormat.CSV
    chunks = bounded(chunks, limits, header_lines=1 if csv_file else 0)
    stager = CsvStager(chunks) if csv_file else NdjsonStager(chunks)
    return await _import(
        request,
        response,
        principal,
        stager,
        ImportRequest(file_format, on_error, filename, declared),
    )


async def _import(
    request: Request,
    response: Response,
    principal: Principal,
    stager: Stager,
    import_request: ImportRequest,
) -> ImportReport:
    file_format = import_request.format
    report = await run_import(
        database_of(request), request.app.state.settings, principal, stager, import_request
    )
    async with database_of(request).transaction() as session:
        rejections = (
            await session.scalars(
                select(ImportRejection)
                .where(ImportRejection.import_id == report.id)
                .order_by(ImportRejection.line)
                .limit(REPORTED_REJECTIONS)
            )
        ).all()
    body = ImportReport.model_validate(report).model_copy(
        update={"rejections": [RejectionRead.model_validate(r) for r in rejections]}
    )
    location = import_location(report.id)
    if report.status is ImportStatus.REJECTED:
        raise ImportRejected(
            report.detail or "The import was rejected.",
            import_id=str(report.id),
            import_url=location,
            errors=[_problem_entry(r, file_format) for r in body.rejections],
            rejected=report.rejected,
            received=report.received,
        )
    response.headers["Location"] = location
    return body


def _problem_entry(rejection: RejectionRead, file_format: ImportFormat) -> dict[str, Any]:
    if file_format is ImportFormat.JSON:
        field = f"records.{rejection.line}.{rejection.field}"
        return {"field": field, "rule": "invalid", "message": rejection.reason}
    return {
        "line": rejection.line,
        "field": rejection.field,
        "rule": "invalid",
        "message": rejection.reason,
    }


@router.get("/imports", response_model=Page[ImportRead], summary="The imports, newest first")
async def list_imports(
    session: SessionDep,
    principal: Reader,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ImportRead]:
    query = select(RecordImport).order_by(RecordImport.created_at.desc(), RecordImport.id.desc())
    query = query.where(readable_by(principal, RecordImport.establishments))
    if cursor is not None:
        after = decode_cursor(cursor, datetime, uuid.UUID)
        query = query.where(tuple_(RecordImport.created_at, RecordImport.id) < tuple_(*after))
    rows = (await session.scalars(query.limit(limit + 1))).all()
    return Page.of(rows, limit, key=lambda r: (r.created_at, r.id), read=ImportRead.model_validate)


async def _readable_import(
    session: AsyncSession, principal: Principal, import_id: uuid.UUID
) -> RecordImport:
    report = await session.get(RecordImport, import_id)
    if report is None or not may_read_import(principal, report):
        raise ImportNotFound(f"No import {import_id}.")  # another's: as if there were none
    return report


@router.get(
    "/imports/{import_id}",
    response_model=ImportReport,
    summary="An import's report",
    responses=NOT_FOUND,
)
async def get_import(import_id: uuid.UUID, session: SessionDep, principal: Reader) -> ImportReport:
    report = await _readable_import(session, principal, import_id)
    rejections = (
        await session.scalars(
            select(ImportRejection)
            .where(ImportRejection.import_id == import_id)
            .order_by(ImportRejection.line)
            .limit(REPORTED_REJECTIONS)
        )
    ).all()
    return ImportReport.model_validate(report).model_copy(
        update={"rejections": [RejectionRead.model_validate(r) for r in rejections]}
    )


REJECTION_COLUMNS = (
    Column("line", "Ligne", ColumnKind.INTEGER),
    Column("field", "Champ", ColumnKind.TEXT),
    Column("reason", "Motif", ColumnKind.TEXT, width=60),
    Column("source_id", "Identifiant source", ColumnKind.TEXT, width=20),
)


@router.get(
    "/imports/{import_id}/rejections",
    response_model=Page[RejectionRead],
    summary="An import's rejected rows (JSON, or a CSV or XLSX file)",
    responses={**EXPORT_RESPONSES, **NOT_FOUND},
)
async def get_rejections(
    import_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    fmt: ExportFormatDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Rows per page (JSON).")] = 1000,
    cursor: Cursor = None,
) -> Any:
    report = await _readable_import(session, principal, import_id)
    query = (
        select(ImportRejection)
        .where(ImportRejection.import_id == import_id)
        .order_by(ImportRejection.line)
    )
    if cursor is not None:
        (after,) = decode_cursor(cursor, int)
        query = query.where(ImportRejection.line > after)
    if fmt is not ExportFormat.JSON:
        # At most MAX_STORED_REJECTIONS rows are kept per import: read at once.
        rows = (await session.scalars(query)).all()
        table = Table(
            title="Rejets",
            columns=REJECTION_COLUMNS,
            rows=[(r.line, r.field, r.reason, r.source_id) for r in rows],
            metadata=[
                ("Import", str(report.id)),
                ("Fichier", report.filename),
                ("Reçu le", report.created_at),
                ("Lignes reçues", report.received),
                ("Lignes rejetées", report.rejected),
            ],
        )
        return await export_response(table, fmt, f"Rejets {import_id}")
    rows = (await session.scalars(query.limit(limit + 1))).all()
    return Page.of(rows, limit, key=lambda r: (r.line,), read=RejectionRead.model_validate)

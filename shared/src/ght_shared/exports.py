"""Tables as files: CSV the way French Excel reads it, and XLSX, streamed with flat memory.

Every table an API returns (a dashboard, monthly values, analytics, a million drill-down
records, an import's rejections) can also be downloaded. A route describes it once as a
:class:`Table` (columns, a few metadata lines such as the period, the scope and the day
the data is complete up to, and its rows as an async iterable) and answers
:func:`export_response` in the format the client asked for::

    @router.get("/stays", response_model=Page[StayRead], responses=EXPORT_RESPONSES)
    async def list_stays(..., fmt: ExportFormatDep) -> Any:
        if fmt is ExportFormat.JSON:
            return ...  # the route's own model, as before
        table = Table("Séjours", COLUMNS, rows=stay_rows(database, query), metadata=[...])
        return await export_response(table, fmt, filename_stem=f"Séjours {period}")

The format: ``?format=json|csv|xlsx`` wins, else the ``Accept`` header, else JSON
(:func:`export_format`). Routes take it as :data:`ExportFormatDep`: the query is typed
with :class:`ExportFormat`, so OpenAPI lists the choices and a wrong one is FastAPI's
422 naming ``format``; :func:`export_format` is the rule underneath, callable without
HTTP, and refuses an unknown text with :class:`~ght_shared.errors.InvalidInput`.

Rows are read while the response is sent, that is after the endpoint returned and its
``SessionDep`` was closed: a big table's rows come from a connection the row generator
opens itself (``async with database.engine.connect() as conn: result = await
conn.stream(query)``), and access is checked by the route before it answers.

The CSV (:func:`csv_chunks`) is what a French Excel opens with a double click: UTF-8
with a BOM, ``;`` between cells, decimal comma, dates ``DD/MM/YYYY``; text that a
spreadsheet would run as a formula gets a leading ``'`` (OWASP, CSV injection). It is
written in chunks of about :data:`CHUNK_SIZE` as rows arrive, so a million rows cost
no more memory than a hundred.

The XLSX (:func:`xlsx_chunks`) is written by XlsxWriter in ``constant_memory`` mode (one
row in memory at a time) to a private temporary directory, then streamed from disk; the
directory is removed however the export ends. An XLSX file is a zip whose index comes
last, so nothing can be sent before the last row is written: :func:`export_response`
waits for the first chunk before answering, so that a failure up to then (the query,
the whole XLSX) is an error response rather than a 200 with a broken file. Past Excel's
:data:`EXCEL_MAX_ROWS`, the sheet's last row says the rows that follow are missing
(:data:`TRUNCATED_NOTE`): the row count is unknown when the response starts, so this is
the honest way not to truncate silently. The CSV has no limit.

Times: an aware ``datetime`` is shown in Europe/Paris local time (the establishments'
clock; Excel has no time zones), a naive one as it is (it carries no zone to convert
from, and the platform's naive times are local ones).
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import xlsxwriter
from anyio import to_thread
from fastapi import Depends, Query, Request
from starlette.responses import StreamingResponse
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from ght_shared.errors import InvalidInput

Cell = str | int | float | Decimal | bool | date | datetime | None
"""One value of a table. Anything else (a UUID, an enum) is written as its text."""

CHUNK_SIZE = 64 * 1024
"""About how many bytes each chunk of a file holds (a CSV chunk may exceed it by its
last row): big enough that the per-chunk costs vanish, small enough to stay flat."""

EXCEL_MAX_ROWS = 1_048_576
"""Rows of an Excel sheet, metadata and header included."""
EXCEL_MAX_COLUMNS = 16_384

TRUNCATED_NOTE = (
    "Truncated: an Excel sheet holds at most 1 048 576 rows, so the rows from this one on "
    "are not in this file. Export as CSV to get them all."
)
"""The text of an XLSX sheet's last row when the table had more rows than Excel holds."""

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

try:
    # The establishments' clock, in which a person reads a time of day.
    LOCAL_TIME: tzinfo = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:  # an image without time zone data
    LOCAL_TIME = UTC

# A text starting with one of these is run as a formula by a spreadsheet (OWASP, "CSV
# Injection"); a leading ' makes it text.
_FORMULA_STARTS = frozenset("=+-@\t\r")


class ExportFormat(StrEnum):
    """What a table is answered as."""

    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"


class ColumnKind(StrEnum):
    """What a column holds: sets an XLSX column's width and its numbers' display.

    The cells' own types decide how they are written (a date as a date, a number as a
    number); ``PERCENT`` is a fraction (0.125) shown as 12.5 % in XLSX, and as the
    number itself in CSV.
    """

    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    PERCENT = "percent"
    DATE = "date"
    DATETIME = "datetime"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``key`` names the field it shows (see :func:`rows_from`), ``header``
    is the text of its header cell, ``width`` (in characters) overrides the XLSX width
    guessed from the header and the kind."""

    key: str
    header: str
    kind: ColumnKind = ColumnKind.TEXT
    width: float | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """A table to export: its sheet's title, columns, metadata and rows.

    ``metadata`` are the ``(label, value)`` lines above the header (period, scope, the
    day the data is complete up to); ``rows`` hold one cell per column, in the columns'
    order, and are read once: an async iterable (a database stream) or, for a small
    table already in memory, a plain one.
    """

    title: str
    columns: Sequence[Column]
    rows: AsyncIterable[Sequence[Cell]] | Iterable[Sequence[Cell]]
    metadata: Sequence[tuple[str, Cell]] = ()


_ACCEPTED_MEDIA = {
    "text/csv": ExportFormat.CSV,
    XLSX_MEDIA_TYPE: ExportFormat.XLSX,
    "application/json": ExportFormat.JSON,
}


def export_format(format_query: str | None, accept: str | None) -> ExportFormat:
    """The format a request asks for: its ``format`` query value if given, else the
    ``Accept`` media type of highest quality among CSV, XLSX and JSON (the first listed
    on a tie), else JSON (also for ``*/*`` and anything else).

    Raises :class:`InvalidInput` (422, field ``format``, rule ``one_of``) for a
    ``format`` that is none of :class:`ExportFormat`.
    """
    if format_query is not None:
        try:
            return ExportFormat(format_query)
        except ValueError:
            choices = ", ".join(f.value for f in ExportFormat)
            raise InvalidInput(
                f"Unknown export format: choose one of {choices}.",
                field="format",
                rule="one_of",
            ) from None
    chosen, best = ExportFormat.JSON, 0.0
    for entry in (accept or "").split(","):
        media, _, params = entry.partition(";")
        wanted = _ACCEPTED_MEDIA.get(media.strip().lower())
        if wanted is not None and (quality := _quality(params)) > best:
            chosen, best = wanted, quality
    return chosen


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)  # a NaN compares as no preference
            except ValueError:
                return 0.0
    return 1.0


FormatQuery = Annotated[
    ExportFormat | None,
    Query(
        alias="format",
        description="json, csv (French Excel: `;`, decimal comma) or xlsx; "
        "without it, the Accept header decides (JSON by default).",
    ),
]
"""The ``format`` query parameter of a route that exports a table."""


async def _requested_format(request: Request, fmt: FormatQuery = None) -> ExportFormat:
    # async: FastAPI would run a plain function in a worker thread.
    return export_format(fmt, request.headers.get("accept"))


ExportFormatDep = Annotated[ExportFormat, Depends(_requested_format)]
"""The format a request asks for (:func:`export_format` of its ``format`` query and
its ``Accept`` header); inject it into a route as ``fmt: ExportFormatDep``."""

EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The table: JSON, or a file with `format=csv|xlsx` or `Accept`.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
"""The ``responses`` of a route that exports a table, so OpenAPI lists its file types."""


async def rows_from(
    records: AsyncIterable[Any], columns: Sequence[Column]
) -> AsyncIterator[tuple[Any, ...]]:
    """The rows of ``records`` (mappings, database rows or objects such as ORM
    instances): each record's value of every column's ``key``, in the columns' order."""
    keys = [column.key for column in columns]
    async for record in records:
        if isinstance(record, Mapping):  # a dict, SQLAlchemy's RowMapping
            yield tuple(record[key] for key in keys)
        else:
            yield tuple(getattr(record, key) for key in keys)


# --- CSV ----------------------------------------------------------------------------

_CSV_CACHE_SIZE = 20_000
"""Distinct days (or hours) whose text one export remembers: a day column repeats."""


def _csv_text(text: str) -> str:
    if text[:1] in _FORMULA_STARTS:
        text = "'" + text
    # Quoted as RFC 4180 says, and as the csv module would: a quote doubled inside.
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if ";" in text or "\n" in text or "\r" in text:
        return '"' + text + '"'
    return text


def _csv_float(number: float) -> str:
    # Fifteen significant digits, as many as Excel keeps: 0.1 + 0.2 is 0.3.
    text = "%.15g" % number  # noqa: UP031 - the fastest of Python's number formats
    if len(text) > 12 or "e" in text or "n" in text:  # 12: room for ten decimals at most
        if "e" in text:
            if abs(number) >= 1:
                return format(Decimal(text), "f")  # 1e+20 -> 100000000000000000000
            text = ("%.10f" % number).rstrip("0").rstrip(".")  # noqa: UP031 - 1e-05 -> 0.00001
        elif "n" in text:
            return ""  # nan, inf: Excel knows no such number, the cell has no value
        elif (dot := text.find(".")) >= 0 and len(text) - dot > 11:
            text = ("%.10f" % number).rstrip("0").rstrip(".")  # noqa: UP031 - ten decimals
    return "0" if text == "-0" else text.replace(".", ",")


def _csv_decimal(number: Decimal) -> str:
    # A Decimal is exact (a numeric column): all its digits, none in exponent notation.
    text = str(number)
    if "E" in text or "N" in text or "n" in text:  # 1E+3, NaN, Infinity
        if not number.is_finite():
            return ""
        text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text.replace(".", ",")


def _csv_bool(flag: bool) -> str:
    # 1 and 0 read the same in every Excel language (VRAI/FAUX is French only) and sum.
    return "1" if flag else "0"


def _csv_date(day: date) -> str:
    # French Excel reads DD/MM/YYYY as a date; ISO 8601 it may keep as text.
    return "%02d/%02d/%04d" % (day.day, day.month, day.year)  # noqa: UP031


def _csv_datetime(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(LOCAL_TIME)
    return "%02d/%02d/%04d %02d:%02d:%02d" % (  # noqa: UP031
        moment.day,
        moment.month,
        moment.year,
        moment.hour,
        moment.minute,
        moment.second,
    )


@functools.cache
def _minutes_seconds() -> list[str]:
    """``MM:SS`` of each second of an hour: a look-up is cheaper than formatting."""
    return [f"{second // 60:02d}:{second % 60:02d}" for second in range(3600)]


class _CsvCells:
    """The CSV text of every kind of cell, with the caches of one export.

    Formatting a date or converting a time to Paris costs more than the rest of a row:
    a day's text is remembered, and so is the local ``DD/MM/YYYY HH:`` of each UTC hour
    (Paris is a whole number of hours from UTC since 1911, so minutes and seconds are
    the same on both clocks).
    """

    def __init__(self) -> None:
        self._days: dict[date, str] = {}
        self._hours: dict[float, str] = {}
        self._minutes_seconds = _minutes_seconds()
        self.of_type: dict[type, Callable[[Any], str]] = {
            str: _csv_text,
            int: str,
            float: _csv_float,
            type(None): {None: ""}.__getitem__,  # a lookup costs less than a call
            Decimal: _csv_decimal,
            bool: {True: "1", False: "0"}.__getitem__,  # as _csv_bool
            date: self.day,
            datetime: self.moment,
        }

    def cell(self, value: object) -> str:
        return self.of_type.get(type(value), self.other)(value)

    def day(self, day: date) -> str:
        text = self._days.get(day)
        if text is None:
            if len(self._days) >= _CSV_CACHE_SIZE:
                self._days.clear()
            text = self._days[day] = _csv_date(day)
        return text

    def moment(self, moment: datetime) -> str:
        if moment.tzinfo is None:
            return _csv_datetime(moment)
        seconds = moment.timestamp()
        hour = seconds // 3600
        prefix = self._hours.get(hour)
        if prefix is None:
            local = moment.astimezone(LOCAL_TIME)
            offset = local.utcoffset()
            if offset is None or offset.total_seconds() % 3600:
                return _csv_datetime(local)  # Paris mean time, before 1911
            if len(self._hours) >= _CSV_CACHE_SIZE:
                self._hours.clear()
            prefix = self._hours[hour] = _csv_datetime(local)[:14]  # DD/MM/YYYY HH:
        return prefix + self._minutes_seconds[int(seconds - hour * 3600)]

    def other(self, value: object) -> str:
        """A cell of a subclass of a cell type (an enum, a pandas timestamp) or of none."""
        if isinstance(value, bool):
            return _csv_bool(value)
        if isinstance(value, int):
            return str(int(value))
        if isinstance(value, float):
            return _csv_float(float(value))
        if isinstance(value, Decimal):
            return _csv_decimal(value)
        if isinstance(value, datetime):
            return _csv_datetime(value)
        if isinstance(value, date):
            return _csv_date(value)
        return _csv_text(str(value))


async def csv_chunks(table: Table) -> AsyncIterator[bytes]:
    """The table as a CSV for French Excel, in chunks of about :data:`CHUNK_SIZE` bytes.

    UTF-8 with a BOM (without it Excel reads ANSI), ``;`` between cells, CRLF line ends;
    the metadata lines (``label;value``) and an empty line when there is metadata, the
    header, the rows. Numbers have a decimal comma, no thousands separator and no
    exponent; a float shows at most 15 significant digits (Excel's precision) and ten
    decimals, a Decimal all its digits; booleans are ``1``/``0``; dates ``DD/MM/YYYY``
    and date-times ``DD/MM/YYYY HH:MM:SS`` (see the module on time zones); None, NaN and
    infinities are empty cells. A text starting with ``=``, ``+``, ``-``, ``@``, a tab
    or a carriage return gets a leading ``'``; numbers never do. A text holding ``;``,
    a quote or a line break is quoted (RFC 4180).

    The rows are read as the chunks are taken, and closed if the export stops early.
    """
    cells = _CsvCells()
    # Joined here rather than by the csv module: measured, its writer alone, given rows
    # already formatted, ran below the 150 000 rows/s a million-row export is given.
    # No "sep=;" line: Excel then ignores the BOM and reads the accents wrong.
    lines = [_csv_text(label) + ";" + cells.cell(value) for label, value in table.metadata]
    if lines:
        lines.append("")
    lines.append(";".join(_csv_text(column.header) for column in table.columns))
    lines[0] = "\ufeff" + lines[0]
    size = sum(map(len, lines))
    width = len(table.columns)
    text_of, other = cells.of_type.get, cells.other
    source = _rows(table.rows)
    try:
        # The work between two chunks is a few milliseconds: done in the event loop,
        # a thread would cost more than it frees.
        async for row in source:
            if len(row) != width:
                raise _misshapen(row, width)
            line = ";".join([text_of(type(cell), other)(cell) for cell in row])
            lines.append(line)
            size += len(line)
            if size >= CHUNK_SIZE:
                lines.append("")  # the last line's end
                yield "\r\n".join(lines).encode()
                lines, size = [], 0
    finally:
        await _close(source)
    if lines:
        lines.append("")
        yield "\r\n".join(lines).encode()


# --- XLSX ---------------------------------------------------------------------------

_SHEET_NAME_FORBIDDEN = re.compile(r"[\[\]:*?/\\\x00-\x1f\x7f]+")
_XLSX_BATCH_CELLS = 20_000
"""Cells written per thread hop: ~50 ms of work, so a cancelled export stops soon."""

_KIND_WIDTH = {
    ColumnKind.TEXT: 14.0,
    ColumnKind.INTEGER: 10.0,
    ColumnKind.NUMBER: 12.0,
    ColumnKind.PERCENT: 9.0,
    ColumnKind.DATE: 11.0,
    ColumnKind.DATETIME: 17.0,
}
_KIND_NUMBER_FORMAT = {
    ColumnKind.INTEGER: "#,##0",  # a French Excel shows 1 234 567
    ColumnKind.PERCENT: "0.0%",
}
_MAX_WIDTH = 60.0


def sheet_name(title: str) -> str:
    """``title`` as an Excel sheet name: at most 31 characters, none of ``[]:*?/\\``,
    no apostrophe at either end, not empty nor the reserved ``History``."""
    name = _SHEET_NAME_FORBIDDEN.sub("-", title).strip().strip("'")
    name = name[:31].strip().strip("'")
    return "Export" if not name or name.lower() == "history" else name


class _Sheet:
    """One workbook of one sheet written in row order (``constant_memory``), by one
    thread at a time."""

    def __init__(self, path: str, table: Table) -> None:
        self.book = xlsxwriter.Workbook(
            path,
            {
                "constant_memory": True,
                "tmpdir": os.path.dirname(path),  # its own temporary files go with ours
                "strings_to_formulas": False,
                "strings_to_numbers": False,
                "strings_to_urls": False,
                "use_zip64": True,  # a wide million-row sheet passes 4 GB of XML
            },
        )
        self.sheet: Worksheet = self.book.add_worksheet(sheet_name(table.title))
        self.bold = bold = self.book.add_format({"bold": True})
        self.day = self.book.add_format({"num_format": "dd/mm/yyyy"})
        self.moment = self.book.add_format({"num_format": "dd/mm/yyyy hh:mm"})
        # A text cell is never a formula; the prefix keeps it text when a person edits it.
        self.guarded = self.book.add_format({"quote_prefix": True})
        columns = table.columns
        self.number_formats: list[Format | None] = [
            self.book.add_format({"num_format": _KIND_NUMBER_FORMAT[c.kind]})
            if c.kind in _KIND_NUMBER_FORMAT
            else None
            for c in columns
        ]
        # constant_memory writes each row once: the widths are set before any row.
        label_width = max((len(label) + 2 for label, _ in table.metadata), default=0.0)
        for index, column in enumerate(columns):
            width = column.width or max(len(column.header) + 2, _KIND_WIDTH[column.kind])
            if index == 0:
                width = max(width, label_width)
            self.sheet.set_column(index, index, min(width, _MAX_WIDTH))
        row = 0
        for label, value in table.metadata:
            self.sheet.write_string(row, 0, label, bold)
            self._write(row, 1, value, None)
            row += 1
        if table.metadata:
            row += 1
        for index, column in enumerate(columns):
            self.sheet.write_string(row, index, column.header, bold)
        self.sheet.freeze_panes(row + 1, 0)
        self.header_row = row
        self.next_row = self.data_end = row + 1

    @property
    def room(self) -> int:
        """How many more rows the sheet holds."""
        return EXCEL_MAX_ROWS - self.next_row

    def write_rows(self, rows: Sequence[Sequence[Cell]]) -> None:
        write, formats, row = self._write, self.number_formats, self.next_row
        for cells in rows:
            for index, value in enumerate(cells):
                write(row, index, value, formats[index])
            row += 1
        self.next_row = self.data_end = row

    def write_note(self, text: str) -> None:
        self.sheet.write_string(self.next_row, 0, text, self.bold)
        self.next_row += 1

    def close(self) -> None:
        last_column = len(self.number_formats) - 1
        if last_column >= 0:
            self.sheet.autofilter(self.header_row, 0, self.data_end - 1, last_column)
        self.book.close()

    def _write(self, row: int, col: int, value: object, number_format: Format | None) -> None:
        if isinstance(value, str):
            # Longer than Excel's 32 767 characters, XlsxWriter cuts the text.
            guarded = self.guarded if value[:1] in _FORMULA_STARTS else None
            self.sheet.write_string(row, col, value, guarded)
        elif value is None:
            pass
        elif isinstance(value, bool):
            self.sheet.write_boolean(row, col, value)
        elif isinstance(value, int):
            self.sheet.write_number(row, col, value, number_format)
        elif isinstance(value, float | Decimal):
            if math.isfinite(value):  # NaN, infinities: no value
                self.sheet.write_number(row, col, float(value), number_format)
        elif isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(LOCAL_TIME).replace(tzinfo=None)
            self.sheet.write_datetime(row, col, value, self.moment)
        elif isinstance(value, date):
            self.sheet.write_datetime(row, col, value, self.day)
        else:
            self._write(row, col, str(value), number_format)


def _open_binary(path: str) -> BinaryIO:
    return open(path, "rb")  # closed by the caller


async def xlsx_chunks(table: Table) -> AsyncIterator[bytes]:
    """The table as an XLSX workbook of one sheet, in chunks of :data:`CHUNK_SIZE` bytes.

    The sheet is named after the table's title (:func:`sheet_name`); the metadata lines
    come first (label in bold, value typed), an empty row, the header in bold with the
    panes frozen below it and an autofilter, then the rows. Numbers and booleans are
    Excel's own, dates and date-times real Excel dates shown ``dd/mm/yyyy`` and
    ``dd/mm/yyyy hh:mm`` (see the module on time zones), text is always text (never a
    formula, a number or a link), None, NaN and infinities are empty cells. Rows beyond
    :data:`EXCEL_MAX_ROWS` are not written: the last row is :data:`TRUNCATED_NOTE`.

    The first chunk comes once the last row is written (a zip's index is at its end).
    The workbook and XlsxWriter's own temporary files live in a private directory,
    removed when the export ends, completes, fails or is cancelled.
    """
    if len(table.columns) > EXCEL_MAX_COLUMNS:
        raise ValueError(f"an Excel sheet holds at most {EXCEL_MAX_COLUMNS} columns")
    width = len(table.columns)
    batch_rows = max(1, _XLSX_BATCH_CELLS // max(width, 1))
    workdir = tempfile.mkdtemp(prefix="ght-export-")
    path = os.path.join(workdir, "export.xlsx")
    source = _rows(table.rows)
    try:
        # XlsxWriter is CPU work on files: it runs in a worker thread, so the event loop
        # keeps serving while a big sheet is written (the GIL still hands it back every
        # few milliseconds). The rows are read here, in the loop, where their database
        # stream lives. A worker call is not abandoned when the export is cancelled:
        # the cancellation waits for the batch, so the directory is removed only once
        # no thread writes in it any more.
        sheet = await to_thread.run_sync(_Sheet, path, table)
        room = sheet.room
        batch: list[Sequence[Cell]] = []
        truncated = False
        async for row in source:
            if len(row) != width:
                raise _misshapen(row, width)
            if room == 1 and await anext(source, None) is not None:
                # One row left and more than one to write: the last one says so.
                truncated = True
                break
            batch.append(row)
            room -= 1
            if len(batch) >= batch_rows:
                await to_thread.run_sync(sheet.write_rows, batch)
                batch = []
        await to_thread.run_sync(sheet.write_rows, batch)
        if truncated:
            await to_thread.run_sync(sheet.write_note, TRUNCATED_NOTE)
        await _close(source)
        await to_thread.run_sync(sheet.close)
        file = await to_thread.run_sync(_open_binary, path)
        try:
            while chunk := await to_thread.run_sync(file.read, CHUNK_SIZE):
                yield chunk
        finally:
            file.close()
    finally:
        try:
            await _close(source)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


# --- Response -----------------------------------------------------------------------


async def export_response(table: Table, fmt: ExportFormat, filename_stem: str) -> StreamingResponse:
    """The download of ``table`` as CSV or XLSX, named ``filename_stem`` plus the suffix.

    Awaited: it takes the file's first chunk before answering, so that a failure until
    then (the query, the whole XLSX) is the route's error response, not a 200 with a
    broken file; a failure after it cuts the download short. JSON is not answered
    here: the route returns its own model.
    """
    chunks: AsyncIterator[bytes]
    if fmt is ExportFormat.CSV:
        chunks, media_type, suffix = csv_chunks(table), CSV_MEDIA_TYPE, ".csv"
    elif fmt is ExportFormat.XLSX:
        chunks, media_type, suffix = xlsx_chunks(table), XLSX_MEDIA_TYPE, ".xlsx"
    else:
        raise ValueError(f"export_response writes CSV or XLSX, not {fmt}")
    first = await anext(chunks, b"")
    return StreamingResponse(
        _prepend(first, chunks),
        media_type=media_type,
        headers={
            "Content-Disposition": content_disposition(filename_stem, suffix),
            # A table is personal health data or steering figures: no cache keeps it.
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await _close(rest)


_UNSAFE_IN_NAME = re.compile(r"[^\w .()-]+")  # \w: letters and digits of any script
_NOT_ASCII_SAFE = re.compile(r"[^A-Za-z0-9 _.()-]+")


def content_disposition(filename_stem: str, suffix: str) -> str:
    """``attachment`` with the file name ``filename_stem + suffix`` (RFC 6266): plain
    ASCII in ``filename`` (accents dropped) for old clients, UTF-8 percent-encoded in
    ``filename*`` (RFC 8187). Anything but letters, digits, space and ``_.()-`` becomes
    ``-``; an empty name becomes ``export``."""
    readable = _clean_name(_UNSAFE_IN_NAME.sub("-", unicodedata.normalize("NFC", filename_stem)))
    folded = "".join(
        c for c in unicodedata.normalize("NFKD", readable) if not unicodedata.combining(c)
    )
    plain = _clean_name(_NOT_ASCII_SAFE.sub("-", folded))
    return (
        f'attachment; filename="{plain}{suffix}"; '
        f"filename*=UTF-8''{quote(readable + suffix, safe='')}"
    )


def _clean_name(name: str) -> str:
    # No leading dot (a hidden file), no trailing dot or space (refused by Windows).
    name = re.sub(r"\s+", " ", name)[:100].strip(" .-")
    return name or "export"


# --- Rows ---------------------------------------------------------------------------


def _rows(rows: AsyncIterable[Sequence[Cell]] | Iterable[Sequence[Cell]]) -> AsyncIterator[Any]:
    if isinstance(rows, AsyncIterable):
        return aiter(rows)
    return _async_rows(rows)


async def _async_rows(rows: Iterable[Sequence[Cell]]) -> AsyncIterator[Sequence[Cell]]:
    for row in rows:
        yield row


_CLOSE_TIMEOUT_S = 5.0


async def _close(source: AsyncIterator[Any]) -> None:
    """Close a row source left before its end: its database stream is released now,
    not when it is garbage collected.

    Shielded: a client that goes away cancels the response's task group, and in a
    cancelled scope every await fails at once, so the source could not close its
    cursor; bounded, so a database that no longer answers does not hold the task.
    """
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with anyio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
            await aclose()


def _misshapen(row: Sequence[Any], width: int) -> ValueError:
    return ValueError(f"a row of {len(row)} cells in a table of {width} columns")

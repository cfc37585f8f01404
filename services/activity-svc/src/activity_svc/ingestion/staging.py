"""Getting an import's rows into the staging table, streamed, whatever their format.

- CSV goes straight to PostgreSQL's ``COPY`` as it arrives (the header is read here to
  name the columns); nothing is parsed in Python.
- NDJSON lines and JSON batches become rows here, with ``COPY`` in binary form; a line
  that is not a JSON object of known fields becomes a row carrying its parse error, so
  it is rejected with its line number like any other bad row.

Every field is staged as text: typing and checking happen set-wise in the merge.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import orjson

from activity_svc.errors import InvalidInput
from activity_svc.ingestion.fields import FIELDS, IDENTITY_FIELDS

_FIELD_SET = frozenset(FIELDS)
_MAX_HEADER_BYTES = 64 * 1024
_ROW_COLUMNS = ["line", "parse_error", *FIELDS]
MAX_LINE_BYTES = 1_048_576
"""Longest NDJSON line: a record is a few hundred bytes."""


class MalformedFile(Exception):
    """The file's structure is broken (not its values): ``COPY`` stopped at ``line``."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class Stager(Protocol):
    async def copy_into(self, conn: asyncpg.Connection, table: str, timeout: float) -> int:
        """Copy the rows into the staging ``table``; return how many."""
        ...


async def gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Decompress a gzip stream chunk by chunk (``Content-Encoding: gzip``)."""
    decompressor = zlib.decompressobj(wbits=31)
    try:
        async for chunk in chunks:
            out = decompressor.decompress(chunk)
            if out:
                yield out
        tail = decompressor.flush()
    except zlib.error as exc:
        raise MalformedFile(f"The body is not valid gzip: {exc}.", None) from exc
    if not decompressor.eof:
        raise MalformedFile("The gzip stream is truncated.", None)
    if tail:
        yield tail


@dataclass
class CsvStager:
    """A CSV file: its header names the fields (any order, ``,`` or ``;`` separated)."""

    chunks: AsyncIterator[bytes]

    async def copy_into(self, conn: asyncpg.Connection, table: str, timeout: float) -> int:
        head = b""
        async for chunk in self.chunks:
            head += chunk
            if b"\n" in head or len(head) > _MAX_HEADER_BYTES:
                break
        header_line, _, _ = head.partition(b"\n")
        columns, delimiter = parse_header(header_line)
        try:
            status = await conn.copy_to_table(
                table,
                source=_prepend(head, self.chunks),
                columns=columns,
                format="csv",
                header=True,
                delimiter=delimiter,
                encoding="UTF8",
                timeout=timeout,
            )
        except (asyncpg.DataError, asyncpg.exceptions.ProgramLimitExceededError) as exc:
            raise MalformedFile(_copy_message(exc), _copy_line(exc)) from exc
        return _copied(status)


def parse_header(raw: bytes) -> tuple[list[str], str]:
    """The staging columns named by a CSV header line, and the file's delimiter."""
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise _bad_header("The header line is not UTF-8 text.") from exc
    if not text.strip():
        raise _bad_header("The file is empty: its first line must name the fields.")
    delimiter = ";" if text.count(";") > text.count(",") else ","
    names = [name.strip().lower() for name in next(csv.reader([text], delimiter=delimiter))]
    unknown = [name for name in names if name not in _FIELD_SET]
    if unknown:
        raise _bad_header(
            f"Unknown column(s) {', '.join(repr(n[:40]) for n in unknown[:5])}; the known"
            f" fields are: {', '.join(FIELDS)}.",
            rule="known_fields",
        )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise _bad_header(f"Column(s) named twice: {', '.join(duplicated)}.", rule="unique")
    missing = [name for name in IDENTITY_FIELDS if name not in names]
    if missing:
        raise _bad_header(
            f"Missing column(s) {', '.join(missing)}: every record needs"
            f" {', '.join(IDENTITY_FIELDS)}.",
            rule="required_fields",
        )
    return names, delimiter


def _bad_header(detail: str, rule: str = "header") -> InvalidInput:
    return InvalidInput(detail, field="header", rule=rule, line=1)


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head.removeprefix(b"\xef\xbb\xbf")
    async for chunk in rest:
        yield chunk


def _copy_line(exc: Exception) -> int | None:
    # PostgreSQL puts "COPY import_staging, line 12, column x: ..." in the error context.
    where = getattr(exc, "context", None) or getattr(exc, "where", None) or ""
    marker = "line "
    at = where.find(marker)
    if at < 0:
        return None
    digits = ""
    for char in where[at + len(marker) :]:
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def _copy_message(exc: Exception) -> str:
    message = str(exc)
    if "extra data after last expected column" in message:
        return "A row has more fields than the header."
    if "missing data for column" in message:
        return "A row has fewer fields than the header."
    if "unterminated CSV quoted field" in message:
        return "A quoted field is never closed."
    if "invalid byte sequence" in message:
        return "The file is not UTF-8 text."
    return message


@dataclass
class NdjsonStager:
    """An NDJSON file: one JSON object per line, keys among the record fields."""

    chunks: AsyncIterator[bytes]

    async def copy_into(self, conn: asyncpg.Connection, table: str, timeout: float) -> int:
        return _copied(
            await conn.copy_records_to_table(
                table, records=self._rows(), columns=_ROW_COLUMNS, timeout=timeout
            )
        )

    async def _rows(self) -> AsyncIterator[tuple[Any, ...]]:
        # Each chunk is scanned once; a line longer than MAX_LINE_BYTES is not kept whole
        # (a file without newlines must not fill the memory): it is a rejected row.
        line = 0
        pending = bytearray()
        overflow = False
        async for chunk in self.chunks:
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                line += 1
                if overflow:
                    yield _error_row(line, f"line:is longer than {MAX_LINE_BYTES} bytes")
                else:
                    pending += chunk[start:end]
                    if pending.strip():
                        yield ndjson_row(line, bytes(pending))
                pending.clear()
                overflow = False
                start = end + 1
            if not overflow:
                pending += chunk[start:]
                if len(pending) > MAX_LINE_BYTES:
                    overflow = True
                    pending.clear()
        if overflow:
            yield _error_row(line + 1, f"line:is longer than {MAX_LINE_BYTES} bytes")
        elif pending.strip():
            yield ndjson_row(line + 1, bytes(pending))


def ndjson_row(line: int, raw: bytes) -> tuple[Any, ...]:
    """The staging row of one NDJSON line (a row carrying its error when unreadable)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error_row(line, f"line:is not valid JSON ({exc})")
    if not isinstance(value, dict):
        return _error_row(line, "line:must be a JSON object")
    return record_row(line, value)


def record_row(line: int, record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The staging row of one record given as a mapping of field names to JSON values."""
    values: dict[str, str | None] = {}
    for key, value in record.items():
        if key not in _FIELD_SET:
            return _error_row(line, f"{str(key)[:40]}:is not a field of a record")
        if value is None:
            values[key] = None
        elif isinstance(value, str) and "\x00" in value:
            # PostgreSQL text cannot hold it: a rejected row, not a failed import.
            return _error_row(line, f"{key}:contains a NUL character")
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            values[key] = str(value)
        else:
            return _error_row(line, f"{key}:must be a string, a number or a boolean")
    return (line, None, *(values.get(name) for name in FIELDS))


def _error_row(line: int, error: str) -> tuple[Any, ...]:
    return (line, error, *(None for _ in FIELDS))


@dataclass
class RecordsStager:
    """A JSON batch already checked by its request model (``line`` = index in the batch)."""

    records: Iterable[Mapping[str, Any]]

    async def copy_into(self, conn: asyncpg.Connection, table: str, timeout: float) -> int:
        rows = [record_row(index, record) for index, record in enumerate(self.records)]
        return _copied(
            await conn.copy_records_to_table(
                table, records=rows, columns=_ROW_COLUMNS, timeout=timeout
            )
        )


def _copied(status: str) -> int:
    """The row count of a ``COPY n`` command status."""
    return int(status.rsplit(" ", 1)[-1])

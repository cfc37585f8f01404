"""Getting an import's rows into the staging table, streamed, whatever their format.

- CSV goes straight to PostgreSQL's ``COPY`` as it arrives (the header is read here to
  name the columns); nothing is parsed in Python.
- NDJSON lines and JSON batches become rows here, with ``COPY`` in binary form; a line
  that is not a JSON object of known fields becomes a row carrying its parse error, so
  it is rejected with its line number like any other bad row.

Every field is staged as text: typing and checking happen set-wise in the merge.

Before either, a file's bytes pass :func:`bounded` (after :func:`gunzip` when
compressed): in pieces of at most ``PIECE_BYTES``, counted against the import's limits,
with a turn of the event loop between two pieces, so that neither a small body that
expands a thousandfold nor a large file holds the memory or the loop.
"""

from __future__ import annotations

import asyncio
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
_GZIP_MAGIC = b"\x1f\x8b"
PIECE_BYTES = 64 * 1024
"""The most of a file decompressed, checked or parsed between two turns of the event loop."""


class MalformedFile(Exception):
    """The file's structure is broken (not its values): ``COPY`` stopped at ``line``."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class LimitExceeded(MalformedFile):
    """The file goes beyond one of its import's limits: ``field`` (``bytes``, ``rows`` or
    ``line``) exceeds ``limit``; ``value`` is how far reading got (more than ``limit``)."""

    def __init__(self, message: str, line: int, *, field: str, limit: int, value: int) -> None:
        super().__init__(message, line)
        self.field = field
        self.limit = limit
        self.value = value


@dataclass(frozen=True)
class ImportLimits:
    """What one file may hold once decompressed (settings ``import_max_*``)."""

    max_bytes: int
    max_rows: int
    max_line_bytes: int


class Stager(Protocol):
    async def copy_into(self, conn: asyncpg.Connection, table: str, timeout: float) -> int:
        """Copy the rows into the staging ``table``; return how many."""
        ...


async def gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Decompress a gzip stream (``Content-Encoding: gzip``), every member of it (as
    ``cat a.gz b.gz`` writes), in pieces of at most ``PIECE_BYTES``.

    Data after the last member that is not gzip, and a truncated member, break the file.
    """
    decompressor = zlib.decompressobj(wbits=31)
    member = 1
    async for chunk in chunks:
        data = chunk
        while data:
            if decompressor.eof:  # a member ended and more follows: the next member
                if not _GZIP_MAGIC.startswith(data[:2]):
                    raise MalformedFile(
                        f"The data after gzip member {member} is not gzip: a body holds"
                        " gzip members only, with nothing after the last.",
                        None,
                    )
                decompressor = zlib.decompressobj(wbits=31)
                member += 1
            try:
                # Bounded: one small chunk of a bomb must not expand whole into memory.
                out = decompressor.decompress(data, PIECE_BYTES)
            except zlib.error as exc:
                which = "The body" if member == 1 else f"Gzip member {member}"
                raise MalformedFile(f"{which} is not valid gzip: {exc}.", None) from exc
            data = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
            if out:
                yield out
    # What the decompressor still holds once all the input is in: a few bytes at most.
    tail = decompressor.flush()
    if not decompressor.eof:
        raise MalformedFile(f"The gzip stream is truncated (in member {member}).", None)
    if tail:
        yield tail


async def bounded(
    chunks: AsyncIterator[bytes], limits: ImportLimits, header_lines: int
) -> AsyncIterator[bytes]:
    """The file's bytes in pieces of at most ``PIECE_BYTES``, checked against ``limits``
    as they pass (rows are lines, the first ``header_lines`` aside); raises
    :class:`LimitExceeded` at the first piece beyond one. Between two pieces the event
    loop serves other requests: what the stager does with one piece is the longest it
    waits.
    """
    size = 0
    lines = 0  # complete lines before the current piece
    line_start = 0  # where the current line starts, in the file
    async for chunk in chunks:
        for at in range(0, len(chunk), PIECE_BYTES):
            piece = chunk[at : at + PIECE_BYTES] if len(chunk) > PIECE_BYTES else chunk
            base, size = size, size + len(piece)
            if size > limits.max_bytes:
                raise LimitExceeded(
                    f"The file holds more than {limits.max_bytes} bytes (decompressed), the"
                    " limit of one import: split it.",
                    lines + 1,
                    field="bytes",
                    limit=limits.max_bytes,
                    value=size,
                )
            line_start = _check_lines(piece, base, line_start, lines, limits.max_line_bytes)
            lines += piece.count(b"\n")
            _check_rows(lines - header_lines, limits.max_rows, lines)
            yield piece
            await asyncio.sleep(0)
    if size > line_start:  # a last line without its line end
        _check_rows(lines + 1 - header_lines, limits.max_rows, lines + 1)


def _check_lines(piece: bytes, base: int, line_start: int, lines: int, longest: int) -> int:
    """Where the last line begun in ``piece`` starts (in the file), once every line that
    ``piece`` ends or extends is found no longer than ``longest`` bytes."""
    start = line_start - base  # in the piece; negative if the line began before it
    while True:
        # Each line ending in the window is short enough: jump past the last one.
        window_end = start + longest + 1
        newline = piece.rfind(b"\n", max(start, 0), window_end)
        if newline >= 0:
            start = newline + 1
        elif window_end <= len(piece):
            number = lines + piece.count(b"\n", 0, max(start, 0)) + 1
            raise LimitExceeded(
                f"Line {number} is longer than {longest} bytes, the limit of a line: a"
                " record takes a few hundred.",
                number,
                field="line",
                limit=longest,
                value=len(piece) - start,
            )
        else:
            return base + start


def _check_rows(rows: int, most: int, line: int) -> None:
    if rows > most:
        raise LimitExceeded(
            f"The file holds more than {most} rows, the limit of one import: split it.",
            line,
            field="rows",
            limit=most,
            value=rows,
        )


class _Broken:
    """Ends a stream at its first :class:`MalformedFile`, raised once ``COPY`` has returned.

    Raised inside ``COPY``, asyncpg would cancel the statement; when the server has failed
    it already (a bad row read before the limit was reached), the cancellation never
    completes and the connection's next command waits for it until it times out.
    """

    def __init__(self) -> None:
        self.error: MalformedFile | None = None

    async def ending(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except MalformedFile as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error


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
        broken = _Broken()
        try:
            status = await conn.copy_to_table(
                table,
                source=broken.ending(_prepend(head, self.chunks)),
                columns=columns,
                format="csv",
                header=True,
                delimiter=delimiter,
                encoding="UTF8",
                timeout=timeout,
            )
        except (asyncpg.DataError, asyncpg.exceptions.ProgramLimitExceededError) as exc:
            broken.check()  # the server read a row cut short by the file's end
            raise MalformedFile(_copy_message(exc), _copy_line(exc)) from exc
        broken.check()
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
        broken = _Broken()
        status = await conn.copy_records_to_table(
            table,
            records=_ndjson_rows(broken.ending(self.chunks)),
            columns=_ROW_COLUMNS,
            timeout=timeout,
        )
        broken.check()
        return _copied(status)


async def _ndjson_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[Any, ...]]:
    # Each chunk is scanned once; ``bounded`` keeps a line shorter than its limit.
    line = 0
    pending = bytearray()
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            line += 1
            pending += chunk[start:end]
            if pending.strip():
                yield ndjson_row(line, bytes(pending))
            pending.clear()
            start = end + 1
        pending += chunk[start:]
    if pending.strip():
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

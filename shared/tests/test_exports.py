"""Tables download as CSV for French Excel and as XLSX, streamed, typed and safe to open."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import tempfile
import zipfile
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import FastAPI

from ght_shared import exports
from ght_shared.errors import InvalidInput, install_error_handlers
from ght_shared.exports import (
    CHUNK_SIZE,
    CSV_MEDIA_TYPE,
    EXPORT_RESPONSES,
    TRUNCATED_NOTE,
    XLSX_MEDIA_TYPE,
    Cell,
    Column,
    ColumnKind,
    ExportFormat,
    ExportFormatDep,
    Table,
    content_disposition,
    csv_chunks,
    export_format,
    export_response,
    rows_from,
    sheet_name,
    xlsx_chunks,
)

BOM = b"\xef\xbb\xbf"
NS = {"x": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
COLUMNS = [
    Column("unit", "Unité"),
    Column("stays", "Séjours", ColumnKind.INTEGER),
    Column("rate", "Taux", ColumnKind.PERCENT),
    Column("day", "Jour", ColumnKind.DATE),
    Column("at", "Reçu le", ColumnKind.DATETIME),
]
METADATA: list[tuple[str, Cell]] = [
    ("Période", "mars 2026"),
    ("Périmètre", "CHU Nord; pôle Femme-Enfant"),
    ("Données complètes au", date(2026, 3, 31)),
]


async def _stream(rows: Iterable[Sequence[Cell]]) -> AsyncIterator[Sequence[Cell]]:
    for row in rows:
        yield row


def _table(
    rows: Iterable[Sequence[Cell]],
    columns: Sequence[Column] = COLUMNS,
    metadata: Sequence[tuple[str, Cell]] = METADATA,
) -> Table:
    return Table("Activité", columns, _stream(rows), metadata)


async def _bytes(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def _parse_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(BOM)
    return list(csv.reader(io.StringIO(data[len(BOM) :].decode(), newline=""), delimiter=";"))


async def _csv_cells(*cells: Cell) -> list[str]:
    """The CSV text of each of ``cells``, written as one row."""
    columns = [Column(f"c{i}", f"C{i}") for i in range(len(cells))]
    lines = _parse_csv(await _bytes(csv_chunks(_table([cells], columns, metadata=()))))
    assert len(lines) == 2
    return lines[1]


# --- CSV ----------------------------------------------------------------------------


async def test_a_csv_starts_with_a_bom_then_the_metadata_an_empty_line_and_the_header() -> None:
    data = await _bytes(csv_chunks(_table([("Maternité", 12, 0.125, None, None)])))

    assert data.startswith(BOM + "Période;mars 2026\r\n".encode())
    assert _parse_csv(data) == [
        ["Période", "mars 2026"],
        ["Périmètre", "CHU Nord; pôle Femme-Enfant"],
        ["Données complètes au", "31/03/2026"],
        [],
        ["Unité", "Séjours", "Taux", "Jour", "Reçu le"],
        ["Maternité", "12", "0,125", "", ""],
    ]
    assert data.endswith(b"Maternit\xc3\xa9;12;0,125;;\r\n")


async def test_a_csv_without_metadata_starts_with_its_header() -> None:
    data = await _bytes(csv_chunks(_table([], metadata=())))

    assert data == BOM + "Unité;Séjours;Taux;Jour;Reçu le\r\n".encode()


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1234.5, "1234,5"),
        (0.00001, "0,00001"),
        (1e20, "100000000000000000000"),
        (1.2345678901234567e19, "12345678901234600000"),  # Excel's 15 significant digits
        (0.1 + 0.2, "0,3"),
        (1 / 7, "0,1428571429"),  # ten decimals at most
        (1.5e-12, "0"),
        (-0.0, "0"),
        (3.0, "3"),
        (-3.5, "-3,5"),
        (123456789.125, "123456789,125"),
        (123456789012345.67, "123456789012346"),
        (float("nan"), ""),
        (float("inf"), ""),
        (42, "42"),
        (-3, "-3"),
        (10**20, "100000000000000000000"),
        (Decimal("12.50"), "12,5"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0.0000001"), "0,0000001"),
        (Decimal("-0.00"), "0"),
        (Decimal("NaN"), ""),
        (True, "1"),
        (False, "0"),
    ],
)
async def test_a_number_has_a_decimal_comma_no_thousands_separator_and_no_exponent(
    number: Cell, text: str
) -> None:
    assert await _csv_cells(number, "next") == [text, "next"]


async def test_dates_are_day_month_year_and_aware_times_are_read_on_the_paris_clock() -> None:
    cells = await _csv_cells(
        date(2026, 3, 1),
        datetime(2026, 3, 2, 8, 15, tzinfo=UTC),
        datetime(2026, 7, 1, 12, 0, 5, 999_999, tzinfo=UTC),  # summer time; no rounding up
        datetime(2026, 3, 2, 13, 45, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC),  # the hour before the clocks change
        datetime(2026, 3, 29, 1, 0, 0, tzinfo=UTC),
        datetime(1905, 6, 1, 12, 0, tzinfo=UTC),  # Paris mean time, 9 min 21 s from UTC
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(2026, 3, 2, 8, 15),  # naive: no zone to convert from
        None,
    )

    assert cells == [
        "01/03/2026",
        "02/03/2026 09:15:00",
        "01/07/2026 14:00:05",
        "02/03/2026 09:15:30",
        "29/03/2026 01:59:59",
        "29/03/2026 03:00:00",
        "01/06/1905 12:09:21",
        "01/01/1970 00:59:59",
        "02/03/2026 08:15:00",
        "",
    ]


async def test_the_same_day_and_hour_read_the_same_in_every_row() -> None:
    moments = [datetime(2026, 3, 2, 8, minute, tzinfo=UTC) for minute in (0, 7, 59)]
    rows = [("u", 1, 0.5, date(2026, 3, 1), moment) for moment in moments]

    lines = _parse_csv(await _bytes(csv_chunks(_table(rows, metadata=()))))

    assert [line[3:] for line in lines[1:]] == [
        ["01/03/2026", "02/03/2026 09:00:00"],
        ["01/03/2026", "02/03/2026 09:07:00"],
        ["01/03/2026", "02/03/2026 09:59:00"],
    ]


async def test_a_text_a_spreadsheet_would_run_gets_a_quote_but_a_number_never_does() -> None:
    cells = await _csv_cells(
        '=HYPERLINK("http://evil.example/?x";"Voir")',
        "+33 1 23 45 67 89",
        "-3",
        "@SUM(A1:A9)",
        "\tx",
        "\rx",
        "a=b",
        -3,
        Decimal("-3"),
        -3.5,
    )

    assert cells == [
        '\'=HYPERLINK("http://evil.example/?x";"Voir")',
        "'+33 1 23 45 67 89",
        "'-3",
        "'@SUM(A1:A9)",
        "'\tx",
        "'\rx",
        "a=b",
        "-3",
        "-3",
        "-3,5",
    ]


async def test_headers_and_metadata_are_guarded_like_cells() -> None:
    table = _table([], [Column("x", "=1+1")], metadata=[("-label", "=value")])

    lines = _parse_csv(await _bytes(csv_chunks(table)))

    assert lines == [["'-label", "'=value"], [], ["'=1+1"]]


async def test_a_text_with_a_semicolon_a_quote_or_a_line_break_is_quoted_and_reads_back_whole() -> (
    None
):
    texts = ["a;b", 'il a dit "non"', "ligne 1\nligne 2", "ligne 1\r\nligne 2", "simple"]
    columns = [Column(f"c{i}", f"C{i}") for i in range(len(texts))]

    data = await _bytes(csv_chunks(_table([texts], columns, metadata=())))

    assert b'"a;b";"il a dit ""non""";"ligne 1\nligne 2"' in data
    assert _parse_csv(data)[1] == texts


async def test_a_value_of_another_type_is_written_as_its_guarded_text() -> None:
    class Mode(str):  # a StrEnum value, say
        pass

    @dataclass
    class Code:
        value: str

        def __str__(self) -> str:
            return self.value

    assert await _csv_cells(Mode("full"), Code("=2"), Code("05M092")) == ["full", "'=2", "05M092"]


async def test_a_row_that_does_not_match_the_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="4 cells in a table of 5 columns"):
        await _bytes(csv_chunks(_table([("u", 1, 0.5, None)])))


async def test_two_hundred_thousand_rows_stream_in_many_bounded_chunks_read_as_they_go() -> None:
    produced = 0

    async def rows() -> AsyncIterator[Sequence[Cell]]:
        nonlocal produced
        for i in range(200_000):
            produced += 1
            yield (f"UF{i:06d}", i, i / 7, date(2026, 1, 1), datetime(2026, 1, 1, tzinfo=UTC))

    chunks: list[bytes] = []
    produced_at_first_chunk = None
    async for chunk in csv_chunks(Table("Stays", COLUMNS, rows(), METADATA)):
        if produced_at_first_chunk is None:
            produced_at_first_chunk = produced
        chunks.append(chunk)

    assert produced_at_first_chunk is not None and produced_at_first_chunk < 2_000
    assert len(chunks) > 100
    assert max(map(len, chunks)) <= 2 * CHUNK_SIZE
    assert all(len(chunk) >= CHUNK_SIZE for chunk in chunks[:-1])
    lines = _parse_csv(b"".join(chunks))
    assert len(lines) == len(METADATA) + 2 + 200_000
    assert lines[-1] == [
        "UF199999",
        "199999",
        "28571,2857142857",
        "01/01/2026",
        "01/01/2026 01:00:00",
    ]


async def test_an_export_left_before_its_end_closes_its_row_source() -> None:
    closed = False

    async def rows() -> AsyncIterator[Sequence[Cell]]:
        nonlocal closed
        try:
            for i in range(100_000):
                yield ("u", i, 0.5, None, None)
        finally:
            closed = True

    chunks = csv_chunks(Table("Stays", COLUMNS, rows()))
    await anext(chunks)
    await chunks.aclose()

    assert closed


async def test_a_small_table_may_give_its_rows_as_a_plain_list() -> None:
    table = Table("Tableau", COLUMNS[:2], [("A", 1), ("B", 2)])

    assert _parse_csv(await _bytes(csv_chunks(table))) == [
        ["Unité", "Séjours"],
        ["A", "1"],
        ["B", "2"],
    ]


async def test_rows_from_picks_each_columns_key_from_mappings_or_objects() -> None:
    @dataclass
    class Stay:
        unit: str
        stays: int
        other: str = "not exported"

    async def records() -> AsyncIterator[Any]:
        yield {"stays": 3, "unit": "A", "other": "x"}
        yield Stay("B", 4)

    rows = [row async for row in rows_from(records(), COLUMNS[:2])]

    assert rows == [("A", 3), ("B", 4)]


# --- XLSX ---------------------------------------------------------------------------


@dataclass
class XlsxCell:
    type: str | None  # None: a number; "inlineStr", "b", "str"...
    value: str
    formula: bool
    style: dict[str, Any]


def _read_xlsx(data: bytes) -> tuple[dict[str, XlsxCell], ElementTree.Element, str]:
    """The cells of the only sheet by reference (A1...), the sheet's XML and its name."""
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))
        styles = ElementTree.fromstring(book.read("xl/styles.xml"))
        workbook = ElementTree.fromstring(book.read("xl/workbook.xml"))
        assert "xl/sharedStrings.xml" not in book.namelist()  # constant_memory: inline
    formats = {f.get("numFmtId"): f.get("formatCode") for f in styles.iterfind(".//x:numFmt", NS)}
    bold_fonts = {
        str(i)
        for i, font in enumerate(styles.iterfind("x:fonts/x:font", NS))
        if font.find("x:b", NS) is not None
    }
    xfs = [
        {
            "num_format": formats.get(xf.get("numFmtId", "0")),
            "bold": xf.get("fontId") in bold_fonts,
            "quote_prefix": xf.get("quotePrefix") == "1",
        }
        for xf in styles.iterfind("x:cellXfs/x:xf", NS)
    ]
    cells = {}
    for c in sheet.iterfind(".//x:c", NS):
        text = c.find("x:is/x:t", NS)
        value = c.find("x:v", NS)
        cells[c.get("r", "")] = XlsxCell(
            type=c.get("t"),
            value=(text.text if text is not None else value.text if value is not None else "")
            or "",
            formula=c.find("x:f", NS) is not None,
            style=xfs[int(c.get("s", "0"))],
        )
    name = workbook.find("x:sheets/x:sheet", NS)
    assert name is not None
    return cells, sheet, name.get("name", "")


def _serial(moment: datetime) -> float:
    """Excel's number for a local date-time (days since 30/12/1899)."""
    return (moment - datetime(1899, 12, 30)) / timedelta(days=1)


async def test_an_xlsx_has_the_metadata_a_blank_row_and_a_bold_header_with_frozen_panes() -> None:
    data = await _bytes(xlsx_chunks(_table([("Maternité", 12, 0.125, None, None)])))

    cells, sheet, name = _read_xlsx(data)
    assert name == "Activité"
    assert (cells["A1"].value, cells["A1"].style["bold"]) == ("Période", True)
    assert (cells["B1"].value, cells["B1"].style["bold"]) == ("mars 2026", False)
    assert cells["B3"].type is None and cells["B3"].style["num_format"] == "dd/mm/yyyy"
    assert float(cells["B3"].value) == _serial(datetime(2026, 3, 31))
    assert not [ref for ref in cells if ref.endswith("4") and len(ref) == 2]  # the empty row
    assert [cells[f"{col}5"].value for col in "ABCDE"] == [c.header for c in COLUMNS]
    assert all(cells[f"{col}5"].style["bold"] for col in "ABCDE")
    pane = sheet.find(".//x:pane", NS)
    assert pane is not None and (pane.get("ySplit"), pane.get("state")) == ("5", "frozen")
    widths = [float(col.get("width", "0")) for col in sheet.iterfind("x:cols/x:col", NS)]
    assert widths and min(widths) > 8
    autofilter = sheet.find("x:autoFilter", NS)
    assert autofilter is not None and autofilter.get("ref") == "A5:E6"


async def test_xlsx_cells_keep_their_types_numbers_dates_and_booleans() -> None:
    columns = [Column(f"c{i}", f"C{i}") for i in range(9)]
    columns[1] = Column("c1", "C1", ColumnKind.PERCENT)
    row: list[Cell] = [
        1234.5,
        0.125,
        Decimal("12.50"),
        True,
        date(2026, 3, 1),
        datetime(2026, 3, 2, 8, 15, tzinfo=UTC),
        None,
        float("nan"),
        10**6,
    ]

    cells, _, _ = _read_xlsx(await _bytes(xlsx_chunks(_table([row], columns, metadata=()))))

    assert (cells["A2"].type, cells["A2"].value) == (None, "1234.5")
    assert (cells["B2"].value, cells["B2"].style["num_format"]) == ("0.125", "0.0%")
    assert (cells["C2"].type, cells["C2"].value) == (None, "12.5")
    assert (cells["D2"].type, cells["D2"].value) == ("b", "1")
    assert cells["E2"].style["num_format"] == "dd/mm/yyyy"
    assert float(cells["E2"].value) == _serial(datetime(2026, 3, 1))
    assert cells["F2"].style["num_format"] == "dd/mm/yyyy hh:mm"
    assert float(cells["F2"].value) == pytest.approx(_serial(datetime(2026, 3, 2, 9, 15)), abs=1e-9)
    assert "G2" not in cells and "H2" not in cells  # None and NaN: no value
    assert (cells["I2"].type, cells["I2"].value) == (None, "1000000")


async def test_a_text_that_looks_like_a_formula_or_a_number_stays_text_in_xlsx() -> None:
    texts = ['=HYPERLINK("http://evil.example";"Voir")', "-3", "0123456789", "http://x.example"]
    columns = [Column(f"c{i}", f"C{i}") for i in range(len(texts))]

    data = await _bytes(xlsx_chunks(_table([texts], columns, metadata=())))

    cells, sheet, _ = _read_xlsx(data)
    assert [cells[f"{col}2"].value for col in "ABCD"] == texts
    assert all(cells[f"{col}2"].type == "inlineStr" for col in "ABCD")
    assert not any(cell.formula for cell in cells.values())
    assert sheet.find(".//x:f", NS) is None
    assert cells["A2"].style["quote_prefix"] and cells["B2"].style["quote_prefix"]
    assert not cells["C2"].style["quote_prefix"]
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        assert not [
            n for n in book.namelist() if "hyperlink" in n or (n.endswith(".rels") and "sheet" in n)
        ]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the exports put their temporary files during the test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _left_in(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def test_an_xlsx_export_leaves_no_temporary_file_once_read(private_tmp: Path) -> None:
    chunks = xlsx_chunks(_table([("u", i, 0.5, None, None) for i in range(10)]))
    first = await anext(chunks)
    assert len(_left_in(private_tmp)) == 1  # the workbook being read

    rest = await _bytes(chunks)

    assert zipfile.is_zipfile(io.BytesIO(first + rest))
    assert _left_in(private_tmp) == []


async def test_an_xlsx_export_that_fails_or_stops_early_leaves_no_temporary_file(
    private_tmp: Path,
) -> None:
    async def failing() -> AsyncIterator[Sequence[Cell]]:
        yield ("u", 1, 0.5, None, None)
        raise ConnectionResetError("the database went away")

    with pytest.raises(ConnectionResetError):
        await _bytes(xlsx_chunks(Table("t", COLUMNS, failing())))
    assert _left_in(private_tmp) == []

    chunks = xlsx_chunks(_table([("u", i, 0.5, None, None) for i in range(5_000)]))
    await anext(chunks)
    await chunks.aclose()
    assert _left_in(private_tmp) == []


async def test_a_cancelled_xlsx_export_closes_its_rows_and_leaves_no_temporary_file(
    private_tmp: Path,
) -> None:
    started = asyncio.Event()
    closed = False

    async def slow() -> AsyncIterator[Sequence[Cell]]:
        nonlocal closed
        try:
            for i in range(1_000_000):
                yield ("u", i, 0.5, None, None)
                if i == 10_000:
                    started.set()
                if i % 1000 == 0:
                    await asyncio.sleep(0)
        finally:
            closed = True

    task = asyncio.create_task(_bytes(xlsx_chunks(Table("t", COLUMNS, slow()))))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert closed
    assert _left_in(private_tmp) == []


async def test_an_xlsx_export_stopped_by_its_clients_departure_still_closes_its_rows(
    private_tmp: Path,
) -> None:
    # Starlette cancels the response's task group when the client goes away, and in a
    # cancelled scope every await fails at once: the row source's cleanup too, unless
    # the export shields it.
    started = anyio.Event()
    closed = False

    async def rows() -> AsyncIterator[Sequence[Cell]]:
        nonlocal closed
        try:
            for i in range(1_000_000):
                yield ("u", i, 0.5, None, None)
                if i == 2_000:
                    started.set()
        finally:
            await anyio.lowlevel.checkpoint()  # closing a database cursor, say
            closed = True

    async with anyio.create_task_group() as group:
        group.start_soon(_bytes, xlsx_chunks(Table("t", COLUMNS, rows())))
        await started.wait()
        group.cancel_scope.cancel()

    assert closed
    assert _left_in(private_tmp) == []


async def test_rows_beyond_excels_last_row_are_not_dropped_silently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exports, "EXCEL_MAX_ROWS", 10)
    # One metadata line, an empty row, the header: rows 4 to 10 hold seven rows.
    metadata: list[tuple[str, Cell]] = [("Période", "2026")]

    def rows(count: int) -> list[Sequence[Cell]]:
        return [(f"row {i}", i, 0.5, None, None) for i in range(1, count + 1)]

    full, _, _ = _read_xlsx(await _bytes(xlsx_chunks(_table(rows(7), metadata=metadata))))
    over, _, _ = _read_xlsx(await _bytes(xlsx_chunks(_table(rows(8), metadata=metadata))))

    assert full["A10"].value == "row 7"
    assert [over[f"A{r}"].value for r in range(4, 10)] == [f"row {i}" for i in range(1, 7)]
    assert over["A10"].value == TRUNCATED_NOTE
    assert "1 048 576" in TRUNCATED_NOTE
    assert not [ref for ref in over if ref.endswith("10") and ref != "A10"]


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Activité", "Activité"),
        ("Séjours [CHU] : 2026/03 ?*", "Séjours -CHU- - 2026-03 -"),
        ("Indicateurs de pilotage du pôle Femme-Enfant", "Indicateurs de pilotage du pôle"),
        ("'quoted'", "quoted"),
        ("   ", "Export"),
        ("History", "Export"),
    ],
)
def test_a_sheet_is_named_after_its_table_within_excels_rules(title: str, name: str) -> None:
    assert sheet_name(title) == name
    assert len(sheet_name(title)) <= 31


# --- Format and response ------------------------------------------------------------


@pytest.mark.parametrize(
    ("format_query", "accept", "chosen"),
    [
        (None, None, ExportFormat.JSON),
        (None, "*/*", ExportFormat.JSON),
        (None, "application/json", ExportFormat.JSON),
        (None, "text/csv", ExportFormat.CSV),
        (None, "Text/CSV; charset=utf-8", ExportFormat.CSV),
        (None, XLSX_MEDIA_TYPE, ExportFormat.XLSX),
        (None, "text/html,application/xhtml+xml,*/*;q=0.8", ExportFormat.JSON),
        (None, "application/json;q=0.5, text/csv", ExportFormat.CSV),
        (None, f"text/csv;q=0.4, {XLSX_MEDIA_TYPE};q=0.9", ExportFormat.XLSX),
        (None, "text/csv, application/json", ExportFormat.CSV),  # a tie: the first listed
        (None, "text/csv;q=0", ExportFormat.JSON),
        (None, "text/csv;q=nonsense", ExportFormat.JSON),
        ("csv", "application/json", ExportFormat.CSV),
        ("xlsx", "text/csv", ExportFormat.XLSX),
        ("json", "text/csv", ExportFormat.JSON),
    ],
)
def test_the_format_query_wins_then_the_accept_header_then_json(
    format_query: str | None, accept: str | None, chosen: ExportFormat
) -> None:
    assert export_format(format_query, accept) is chosen


@pytest.mark.parametrize("format_query", ["pdf", "", "CSV"])
def test_an_unknown_format_is_refused_naming_the_format_field(format_query: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        export_format(format_query, "text/csv")

    assert raised.value.status == 422
    assert raised.value.extra["errors"] == [
        {"field": "format", "rule": "one_of", "message": raised.value.detail}
    ]


def test_the_file_name_is_plain_ascii_in_filename_and_utf8_in_filename_star() -> None:
    assert content_disposition("Activité CHU", ".csv") == (
        "attachment; filename=\"Activite CHU.csv\"; filename*=UTF-8''Activit%C3%A9%20CHU.csv"
    )


@pytest.mark.parametrize(
    ("stem", "plain"),
    [
        ('../../etc/"passwd"\r\nX-Evil: 1', "etc-passwd-X-Evil- 1"),
        ("Pôle Mère\u2013Enfant 03/2026", "Pole Mere-Enfant 03-2026"),
        ("...", "export"),
        ("日本", "export"),
    ],
)
def test_a_file_name_keeps_nothing_a_header_or_a_file_system_would_misread(
    stem: str, plain: str
) -> None:
    header = content_disposition(stem, ".xlsx")

    filename = re.fullmatch(r'attachment; filename="([^"]*)"; filename\*=UTF-8\'\'(\S+)', header)
    assert filename is not None, header
    assert filename.group(1) == plain + ".xlsx"
    assert re.fullmatch(r"[A-Za-z0-9%._~-]+", filename.group(2))
    assert header.isascii() and "\r" not in header and "\n" not in header


def _app(rows: Sequence[Sequence[Cell]]) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/activity", responses=EXPORT_RESPONSES)
    async def activity(fmt: ExportFormatDep) -> Any:
        if fmt is ExportFormat.JSON:
            return {"items": [list(row) for row in rows]}
        table = Table("Activité", COLUMNS[:2], _stream(rows), METADATA[:1])
        return await export_response(table, fmt, filename_stem="Activité CHU")

    return app


async def _get(app: FastAPI, url: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(url, headers=headers)


async def test_a_route_answers_the_csv_download_the_client_asked_for() -> None:
    response = await _get(_app([("A", 1)]), "/activity", accept="text/csv")

    assert response.status_code == 200
    assert response.headers["content-type"] == CSV_MEDIA_TYPE
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Activite CHU.csv\"; filename*=UTF-8''Activit%C3%A9%20CHU.csv"
    )
    assert response.headers["cache-control"] == "no-store"
    assert _parse_csv(response.content) == [
        ["Période", "mars 2026"],
        [],
        ["Unité", "Séjours"],
        ["A", "1"],
    ]


async def test_a_route_answers_xlsx_or_json_by_the_format_query() -> None:
    app = _app([("A", 1)])

    xlsx = await _get(app, "/activity?format=xlsx", accept="text/csv")
    as_json = await _get(app, "/activity", accept="*/*")

    assert xlsx.headers["content-type"] == XLSX_MEDIA_TYPE
    assert xlsx.headers["content-disposition"].startswith(
        'attachment; filename="Activite CHU.xlsx"'
    )
    cells, _, _ = _read_xlsx(xlsx.content)
    assert (cells["A4"].value, cells["B4"].value) == ("A", "1")
    assert as_json.json() == {"items": [["A", 1]]}
    content = app.openapi()["paths"]["/activity"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "text/csv", XLSX_MEDIA_TYPE} <= set(content)


async def test_a_route_given_an_unknown_format_answers_a_422_naming_the_field() -> None:
    response = await _get(_app([]), "/activity?format=pdf")

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["format"]


async def test_an_export_failing_before_its_first_chunk_raises_in_the_route_not_in_a_200() -> None:
    async def failing() -> AsyncIterator[Sequence[Cell]]:
        raise ConnectionResetError("the database went away")
        yield ()  # an async generator

    for fmt in (ExportFormat.CSV, ExportFormat.XLSX):
        with pytest.raises(ConnectionResetError):
            await export_response(Table("t", COLUMNS, failing()), fmt, "t")


async def test_json_is_not_an_export_response() -> None:
    with pytest.raises(ValueError, match="CSV or XLSX"):
        await export_response(_table([]), ExportFormat.JSON, "t")

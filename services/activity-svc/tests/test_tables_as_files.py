"""The dashboard, an indicator's months, analytics and drill-down records as files: CSV as
French Excel reads it and XLSX, with the org unit, period, scope and the day the data is
complete up to above the table; the records' file holds every record, streamed."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import httpx
import pytest
from activity_testing import CHU

from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _exam(n: int, day: str) -> dict[str, Any]:
    return {
        "kind": "imaging_exam",
        "source": "ris",
        "source_id": f"E{n:05d}",
        "finess": CHU,
        "unit": "1101",
        "date": day,
        "code": "ZBQK002",
        "amount": 69.5,
    }


async def _load(activity: httpx.AsyncClient, auth: Headers, count: int = 30) -> None:
    records = [_exam(n, f"2025-03-{1 + n % 28:02d}") for n in range(count)]
    records += [_exam(100_000 + n, f"2024-03-{1 + n % 28:02d}") for n in range(20)]
    response = await activity.post(
        "/records",
        json={"records": records, "complete_up_to": "2025-03-31"},
        headers=auth("it_system", CHU),
    )
    assert response.status_code == 201, response.text


def _csv(response: httpx.Response) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(the metadata lines, the rows by header) of a CSV answer."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    blank = lines.index([])
    metadata = {label: value for label, value in lines[:blank]}
    header, *rows = lines[blank + 1 :]
    return metadata, [dict(zip(header, row, strict=True)) for row in rows]


async def test_a_dashboard_as_csv_holds_every_figure_with_its_period_and_scope(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)

    response = await activity.get(
        "/dashboards/CHU-RAD",
        params={"period": "2025-03", "format": "csv"},
        headers=auth("direction", CHU),
    )

    metadata, rows = _csv(response)
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "CHU-RAD" in disposition, disposition
    assert metadata == {
        "Unité organisationnelle": "Radiologie (CHU-RAD)",
        "Période": "2025-03",
        "Périmètre": "tel qu'il était chaque mois",
        "Données complètes jusqu'au": "31/03/2025",
    }
    exams = {r["Code"]: r for r in rows if r["Indicateur"] == "imaging_exams"}
    assert exams.keys() == {"CHU-RAD", "CHU-1101", "CHU-1102"}
    assert exams["CHU-RAD"]["Valeur"] == "30"
    assert exams["CHU-RAD"]["Même mois N-1"] == "20"
    assert exams["CHU-RAD"]["Variation"] == "50"
    assert exams["CHU-RAD"]["Libellé"] == "Examens d'imagerie"
    assert len(rows) == 3 * len({r["Indicateur"] for r in rows})


async def test_an_indicators_months_as_csv_by_the_accept_header_with_decimal_commas(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)

    response = await activity.get(
        "/indicators/revenue/values",
        params={"org_unit": "CHU-RAD", "from": "2025-01", "to": "2025-03"},
        headers={**auth("direction", CHU), "Accept": "text/csv"},
    )
    _, rows = _csv(response)
    assert [r["Mois"] for r in rows] == ["2025-01", "2025-02", "2025-03"]

    exams = await activity.get(
        "/indicators/imaging_exams/values",
        params={"org_unit": "CHU-RAD", "from": "2025-03", "to": "2025-03", "format": "csv"},
        headers=auth("direction", CHU),
    )
    _, (march,) = _csv(exams)
    assert (march["Valeur"], march["Variation"], march["Projection fin d'année"]) == (
        "30",
        "50",
        "30",
    )


async def test_the_records_file_holds_every_record_streamed_not_one_page(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth, count=2_500)
    params = {"org_unit": "CHU-RAD", "period": "2025-03", "limit": "10"}

    page = await activity.get(
        "/indicators/imaging_exams/records", params=params, headers=auth("direction", CHU)
    )
    as_csv = await activity.get(
        "/indicators/imaging_exams/records",
        params={**params, "format": "csv"},
        headers=auth("direction", CHU),
    )

    assert len(page.json()["items"]) == 10
    metadata, rows = _csv(as_csv)
    assert metadata["Indicateur"] == "Examens d'imagerie"
    assert len(rows) == 2_500
    assert rows[0]["Identifiant source"] == "E00000"
    assert (rows[0]["Date"], rows[0]["Montant (€)"], rows[0]["Code"]) == (
        "01/03/2025",
        "69,5",
        "ZBQK002",
    )
    # Unit by unit, day by day, then by key; the columns of imaging exams only.
    order = [(r["Unité"], r["Date"], r["Identifiant source"]) for r in rows]  # one month
    assert order == sorted(order)
    assert "GHM" not in rows[0] and "Compte" not in rows[0]


async def test_analytics_and_records_as_xlsx_are_workbooks_with_their_headers(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)

    for path, params, expected in (
        (
            "/analytics",
            {
                "org_unit": CHU,
                "indicators": "imaging_exams",
                "dimensions": "unit,month",
                "period": "2025-Q1",
            },
            ("Examens d'imagerie N-1", "Scanner", "Données complètes jusqu'au"),
        ),
        (
            "/indicators/imaging_exams/records",
            {"org_unit": "CHU-RAD", "period": "2025-03"},
            ("Identifiant source", "E00029", "Indicateur"),
        ),
    ):
        response = await activity.get(
            path, params={**params, "format": "xlsx"}, headers=auth("direction", CHU)
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == XLSX
        with zipfile.ZipFile(io.BytesIO(response.content)) as book:
            sheet = book.read("xl/worksheets/sheet1.xml").decode()
        for text in expected:
            assert text.replace("'", "&apos;") in sheet or text in sheet, (path, text)


async def test_an_unknown_format_is_a_422_naming_it(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/dashboards/CHU-RAD",
        params={"period": "2025-03", "format": "pdf"},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].split(".")[-1] == "format"

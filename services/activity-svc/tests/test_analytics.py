"""Analytics on several criteria: indicators by org unit, month or quarter and by what the
records carry, over a period against last year, read from the cube the merges keep."""

from __future__ import annotations

import importlib.util
from datetime import date
from typing import Any

import httpx
import pytest
from activity_testing import ALEMBIC_INI, CHU
from sqlalchemy import select, text

from activity_svc.models import ActivityCube, UnitDay
from ght_shared.db import Database
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")


def _stay(
    n: str, day: str, drg: str, severity: int = 2, mode: str = "full", unit: str = "2101"
) -> dict[str, Any]:
    discharged = day if mode == "ambulatory" else f"{day[:8]}{int(day[8:]) + 3:02d}"
    return {
        "kind": "stay",
        "source": "pmsi",
        "source_id": n,
        "finess": CHU,
        "unit": unit,
        "admitted_at": f"{day}T09:00:00+01:00",
        "discharged_at": f"{discharged}T17:00:00+01:00",
        "drg": f"{drg}{severity}",
        "severity": severity,
        "mode": mode,
        "amount": 1000,
    }


def _act(n: str, day: str, coded: bool) -> dict[str, Any]:
    return {
        "kind": "outpatient_act",
        "source": "actes",
        "source_id": n,
        "finess": CHU,
        "unit": "1101",
        "date": day,
        "code": "ZBQK002",
        "code_system": "CCAM",
        "coded": coded,
        "coded_on": day if coded else None,
    }


# First quarter of 2025 against that of 2024, at the CHU: cardiology's medical stays
# (GHM root 05M09) double, its surgery (05C12) turns ambulatory.
THIS_YEAR = [
    _stay("A1", "2025-01-06", "05M09"),
    _stay("A2", "2025-01-13", "05M09"),
    _stay("A3", "2025-02-03", "05M09"),
    _stay("A4", "2025-02-10", "05M09", severity=4),
    _stay("A5", "2025-03-03", "05C12"),
    _stay("A6", "2025-03-10", "05C12"),
    _stay("A7", "2025-03-11", "05C12", mode="ambulatory", unit="2102"),
    _stay("A8", "2025-03-12", "05C12", mode="ambulatory", unit="2102"),
    _act("X1", "2025-01-07", True),
    _act("X2", "2025-01-08", True),
    _act("X3", "2025-02-04", False),
]
LAST_YEAR = [
    _stay("B1", "2024-01-08", "05M09"),
    _stay("B2", "2024-02-05", "05M09"),
    *(_stay(f"B{3 + i}", f"2024-03-{4 + i:02d}", "05C12") for i in range(4)),
    _act("Y1", "2024-01-09", True),
]


async def _load(activity: httpx.AsyncClient, auth: Headers) -> None:
    response = await activity.post(
        "/records",
        json={"records": THIS_YEAR + LAST_YEAR, "complete_up_to": "2025-03-31"},
        headers=auth("it_system", CHU),
    )
    assert response.status_code == 201, response.text


async def _analytics(activity: httpx.AsyncClient, auth: Headers, **params: str) -> httpx.Response:
    return await activity.get("/analytics", params=params, headers=auth("direction", CHU))


def _table(body: dict[str, Any], indicator: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {
        tuple(row["dimensions"].values()): (
            row["values"][indicator]["value"],
            row["values"][indicator]["last_year"],
            row["values"][indicator]["variation"],
        )
        for row in body["rows"]
    }


async def test_stays_by_child_and_ghm_root_against_last_years_quarter(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)

    response = await _analytics(
        activity,
        auth,
        org_unit=CHU,
        indicators="stays_full,outpatient_surgery_rate",
        dimensions="org_unit,drg_root",
        period="2025-Q1",
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["first_month"], body["last_month"], body["compare"]) == (
        "2025-01",
        "2025-03",
        "last_year",
    )
    # The acts of the scanner count in no stay indicator: no row of imaging.
    assert body["labels"] == {"CHU-MED": "Pôle médecine"}
    assert _table(body, "stays_full") == {
        ("CHU-MED", "05C12"): (2.0, 4.0, -50.0),
        ("CHU-MED", "05M09"): (4.0, 2.0, 100.0),
    }
    # 2 ambulatory of 4 surgical stays against none of 4: +50 points.
    surgery = _table(body, "outpatient_surgery_rate")
    assert surgery[("CHU-MED", "05C12")] == (50.0, 0.0, 50.0)
    assert surgery[("CHU-MED", "05M09")] == (None, None, None)
    by_code = {i["code"]: i["variation_unit"] for i in body["indicators"]}
    assert by_code == {"stays_full": "%", "outpatient_surgery_rate": "points"}


async def test_filters_keep_what_the_records_carry_and_months_meet_last_years(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)

    severities = await _analytics(
        activity,
        auth,
        org_unit="CHU-CAR",
        indicators="stays_full",
        dimensions="severity",
        drg_root="05M09",
        period="2025",  # cut at March, the last complete month
    )
    assert severities.status_code == 200, severities.text
    assert severities.json()["last_month"] == "2025-03"
    assert _table(severities.json(), "stays_full") == {
        (2,): (3.0, 2.0, 50.0),
        (4,): (1.0, 0.0, None),
    }

    months = await _analytics(
        activity,
        auth,
        org_unit=CHU,
        indicators="coding_completeness_rate,outpatient_acts",
        dimensions="month",
        kind="outpatient_act",
        period="2025-01..2025-02",
    )
    assert months.status_code == 200, months.text
    assert _table(months.json(), "outpatient_acts") == {
        ("2025-01",): (2.0, 1.0, 100.0),
        ("2025-02",): (1.0, 0.0, None),
    }
    assert _table(months.json(), "coding_completeness_rate")[("2025-02",)] == (0.0, None, None)


async def test_the_case_mix_by_major_diagnostic_category_and_severity(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)

    response = await _analytics(
        activity,
        auth,
        org_unit=CHU,
        indicators="stays_full,stay_valuation,average_length_of_stay",
        dimensions="cmd,severity",
        kind="stay",
        mode="full",
        period="2025-Q1",
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert _table(body, "stays_full") == {
        ("05", 2): (5.0, 6.0, pytest.approx(-100 / 6)),
        ("05", 4): (1.0, 0.0, None),
    }
    assert _table(body, "stay_valuation")[("05", 2)] == (5000.0, 6000.0, pytest.approx(-100 / 6))
    assert _table(body, "average_length_of_stay")[("05", 2)] == (3.0, 3.0, 0.0)


async def test_ghm_roots_explain_a_stable_total_by_their_opposite_shifts(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    """Full stays, first quarter: 6 against 6, but 05M09 doubles (2 -> 4) while 05C12
    halves (4 -> 2): each root's share of the change, in % of last year's 6."""
    await _load(activity, auth)
    params = {"org_unit": CHU, "period": "2025-03", "by": "drg_root"}
    response = await activity.get(
        "/indicators/stays_full/contributions", params=params, headers=auth("direction", CHU)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["by"], body["value"], body["reference"], body["variation"]) == (
        "drg_root",
        6.0,
        6.0,
        0.0,
    )
    assert [
        (c["key"], c["name"], c["value"], c["reference"], c["contribution"])
        for c in body["contributions"]
    ] == [
        ("05C12", None, 2.0, 4.0, pytest.approx(-100 / 3)),
        ("05M09", None, 4.0, 2.0, pytest.approx(100 / 3)),
    ]
    assert body["others"] is None

    first = await activity.get(
        "/indicators/stays_full/contributions",
        params={**params, "limit": "1"},
        headers=auth("direction", CHU),
    )
    assert [c["key"] for c in first.json()["contributions"]] == ["05C12"]
    assert first.json()["others"] == {"count": 1, "contribution": pytest.approx(100 / 3)}

    by_unit = await activity.get(
        "/indicators/outpatient_surgery_rate/contributions",
        params={**params, "by": "unit"},
        headers=auth("direction", CHU),
    )
    assert by_unit.status_code == 200, by_unit.text
    units = by_unit.json()["contributions"]
    assert all(c["name"] for c in units)
    assert sum(c["contribution"] for c in units) == pytest.approx(by_unit.json()["variation"])

    occupancy = await activity.get(
        "/indicators/bed_occupancy_rate/contributions",
        params=params,
        headers=auth("direction", CHU),
    )
    assert occupancy.status_code == 422
    assert occupancy.json()["errors"][0]["field"] == "by"
    assert occupancy.json()["errors"][0]["rule"] == "not_analysable"


async def test_the_rows_come_in_pages_in_the_order_of_their_dimensions(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)
    params = {
        "org_unit": CHU,
        "indicators": "stays_full",
        "dimensions": "unit,drg_root",
        "period": "2025-Q1",
        "limit": "1",
    }
    seen = []
    while True:
        response = await _analytics(activity, auth, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [tuple(row["dimensions"].values()) for row in body["rows"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [
        ("CHU-2101", "05C12"),
        ("CHU-2101", "05M09"),
        ("CHU-2102", "05C12"),
    ]


async def test_a_withdrawn_or_corrected_record_leaves_the_cube(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _load(activity, auth)
    await _withdraw_and_correct(activity, auth)

    response = await _analytics(
        activity,
        auth,
        org_unit="CHU-CAR",
        indicators="stays_full",
        dimensions="drg_root",
        period="2025-Q1",
    )

    assert _table(response.json(), "stays_full") == {
        ("05C12",): (3.0, 4.0, -25.0),
        ("05M09",): (2.0, 2.0, 0.0),
    }


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"dimensions": "ward"}, "dimensions", "one_of"),
        ({"dimensions": "month,quarter"}, "dimensions", "month_or_quarter"),
        ({"dimensions": "unit,unit"}, "dimensions", "duplicate"),
        ({"dimensions": "unit,month,code,mode,kind"}, "dimensions", "max_items"),
        ({"indicators": "bed_occupancy_rate"}, "indicators", "not_analysable"),
        ({"indicators": "stays"}, "indicators", "unknown_indicator"),
        ({"indicators": ""}, "indicators", "required"),
        ({"period": "2999"}, "period", "future_month"),
        ({"period": "2025-Q5"}, "period", "period"),
        ({"period": "2024-01..2025-02"}, "period", "max_months"),
        ({"period": "2025-03..2025-01"}, "period", "before_to"),
        ({"severity": "5"}, "severity", "pattern"),
        ({"drg_root": "05M092"}, "drg_root", "pattern"),
        ({"cmd": "5"}, "cmd", "pattern"),
        ({"compare": "last_month"}, "compare", "literal_error"),
        ({"ward": "x"}, "ward", "unknown_parameter"),
    ],
)
async def test_a_wrong_query_is_a_422_naming_the_field_and_the_rule(
    activity: httpx.AsyncClient,
    auth: Headers,
    params: dict[str, str],
    field: str,
    rule: str,
) -> None:
    query = {"org_unit": CHU, "indicators": "stays_full", "period": "2025-Q1", **params}
    response = await _analytics(activity, auth, **query)

    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert (error["field"].split(".")[-1], error["rule"]) == (field, rule)


async def test_another_establishments_org_unit_is_refused(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/analytics",
        params={"org_unit": "NORD-MED", "indicators": "stays_full"},
        headers=auth("direction", CHU),
    )
    assert response.status_code in (403, 404), response.text


async def _withdraw_and_correct(activity: httpx.AsyncClient, auth: Headers) -> None:
    """A1 withdrawn, A2 corrected: a surgical stay after all."""
    withdrawn = await activity.delete(
        "/records",
        params={"finess": CHU, "source": "pmsi", "source_id": "A1"},
        headers=auth("it_system", CHU),
    )
    assert withdrawn.status_code == 200, withdrawn.text
    corrected = await activity.post(
        "/records",
        json={"records": [{**THIS_YEAR[1], "drg": "05C122"}]},
        headers=auth("it_system", CHU),
    )
    assert corrected.status_code == 201, corrected.text


@pytest.mark.parametrize(
    ("migration_file", "model", "rows"),
    [("0008_activity_cube.py", ActivityCube, 11), ("0011_unit_day.py", UnitDay, 17)],
)
async def test_the_migration_fills_the_table_as_the_merges_keep_it(
    activity: httpx.AsyncClient,
    auth: Headers,
    database: Database,
    migration_file: str,
    model: type[ActivityCube | UnitDay],
    rows: int,
) -> None:
    await _load(activity, auth)
    await _withdraw_and_correct(activity, auth)
    path = ALEMBIC_INI.parent / "alembic" / "versions" / migration_file
    spec = importlib.util.spec_from_file_location(migration_file.removesuffix(".py"), path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    measures = [m if isinstance(m, str) else m[0] for m in migration.MEASURES]

    async def table() -> set[tuple[Any, ...]]:
        async with database.transaction() as session:
            stored = (await session.scalars(select(model))).all()
        return {
            tuple(getattr(row, column) for column in (*migration.KEYS, *measures))
            for row in stored
            if any(getattr(row, m) for m in measures)  # a withdrawal leaves zeros
        }

    merged = await table()
    async with database.transaction() as session:
        await session.execute(text(f"DELETE FROM {model.__tablename__}"))
        await session.execute(text(migration.BACKFILL))

    assert await table() == merged
    assert len(merged) == rows
    assert date(2025, 3, 1) in {row[1].replace(day=1) for row in merged}

"""Bed occupancy counts the days stays were present in each month, not all of a stay's days
in its discharge month; stays and average length of stay keep the discharge month."""

from __future__ import annotations

import importlib.util
from datetime import date
from typing import Any

import httpx
import pytest
from activity_testing import ALEMBIC_INI, CHU
from sqlalchemy import select, text, update

from activity_svc.events import INDICATOR_UPDATED
from activity_svc.models import UnitMonth
from ght_shared import tables
from ght_shared.db import Database
from ght_shared.events import Event
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")

JANUARY, FEBRUARY, MARCH = date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)
BEDS = 30  # CHU-2101's installed beds (activity_testing)


def _stay(source_id: str, admitted: str, discharged: str, **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "stay",
        "source": "pmsi",
        "source_id": source_id,
        "finess": CHU,
        "unit": "2101",
        "admitted_at": f"{admitted}T09:00:00+01:00",
        "discharged_at": f"{discharged}T11:00:00+01:00",
        "drg": "05M092",
        "severity": 2,
        "mode": "full",
        "amount": 1000,
        **overrides,
    }


# Admitted on 20 January, discharged on 5 March: 44 nights, 12 in January, 28 in
# February, 4 in March; a stay within February (3 nights); an ambulatory stay (none).
LONG = _stay("S-LONG", "2025-01-20", "2025-03-05")
SHORT = _stay("S-SHORT", "2025-02-10", "2025-02-13")
SAME_DAY = _stay("S-AMBU", "2025-02-11", "2025-02-11", mode="ambulatory")


async def _send(activity: httpx.AsyncClient, auth: Headers, records: list[dict[str, Any]]) -> None:
    # The export covers the first quarter: its months are complete.
    response = await activity.post(
        "/records",
        json={"records": records, "complete_up_to": "2025-03-31"},
        headers=auth("it_system", CHU),
    )
    assert response.status_code == 201, response.text


async def _cells(database: Database) -> dict[date, tuple[float, float, float]]:
    """CHU-2101's (occupied days, stay days, full stays) by month."""
    async with database.transaction() as session:
        rows = await session.scalars(select(UnitMonth).where(UnitMonth.unit == "CHU-2101"))
        return {
            c.month: (float(c.occupied_days), float(c.stay_days), float(c.stays_full))
            for c in rows
            if (c.occupied_days, c.stay_days, c.stays_full) != (0, 0, 0)
        }


async def _values(
    activity: httpx.AsyncClient, auth: Headers, indicator: str, **params: str
) -> dict[str, float | None]:
    response = await activity.get(
        f"/indicators/{indicator}/values",
        params={"org_unit": "CHU-2101", "from": "2025-01", "to": "2025-03", **params},
        headers=auth("commission"),
    )
    assert response.status_code == 200, response.text
    return {v["period"]: v["value"] for v in response.json()["values"]}


async def test_a_stay_counts_its_days_in_each_month_it_was_present(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _send(activity, auth, [LONG, SHORT, SAME_DAY])

    assert await _cells(database) == {
        JANUARY: (12.0, 0.0, 0.0),
        FEBRUARY: (31.0, 3.0, 1.0),
        MARCH: (4.0, 44.0, 1.0),
    }
    # Before: 0 % in January and February, 47 days over 30 x 31 in March (5.05 %).
    occupancy = await _values(activity, auth, "bed_occupancy_rate")
    assert occupancy == {
        "2025-01": pytest.approx(100 * 12 / (BEDS * 31)),
        "2025-02": pytest.approx(100 * 31 / (BEDS * 28)),
        "2025-03": pytest.approx(100 * 4 / (BEDS * 31)),
    }
    # Stays and their average length keep the discharge month.
    assert await _values(activity, auth, "average_length_of_stay") == {
        "2025-01": None,
        "2025-02": 3.0,
        "2025-03": 44.0,
    }


async def test_a_corrected_discharge_moves_the_days_and_republishes_each_month(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _send(activity, auth, [LONG])
    async with database.transaction() as session:
        await session.execute(tables.outbox.delete())

    # The PMSI correction: discharged on 10 February, not 5 March.
    await _send(activity, auth, [{**LONG, "discharged_at": "2025-02-10T11:00:00+01:00"}])

    assert await _cells(database) == {JANUARY: (12.0, 0.0, 0.0), FEBRUARY: (9.0, 21.0, 1.0)}
    async with database.transaction() as session:
        payloads = await session.scalars(
            select(tables.outbox.c.payload).where(tables.outbox.c.event_type == INDICATOR_UPDATED)
        )
        events = [Event.from_bytes(p).data for p in payloads]
    published = {
        e["period"]: e["value"]
        for e in events
        if e["indicator"] == "bed_occupancy_rate" and e["org_unit"] == "CHU-CAR"
    }
    # The pôle's (with CHU-2102's 10 beds): February's days fall from 28 to 9, March's
    # from 4 to none; January's did not change.
    assert published == {
        "2025-02": pytest.approx(100 * 9 / ((BEDS + 10) * 28)),
        "2025-03": 0.0,
    }


async def test_a_withdrawn_stay_leaves_no_day_in_any_month(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _send(activity, auth, [LONG, SHORT])

    response = await activity.delete(
        "/records",
        params={"finess": CHU, "source": "pmsi", "source_id": "S-LONG"},
        headers=auth("it_system", CHU),
    )

    assert response.status_code == 200, response.text
    assert await _cells(database) == {FEBRUARY: (3.0, 3.0, 1.0)}


async def test_the_records_behind_a_month_of_occupancy_are_the_stays_present_then(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _send(activity, auth, [LONG, SHORT, _stay("S-MARCH", "2025-03-05", "2025-03-08")])

    async def listed(indicator: str, period: str) -> list[str]:
        response = await activity.get(
            f"/indicators/{indicator}/records",
            params={"org_unit": "CHU-2101", "period": period},
            headers=auth("commission"),
        )
        assert response.status_code == 200, response.text
        return [r["source_id"] for r in response.json()["items"]]

    assert await listed("bed_occupancy_rate", "2025-01") == ["S-LONG"]
    # Unit by unit, in the order of their discharge day.
    assert await listed("bed_occupancy_rate", "2025-02") == ["S-SHORT", "S-LONG"]
    # Admitted on 5 March: the long stay's last night was the 4th.
    assert await listed("bed_occupancy_rate", "2025-03") == ["S-LONG", "S-MARCH"]
    assert await listed("stays_full", "2025-02") == ["S-SHORT"]


async def test_a_partial_month_has_no_occupancy_rate(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    # The stays still present on 15 February are not discharged yet: the month's days
    # present cannot be counted, nor compared with last year's same days.
    response = await activity.post(
        "/records",
        json={"records": [LONG, SHORT], "complete_up_to": "2025-02-15"},
        headers=auth("it_system", CHU),
    )
    assert response.status_code == 201, response.text

    assert (await _values(activity, auth, "bed_occupancy_rate"))["2025-02"] is None
    assert (await _values(activity, auth, "stays_full"))["2025-02"] == 1.0


async def test_the_migration_fills_the_days_present_as_the_merge_counts_them(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _send(activity, auth, [LONG, SHORT, SAME_DAY, _stay("S-2", "2024-12-30", "2025-01-02")])
    merged = await _cells(database)
    path = ALEMBIC_INI.parent / "alembic" / "versions" / "0007_occupied_days.py"
    spec = importlib.util.spec_from_file_location("migration_0007", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)

    async with database.transaction() as session:
        await session.execute(update(UnitMonth).values(occupied_days=0))
        await session.execute(text(migration.BACKFILL))

    assert await _cells(database) == merged
    # 12 nights of the long stay in January, 1 of S-2 (that of the 1st); its 2 others in
    # December.
    assert merged[JANUARY] == (13.0, 3.0, 1.0)
    assert merged[date(2024, 12, 1)] == (2.0, 0.0, 0.0)

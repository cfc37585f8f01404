"""Withdrawing records by source id: singly and in a file, idempotent, audited; the
figures and their events follow, and nothing is half done."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU
from sqlalchemy import func, select, text

from activity_svc.events import INDICATOR_UPDATED
from activity_svc.models import ActivityRecord, UnitMonth
from ght_shared import tables
from ght_shared.db import Database
from ght_shared.events import Event
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")

MARCH = date(2025, 3, 1)


def _stay(source_id: str, finess: str = CHU, unit: str = "2101") -> dict[str, Any]:
    return {
        "kind": "stay",
        "source": "pmsi",
        "source_id": source_id,
        "finess": finess,
        "unit": unit,
        "admitted_at": "2025-03-10T09:00:00+01:00",
        "discharged_at": "2025-03-14T11:00:00+01:00",
        "drg": "05M092",
        "severity": 2,
        "mode": "full",
        "amount": 1000,
    }


async def _import(activity: httpx.AsyncClient, auth: Headers) -> None:
    response = await activity.post(
        "/records",
        json={"records": [_stay("S1"), _stay("S2"), _stay("S3")]},
        headers=auth("it_system", CHU),
    )
    assert response.status_code == 201, response.text


async def _stays(database: Database) -> tuple[float, int]:
    """CHU-2101's full stays in March (monthly measures) and the records stored."""
    async with database.transaction() as session:
        cell = await session.get(UnitMonth, ("CHU-2101", MARCH))
        records = await session.scalar(select(func.count()).select_from(ActivityRecord))
    return (float(cell.stays_full) if cell else 0.0), int(records or 0)


async def _published(database: Database) -> list[Event]:
    async with database.transaction() as session:
        payloads = await session.scalars(
            select(tables.outbox.c.payload)
            .where(tables.outbox.c.event_type == INDICATOR_UPDATED)
            .order_by(tables.outbox.c.id)
        )
        return [Event.from_bytes(p) for p in payloads]


async def test_a_withdrawn_record_leaves_the_figures_and_again_changes_nothing(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _import(activity, auth)
    assert await _stays(database) == (3.0, 3)
    before = len(await _published(database))
    params = {"finess": CHU, "source": "pmsi", "source_id": "S2"}
    headers = auth("it_system", CHU)

    response = await activity.delete("/records", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "requested": 1,
        "withdrawn": 1,
        "absent": 0,
        "months": ["2025-03-01"],
        "sources": ["pmsi"],
    }
    assert await _stays(database) == (2.0, 2)
    events = (await _published(database))[before:]
    cardiology = {
        e.data["indicator"]: e.data["value"] for e in events if e.data["org_unit"] == "CHU-CAR"
    }
    assert cardiology["stays_full"] == 2.0
    values = await activity.get(
        "/indicators/stays_full/values",
        params={"org_unit": "CHU-CAR", "from": "2025-03", "to": "2025-03"},
        headers=auth("direction", CHU),
    )
    assert values.json()["values"][0]["value"] == 2.0

    again = await activity.delete("/records", params=params, headers=headers)
    assert again.status_code == 200
    assert (again.json()["withdrawn"], again.json()["absent"], again.json()["months"]) == (
        0,
        1,
        [],
    )
    assert await _stays(database) == (2.0, 2)
    assert len(await _published(database)) == before + len(events)
    async with database.transaction() as session:
        audited = (
            await session.execute(
                text("SELECT detail FROM audit_log WHERE action = 'records.withdrawn' ORDER BY id")
            )
        ).all()
    assert [(d["requested"], d["withdrawn"]) for (d,) in audited] == [(1, 1), (1, 0)]


async def test_a_file_withdraws_the_records_it_names_and_counts_the_absent(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _import(activity, auth)
    body = f"source;source_id;finess\npmsi;S1;{CHU}\npmsi;S3;{CHU}\npmsi;NEVER;{CHU}\n"
    response = await activity.post(
        "/withdrawals",
        content=("\ufeff" + body).encode(),
        headers={**auth("it_system", CHU), "content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["requested"], response.json()["withdrawn"]) == (3, 2)
    assert response.json()["absent"] == 1
    assert await _stays(database) == (1.0, 1)

    listed = await activity.post(
        "/records/withdrawals",
        json={"records": [{"finess": CHU, "source": "pmsi", "source_id": "S2"}]},
        headers=auth("it_system", CHU),
    )
    assert listed.status_code == 200, listed.text
    assert await _stays(database) == (0.0, 0)


async def test_a_bad_row_withdraws_nothing_and_names_its_line_and_field(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _import(activity, auth)
    body = f"finess,source,source_id\n{CHU},pmsi,S1\n123,pmsi,S2\n{CHU},,S3\n"
    response = await activity.post(
        "/withdrawals",
        content=body.encode(),
        headers={**auth("it_system", CHU), "content-type": "text/csv"},
    )
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [(3, "finess"), (4, "source")]
    assert await _stays(database) == (3.0, 3)

    no_header = await activity.post(
        "/withdrawals",
        content=b"finess,source\n",
        headers={**auth("it_system", CHU), "content-type": "text/csv"},
    )
    assert no_header.status_code == 422
    assert no_header.json()["errors"][0]["field"] == "header"
    not_csv = await activity.post(
        "/withdrawals", json={"records": []}, headers=auth("it_system", CHU)
    )
    assert not_csv.status_code == 415
    unknown_field = await activity.post(
        "/records/withdrawals",
        json={"records": [{"finess": CHU, "source": "pmsi", "source_id": "S1", "x": 1}]},
        headers=auth("it_system", CHU),
    )
    assert unknown_field.status_code == 422
    assert unknown_field.json()["errors"][0]["field"] == "records.0.x"
    assert await _stays(database) == (3.0, 3)


async def test_another_establishments_records_cannot_be_withdrawn(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _import(activity, auth)
    response = await activity.post(
        "/records/withdrawals",
        json={
            "records": [
                {"finess": CHU, "source": "pmsi", "source_id": "S1"},
                {"finess": CH_NORD, "source": "pmsi", "source_id": "N1"},
            ]
        },
        headers=auth("it_system", CH_NORD),
    )
    assert response.status_code == 403
    assert await _stays(database) == (3.0, 3)
    reader = await activity.delete(
        "/records",
        params={"finess": CHU, "source": "pmsi", "source_id": "S1"},
        headers=auth("direction", CHU),
    )
    assert reader.status_code == 403
    assert await _stays(database) == (3.0, 3)

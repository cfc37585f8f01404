"""What an import leaves behind: its records once, and its events on the real JetStream."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

import httpx
import pytest
from activity_testing import CHU, TERRITORY
from sqlalchemy import func, select, text
from test_ingestion import act, stay

from activity_svc.events import BATCH_INGESTED, INDICATOR_UPDATED
from activity_svc.ingestion.imports import ImportRequest, run_import
from activity_svc.ingestion.staging import RecordsStager
from activity_svc.models import ActivityRecord, ImportFormat, OnError, UnitMonth
from activity_svc.settings import Settings
from ght_shared.auth import Principal
from ght_shared.db import Database
from ght_shared.events import nats_subject_of
from ght_shared.testing.streams import published

pytestmark = pytest.mark.usefixtures("territory")

SYSTEM = Principal(
    sub="si-chu", roles=("it_system",), establishments=(CHU,), scope="activity:write"
)
JSON_BATCH = ImportRequest(ImportFormat.JSON, OnError.REJECT_FILE)


async def _outbox_ids(database: Database, event_type: str) -> set[str]:
    async with database.transaction() as session:
        rows = await session.execute(
            text("SELECT event_id FROM outbox WHERE event_type = :type"), {"type": event_type}
        )
        return {str(event_id) for (event_id,) in rows}


async def test_importing_the_same_records_twice_stores_and_counts_them_once(
    database: Database, activity_settings: Settings
) -> None:
    records = [stay(f"S{i}") for i in range(20)] + [act(f"A{i}") for i in range(10)]
    first = await run_import(
        database, activity_settings, SYSTEM, RecordsStager(records), JSON_BATCH
    )
    again = await run_import(
        database, activity_settings, SYSTEM, RecordsStager(records), JSON_BATCH
    )

    assert (first.accepted, first.unchanged) == (30, 0)
    assert (again.accepted, again.unchanged, again.months) == (30, 30, [])
    async with database.transaction() as session:
        stored = await session.scalar(select(func.count()).select_from(ActivityRecord))
        cardiology = await session.get(UnitMonth, ("CHU-2101", date(2025, 1, 1)))
    assert stored == 30
    assert cardiology is not None and cardiology.stays_full == 20


async def test_an_import_publishes_its_batch_and_one_event_per_indicator_org_unit_and_month(
    activity: httpx.AsyncClient, auth: Any, database: Database, nats_url: str
) -> None:
    # 50 stays of one unit in one month, 10 rejected rows.
    records = [stay(f"S{i}") for i in range(50)] + [stay(f"X{i}", unit="9999") for i in range(10)]
    response = await activity.post(
        "/records",
        json={"records": records},
        params={"on_error": "skip_row"},
        headers=auth("it_system", CHU),
    )
    assert response.status_code == 201, response.text

    (batch,) = await published(
        nats_url, nats_subject_of(BATCH_INGESTED), await _outbox_ids(database, BATCH_INGESTED)
    )
    assert batch.establishment == CHU
    assert batch.data["batch"] == response.json()["id"]
    assert (batch.data["accepted"], batch.data["rejected"]) == (50, 10)
    assert batch.data["source"] == "pmsi-chu"
    assert batch.data["period"] == {"from": "2025-01", "to": "2025-01"}

    figures = await published(
        nats_url, nats_subject_of(INDICATOR_UPDATED), await _outbox_ids(database, INDICATOR_UPDATED)
    )
    per_key = Counter((e.data["indicator"], e.data["org_unit"], e.data["period"]) for e in figures)
    assert set(per_key.values()) == {1}, "one event per indicator x org unit x month"
    assert {org_unit for _, org_unit, _ in per_key} == {"CHU-CAR", "CHU-MED", CHU, TERRITORY}
    stays = next(
        e for e in figures if e.data["indicator"] == "stays_full" and e.data["org_unit"] == CHU
    )
    assert stays.data["value"] == 50
    assert stays.data["period"] == "2025-01"

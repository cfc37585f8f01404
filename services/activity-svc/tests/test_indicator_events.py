"""``ght.activity.indicator.updated`` on the real JetStream: one event per indicator x org
unit x month changed, whatever the number of records behind the change."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime

import httpx
import pytest
from activity_testing import CHU, TERRITORY, put_unit_month
from sqlalchemy import insert, select, text

from activity_svc.events import INDICATOR_UPDATED
from activity_svc.models import Alert, AlertRule, OrgUnitKind
from activity_svc.reactions import figures_changed
from activity_svc.referential.tree import OrgUnitChange, upsert_org_unit
from ght_shared.db import Database
from ght_shared.events import Event, nats_subject_of
from ght_shared.testing import Headers
from ght_shared.testing.streams import published

pytestmark = pytest.mark.usefixtures("territory")

MARCH, APRIL = date(2024, 3, 1), date(2024, 4, 1)
SUBJECT = nats_subject_of(INDICATOR_UPDATED)
STAY_INDICATORS = {
    "stays_full",
    "hospital_days",
    "average_length_of_stay",
    "bed_occupancy_rate",
    "severity_34_share",
}
ANCESTORS_OF_RADIOLOGY = {"CHU-RAD", "CHU-IMG", CHU, TERRITORY}


async def _outbox_ids(database: Database) -> set[str]:
    async with database.transaction() as session:
        rows = await session.execute(
            text("SELECT event_id FROM outbox WHERE event_type = :type"),
            {"type": INDICATOR_UPDATED},
        )
        return {str(event_id) for (event_id,) in rows}


async def test_an_import_gives_one_event_per_indicator_org_unit_and_month(
    database: Database, nats_url: str
) -> None:
    import_id = uuid.uuid4()
    async with database.transaction() as session:
        # Thousands of records of an import summed into three unit-months.
        days = {"stay_days": 16000, "occupied_days": 15000}
        await put_unit_month(session, "CHU-1101", MARCH, stays_full=4000, **days)
        days = {"stay_days": 9000, "occupied_days": 9500}
        await put_unit_month(session, "CHU-1102", MARCH, stays_full=3000, **days)
        days = {"stay_days": 12000, "occupied_days": 12500}
        await put_unit_month(session, "CHU-1101", APRIL, stays_full=3000, **days)
        count = await figures_changed(
            session,
            {("CHU-1101", MARCH), ("CHU-1102", MARCH), ("CHU-1101", APRIL)},
            {"stays_full", "stay_days", "occupied_days"},
            import_id,
        )
    expected = {
        (indicator, org_unit, period)
        for indicator in STAY_INDICATORS
        for org_unit in ANCESTORS_OF_RADIOLOGY
        for period in ("2024-03", "2024-04")
    }
    assert count == len(expected) == 40

    ids = await _outbox_ids(database)
    events = await published(nats_url, SUBJECT, ids)
    keys = Counter((e.data["indicator"], e.data["org_unit"], e.data["period"]) for e in events)
    assert set(keys) == expected
    assert set(keys.values()) == {1}
    by_key = {(e.data["indicator"], e.data["org_unit"], e.data["period"]): e for e in events}
    radiology_march = by_key["stays_full", "CHU-RAD", "2024-03"]
    assert radiology_march.data["value"] == 7000.0
    assert radiology_march.data["year_to_date"] == 7000.0
    assert radiology_march.data["import_id"] == str(import_id)
    assert radiology_march.establishment == CHU
    assert radiology_march.subject == "indicator/stays_full/CHU-RAD"
    assert by_key["average_length_of_stay", "CHU-IMG", "2024-03"].data["value"] == pytest.approx(
        25000 / 7000
    )
    assert by_key["stays_full", TERRITORY, "2024-04"].establishment is None
    assert by_key["stays_full", CHU, "2024-04"].data["year_to_date"] == 10000.0


async def test_a_moved_unit_updates_the_pole_it_belonged_to_in_each_month(
    database: Database,
) -> None:
    september = date(2024, 9, 1)
    async with database.transaction() as session:
        await upsert_org_unit(
            session,
            OrgUnitChange(
                "CHU-1101", OrgUnitKind.UNIT, "Scanner", "CHU-CAR", date(2024, 7, 1), uf="1101"
            ),
            "test",
        )
        await put_unit_month(session, "CHU-1101", MARCH, imaging_exams=10)
        await put_unit_month(session, "CHU-1101", september, imaging_exams=12)
        count = await figures_changed(
            session, {("CHU-1101", MARCH), ("CHU-1101", september)}, {"imaging_exams"}, None
        )
        rows = await session.execute(
            text("SELECT payload FROM outbox WHERE event_type = :type"),
            {"type": INDICATOR_UPDATED},
        )
        events = [Event.from_bytes(payload) for (payload,) in rows]
    assert count == len(events) == 8
    assert {(e.data["org_unit"], e.data["period"]) for e in events} == {
        ("CHU-RAD", "2024-03"),
        ("CHU-IMG", "2024-03"),
        ("CHU-CAR", "2024-09"),
        ("CHU-MED", "2024-09"),
        (CHU, "2024-03"),
        (CHU, "2024-09"),
        (TERRITORY, "2024-03"),
        (TERRITORY, "2024-09"),
    }
    assert all("import_id" not in e.data for e in events)


async def test_a_change_reading_no_indicator_publishes_nothing(database: Database) -> None:
    async with database.transaction() as session:
        assert await figures_changed(session, set(), {"stays_full"}, None) == 0
        assert await figures_changed(session, {("CHU-1101", MARCH)}, set(), None) == 0
    assert await _outbox_ids(database) == set()


async def test_the_changed_figures_are_checked_against_the_alert_rules(
    database: Database,
) -> None:
    async with database.transaction() as session:
        await put_unit_month(session, "CHU-1101", date(2023, 3, 1), imaging_exams=100)
        await put_unit_month(session, "CHU-1101", MARCH, imaging_exams=50)
        await session.execute(
            insert(AlertRule).values(
                id=uuid.uuid4(),
                indicator="imaging_exams",
                org_unit="CHU-IMG",
                basis="last_year",
                threshold=10.0,
                direction="below",
                active=True,
                created_at=datetime.now(UTC),
                created_by="test",
            )
        )
        await figures_changed(session, {("CHU-1101", MARCH)}, {"imaging_exams"}, None)
        alerts = (await session.scalars(select(Alert))).all()
    assert {(a.org_unit, a.period) for a in alerts} == {("CHU-RAD", MARCH), ("CHU-IMG", MARCH)}
    assert all(a.deviation == pytest.approx(-50.0) for a in alerts)


async def test_a_move_in_the_tree_republishes_the_org_units_it_left_and_joined(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    """Cardiology moves from the medicine pôle to imaging on 1 July 2024: both pôles'
    figures from July on change, and are published; June's are not."""
    june, july, august = date(2024, 6, 1), date(2024, 7, 1), date(2024, 8, 1)
    async with database.transaction() as session:
        for month in (june, july, august):
            await put_unit_month(session, "CHU-2101", month, stays_full=10, stay_days=40)
    before = await _outbox_ids(database)
    moved = await activity.put(
        "/org-units/CHU-CAR",
        json={
            "kind": "department",
            "name": "Cardiologie",
            "parent": "CHU-IMG",
            "valid_from": "2024-07-01",
        },
        headers=auth("it_system", CHU),
    )
    assert moved.status_code == 200, moved.text
    async with database.transaction() as session:
        rows = await session.execute(
            text("SELECT payload FROM outbox WHERE event_type = :type"),
            {"type": INDICATOR_UPDATED},
        )
        events = [e for e in (Event.from_bytes(p) for (p,) in rows) if str(e.id) not in before]
    placed = {(e.data["org_unit"], e.data["period"]) for e in events}
    assert placed == {
        (org_unit, period)
        for org_unit in ("CHU-CAR", "CHU-MED", "CHU-IMG", CHU, TERRITORY)
        for period in ("2024-07", "2024-08")
    }
    stays = {
        (e.data["org_unit"], e.data["period"]): e.data["value"]
        for e in events
        if e.data["indicator"] == "stays_full"
    }
    assert stays[("CHU-MED", "2024-07")] == 0.0
    assert stays[("CHU-IMG", "2024-07")] == 10.0
    # The same name again: nothing moves, nothing is published.
    again = await activity.put(
        "/org-units/CHU-CAR",
        json={
            "kind": "department",
            "name": "Cardiologie",
            "parent": "CHU-IMG",
            "valid_from": "2024-07-01",
        },
        headers=auth("it_system", CHU),
    )
    assert again.status_code == 200
    assert len(await _outbox_ids(database)) == len(before) + len(events)

"""Installed beds from beds-svc's ``ght.beds.capacity.changed``: the handler, then real events.

The handler alone resolves the unit (org code, or UF code within the establishment) and
skips what it cannot place; on the session's real JetStream, the running service's
durable consumer applies an event once however often it comes.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU
from sqlalchemy import func, select

from activity_svc.consumers import on_capacity_changed
from activity_svc.models import UnitCapacity
from activity_svc.referential.tree import capacity_on, local_date
from activity_svc.settings import Settings
from ght_shared import tables
from ght_shared.db import Database
from ght_shared.events import Event, new_event
from ght_shared.payloads import UnreadablePayload
from ght_shared.testing.plugin import wait_for
from ght_shared.testing.streams import publish_event

pytestmark = pytest.mark.usefixtures("territory")

SUBJECT = "ght.beds.capacity.changed"
MARCH_10 = datetime(2025, 3, 10, 8, 30, tzinfo=UTC)
MARCH_10_DAY = date(2025, 3, 10)


def capacity_event(
    unit: str | None,
    installed: Any,
    establishment: str | None = CHU,
    at: datetime = MARCH_10,
    **data: Any,
) -> Event:
    event = new_event(
        source="beds-svc",
        type="ght.beds.capacity.changed.v1",
        subject=f"unit/{unit}",
        data={
            "unit": unit,
            "specialty": "cardiologie",
            "establishment": establishment,
            "installed": installed,
            "open": installed,
            "occupied": 20,
            "available": 5,
            "occupancy": 0.8,
        }
        | data,
        establishment=establishment,
    )
    return event.model_copy(update={"time": at})


async def _apply(database: Database, event: Event) -> None:
    async with database.transaction() as session:
        await on_capacity_changed(session, event)


async def _beds(database: Database, unit: str, day: date) -> int | None:
    async with database.transaction() as session:
        return await capacity_on(session, unit, day)


async def _capacity_rows(database: Database) -> list[tuple[str, date, int, str]]:
    async with database.transaction() as session:
        rows = await session.execute(
            select(
                UnitCapacity.unit,
                UnitCapacity.effective_from,
                UnitCapacity.installed_beds,
                UnitCapacity.source,
            ).order_by(UnitCapacity.unit, UnitCapacity.effective_from)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


# --- the handler ------------------------------------------------------------------------


async def test_installed_beds_of_a_unit_named_by_its_org_code_apply_from_the_events_day(
    database: Database,
) -> None:
    await _apply(database, capacity_event("CHU-2101", 34))
    assert await _beds(database, "CHU-2101", date(2025, 3, 9)) == 30
    assert await _beds(database, "CHU-2101", date(2025, 3, 10)) == 34
    assert ("CHU-2101", date(2025, 3, 10), 34, "beds") in await _capacity_rows(database)


async def test_a_unit_named_by_its_uf_code_is_found_within_the_events_establishment(
    database: Database,
) -> None:
    await _apply(database, capacity_event("3101", 26, establishment=CH_NORD))
    assert await _beds(database, "NORD-3101", MARCH_10.date()) == 26


async def test_the_establishment_may_come_in_the_data_only(database: Database) -> None:
    event = capacity_event("2102", 12).model_copy(update={"establishment": None})
    await _apply(database, event)
    assert await _beds(database, "CHU-2102", MARCH_10.date()) == 12


async def test_the_day_is_the_establishments_day_not_utcs(database: Database) -> None:
    # 23:30 UTC on 31 March is already 1 April in France.
    await _apply(
        database, capacity_event("CHU-2101", 36, at=datetime(2025, 3, 31, 23, 30, tzinfo=UTC))
    )
    assert await _beds(database, "CHU-2101", date(2025, 3, 31)) == 30
    assert await _beds(database, "CHU-2101", date(2025, 4, 1)) == 36


async def test_an_unchanged_installed_count_writes_nothing(database: Database) -> None:
    before = await _capacity_rows(database)
    await _apply(database, capacity_event("CHU-2101", 30, occupied=29))
    assert await _capacity_rows(database) == before


@pytest.mark.parametrize(
    "event",
    [
        capacity_event("CHU-9999", 10),
        capacity_event("9999", 10),
        capacity_event("3101", 10, establishment=CHU),  # CH du Nord's UF, said to be the CHU's
        capacity_event("NORD-3101", 10, establishment=CHU),
        capacity_event("CHU-CAR", 10),  # a department has no beds of its own
    ],
    ids=[
        "unknown-code",
        "unknown-uf",
        "uf-of-another-establishment",
        "unit-of-another-establishment",
        "not-a-unit",
    ],
)
async def test_an_event_that_cannot_be_placed_is_logged_and_skipped(
    database: Database, event: Event, caplog: pytest.LogCaptureFixture
) -> None:
    before = await _capacity_rows(database)
    with caplog.at_level(logging.WARNING, logger="activity_svc.consumers"):
        await _apply(database, event)
    assert await _capacity_rows(database) == before
    assert str(event.id) in caplog.text


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (capacity_event(None, 10), "unit"),
        (capacity_event("CHU\x00", 10), "unit"),
        (capacity_event("CHU-2101", None), "installed"),
        (capacity_event("CHU-2101", -3), "installed"),
        (capacity_event("CHU-2101", "30"), "installed"),
    ],
    ids=["no-unit", "unit-with-a-nul", "no-installed", "negative-installed", "installed-as-text"],
)
async def test_an_event_whose_data_does_not_fit_its_model_is_unreadable_and_writes_nothing(
    database: Database, event: Event, field: str
) -> None:
    before = await _capacity_rows(database)
    with pytest.raises(UnreadablePayload, match=field):
        await _apply(database, event)
    assert await _capacity_rows(database) == before


# --- real events through the running service's consumer ---------------------------------


async def _inbox_count(database: Database, event: Event) -> int:
    async with database.transaction() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(tables.inbox)
            .where(tables.inbox.c.event_id == event.id)
        )
        return count or 0


async def test_a_capacity_event_from_beds_sets_the_units_installed_beds(
    activity: httpx.AsyncClient, database: Database, nats_url: str, activity_settings: Settings
) -> None:
    event = capacity_event("2101", 42, at=datetime.now(UTC))
    day = local_date(event.time)
    await publish_event(nats_url, event)
    await wait_for(lambda: _beds_is(database, "CHU-2101", 42, day), timeout=15)
    assert ("CHU-2101", day, 42, "beds") in await _capacity_rows(database)
    assert await _inbox_count(database, event) == 1


async def test_a_capacity_event_received_twice_applies_once(
    activity: httpx.AsyncClient, database: Database, nats_url: str, activity_settings: Settings
) -> None:
    first = capacity_event("CHU-2101", 40)
    second = capacity_event("CHU-2101", 45)
    marker = capacity_event("CHU-2102", 14)
    await publish_event(nats_url, first, second)
    await wait_for(lambda: _beds_is(database, "CHU-2101", 45), timeout=15)
    # The first one again, past JetStream's deduplication (no message id): only the inbox
    # stands between it and the count going back to 40.
    await publish_event(nats_url, first, dedupe=False)
    await publish_event(nats_url, marker)
    await wait_for(lambda: _beds_is(database, "CHU-2102", 14), timeout=15)
    assert await _beds(database, "CHU-2101", MARCH_10.date()) == 45
    assert await _inbox_count(database, first) == 1
    async with database.transaction() as session:
        dead = await session.scalar(select(func.count()).select_from(tables.dead_letter))
    assert dead == 0


async def test_an_event_for_an_unknown_unit_does_not_hold_up_the_next_ones(
    activity: httpx.AsyncClient, database: Database, nats_url: str, activity_settings: Settings
) -> None:
    unknown = capacity_event("CHU-9999", 10)
    known = capacity_event("NORD-3101", 28, establishment=CH_NORD)
    await publish_event(nats_url, unknown, known)
    await wait_for(lambda: _beds_is(database, "NORD-3101", 28), timeout=15)
    assert await _inbox_count(database, unknown) == 1
    async with database.transaction() as session:
        dead = await session.scalar(select(func.count()).select_from(tables.dead_letter))
    assert dead == 0


async def _beds_is(database: Database, unit: str, beds: int, day: date = MARCH_10_DAY) -> bool:
    return await _beds(database, unit, day) == beds

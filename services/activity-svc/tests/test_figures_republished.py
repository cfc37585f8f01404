"""Changes that move figures without an import: installed beds and targets republish
``ght.activity.indicator.updated`` and re-evaluate the alert rules; a new alert rule is
evaluated at once on the figures already there."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from activity_testing import CHU, TERRITORY, put_unit_month
from sqlalchemy import select, text

from activity_svc.consumers import on_contract_signed
from activity_svc.events import ALERT_RAISED, CAPACITY_CHANGED, INDICATOR_UPDATED
from activity_svc.models import Alert, AlertBasis, AlertDirection
from activity_svc.months import add_months, first_of_month
from activity_svc.referential.tree import capacity_on, today
from activity_svc.settings import Settings
from activity_svc.steering.alerts import RuleSpec, create_rule
from ght_shared.auth import Principal
from ght_shared.db import Database
from ght_shared.events import Event, nats_subject_of, new_event
from ght_shared.testing.plugin import wait_for
from ght_shared.testing.streams import publish_event, published

pytestmark = pytest.mark.usefixtures("territory")

Headers = Callable[..., dict[str, str]]

OCCUPANCY = "bed_occupancy_rate"
STAYS = "stays_full"
IMAGING = "imaging_exams"
JAN, FEB, MAR = date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)
CADRE = Principal.model_validate(
    {"sub": "cadre", "establishments": ["*"], "scope": "activity:read activity:write"}
)
ABOVE_THE_UNIT = {"CHU-CAR", "CHU-MED", CHU, TERRITORY}


async def _rule(
    database: Database,
    org_unit: str,
    indicator: str,
    basis: AlertBasis,
    direction: AlertDirection,
    threshold: float = 10.0,
) -> uuid.UUID:
    """A rule created through its use case, as the route creates it (it is evaluated at
    once on the figures of the last twelve months there are)."""
    async with database.transaction() as session:
        rule = await create_rule(
            session, CADRE, RuleSpec(indicator, org_unit, basis, threshold, direction)
        )
        return rule.id


async def _events(database: Database, event_type: str) -> list[Event]:
    async with database.transaction() as session:
        rows = await session.execute(
            text("SELECT payload FROM outbox WHERE event_type = :type ORDER BY id"),
            {"type": event_type},
        )
        return [Event.from_bytes(payload) for (payload,) in rows]


async def _alerts(database: Database) -> list[Alert]:
    async with database.transaction() as session:
        return list(await session.scalars(select(Alert).order_by(Alert.org_unit, Alert.period)))


def _by_key(events: list[Event]) -> dict[tuple[str, str, str], dict[str, Any]]:
    keys = [(e.data["indicator"], e.data["org_unit"], e.data["period"]) for e in events]
    assert len(keys) == len(set(keys)), "one event per indicator, org unit and month"
    return {key: e.data for key, e in zip(keys, events, strict=True)}


# --- installed beds -----------------------------------------------------------------------


async def _occupancy_at_half(database: Database) -> uuid.UUID:
    """Cardiology HC (30 beds, with 10 in HDJ: 40 below CHU-CAR) at 50 % occupancy every
    month of 2024 and 2025 to March, and a rule on the medicine pôle's occupancy rising
    more than 10 % above last year."""
    async with database.transaction() as session:
        for month, days in ((JAN, 31), (FEB, 28), (MAR, 31)):
            await put_unit_month(session, "CHU-2101", month, stays_full=50, occupied_days=20 * days)
        for month, days in ((date(2024, 1, 1), 31), (date(2024, 2, 1), 29), (date(2024, 3, 1), 31)):
            await put_unit_month(session, "CHU-2101", month, stays_full=50, occupied_days=20 * days)
    # In points: the year to date to March goes from 50 % to 56.7 %.
    return await _rule(
        database, "CHU-MED", OCCUPANCY, AlertBasis.LAST_YEAR, AlertDirection.ABOVE, threshold=5.0
    )


def _assert_occupancy_republished_from_february(events: list[Event]) -> None:
    by_key = _by_key(events)
    # 10 beds fewer from 1 February: 20 x 28 bed days in use over 30 x 28 installed.
    assert set(by_key) == {
        (OCCUPANCY, org_unit, period)
        for org_unit in ABOVE_THE_UNIT
        for period in ("2025-02", "2025-03")
    }
    february = by_key[OCCUPANCY, "CHU-CAR", "2025-02"]
    assert february["value"] == pytest.approx(20 * 28 * 100 / (30 * 28))
    assert february["same_period_last_year"] == pytest.approx(50.0)
    assert february["year_to_date"] == pytest.approx(
        (20 * 31 + 20 * 28) * 100 / (40 * 31 + 30 * 28)
    )
    assert by_key[OCCUPANCY, "CHU-MED", "2025-03"]["value"] == pytest.approx(200 / 3)
    assert "import_id" not in february


async def _assert_occupancy_alerts(database: Database, rule: uuid.UUID) -> None:
    alerts = await _alerts(database)
    # One alert per org unit, reading the latest month republished.
    assert {(a.rule_id, a.org_unit, a.period) for a in alerts} == {
        (rule, org_unit, MAR) for org_unit in ("CHU-CAR", "CHU-MED")
    }
    assert all(a.deviation > 5 and a.unit == "points" and a.status == "open" for a in alerts)
    raised = await _events(database, ALERT_RAISED)
    assert {(e.data["org_unit"], e.data["period"]) for e in raised} == {
        (a.org_unit, f"{a.period:%Y-%m}") for a in alerts
    }


async def _set_beds(
    activity: httpx.AsyncClient, auth: Headers, beds: int, valid_from: str | None = None
) -> None:
    """Unit CHU-2101 (cardiology, full stays) gets ``beds`` installed from ``valid_from``."""
    change: dict[str, Any] = {
        "kind": "unit",
        "name": "Cardiologie HC",
        "parent": "CHU-CAR",
        "installed_beds": beds,
    }
    if valid_from is not None:
        change["valid_from"] = valid_from
    response = await activity.put(
        "/org-units/CHU-2101", json=change, headers=auth("it_system", CHU)
    )
    assert response.status_code == 200, response.text


async def test_fewer_beds_on_a_unit_republish_the_occupancy_above_it_and_raise_its_alerts(
    activity: httpx.AsyncClient, auth: Headers, database: Database, nats_url: str
) -> None:
    rule = await _occupancy_at_half(database)
    await _set_beds(activity, auth, 20, "2025-02-01")

    events = await _events(database, INDICATOR_UPDATED)
    _assert_occupancy_republished_from_february(events)
    delivered = await published(
        nats_url, nats_subject_of(INDICATOR_UPDATED), {str(e.id) for e in events}
    )
    assert len(delivered) == 8
    await _assert_occupancy_alerts(database, rule)


async def test_beds_changed_in_the_middle_of_a_month_count_from_the_next_one(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _occupancy_at_half(database)
    async with database.transaction() as session:
        # A later change already recorded bounds the months this one applies to.
        await session.execute(
            text(
                "INSERT INTO unit_capacity (unit, effective_from, installed_beds, source)"
                " VALUES ('CHU-2101', '2025-03-01', 30, 'beds')"
            )
        )
    await _set_beds(activity, auth, 25, "2025-01-15")
    events = await _events(database, INDICATOR_UPDATED)
    assert {e.data["period"] for e in events} == {"2025-02"}


async def test_an_unchanged_installed_count_republishes_nothing(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _occupancy_at_half(database)
    await _set_beds(activity, auth, 30)
    assert await _events(database, INDICATOR_UPDATED) == []


async def test_a_capacity_event_from_beds_republishes_the_occupancy_and_raises_its_alerts(
    activity: httpx.AsyncClient, database: Database, nats_url: str, activity_settings: Settings
) -> None:
    rule = await _occupancy_at_half(database)
    event = new_event(
        source="beds-svc",
        type=f"{CAPACITY_CHANGED}.v1",
        subject="unit/2101",
        data={
            "unit": "2101",
            "specialty": "cardiologie",
            "establishment": CHU,
            "installed": 20,
            "open": 20,
            "occupied": 15,
            "available": 5,
            "occupancy": 0.75,
        },
        establishment=CHU,
    ).model_copy(update={"time": datetime(2025, 2, 1, 7, 0, tzinfo=UTC)})
    await publish_event(nats_url, event)

    async def applied() -> bool:
        async with database.transaction() as session:
            return await capacity_on(session, "CHU-2101", FEB) == 20

    await wait_for(applied, timeout=15)
    events = await _events(database, INDICATOR_UPDATED)
    _assert_occupancy_republished_from_february(events)
    delivered = await published(
        nats_url, nats_subject_of(INDICATOR_UPDATED), {str(e.id) for e in events}
    )
    assert {e.data["org_unit"] for e in delivered} == ABOVE_THE_UNIT
    await _assert_occupancy_alerts(database, rule)


# --- targets --------------------------------------------------------------------------------


async def _cardiology_stays(database: Database) -> uuid.UUID:
    """100 full stays a month in cardiology from January to March 2025, and a rule on the
    medicine pôle: full stays more than 10 % below target."""
    async with database.transaction() as session:
        for month in (JAN, FEB, MAR):
            await put_unit_month(session, "CHU-2101", month, stays_full=100)
    return await _rule(database, "CHU-MED", STAYS, AlertBasis.TARGET, AlertDirection.BELOW)


async def test_a_target_raised_above_the_figures_raises_the_target_alert_and_republishes(
    activity: httpx.AsyncClient, auth: Headers, database: Database, nats_url: str
) -> None:
    rule = await _cardiology_stays(database)
    url = "/targets/stays_full/CHU-CAR/2025"
    headers = auth("pole_manager", CHU, pole="CHU-MED")

    met = await activity.put(url, json={"value": 1200}, headers=headers)
    assert met.status_code == 201, met.text
    assert await _alerts(database) == []
    first = _by_key(await _events(database, INDICATOR_UPDATED))
    # The target's org unit only, the months of its year with figures.
    assert set(first) == {(STAYS, "CHU-CAR", p) for p in ("2025-01", "2025-02", "2025-03")}
    assert first[STAYS, "CHU-CAR", "2025-02"]["target"] == pytest.approx(100.0)
    assert first[STAYS, "CHU-CAR", "2025-02"]["target_year"] == 1200.0
    assert first[STAYS, "CHU-CAR", "2025-02"]["value"] == 100.0

    missed = await activity.put(url, json={"value": 2400}, headers=headers)
    assert missed.status_code == 200, missed.text
    alerts = await _alerts(database)
    # One alert for the org unit, reading the latest month.
    assert {(a.rule_id, a.org_unit, a.period) for a in alerts} == {(rule, "CHU-CAR", MAR)}
    assert all(a.deviation == pytest.approx(-50.0) for a in alerts)
    assert len(await _events(database, ALERT_RAISED)) == 1
    events = await _events(database, INDICATOR_UPDATED)
    assert len(events) == 6
    assert _by_key(events[3:])[STAYS, "CHU-CAR", "2025-03"]["target"] == pytest.approx(200.0)
    delivered = await published(
        nats_url, nats_subject_of(INDICATOR_UPDATED), {str(e.id) for e in events}
    )
    assert len(delivered) == 6


async def test_a_target_brought_back_within_reach_clears_the_alert(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    url = "/targets/stays_full/CHU-CAR/2025"
    headers = auth("direction", CHU)
    await activity.put(url, json={"value": 2400}, headers=headers)
    assert {a.status for a in await _alerts(database)} == {"open"}

    await activity.put(url, json={"value": 1250}, headers=headers)
    assert [a.status for a in await _alerts(database)] == ["closed"]


async def test_the_same_target_again_republishes_nothing(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    url = "/targets/stays_full/CHU-CAR/2025"
    headers = auth("direction", CHU)
    await activity.put(url, json={"value": 1200}, headers=headers)
    before = await _events(database, INDICATOR_UPDATED)
    again = await activity.put(url, json={"value": 1200}, headers=headers)
    assert again.status_code == 200
    assert await _events(database, INDICATOR_UPDATED) == before


async def test_a_removed_target_republishes_the_figures_without_it_and_clears_its_alerts(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    url = "/targets/stays_full/CHU-CAR/2025"
    headers = auth("direction", CHU)
    await activity.put(url, json={"value": 2400}, headers=headers)
    assert {a.status for a in await _alerts(database)} == {"open"}
    assert (await activity.delete(url, headers=headers)).status_code == 204
    events = await _events(database, INDICATOR_UPDATED)
    assert len(events) == 6
    assert {e.data["target"] for e in events[3:]} == {None}
    assert {a.status for a in await _alerts(database)} == {"closed"}


async def test_a_target_of_a_year_without_figures_publishes_nothing(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    response = await activity.put(
        "/targets/stays_full/CHU-CAR/2027", json={"value": 1200}, headers=auth("direction", CHU)
    )
    assert response.status_code == 201
    assert await _events(database, INDICATOR_UPDATED) == []


async def test_a_contract_setting_and_then_dropping_a_target_re_evaluates_the_rule(
    database: Database,
) -> None:
    rule = await _cardiology_stays(database)

    def contract(objectives: list[dict[str, Any]]) -> Event:
        return new_event(
            source="contracts-svc",
            type="ght.contracts.contract.signed.v1",
            subject="contract/COM-2025-MED",
            data={
                "contract": "COM-2025-MED",
                "period": {"start": "2025-01-01", "end": "2025-12-31"},
                "objectives": objectives,
            },
            establishment=CHU,
        )

    objective = {"indicator": STAYS, "org_unit": "CHU-CAR", "target": 2400}
    async with database.transaction() as session:
        await on_contract_signed(session, contract([objective]))
    assert {(a.rule_id, a.period, a.status) for a in await _alerts(database)} == {
        (rule, MAR, "open")
    }
    signed = await _events(database, INDICATOR_UPDATED)
    assert {e.data["target_year"] for e in signed} == {2400.0}

    # The amendment no longer names the objective: its target goes, and with it the
    # events' target.
    async with database.transaction() as session:
        await on_contract_signed(session, contract([]))
    dropped = (await _events(database, INDICATOR_UPDATED))[len(signed) :]
    assert {(e.data["period"], e.data["target"]) for e in dropped} == {
        ("2025-01", None),
        ("2025-02", None),
        ("2025-03", None),
    }


# --- new alert rules ----------------------------------------------------------------------


async def test_a_new_rule_raises_its_alerts_at_once_on_the_last_twelve_months(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    this_month = first_of_month(today())
    last_month = add_months(this_month, -1)
    # A rule created while there were no figures yet: nothing to raise then.
    older = await _rule(database, "CHU-IMG", IMAGING, AlertBasis.LAST_YEAR, AlertDirection.BELOW)
    async with database.transaction() as session:
        # Last month: half of the same month last year (-50 %); the year before, a
        # -90 % fall too, but outside the twelve months a new rule looks at. Written
        # straight into the table: no change of figures evaluates the rules.
        await put_unit_month(session, "CHU-1101", last_month, imaging_exams=50)
        await put_unit_month(session, "CHU-1101", add_months(last_month, -12), imaging_exams=100)
        await put_unit_month(session, "CHU-1101", add_months(last_month, -24), imaging_exams=1000)

    created = await activity.post(
        "/alert-rules",
        json={
            "indicator": IMAGING,
            "org_unit": "CHU-IMG",
            "basis": "last_year",
            "threshold": 20,
            "direction": "below",
        },
        headers=auth("pole_manager", CHU, pole="CHU-IMG"),
    )
    assert created.status_code == 201, created.text
    rule = uuid.UUID(created.json()["id"])

    alerts = await _alerts(database)
    # Only the new rule: the older one is evaluated by the next change of the figures.
    assert {(a.rule_id, a.org_unit, a.period) for a in alerts} == {
        (rule, "CHU-RAD", last_month),
        (rule, "CHU-IMG", last_month),
    }
    assert older not in {a.rule_id for a in alerts}
    assert all(a.deviation == pytest.approx(-50.0) for a in alerts)
    raised = await _events(database, ALERT_RAISED)
    assert {(e.data["rule"], e.data["org_unit"]) for e in raised} == {
        (str(rule), "CHU-RAD"),
        (str(rule), "CHU-IMG"),
    }
    assert await _events(database, INDICATOR_UPDATED) == []


async def test_a_new_rule_on_figures_within_its_threshold_raises_nothing(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    last_month = add_months(first_of_month(today()), -1)
    async with database.transaction() as session:
        await put_unit_month(session, "CHU-1101", last_month, imaging_exams=95)
        await put_unit_month(session, "CHU-1101", add_months(last_month, -12), imaging_exams=100)
    created = await activity.post(
        "/alert-rules",
        json={
            "indicator": IMAGING,
            "org_unit": CHU,
            "basis": "last_year",
            "threshold": 10,
            "direction": "either",
        },
        headers=auth("direction", CHU),
    )
    assert created.status_code == 201, created.text
    assert await _alerts(database) == []

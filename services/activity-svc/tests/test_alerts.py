"""Alerts: rules evaluated on fresh figures (without HTTP), and the rule and alert routes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU
from sqlalchemy import insert, select

from activity_svc import events
from activity_svc.catalogue import INDICATORS_BY_CODE, VariationUnit
from activity_svc.indicators.figures import Figures
from activity_svc.indicators.values import compute_figures
from activity_svc.models import Alert, AlertBasis, AlertDirection, UnitMonth
from activity_svc.steering.alerts import RuleSpec, create_rule
from activity_svc.steering.evaluation import breaches, evaluate_alerts
from ght_shared import tables
from ght_shared.auth import Principal
from ght_shared.db import Database
from ght_shared.events import Event

pytestmark = pytest.mark.usefixtures("territory")

Headers = Callable[..., dict[str, str]]

STAYS = "stays_full"
MARCH = date(2026, 3, 1)
CADRE = Principal.model_validate(
    {"sub": "cadre", "establishments": ["*"], "scope": "activity:read activity:write"}
)


def _figures(
    org_unit: str = "CHU-RAD",
    *,
    indicator: str = STAYS,
    finess: str | None = CHU,
    period: date = MARCH,
    ytd: float | None = 876.0,
    ytd_last_year: float | None = 1000.0,
    ytd_variation: float | None = -12.4,
    value: float | None = 300.0,
    last_year: float | None = 320.0,
    variation: float | None = -6.25,
    target_ytd: float | None = None,
    unit: VariationUnit = "%",
) -> Figures:
    return Figures(
        indicator=indicator,
        org_unit=org_unit,
        finess=finess,
        period=period,
        value=value,
        same_period_last_year=last_year,
        variation=variation,
        year_to_date=ytd,
        year_to_date_last_year=ytd_last_year,
        year_to_date_variation=ytd_variation,
        projection=None,
        variation_unit=unit,
        target_year_to_date=target_ytd,
    )


async def _rule(
    database: Database,
    org_unit: str = "CHU-IMG",
    *,
    indicator: str = STAYS,
    basis: AlertBasis = AlertBasis.LAST_YEAR,
    threshold: float = 10.0,
    direction: AlertDirection = AlertDirection.BELOW,
) -> uuid.UUID:
    async with database.transaction() as session:
        rule = await create_rule(
            session, CADRE, RuleSpec(indicator, org_unit, basis, threshold, direction)
        )
        return rule.id


async def _evaluate(database: Database, *figures: Figures) -> None:
    async with database.transaction() as session:
        await evaluate_alerts(session, figures)


async def _alerts(database: Database) -> list[Alert]:
    async with database.transaction() as session:
        return list(await session.scalars(select(Alert).order_by(Alert.org_unit, Alert.period)))


async def _raised_events(database: Database, event_type: str = events.ALERT_RAISED) -> list[Event]:
    async with database.transaction() as session:
        payloads = await session.scalars(
            select(tables.outbox.c.payload)
            .where(tables.outbox.c.event_type == event_type)
            .order_by(tables.outbox.c.id)
        )
        return [Event.from_bytes(payload) for payload in payloads]


# --- rules, without HTTP ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "deviation", "raised"),
    [
        (AlertDirection.ABOVE, 12.0, True),
        (AlertDirection.ABOVE, -12.0, False),
        (AlertDirection.BELOW, -12.0, True),
        (AlertDirection.BELOW, 12.0, False),
        (AlertDirection.EITHER, 12.0, True),
        (AlertDirection.EITHER, -12.0, True),
        (AlertDirection.EITHER, 9.9, False),
        (AlertDirection.EITHER, -10.0, False),
    ],
)
def test_a_deviation_breaches_only_past_the_threshold_in_the_rules_direction(
    direction: AlertDirection, deviation: float, raised: bool
) -> None:
    assert breaches(deviation, 10.0, direction) is raised


async def test_a_rule_on_a_pole_raises_an_alert_for_an_org_unit_below_it_past_the_threshold(
    database: Database,
) -> None:
    rule = await _rule(database)
    await _evaluate(database, _figures("CHU-RAD"))

    (alert,) = await _alerts(database)
    assert (alert.rule_id, alert.org_unit, alert.finess, alert.period) == (
        rule,
        "CHU-RAD",
        CHU,
        MARCH,
    )
    assert (alert.value, alert.reference, alert.deviation, alert.threshold) == (
        876.0,
        1000.0,
        -12.4,
        10.0,
    )
    assert alert.status == "open"
    assert (
        alert.message == "CHU-RAD: Full stays year to date 12.4 % below last year (threshold 10 %)"
    )

    (event,) = await _raised_events(database)
    assert event.establishment == CHU
    assert event.data == {
        "alert": str(alert.id),
        "rule": str(rule),
        "indicator": STAYS,
        "org_unit": "CHU-RAD",
        "period": "2026-03",
        "value": 876.0,
        "reference": 1000.0,
        "deviation": -12.4,
        "threshold": 10.0,
        "unit": "%",
        "basis": "last_year",
        "direction": "below",
        "message": alert.message,
    }


async def test_evaluating_the_same_figures_again_raises_no_second_alert(
    database: Database,
) -> None:
    await _rule(database)
    await _evaluate(database, _figures("CHU-RAD"), _figures("CHU-RAD"))
    await _evaluate(database, _figures("CHU-RAD", ytd_variation=-15.0))
    assert len(await _alerts(database)) == 1
    assert len(await _raised_events(database)) == 1


async def test_only_the_rules_indicator_and_subtree_are_watched(database: Database) -> None:
    await _rule(database, "CHU-IMG")
    await _evaluate(
        database,
        _figures("CHU-1101"),  # a unit below the pôle
        _figures("CHU-IMG"),  # the pôle itself
        _figures("CHU-CAR"),  # another pôle's department
        _figures(CHU),  # above the pôle
        _figures("NORD-INT", finess=CH_NORD),
        _figures("CHU-RAD", indicator="hospital_days"),
    )
    assert [a.org_unit for a in await _alerts(database)] == ["CHU-1101", "CHU-IMG"]


async def test_a_figure_within_the_threshold_or_without_last_year_raises_nothing(
    database: Database,
) -> None:
    await _rule(database)
    await _evaluate(
        database,
        _figures("CHU-RAD", ytd_variation=-9.0),
        _figures("CHU-NUC", ytd_variation=None, variation=None),
    )
    assert await _alerts(database) == []


async def test_the_month_is_compared_when_there_is_no_year_to_date_variation(
    database: Database,
) -> None:
    await _rule(database, direction=AlertDirection.EITHER, threshold=5)
    await _evaluate(
        database, _figures("CHU-RAD", ytd_variation=None, value=330, last_year=300, variation=10)
    )
    (alert,) = await _alerts(database)
    assert (alert.value, alert.reference, alert.deviation) == (330, 300, 10)
    assert alert.message == (
        "CHU-RAD: Full stays in 2026-03 10.0 % above the same month last year (threshold 5 %)"
    )


async def test_a_target_rule_compares_the_year_to_date_with_the_targets(
    database: Database,
) -> None:
    await _rule(database, basis=AlertBasis.TARGET, threshold=15)
    await _evaluate(
        database,
        _figures("CHU-RAD", ytd=80, target_ytd=100),
        _figures("CHU-NUC", ytd=90, target_ytd=100),
        _figures("CHU-1101", ytd=10, target_ytd=None),
    )
    (alert,) = await _alerts(database)
    assert (alert.org_unit, alert.value, alert.reference) == ("CHU-RAD", 80, 100)
    assert alert.deviation == pytest.approx(-20.0)
    assert alert.message == "CHU-RAD: Full stays year to date 20.0 % below target (threshold 15 %)"


async def test_an_alert_clears_when_the_figure_comes_back_and_is_raised_again_after(
    database: Database,
) -> None:
    await _rule(database)
    await _evaluate(database, _figures("CHU-RAD"))
    (first,) = await _alerts(database)

    await _evaluate(database, _figures("CHU-RAD", ytd_variation=-2.0))
    (closed,) = await _alerts(database)
    assert closed.status == "closed"
    assert len(await _raised_events(database)) == 1

    await _evaluate(database, _figures("CHU-RAD", ytd_variation=-20.0))
    (again,) = await _alerts(database)
    assert (again.id, again.status, again.deviation) == (first.id, "open", -20.0)
    assert [e.data["deviation"] for e in await _raised_events(database)] == [-12.4, -20.0]


async def test_an_acknowledged_alert_is_not_raised_again_while_it_lasts(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _rule(database)
    await _evaluate(database, _figures("CHU-RAD"))
    (alert,) = await _alerts(database)
    acknowledged = await activity.post(
        f"/alerts/{alert.id}/acknowledge", headers=auth("pole_manager", CHU, pole="CHU-IMG")
    )
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "acknowledged"

    await _evaluate(database, _figures("CHU-RAD", ytd_variation=-30.0))
    (still,) = await _alerts(database)
    assert still.status == "acknowledged"
    assert len(await _raised_events(database)) == 1


async def test_a_deleted_rule_raises_nothing_and_closes_its_alerts(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    rule = await _rule(database)
    await _evaluate(database, _figures("CHU-RAD"))
    deleted = await activity.delete(f"/alert-rules/{rule}", headers=auth("direction", CHU))
    assert deleted.status_code == 204
    await _evaluate(database, _figures("CHU-NUC"))
    (alert,) = await _alerts(database)
    assert (alert.org_unit, alert.status, alert.detail["closed_reason"]) == (
        "CHU-RAD",
        "closed",
        "rule_deleted",
    )
    (closed,) = await _raised_events(database, events.ALERT_CLOSED)
    assert closed.data["reason"] == "rule_deleted" and closed.data["alert"] == str(alert.id)
    listed = await activity.get("/alerts", headers=auth("direction", CHU))
    assert [(a["org_unit"], a["status"]) for a in listed.json()["items"]] == [("CHU-RAD", "closed")]


async def test_one_alert_per_rule_and_org_unit_whatever_the_months_evaluated(
    database: Database,
) -> None:
    # An import of thirteen months on two departments: two alerts, not twenty-six.
    await _rule(database)
    months = [
        date(2025, 3, 1),
        *(date(2025, m, 1) for m in range(4, 13)),
        *(date(2026, m, 1) for m in (1, 2, 3)),
    ]
    await _evaluate(
        database, *(_figures(unit, period=m) for unit in ("CHU-RAD", "CHU-NUC") for m in months)
    )
    alerts = await _alerts(database)
    assert [(a.org_unit, a.period, a.opened_period) for a in alerts] == [
        ("CHU-NUC", MARCH, MARCH),
        ("CHU-RAD", MARCH, MARCH),
    ]
    assert len(await _raised_events(database)) == 2


async def test_an_alert_follows_the_months_until_it_closes_with_its_history(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    april, may = date(2026, 4, 1), date(2026, 5, 1)
    await _rule(database)
    await _evaluate(database, _figures("CHU-RAD"))
    await _evaluate(database, _figures("CHU-RAD", period=april, ytd=850, ytd_variation=-15.0))
    # A correction of an earlier month changes nothing: the alert reads April.
    await _evaluate(database, _figures("CHU-RAD", period=date(2026, 2, 1), ytd_variation=-1.0))
    (alert,) = await _alerts(database)
    assert (alert.period, alert.opened_period, alert.status) == (april, MARCH, "open")
    assert (alert.value, alert.deviation) == (850, -15.0)

    await _evaluate(database, _figures("CHU-RAD", period=may, ytd_variation=-3.0))
    (alert,) = await _alerts(database)
    assert (alert.period, alert.status, alert.detail["closed_reason"]) == (
        may,
        "closed",
        "within_threshold",
    )
    history = await activity.get(f"/alerts/{alert.id}/history", headers=auth("direction", CHU))
    assert history.status_code == 200, history.text
    assert [(c["change"], c["period"], c["deviation"]) for c in history.json()["items"]] == [
        ("opened", "2026-03", -12.4),
        ("updated", "2026-04", -15.0),
        ("closed", "2026-05", -3.0),
    ]
    assert len(await _raised_events(database)) == 1
    (closed,) = await _raised_events(database, events.ALERT_CLOSED)
    assert (closed.data["period"], closed.data["reason"]) == ("2026-05", "within_threshold")
    hidden = await activity.get(f"/alerts/{alert.id}/history", headers=auth("direction", CH_NORD))
    assert hidden.status_code == 404


async def test_a_rate_rule_reads_its_threshold_in_points(database: Database) -> None:
    completeness = "coding_completeness_rate"
    await _rule(database, indicator=completeness, threshold=15)
    await _rule(database, indicator=completeness, threshold=20)
    # 79.5 % against 96.96 %: 17.46 points below (it was shown as -18.01 %).
    await _evaluate(
        database,
        _figures(
            "CHU-RAD",
            indicator=completeness,
            ytd=79.5,
            ytd_last_year=96.96,
            ytd_variation=-17.46,
            unit="points",
        ),
    )
    (alert,) = await _alerts(database)
    assert (alert.deviation, alert.threshold, alert.unit) == (-17.46, 15.0, "points")
    assert alert.message == (
        "CHU-RAD: Coding completeness year to date 17.5 points below last year"
        " (threshold 15 points)"
    )


async def test_an_alert_names_the_children_contributing_most_to_the_change(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    """Imaging exams of the pôle: radiology 100 -> 60, nuclear medicine 50 -> 55: the pôle
    is 23.3 % down, radiology counts for -26.7 of it and nuclear medicine for +3.3."""
    await _rule(database, "CHU-IMG", indicator="imaging_exams")  # before the figures
    async with database.transaction() as session:
        for unit, last_year, this_year in (("CHU-1101", 100, 60), ("CHU-1201", 50, 55)):
            for month, exams in ((date(2025, 3, 1), last_year), (MARCH, this_year)):
                await session.execute(
                    insert(UnitMonth).values(
                        unit=unit, month=month, updated_at=datetime.now(UTC), imaging_exams=exams
                    )
                )
    async with database.transaction() as session:
        figures = await compute_figures(
            session, [INDICATORS_BY_CODE["imaging_exams"]], [("CHU-IMG", MARCH)], {"CHU-IMG": CHU}
        )
        await evaluate_alerts(session, figures)
    (alert,) = await _alerts(database)
    read = await activity.get(f"/alerts/{alert.id}", headers=auth("direction", CHU))
    assert read.status_code == 200, read.text
    body = read.json()
    assert body["deviation"] == pytest.approx(-70 / 3)
    assert [(c["org_unit"], c["name"]) for c in body["contributions"]] == [
        ("CHU-RAD", "Radiologie"),
        ("CHU-NUC", "Médecine nucléaire"),
    ]
    assert [c["contribution"] for c in body["contributions"]] == [
        pytest.approx(-80 / 3),
        pytest.approx(10 / 3),
    ]
    assert sum(c["contribution"] for c in body["contributions"]) == pytest.approx(-70 / 3)
    assert (body["contributions"][0]["value"], body["contributions"][0]["reference"]) == (60, 100)


# --- alert rules API ---------------------------------------------------------------------

RULE = {
    "indicator": STAYS,
    "org_unit": "CHU-IMG",
    "basis": "last_year",
    "threshold": 10,
    "direction": "below",
}


async def test_a_rule_is_created_listed_and_deleted(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    headers = auth("direction", CHU)
    created = await activity.post("/alert-rules", json=RULE, headers=headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert created.headers["location"] == f"alert-rules/{rule['id']}"
    assert {k: rule[k] for k in RULE} == {**RULE, "threshold": 10.0}
    assert rule["active"] is True and rule["created_by"] == f"direction-{CHU}"
    other = await activity.post(
        "/alert-rules",
        json={**RULE, "org_unit": "CHU-MED", "indicator": "average_length_of_stay"},
        headers=headers,
    )
    assert other.status_code == 201

    listed = (await activity.get("/alert-rules", headers=headers)).json()
    assert {r["org_unit"] for r in listed["items"]} == {"CHU-IMG", "CHU-MED"}
    filtered = await activity.get(
        "/alert-rules", params={"org_unit": "CHU-IMG", "indicator": STAYS}, headers=headers
    )
    assert [r["id"] for r in filtered.json()["items"]] == [rule["id"]]
    first = (await activity.get("/alert-rules", params={"limit": 1}, headers=headers)).json()
    second = (
        await activity.get(
            "/alert-rules", params={"limit": 1, "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [rule["id"], other.json()["id"]]
    assert second["next_cursor"] is None

    assert (await activity.delete(f"/alert-rules/{rule['id']}", headers=headers)).status_code == 204
    listed = (await activity.get("/alert-rules", headers=headers)).json()
    assert [r["id"] for r in listed["items"]] == [other.json()["id"]]
    again = await activity.delete(f"/alert-rules/{rule['id']}", headers=headers)
    assert again.status_code == 404 and again.json()["code"] == "alert_rule_not_found"


async def test_an_establishment_lists_only_its_own_rules(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    admin = auth("admin")
    await activity.post("/alert-rules", json=RULE, headers=admin)
    await activity.post("/alert-rules", json={**RULE, "org_unit": "NORD-MED"}, headers=admin)
    listed = await activity.get("/alert-rules", headers=auth("direction", CH_NORD))
    assert [r["org_unit"] for r in listed.json()["items"]] == ["NORD-MED"]


async def test_each_rule_write_is_audited(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    created = await activity.post("/alert-rules", json=RULE, headers=auth("direction", CHU))
    rule_id = created.json()["id"]
    await activity.delete(f"/alert-rules/{rule_id}", headers=auth("direction", CHU))
    async with database.transaction() as session:
        actions = (
            await session.scalars(
                select(tables.audit_log.c.action)
                .where(tables.audit_log.c.resource == f"alert_rule/{rule_id}")
                .order_by(tables.audit_log.c.id)
            )
        ).all()
    assert actions == ["alert_rule.created", "alert_rule.deleted"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": -5}, "threshold"),
        ({"threshold": "ten"}, "threshold"),
        ({"threshold": None}, "threshold"),
        ({"basis": "yesterday"}, "basis"),
        ({"direction": "sideways"}, "direction"),
        ({"indicator": 12}, "indicator"),
        ({"org_unit": ""}, "org_unit"),
    ],
)
async def test_a_malformed_rule_is_refused_naming_the_field(
    activity: httpx.AsyncClient, auth: Headers, change: dict[str, Any], field: str
) -> None:
    response = await activity.post("/alert-rules", json={**RULE, **change}, headers=auth("admin"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_a_rule_missing_a_field_is_refused(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    body = {k: v for k, v in RULE.items() if k != "basis"}
    response = await activity.post("/alert-rules", json=body, headers=auth("admin"))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["basis"]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"indicator": "beds_made"}, "indicator_not_found"),
        ({"org_unit": "CHU-NOPE"}, "org_unit_not_found"),
    ],
)
async def test_a_rule_on_an_unknown_indicator_or_org_unit_is_a_404(
    activity: httpx.AsyncClient, auth: Headers, change: dict[str, Any], code: str
) -> None:
    response = await activity.post("/alert-rules", json={**RULE, **change}, headers=auth("admin"))
    assert response.status_code == 404
    assert response.json()["code"] == code


async def test_a_rule_write_needs_a_token(activity: httpx.AsyncClient, database: Database) -> None:
    rule = await _rule(database)
    assert (await activity.post("/alert-rules", json=RULE)).status_code == 401
    assert (await activity.delete(f"/alert-rules/{rule}")).status_code == 401


@pytest.mark.parametrize("role", ["bed_manager", "commission", "nobody"])
async def test_a_rule_write_needs_activity_or_contracts_write(
    activity: httpx.AsyncClient, auth: Headers, database: Database, role: str
) -> None:
    rule = await _rule(database)
    headers = auth(role, CHU)
    assert (await activity.post("/alert-rules", json=RULE, headers=headers)).status_code == 403
    assert (await activity.delete(f"/alert-rules/{rule}", headers=headers)).status_code == 403


async def test_a_rule_write_is_refused_for_another_establishment(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    rule = await _rule(database)
    headers = auth("direction", CH_NORD)
    created = await activity.post("/alert-rules", json=RULE, headers=headers)
    assert created.status_code == 403 and created.json()["code"] == "forbidden"
    assert (await activity.delete(f"/alert-rules/{rule}", headers=headers)).status_code == 403
    territory_rule = await activity.post(
        "/alert-rules", json={**RULE, "org_unit": "G4"}, headers=auth("direction", CHU)
    )
    assert territory_rule.status_code == 403


# --- alerts API --------------------------------------------------------------------------


async def _two_establishments_alerts(database: Database) -> None:
    await _rule(database, CHU)
    await _rule(database, CH_NORD)
    await _evaluate(database, _figures("CHU-RAD"), _figures("CHU-CAR"))
    await _evaluate(database, _figures("NORD-INT", finess=CH_NORD))


async def test_alerts_are_listed_newest_first_and_filtered(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _two_establishments_alerts(database)
    admin = auth("admin")

    everything = (await activity.get("/alerts", headers=admin)).json()
    assert everything["items"][0]["org_unit"] == "NORD-INT"
    assert {a["org_unit"] for a in everything["items"]} == {"CHU-RAD", "CHU-CAR", "NORD-INT"}
    assert everything["items"][0]["period"] == "2026-03"

    below_imaging = await activity.get("/alerts", params={"org_unit": "CHU-IMG"}, headers=admin)
    assert [a["org_unit"] for a in below_imaging.json()["items"]] == ["CHU-RAD"]
    none = await activity.get("/alerts", params={"org_unit": "CHU-1101"}, headers=admin)
    assert none.json()["items"] == []
    other = await activity.get("/alerts", params={"indicator": "hospital_days"}, headers=admin)
    assert other.json()["items"] == []
    acknowledged = await activity.get("/alerts", params={"status": "acknowledged"}, headers=admin)
    assert acknowledged.json()["items"] == []
    future = await activity.get("/alerts", params={"since": "2100-01-01T00:00:00"}, headers=admin)
    assert future.json()["items"] == []
    past = await activity.get("/alerts", params={"since": "2000-01-01T00:00:00Z"}, headers=admin)
    assert len(past.json()["items"]) == 3

    pages: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = (await activity.get("/alerts", params=params, headers=admin)).json()
        pages += [a["id"] for a in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert pages == [a["id"] for a in everything["items"]]


async def test_an_establishment_sees_only_its_own_alerts(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _two_establishments_alerts(database)
    chu = await activity.get("/alerts", headers=auth("bed_manager", CHU))
    assert {a["org_unit"] for a in chu.json()["items"]} == {"CHU-RAD", "CHU-CAR"}
    refused = await activity.get(
        "/alerts", params={"org_unit": "CHU-IMG"}, headers=auth("bed_manager", CH_NORD)
    )
    assert refused.status_code == 403
    assert (await activity.get("/alerts")).status_code == 401
    assert (await activity.get("/alerts", headers=auth("nobody"))).status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "burning"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "bm9wZQ"}, "cursor"),
    ],
)
async def test_a_bad_alert_query_is_refused_naming_the_parameter(
    activity: httpx.AsyncClient, auth: Headers, params: dict[str, Any], field: str
) -> None:
    response = await activity.get("/alerts", params=params, headers=auth("admin"))
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_acknowledging_an_alert_needs_a_steering_role_of_its_establishment(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _two_establishments_alerts(database)
    alert = next(a for a in await _alerts(database) if a.org_unit == "CHU-RAD")
    url = f"/alerts/{alert.id}/acknowledge"
    assert (await activity.post(url)).status_code == 401
    assert (await activity.post(url, headers=auth("bed_manager", CHU))).status_code == 403
    assert (await activity.post(url, headers=auth("commission", CHU))).status_code == 403
    assert (await activity.post(url, headers=auth("direction", CH_NORD))).status_code == 403
    acknowledged = await activity.post(url, headers=auth("direction", CHU))
    assert acknowledged.status_code == 200 and acknowledged.json()["status"] == "acknowledged"
    twice = await activity.post(url, headers=auth("direction", CHU))
    assert twice.status_code == 200 and twice.json()["status"] == "acknowledged"
    listed = await activity.get("/alerts", params={"status": "acknowledged"}, headers=auth("admin"))
    assert [a["id"] for a in listed.json()["items"]] == [str(alert.id)]


async def test_acknowledging_an_unknown_or_closed_alert_is_refused(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    admin = auth("admin")
    unknown = await activity.post(f"/alerts/{uuid.uuid4()}/acknowledge", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["code"] == "alert_not_found"
    malformed = await activity.post("/alerts/42/acknowledge", headers=admin)
    assert malformed.status_code == 422

    await _rule(database)
    await _evaluate(database, _figures("CHU-RAD"))
    await _evaluate(database, _figures("CHU-RAD", ytd_variation=0.0))
    (alert,) = await _alerts(database)
    closed = await activity.post(f"/alerts/{alert.id}/acknowledge", headers=admin)
    assert closed.status_code == 409 and closed.json()["code"] == "alert_closed"


@pytest.mark.parametrize(
    ("org_unit", "status"),
    [("CHU-IMG", 201), ("CHU-RAD", 201), ("CHU-MED", 403), ("CHU-CAR", 403), (CHU, 403)],
)
async def test_a_pole_manager_steers_their_own_pole_only(
    activity: httpx.AsyncClient, auth: Headers, org_unit: str, status: int
) -> None:
    headers = auth("pole_manager", CHU, pole="CHU-IMG")
    rule = await activity.post("/alert-rules", json={**RULE, "org_unit": org_unit}, headers=headers)
    assert rule.status_code == status, rule.text
    target = await activity.put(
        f"/targets/{STAYS}/{org_unit}/2025", json={"value": 100}, headers=headers
    )
    assert target.status_code == status, target.text
    if status == 403:
        assert org_unit in target.json()["detail"]


async def test_a_pole_manager_without_a_pole_steers_nothing(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.post("/alert-rules", json=RULE, headers=auth("pole_manager", CHU))
    assert response.status_code == 403

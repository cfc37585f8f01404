"""The indicator routes: catalogue, values, dashboards, drill-down, overview, and who may
read them."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU, TERRITORY, put_unit_month
from sqlalchemy import insert

from activity_svc.catalogue import INDICATORS
from activity_svc.models import ActivityRecord, DataCompleteness, Target
from activity_svc.months import add_months, first_of_month
from activity_svc.referential.tree import today
from ght_shared.db import Database
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")

MAIN = [i.code for i in INDICATORS if i.main]


async def _complete_up_to(database: Database, days: dict[str, date]) -> None:
    """What imports of these establishments would have recorded of their data."""
    async with database.transaction() as session:
        for finess, day in days.items():
            await session.execute(
                insert(DataCompleteness).values(
                    finess=finess, last_day_received=day, updated_at=datetime.now(UTC)
                )
            )


async def _cardiology_stays(database: Database) -> None:
    """Full stays in CHU-2101: 10 a month in 2023 (20 from April), 12 a month in Q1 2024."""
    async with database.transaction() as session:
        for m in range(1, 13):
            stays = 10 if m <= 3 else 20
            await put_unit_month(
                session, "CHU-2101", date(2023, m, 1), stays_full=stays, stay_days=stays * 5
            )
        for m in range(1, 4):
            await put_unit_month(session, "CHU-2101", date(2024, m, 1), stays_full=12, stay_days=48)
        await put_unit_month(session, "NORD-3101", date(2024, 2, 1), stays_full=40, stay_days=200)


def _problem_fields(response: httpx.Response) -> set[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return {error["field"] for error in response.json().get("errors", [])}


# --- catalogue ------------------------------------------------------------------------


async def test_the_catalogue_describes_each_indicator_with_its_measures(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get("/indicators", headers=auth("direction", CHU))
    assert response.status_code == 200
    catalogue = {i["code"]: i for i in response.json()}
    assert len(catalogue) == len(INDICATORS) >= 20
    occupancy = catalogue["bed_occupancy_rate"]
    assert occupancy["label_fr"] == "Taux d'occupation des lits"
    assert occupancy["unit"] == "%" and occupancy["scale"] == 100.0
    assert [m["name"] for m in occupancy["denominator"]] == ["bed_days"]
    assert all(m["description"] for m in occupancy["numerator"] + occupancy["denominator"])
    assert catalogue["average_length_of_stay"]["direction"] == "lower_is_better"
    assert catalogue["median_coding_delay"]["aggregation"] == "median"


async def test_reading_indicators_needs_a_token_with_the_read_scope(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    assert (await activity.get("/indicators")).status_code == 401
    assert (await activity.get("/indicators", headers=auth("nobody", CHU))).status_code == 403
    response = await activity.get(
        "/dashboards/CHU-MED", params={"period": "2024-03"}, headers=auth("nobody", CHU)
    )
    assert response.status_code == 403


# --- values ---------------------------------------------------------------------------


async def test_values_give_each_month_against_last_year_with_projection_and_target(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    async with database.transaction() as session:
        await session.execute(
            insert(Target).values(
                indicator="stays_full",
                org_unit="CHU-CAR",
                year=2024,
                value=240.0,
                monthly_profile=None,
                source="manual",
                updated_at=datetime.now(UTC),
                updated_by="test",
            )
        )
    response = await activity.get(
        "/indicators/stays_full/values",
        params={"org_unit": "CHU-CAR", "from": "2024-01", "to": "2024-03"},
        headers=auth("pole_manager", CHU),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["org_unit"] == {
        "code": "CHU-CAR",
        "kind": "department",
        "name": "Cardiologie",
        "finess": CHU,
    }
    assert body["scope"] == "as_was"
    assert [v["period"] for v in body["values"]] == ["2024-01", "2024-02", "2024-03"]
    march = body["values"][-1]
    assert march["value"] == 12.0
    assert march["same_period_last_year"] == 10.0
    assert march["variation"] == pytest.approx(20.0)
    assert march["year_to_date"] == 36.0
    assert march["year_to_date_last_year"] == 30.0
    assert march["year_to_date_variation"] == pytest.approx(20.0)
    assert march["projection"] == pytest.approx(36 * 210 / 30)
    assert (march["target"], march["target_year_to_date"], march["target_year"]) == (
        20.0,
        60.0,
        240.0,
    )


async def test_values_default_to_the_year_of_the_last_complete_month(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/indicators/outpatient_acts/values",
        params={"org_unit": "CHU-IMG"},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 200
    # No data yet: the last complete month is last month.
    last = add_months(first_of_month(today()), -1)
    assert response.json()["complete_up_to"] is None
    periods = [v["period"] for v in response.json()["values"]]
    assert periods[0] == f"{last.year}-01" and periods[-1] == last.strftime("%Y-%m")
    assert len(periods) == last.month


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"from": "2024-13"}, "from", "period"),
        ({"to": "March"}, "to", "period"),
        ({"from": "2024-05", "to": "2024-04"}, "from", "before_to"),
        ({"from": "2019-01", "to": "2024-01"}, "from", "max_months"),
    ],
)
async def test_values_refuse_bad_periods_naming_the_field(
    activity: httpx.AsyncClient, auth: Headers, params: dict[str, str], field: str, rule: str
) -> None:
    response = await activity.get(
        "/indicators/stays_full/values",
        params={"org_unit": "CHU-CAR", **params},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["rule"] == rule
    assert _problem_fields(response) == {field}


async def test_values_refuse_an_unknown_scope_or_a_missing_org_unit(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/indicators/stays_full/values",
        params={"org_unit": "CHU-CAR", "scope": "sideways"},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 422 and "scope" in str(_problem_fields(response))
    response = await activity.get("/indicators/stays_full/values", headers=auth("direction", CHU))
    assert response.status_code == 422 and "org_unit" in str(_problem_fields(response))


async def test_an_unknown_indicator_or_org_unit_is_not_found(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/indicators/happiness/values",
        params={"org_unit": "CHU-CAR"},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 404 and response.json()["code"] == "indicator_not_found"
    response = await activity.get(
        "/indicators/stays_full/values",
        params={"org_unit": "CHU-NOWHERE"},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 404 and response.json()["code"] == "org_unit_not_found"


async def test_an_establishment_reads_its_own_figures_and_the_territory_is_territorial(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    async def status(org_unit: str, headers: dict[str, str]) -> int:
        response = await activity.get(
            "/indicators/stays_full/values",
            params={"org_unit": org_unit, "from": "2024-01", "to": "2024-03"},
            headers=headers,
        )
        return response.status_code

    assert await status("CHU-CAR", auth("direction", CHU)) == 200
    assert await status("CHU-CAR", auth("direction", CH_NORD)) == 403
    assert await status(TERRITORY, auth("direction", CHU)) == 403
    assert await status(TERRITORY, auth("commission")) == 200
    assert await status("NORD-MED", auth("commission")) == 200


# --- dashboards -----------------------------------------------------------------------


def _figures(unit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["indicator"]: f for f in unit["figures"]}


async def test_a_dashboard_gives_every_main_indicator_for_the_org_unit_and_its_children(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    response = await activity.get(
        f"/dashboards/{CHU}", params={"period": "2024-03"}, headers=auth("direction", CHU)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"] == "2024-03"
    assert [i["code"] for i in body["indicators"]] == MAIN
    assert body["org_unit"]["name"] == "CHU de la Vallée"
    assert [(c["code"], c["name"]) for c in body["children"]] == [
        ("CHU-IMG", "Pôle imagerie"),
        ("CHU-MED", "Pôle médecine"),
    ]
    for unit in (body["org_unit"], *body["children"]):
        assert [f["indicator"] for f in unit["figures"]] == MAIN
    medicine = _figures(body["children"][1])
    assert medicine["stays_full"]["value"] == 12.0
    assert medicine["stays_full"]["year_to_date_variation"] == pytest.approx(20.0)
    assert medicine["average_length_of_stay"]["value"] == pytest.approx(4.0)
    assert medicine["average_length_of_stay"]["same_period_last_year"] == pytest.approx(5.0)
    assert _figures(body["children"][0])["stays_full"]["value"] == 0.0
    assert _figures(body["org_unit"])["stays_full"]["value"] == 12.0


async def test_a_dashboard_can_give_the_months_before_the_period_for_a_trend(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    response = await activity.get(
        "/dashboards/CHU-MED",
        params={"period": "2024-03", "months": "3"},
        headers=auth("pole_manager", CHU),
    )
    assert response.status_code == 200
    figures = response.json()["org_unit"]["figures"]
    assert [f["period"] for f in figures[:: len(MAIN)]] == ["2024-01", "2024-02", "2024-03"]
    assert len(figures) == 3 * len(MAIN)
    response = await activity.get(
        "/dashboards/CHU-MED", params={"months": "13"}, headers=auth("pole_manager", CHU)
    )
    assert response.status_code == 422 and "months" in str(_problem_fields(response))


async def test_a_dashboard_defaults_to_the_last_complete_month(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    await _complete_up_to(database, {CHU: date(2024, 4, 12)})
    response = await activity.get("/dashboards/CHU-MED", headers=auth("pole_manager", CHU))
    assert response.status_code == 200
    assert response.json()["period"] == "2024-03"
    assert response.json()["org_unit"]["complete_up_to"] == "2024-04-12"
    assert [c["code"] for c in response.json()["children"]] == ["CHU-CAR"]


async def test_a_dashboard_refuses_another_establishment_and_a_bad_period(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/dashboards/CHU-MED", params={"period": "2024-03"}, headers=auth("direction", CH_NORD)
    )
    assert response.status_code == 403
    response = await activity.get(
        "/dashboards/CHU-MED", params={"period": "2024-00"}, headers=auth("direction", CHU)
    )
    assert response.status_code == 422 and _problem_fields(response) == {"period"}
    response = await activity.get("/dashboards/NOWHERE", headers=auth("commission"))
    assert response.status_code == 404


# --- drill-down -----------------------------------------------------------------------


def _stay(source_id: str, unit: str, uf: str, day: date, mode: str) -> dict[str, Any]:
    return {
        "source": "pmsi",
        "source_id": source_id,
        "kind": "stay",
        "finess": CHU,
        "unit": unit,
        "uf": uf,
        "month": day.replace(day=1),
        "occurred_on": day,
        "admitted_at": datetime(day.year, day.month, day.day, tzinfo=UTC),
        "discharged_at": datetime(day.year, day.month, day.day, tzinfo=UTC),
        "drg": "05M092",
        "severity": 2,
        "mode": mode,
        "stay_days": 3 if mode == "full" else 0,
        "import_id": uuid.uuid4(),
        "received_at": datetime.now(UTC),
    }


async def test_the_records_behind_a_value_are_paged_by_unit_day_and_key(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    rows = [
        _stay("s1", "CHU-2101", "2101", date(2024, 3, 2), "full"),
        _stay("s2", "CHU-2101", "2101", date(2024, 3, 9), "ambulatory"),
        _stay("s3", "CHU-2102", "2102", date(2024, 3, 9), "full"),
        _stay("s4", "CHU-2101", "2101", date(2024, 3, 20), "full"),
        _stay("s5", "CHU-2101", "2101", date(2024, 4, 1), "full"),
        _stay("s6", "CHU-1101", "1101", date(2024, 3, 5), "full"),
    ]
    async with database.transaction() as session:
        await session.execute(insert(ActivityRecord), rows)

    async def page(cursor: str | None = None) -> dict[str, Any]:
        params = {"org_unit": "CHU-MED", "period": "2024-03", "limit": "2"}
        response = await activity.get(
            "/indicators/stays_full/records",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=auth("pole_manager", CHU),
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # Unit by unit, day by day.
    first = await page()
    assert [r["source_id"] for r in first["items"]] == ["s1", "s4"]
    assert first["next_cursor"]
    second = await page(first["next_cursor"])
    assert [r["source_id"] for r in second["items"]] == ["s3"]
    assert second["next_cursor"] is None
    assert {r["mode"] for r in first["items"] + second["items"]} == {"full"}


async def test_drill_down_refuses_a_forged_cursor_and_another_establishment(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    params = {"org_unit": "CHU-MED", "period": "2024-03"}
    response = await activity.get(
        "/indicators/stays_full/records",
        params={**params, "cursor": "not-a-cursor"},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 422 and _problem_fields(response) == {"cursor"}
    for kind, source in (("stay", "pmsi\u0000"), ("sejour", "pmsi")):  # a NUL, no such kind
        forged = base64.urlsafe_b64encode(
            json.dumps(
                ["CHU-2101", "2024-03-01", kind, "2024-03-02", "420784878", source, "s1"]
            ).encode()
        ).decode()
        response = await activity.get(
            "/indicators/stays_full/records",
            params={**params, "cursor": forged},
            headers=auth("direction", CHU),
        )
        assert response.status_code == 422 and _problem_fields(response) == {"cursor"}
    response = await activity.get(
        "/indicators/stays_full/records", params=params, headers=auth("direction", CH_NORD)
    )
    assert response.status_code == 403
    response = await activity.get(
        "/indicators/stays_full/records",
        params={**params, "limit": "5000"},
        headers=auth("direction", CHU),
    )
    assert response.status_code == 422 and "limit" in str(_problem_fields(response))


def _act(source_id: str, day: date, code: str, coded: bool) -> dict[str, Any]:
    return {
        **_stay(source_id, "CHU-2101", "2101", day, "full"),
        "source": "actes",
        "kind": "outpatient_act",
        "admitted_at": None,
        "discharged_at": None,
        "drg": None,
        "severity": None,
        "mode": None,
        "stay_days": None,
        "code": code,
        "code_system": "CCAM",
        "coded": coded,
        "coded_on": day if coded else None,
        "amount": 25,
    }


async def _drill(
    activity: httpx.AsyncClient, auth: Headers, indicator: str, **params: str
) -> httpx.Response:
    return await activity.get(
        f"/indicators/{indicator}/records",
        params={"org_unit": "CHU-MED", "period": "2024-03", **params},
        headers=auth("pole_manager", CHU),
    )


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["source_id"] for r in response.json()["items"]]


async def test_drill_down_filters_by_what_the_records_carry_and_lists_each_side_of_a_ratio(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    acts = [
        _act("a1", date(2024, 3, 4), "ZBQK002", coded=True),
        _act("a2", date(2024, 3, 5), "ZBQK002", coded=False),
        _act("a3", date(2024, 3, 6), "ACQK001", coded=False),
    ]
    stays = [
        {**_stay("s1", "CHU-2101", "2101", date(2024, 3, 2), "full"), "severity": 3},
        {**_stay("s2", "CHU-2101", "2101", date(2024, 3, 3), "full"), "drg": "05M093"},
        {**_stay("s3", "CHU-2101", "2101", date(2024, 3, 4), "full"), "drg": "04M051"},
        {**_stay("s4", "CHU-2101", "2101", date(2024, 3, 5), "ambulatory"), "source": "hdj"},
    ]
    async with database.transaction() as session:
        await session.execute(insert(ActivityRecord), acts + stays)

    completeness = "coding_completeness_rate"
    assert _ids(await _drill(activity, auth, completeness)) == ["a1", "a2", "a3"]
    assert _ids(await _drill(activity, auth, completeness, coded="false")) == ["a2", "a3"]
    assert _ids(await _drill(activity, auth, completeness, side="numerator")) == ["a1"]
    assert _ids(await _drill(activity, auth, completeness, side="denominator")) == [
        "a1",
        "a2",
        "a3",
    ]
    assert _ids(await _drill(activity, auth, "outpatient_acts", code="ZBQK002")) == ["a1", "a2"]
    assert _ids(await _drill(activity, auth, "stays_full", drg="05M09")) == ["s1", "s2"]
    assert _ids(await _drill(activity, auth, "stays_full", drg="05M093")) == ["s2"]
    assert _ids(await _drill(activity, auth, "stays_full", severity="3")) == ["s1"]
    assert _ids(await _drill(activity, auth, "severity_34_share", side="numerator")) == ["s1"]
    assert _ids(await _drill(activity, auth, "stays_ambulatory", source="hdj")) == ["s4"]
    assert _ids(await _drill(activity, auth, "stays_full", mode="ambulatory")) == []


async def test_drill_down_refuses_an_unknown_filter_and_a_side_without_records(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    unknown = await _drill(activity, auth, "outpatient_acts", colour="blue", coded="false")
    assert unknown.status_code == 422
    assert [(e["field"], e["rule"]) for e in unknown.json()["errors"]] == [
        ("colour", "unknown_parameter")
    ]
    for indicator, side in (("bed_occupancy_rate", "denominator"), ("stays_full", "denominator")):
        refused = await _drill(activity, auth, indicator, side=side)
        assert refused.status_code == 422 and _problem_fields(refused) == {"side"}
    for params in ({"drg": "05X09"}, {"severity": "5"}, {"mode": "day"}, {"code": "zbqk"}):
        bad = await _drill(activity, auth, "stays_full", **params)
        assert bad.status_code == 422 and _problem_fields(bad) == set(params)


async def test_drill_down_gives_times_in_local_time_with_their_offset(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    winter = _stay("s1", "CHU-2101", "2101", date(2024, 3, 2), "full")  # 00:00 UTC
    async with database.transaction() as session:
        await session.execute(insert(ActivityRecord), [winter])

    record = (await _drill(activity, auth, "stays_full")).json()["items"][0]

    assert record["admitted_at"] == "2024-03-02T01:00:00+01:00"
    assert record["received_at"].endswith(("+01:00", "+02:00"))


# --- overview -------------------------------------------------------------------------


async def test_the_overview_gives_a_territorial_caller_every_establishment_and_the_territory(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    await _complete_up_to(database, {CHU: date(2024, 3, 31), CH_NORD: date(2024, 2, 29)})
    response = await activity.get("/overview", headers=auth("commission"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["establishments"]) == {CHU, CH_NORD}
    assert body["establishments"][CHU]["complete_up_to"] == "2024-03-31"
    chu = {h["indicator"]: h for h in body["establishments"][CHU]["headline"]}
    assert chu["stays_full"] == {
        "indicator": "stays_full",
        "label_fr": "Séjours en hospitalisation complète",
        "unit": "stays",
        "period": "2024-03",
        "year_to_date": 36.0,
        "same_period_last_year": 30.0,
        "change": pytest.approx(20.0),
    }
    nord = {h["indicator"]: h for h in body["establishments"][CH_NORD]["headline"]}
    assert nord["stays_full"]["period"] == "2024-02"
    # The territory's last complete month is its latest establishment's: February.
    assert body["territory"]["complete_up_to"] == "2024-02-29"
    territory = {h["indicator"]: h for h in body["territory"]["headline"]}
    assert territory["stays_full"]["period"] == "2024-02"
    assert territory["stays_full"]["year_to_date"] == 24.0 + 40.0


async def test_the_overview_gives_an_establishment_its_own_figures_only(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _cardiology_stays(database)
    response = await activity.get("/overview", headers=auth("direction", CHU))
    assert response.status_code == 200
    assert set(response.json()) == {"establishments"}
    assert set(response.json()["establishments"]) == {CHU}
    response = await activity.get(
        "/overview", params={"establishment": CH_NORD}, headers=auth("direction", CHU)
    )
    assert response.status_code == 403
    response = await activity.get(
        "/overview", params={"establishment": "123"}, headers=auth("direction", CHU)
    )
    assert response.status_code == 422


async def test_a_month_to_come_is_refused_naming_the_field(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    coming = add_months(first_of_month(today()), 1).strftime("%Y-%m")
    this = first_of_month(today()).strftime("%Y-%m")
    headers = auth("direction", CHU)
    asked = [
        ("/dashboards/CHU-MED", {"period": coming}, "period"),
        ("/indicators/stays_full/values", {"org_unit": "CHU-MED", "to": coming}, "to"),
        ("/indicators/stays_full/values", {"org_unit": "CHU-MED", "from": coming}, "from"),
        ("/indicators/stays_full/records", {"org_unit": "CHU-MED", "period": coming}, "period"),
    ]
    for path, params, field in asked:
        response = await activity.get(path, params=params, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert [e["rule"] for e in response.json()["errors"]] == ["future_month"], path
        assert _problem_fields(response) == {field}, path
    current = await activity.get("/dashboards/CHU-MED", params={"period": this}, headers=headers)
    assert current.status_code == 200, current.text


async def test_constant_scope_does_not_count_a_move_planned_for_later(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    last_month = add_months(first_of_month(today()), -1)
    async with database.transaction() as session:
        await put_unit_month(session, "CHU-2101", last_month, stays_full=10, stay_days=40)
    next_year = date(today().year + 1, 1, 1).isoformat()
    planned = await activity.put(
        "/org-units/CHU-CAR",
        json={
            "kind": "department",
            "name": "Cardiologie",
            "parent": "CHU-IMG",
            "valid_from": next_year,
        },
        headers=auth("it_system", CHU),
    )
    assert planned.status_code == 200, planned.text
    params = {"period": f"{last_month:%Y-%m}", "scope": "constant"}
    headers = auth("direction", CHU)
    imaging = (await activity.get("/dashboards/CHU-IMG", params=params, headers=headers)).json()
    stays = next(f for f in imaging["org_unit"]["figures"] if f["indicator"] == "stays_full")
    assert stays["value"] == 0.0
    assert "CHU-CAR" not in {c["code"] for c in imaging["children"]}
    medicine = (await activity.get("/dashboards/CHU-MED", params=params, headers=headers)).json()
    stays = next(f for f in medicine["org_unit"]["figures"] if f["indicator"] == "stays_full")
    assert stays["value"] == 10.0
    assert [c["code"] for c in medicine["children"]] == ["CHU-CAR"]
    assert medicine["org_unit"]["name"] == "Pôle médecine"


async def test_each_childs_share_explains_a_poles_change_from_last_year(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    """Imaging exams: radiology 100 -> 60, nuclear medicine 50 -> 55; the pôle 150 -> 115."""
    async with database.transaction() as session:
        for unit, last_year, this_year in (("CHU-1101", 100, 60), ("CHU-1201", 50, 55)):
            await put_unit_month(session, unit, date(2025, 3, 1), imaging_exams=last_year)
            await put_unit_month(session, unit, date(2026, 3, 1), imaging_exams=this_year)
    headers = auth("pole_manager", CHU, pole="CHU-IMG")
    params = {"org_unit": "CHU-IMG", "period": "2026-03"}
    response = await activity.get(
        "/indicators/imaging_exams/contributions", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["value"], body["reference"], body["variation_unit"]) == (115.0, 150.0, "%")
    assert body["variation"] == pytest.approx(-70 / 3)
    assert body["by"] == "children"
    assert [(c["key"], c["value"], c["reference"]) for c in body["contributions"]] == [
        ("CHU-RAD", 60.0, 100.0),
        ("CHU-NUC", 55.0, 50.0),
    ]
    shares = [c["contribution"] for c in body["contributions"]]
    assert shares == [pytest.approx(-80 / 3), pytest.approx(10 / 3)]
    assert sum(shares) == pytest.approx(body["variation"])

    # Against a target of 100 exams for March, the pôle is 15 % above it: radiology
    # below its part (two thirds, as last year), nuclear medicine far above its own.
    target = await activity.put(
        "/targets/imaging_exams/CHU-IMG/2026",
        json={"value": 1200, "monthly_profile": [0.1, 0.1, 1 / 12] + [(0.8 - 1 / 12) / 9] * 9},
        headers=headers,
    )
    assert target.status_code == 201, target.text
    gap = await activity.get(
        "/indicators/imaging_exams/contributions",
        params={**params, "basis": "target", "year_to_date": "false"},
        headers=headers,
    )
    assert gap.status_code == 200, gap.text
    body = gap.json()
    assert (body["basis"], body["value"], body["reference"]) == (
        "target",
        115.0,
        pytest.approx(100),
    )
    assert body["variation"] == pytest.approx(15.0)
    assert [(c["key"], c["contribution"]) for c in body["contributions"]] == [
        ("CHU-NUC", pytest.approx(65 / 3)),
        ("CHU-RAD", pytest.approx(-20 / 3)),
    ]

    median = await activity.get(
        "/indicators/median_coding_delay/contributions", params=params, headers=headers
    )
    assert median.status_code == 422 and median.json()["errors"][0]["rule"] == "median"
    await _complete_up_to(database, {CHU: date(2026, 3, 15)})
    partial = await activity.get(
        "/indicators/imaging_exams/contributions", params=params, headers=headers
    )
    assert partial.status_code == 422
    assert partial.json()["errors"][0]["rule"] == "partial_month"
    other = await activity.get(
        "/indicators/imaging_exams/contributions",
        params=params,
        headers=auth("direction", CH_NORD),
    )
    assert other.status_code == 403


async def test_the_coding_worklist_lists_the_acts_not_coded_oldest_first(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    day = today()

    def act(source_id: str, unit: str, days_ago: int, coded: bool, amount: float) -> dict[str, Any]:
        performed = day - timedelta(days=days_ago)
        return {
            "kind": "outpatient_act",
            "source": "actes",
            "source_id": source_id,
            "finess": CHU,
            "unit": unit,
            "date": performed.isoformat(),
            "code": "ZBQK002",
            "code_system": "CCAM",
            "coded": coded,
            **({"coded_on": performed.isoformat()} if coded else {}),
            "amount": amount,
        }

    records = [
        act("A1", "1101", 40, False, 25.0),
        act("A2", "1101", 3, False, 30.0),
        act("A3", "1201", 20, False, 100.0),
        act("A4", "1101", 50, True, 25.0),  # coded: not on the list
        act("A5", "2101", 60, False, 25.0),  # another pôle's unit
    ]
    sent = await activity.post(
        "/records", json={"records": records}, headers=auth("it_system", CHU)
    )
    assert sent.status_code == 201, sent.text
    headers = auth("pole_manager", CHU, pole="CHU-IMG")
    response = await activity.get(
        "/coding/worklist", params={"org_unit": "CHU-IMG", "limit": 2}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(a["source_id"], a["age_days"]) for a in body["items"]] == [("A1", 40), ("A3", 20)]
    assert (body["uncoded"], body["amount"]) == (3, 155.0)
    assert [(u["unit"], u["uncoded"], u["amount"]) for u in body["units"]] == [
        ("CHU-1101", 2, 55.0),
        ("CHU-1201", 1, 100.0),
    ]
    following = await activity.get(
        "/coding/worklist",
        params={"org_unit": "CHU-IMG", "limit": 2, "cursor": body["next_cursor"]},
        headers=headers,
    )
    assert [a["source_id"] for a in following.json()["items"]] == ["A2"]
    assert following.json()["next_cursor"] is None
    older = await activity.get(
        "/coding/worklist", params={"org_unit": "CHU-IMG", "min_age_days": 30}, headers=headers
    )
    assert [a["source_id"] for a in older.json()["items"]] == ["A1"]
    assert older.json()["uncoded"] == 1
    refused = await activity.get(
        "/coding/worklist", params={"org_unit": "CHU-IMG"}, headers=auth("direction", CH_NORD)
    )
    assert refused.status_code == 403

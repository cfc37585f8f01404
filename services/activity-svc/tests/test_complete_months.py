"""Data complete up to: the default period is the last complete month, a partial month is
flagged and compared with the same days of last year, without projection or alert."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU, TERRITORY
from sqlalchemy import text

from activity_svc.events import INDICATOR_UPDATED
from activity_svc.months import add_months, first_of_month, last_day_of
from activity_svc.referential.tree import today
from ght_shared.db import Database
from ght_shared.events import Event
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")

THIS_MONTH = first_of_month(today())
LAST_MONTH = add_months(THIS_MONTH, -1)  # the partial month of these tests
CUT = LAST_MONTH.replace(day=10)  # its last day with records


def _exam(source_id: str, day: date, finess: str = CHU, unit: str = "1101") -> dict[str, Any]:
    return {
        "kind": "imaging_exam",
        "source": "ris",
        "source_id": source_id,
        "finess": finess,
        "unit": unit,
        "date": day.isoformat(),
    }


def _exams(
    month: date, per_day: int, days: int | None = None, **where: str
) -> list[dict[str, Any]]:
    """``per_day`` exams each day of ``month`` up to ``days`` (every day when None)."""
    last = days if days is not None else last_day_of(month).day
    unit = where.get("unit", "1101")
    return [
        _exam(f"{month:%Y%m}-{unit}-{day:02d}-{n}", month.replace(day=day), **where)
        for day in range(1, last + 1)
        for n in range(per_day)
    ]


async def _send(
    activity: httpx.AsyncClient,
    auth: Headers,
    records: list[dict[str, Any]],
    finess: str = CHU,
    **body: Any,
) -> httpx.Response:
    response = await activity.post(
        "/records", json={"records": records, **body}, headers=auth("it_system", finess)
    )
    assert response.status_code == 201, response.text
    return response


async def _last_year_full_this_year_to_the_tenth(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    """Imaging exams of the CHU's scanner: last year 3 a day every day of the month (and
    of the month before); this year 2 a day, the month before in full and the partial
    month up to its tenth."""
    before = add_months(LAST_MONTH, -1)
    records = [
        *_exams(add_months(LAST_MONTH, -12), 3),
        *_exams(add_months(before, -12), 3),
        *_exams(before, 2),
    ]
    await _send(activity, auth, records)
    await _send(activity, auth, _exams(LAST_MONTH, 2, CUT.day))


async def _dashboard(activity: httpx.AsyncClient, auth: Headers, code: str, **params: str) -> Any:
    response = await activity.get(
        f"/dashboards/{code}", params=params, headers=auth("direction", CHU)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _figure(org_unit: dict[str, Any], indicator: str) -> dict[str, Any]:
    return next(f for f in org_unit["figures"] if f["indicator"] == indicator)


async def test_the_default_period_is_the_last_complete_month(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _last_year_full_this_year_to_the_tenth(activity, auth)
    body = await _dashboard(activity, auth, "CHU-IMG")
    assert body["org_unit"]["complete_up_to"] == CUT.isoformat()
    before = add_months(LAST_MONTH, -1)
    assert body["period"] == f"{before:%Y-%m}"
    exams = _figure(body["org_unit"], "imaging_exams")
    days = last_day_of(before).day
    assert exams["partial"] is False and exams["complete_days"] == days
    assert (exams["value"], exams["same_period_last_year"]) == (2.0 * days, 3.0 * days)
    assert exams["variation"] == pytest.approx(-100 / 3)


async def test_a_partial_month_is_compared_with_the_same_days_of_last_year(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _last_year_full_this_year_to_the_tenth(activity, auth)
    body = await _dashboard(activity, auth, "CHU-IMG", period=f"{LAST_MONTH:%Y-%m}")
    exams = _figure(body["org_unit"], "imaging_exams")
    # Before: 20 exams against last year's whole month (90 or 93): -78 %.
    assert exams["partial"] is True and exams["complete_days"] == 10
    assert (exams["value"], exams["same_period_last_year"]) == (20.0, 30.0)
    assert exams["variation"] == pytest.approx(-100 / 3)
    before = add_months(LAST_MONTH, -1)
    expected_ytd = 20.0 + (2.0 * last_day_of(before).day if before.year == LAST_MONTH.year else 0)
    expected_ytd_last = 30.0 + (
        3.0 * last_day_of(add_months(before, -12)).day if before.year == LAST_MONTH.year else 0
    )
    assert (exams["year_to_date"], exams["year_to_date_last_year"]) == (
        expected_ytd,
        expected_ytd_last,
    )
    assert exams["projection"] is None


async def test_the_months_after_the_day_complete_count_nothing_yet(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _last_year_full_this_year_to_the_tenth(activity, auth)
    # Records of this month received today: today is not complete, nor this month.
    await _send(activity, auth, [_exam("today-1", today())])
    body = await _dashboard(activity, auth, "CHU-IMG", period=f"{THIS_MONTH:%Y-%m}")
    exams = _figure(body["org_unit"], "imaging_exams")
    assert exams["partial"] is True and exams["complete_days"] == 0
    assert (exams["value"], exams["same_period_last_year"], exams["projection"]) == (
        0.0,
        0.0,
        None,
    )


async def test_a_declared_day_completes_the_month_and_republishes_it(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    await _last_year_full_this_year_to_the_tenth(activity, auth)
    end = last_day_of(LAST_MONTH)
    # The system says it sent everything up to the month's end (its last days had none).
    await _send(activity, auth, [_exam("late-1", CUT)], complete_up_to=end.isoformat())
    body = await _dashboard(activity, auth, "CHU-IMG")
    assert body["period"] == f"{LAST_MONTH:%Y-%m}"
    assert body["org_unit"]["complete_up_to"] == end.isoformat()
    exams = _figure(body["org_unit"], "imaging_exams")
    assert exams["partial"] is False and exams["value"] == 21.0
    async with database.transaction() as session:
        rows = await session.execute(
            text("SELECT payload FROM outbox WHERE event_type = :type ORDER BY id"),
            {"type": INDICATOR_UPDATED},
        )
        published = [
            event.data
            for event in (Event.from_bytes(payload) for (payload,) in rows)
            if event.data["org_unit"] == "CHU-IMG"
            and event.data["indicator"] == "imaging_exams"
            and event.data["period"] == f"{LAST_MONTH:%Y-%m}"
        ]
    assert published[-1]["partial"] is False and published[-1]["value"] == 21.0
    assert published[0]["partial"] is True and published[0]["complete_up_to"] == CUT.isoformat()


async def test_alerts_wait_for_the_month_to_be_complete(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    headers = auth("direction", CHU)
    rule = {
        "indicator": "imaging_exams",
        "org_unit": "CHU-RAD",
        "basis": "last_year",
        "threshold": 10,
        "direction": "below",
    }
    # Only the partial month, this year: a third below last year's same days.
    await _send(
        activity,
        auth,
        _exams(add_months(LAST_MONTH, -12), 3),
    )
    created = await activity.post("/alert-rules", json=rule, headers=headers)
    assert created.status_code == 201, created.text
    await _send(activity, auth, _exams(LAST_MONTH, 2, CUT.day))
    alerts = (await activity.get("/alerts", headers=headers)).json()["items"]
    assert [a for a in alerts if a["period"] == f"{LAST_MONTH:%Y-%m}"] == []
    await _send(
        activity, auth, [_exam("late-1", CUT)], complete_up_to=last_day_of(LAST_MONTH).isoformat()
    )
    alerts = (await activity.get("/alerts", headers=headers)).json()["items"]
    assert [a["org_unit"] for a in alerts if a["period"] == f"{LAST_MONTH:%Y-%m}"] == ["CHU-RAD"]


async def test_the_territory_is_complete_up_to_its_latest_establishment(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await _send(activity, auth, _exams(LAST_MONTH, 1, 20))
    await _send(activity, auth, _exams(LAST_MONTH, 1, 5, finess=CH_NORD, unit="3101"), CH_NORD)
    response = await activity.get(f"/dashboards/{TERRITORY}", headers=auth("admin"))
    body = response.json()
    assert body["org_unit"]["complete_up_to"] == LAST_MONTH.replace(day=5).isoformat()
    by_code = {c["code"]: c["complete_up_to"] for c in body["children"]}
    assert by_code == {
        CHU: LAST_MONTH.replace(day=20).isoformat(),
        CH_NORD: LAST_MONTH.replace(day=5).isoformat(),
    }
    overview = (await activity.get("/overview", headers=auth("admin"))).json()
    assert overview["territory"]["complete_up_to"] == LAST_MONTH.replace(day=5).isoformat()
    assert (
        overview["establishments"][CHU]["complete_up_to"] == LAST_MONTH.replace(day=20).isoformat()
    )
    periods = {h["period"] for h in overview["establishments"][CHU]["headline"]}
    assert periods == {f"{add_months(LAST_MONTH, -1):%Y-%m}"}


@pytest.mark.parametrize("day", [today() + timedelta(days=1), date(1999, 12, 31)])
async def test_a_day_to_come_or_before_2000_cannot_be_declared(
    activity: httpx.AsyncClient, auth: Headers, day: date
) -> None:
    response = await activity.post(
        "/records",
        json={"records": [_exam("x-1", CUT)], "complete_up_to": day.isoformat()},
        headers=auth("it_system", CHU),
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["complete_up_to"]
    response = await activity.post(
        "/imports",
        params={"complete_up_to": day.isoformat()},
        content=b"kind,source,source_id,finess,unit,date\n",
        headers={**auth("it_system", CHU), "content-type": "text/csv"},
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["complete_up_to"]


def _act(source_id: str, day: date, coded_after: int | None) -> dict[str, Any]:
    coded_on = day + timedelta(days=coded_after) if coded_after is not None else None
    coded = coded_on is not None and coded_on < today()
    return {
        "kind": "outpatient_act",
        "source": "actes",
        "source_id": source_id,
        "finess": CHU,
        "unit": "1101",
        "date": day.isoformat(),
        "code": "ZBQK002",
        "code_system": "CCAM",
        "coded": coded,
        **({"coded_on": coded_on.isoformat()} if coded and coded_on else {}),
    }


async def test_coding_completeness_is_compared_at_the_same_lag_both_years(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    """Every day, two acts: one coded 3 days after, one 25 days after (when that day has
    come). Last year's are all coded by now; this year's of the last weeks not yet. At
    J+14 both years count the acts coded within 14 days, of the days that all had their
    14 days: one in two each year."""
    last_year = add_months(LAST_MONTH, -12)
    records = []
    for month in (last_year, LAST_MONTH):
        for day in range(1, last_day_of(month).day + 1):
            performed = month.replace(day=day)
            records += [
                _act(f"A-{performed}-fast", performed, 3),
                _act(f"A-{performed}-slow", performed, 25),
            ]
    yesterday = today() - timedelta(days=1)
    records.append(_act("A-yesterday", yesterday, None))  # data complete up to yesterday
    await _send(activity, auth, records)

    body = await _dashboard(activity, auth, "CHU-IMG", period=f"{LAST_MONTH:%Y-%m}")
    final = _figure(body["org_unit"], "coding_completeness_rate")
    assert final["same_period_last_year"] == 100.0
    at_lag = _figure(body["org_unit"], "coding_completeness_at_lag")
    assert (at_lag["value"], at_lag["same_period_last_year"]) == (50.0, 50.0)
    assert (at_lag["variation"], at_lag["variation_unit"]) == (0.0, "points")
    lag_cut = yesterday - timedelta(days=14)
    assert at_lag["partial"] is (lag_cut < last_day_of(LAST_MONTH))
    if at_lag["partial"]:
        assert at_lag["complete_days"] == (lag_cut.day if lag_cut >= LAST_MONTH else 0)
        # The final figure counts every day of the month, this year's not all coded yet.
        assert final["value"] < 100.0 and final["partial"] is False

"""Targets: the rules of a target, without HTTP, and the ``/targets`` routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU, TERRITORY
from sqlalchemy import select

from activity_svc.catalogue import INDICATORS_BY_CODE
from activity_svc.errors import IndicatorNotFound, InvalidInput, OrgUnitNotFound
from activity_svc.models import TargetSource
from activity_svc.steering.targets import TargetChange, check_target, set_target
from ght_shared import tables
from ght_shared.auth import Principal, service_principal
from ght_shared.db import Database

pytestmark = pytest.mark.usefixtures("territory")

CONTRACTS = service_principal("contracts-svc")
CADRE = Principal(sub="cadre", roles=("direction",), establishments=(CHU,))

Headers = Callable[..., dict[str, str]]

FLAT = [1 / 12] * 12
STAYS = "stays_full"
RATE = "outpatient_surgery_rate"


def _url(indicator: str = STAYS, org_unit: str = "CHU-IMG", year: int = 2026) -> str:
    return f"/targets/{indicator}/{org_unit}/{year}"


def _assert_problem(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    if field is not None:
        assert field in {error["field"] for error in body["errors"]}, body
    return body


# --- rules, without HTTP ---------------------------------------------------------------


def test_a_volume_target_may_be_spread_by_a_profile_of_twelve_weights_summing_to_one() -> None:
    check_target(INDICATORS_BY_CODE[STAYS], 2026, 1200, [0.1] * 2 + [0.08] * 10)


@pytest.mark.parametrize(
    ("indicator", "year", "value", "profile", "field", "rule"),
    [
        (STAYS, 1999, 10.0, None, "year", "range"),
        (STAYS, 2101, 10.0, None, "year", "range"),
        (STAYS, 2026, -1.0, None, "value", "non_negative"),
        (RATE, 2026, 100.5, None, "value", "percentage"),
        (RATE, 2026, 80.0, FLAT, "monthly_profile", "volume_only"),
        ("median_coding_delay", 2026, 3.0, FLAT, "monthly_profile", "volume_only"),
        (STAYS, 2026, 10.0, [0.5, 0.5], "monthly_profile", "twelve_months"),
        (STAYS, 2026, 10.0, [0.2] * 5 + [0.0] * 6 + [0.0] * 2, "monthly_profile", "twelve_months"),
        (STAYS, 2026, 10.0, [0.5, -0.5] + [0.1] * 10, "monthly_profile", "non_negative"),
        (STAYS, 2026, 10.0, [0.1] * 12, "monthly_profile", "sum_to_one"),
    ],
)
def test_a_target_its_indicator_cannot_have_is_refused_naming_the_field_and_rule(
    indicator: str,
    year: int,
    value: float,
    profile: list[float] | None,
    field: str,
    rule: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_target(INDICATORS_BY_CODE[indicator], year, value, profile)
    assert refused.value.extra["errors"] == [
        {"field": field, "rule": rule, "message": refused.value.detail}
    ]


def test_a_rate_target_lies_between_0_and_100() -> None:
    check_target(INDICATORS_BY_CODE[RATE], 2026, 0.0, None)
    check_target(INDICATORS_BY_CODE[RATE], 2026, 100.0, None)


async def test_the_last_writer_wins_between_a_contract_and_a_manual_target(
    database: Database,
) -> None:
    contract = TargetChange(
        STAYS, "CHU-MED", 2026, 900.0, source=TargetSource.CONTRACT, contract="COM-1"
    )
    async with database.transaction() as session:
        first = await set_target(session, CONTRACTS, contract)
    assert first.created and first.previous is None
    assert (first.target.source, first.target.contract) == ("contract", "COM-1")

    async with database.transaction() as session:
        manual = await set_target(
            session, CADRE, TargetChange(STAYS, "CHU-MED", 2026, 950.0, tuple(FLAT))
        )
    assert not manual.created
    assert manual.previous == {"value": 900.0, "source": "contract", "contract": "COM-1"}
    assert (manual.target.value, manual.target.source, manual.target.contract) == (
        950.0,
        "manual",
        None,
    )
    assert manual.target.monthly_profile == pytest.approx(FLAT)
    assert manual.target.updated_by == "cadre"

    async with database.transaction() as session:
        again = await set_target(session, CONTRACTS, contract)
    assert (again.target.value, again.target.source, again.target.monthly_profile) == (
        900.0,
        "contract",
        None,
    )


async def test_a_target_of_an_unknown_indicator_or_org_unit_is_not_written(
    database: Database,
) -> None:
    async with database.transaction() as session:
        with pytest.raises(IndicatorNotFound):
            await set_target(session, CADRE, TargetChange("beds_made", "CHU-MED", 2026, 1.0))
        with pytest.raises(OrgUnitNotFound):
            await set_target(session, CADRE, TargetChange(STAYS, "CHU-NOPE", 2026, 1.0))


# --- API -------------------------------------------------------------------------------


async def test_a_put_creates_a_target_then_replaces_it(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    headers = auth("pole_manager", CHU, pole="CHU-IMG")
    created = await activity.put(
        _url(), json={"value": 1200, "monthly_profile": FLAT}, headers=headers
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "2026"  # relative: the request's own path
    body = created.json()
    assert body["value"] == 1200
    assert body["source"] == "manual" and body["contract"] is None
    assert body["monthly_profile"] == pytest.approx(FLAT)
    assert body["updated_by"] == f"pole_manager-{CHU}"

    replaced = await activity.put(_url(), json={"value": 1250.5}, headers=headers)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["value"] == 1250.5
    assert replaced.json()["monthly_profile"] is None

    read = await activity.get(_url(), headers=auth("bed_manager", CHU))
    assert read.status_code == 200
    assert read.json()["value"] == 1250.5


async def test_each_target_write_is_audited(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    headers = auth("it_system", CHU)
    await activity.put(_url(), json={"value": 10}, headers=headers)
    await activity.put(_url(), json={"value": 11}, headers=headers)
    assert (await activity.delete(_url(), headers=headers)).status_code == 204
    async with database.transaction() as session:
        rows = (
            await session.execute(
                select(
                    tables.audit_log.c.action,
                    tables.audit_log.c.establishment,
                    tables.audit_log.c.detail,
                )
                .where(tables.audit_log.c.resource == f"target/{STAYS}/CHU-IMG/2026")
                .order_by(tables.audit_log.c.id)
            )
        ).all()
    assert [(action, finess) for action, finess, _ in rows] == [
        ("target.set", CHU),
        ("target.set", CHU),
        ("target.deleted", CHU),
    ]
    assert rows[1].detail["previous"]["value"] == 10


async def test_a_deleted_target_is_gone(activity: httpx.AsyncClient, auth: Headers) -> None:
    headers = auth("direction", CHU)
    await activity.put(_url(), json={"value": 10}, headers=headers)
    assert (await activity.delete(_url(), headers=headers)).status_code == 204
    _assert_problem(await activity.get(_url(), headers=headers), 404, "target_not_found")
    _assert_problem(await activity.delete(_url(), headers=headers), 404, "target_not_found")


async def test_targets_are_listed_by_indicator_org_unit_and_year_page_by_page(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    territorial = auth("admin")
    for org_unit in ("CHU-IMG", "CHU-MED", "NORD-MED"):
        for year in (2025, 2026):
            response = await activity.put(
                _url(STAYS, org_unit, year), json={"value": year - 2000}, headers=territorial
            )
            assert response.status_code == 201
    await activity.put(_url(RATE, "CHU-MED", 2026), json={"value": 55}, headers=territorial)

    everything = (await activity.get("/targets", headers=territorial)).json()
    assert len(everything["items"]) == 7 and everything["next_cursor"] is None

    filtered = await activity.get(
        "/targets",
        params={"indicator": STAYS, "org_unit": "CHU-MED", "year": 2026},
        headers=territorial,
    )
    assert [(t["indicator"], t["org_unit"], t["year"]) for t in filtered.json()["items"]] == [
        (STAYS, "CHU-MED", 2026)
    ]

    seen: list[tuple[str, str, int]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await activity.get("/targets", params=params, headers=territorial)).json()
        seen += [(t["org_unit"], t["indicator"], t["year"]) for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == 7


async def test_an_establishment_lists_only_its_own_targets(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    territorial = auth("admin")
    await activity.put(_url(STAYS, "CHU-IMG"), json={"value": 1}, headers=territorial)
    await activity.put(_url(STAYS, "NORD-MED"), json={"value": 2}, headers=territorial)
    nord = auth("pole_manager", CH_NORD)
    listed = (await activity.get("/targets", headers=nord)).json()["items"]
    assert [t["org_unit"] for t in listed] == ["NORD-MED"]
    _assert_problem(
        await activity.get("/targets", params={"org_unit": "CHU-IMG"}, headers=nord),
        403,
        "forbidden",
    )
    _assert_problem(await activity.get(_url(STAYS, "CHU-IMG"), headers=nord), 403, "forbidden")


async def test_a_target_is_read_with_activity_read(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    _assert_problem(await activity.get("/targets"), 401, "unauthenticated")
    _assert_problem(await activity.get("/targets", headers=auth("nobody")), 403, "forbidden")


# --- authorisation matrix of the writes ----------------------------------------------

WRITES = [("PUT", {"value": 5}), ("DELETE", None)]


@pytest.mark.parametrize(("method", "body"), WRITES)
async def test_a_target_write_needs_a_token(
    activity: httpx.AsyncClient, method: str, body: dict[str, Any] | None
) -> None:
    response = await activity.request(method, _url(), json=body)
    _assert_problem(response, 401, "unauthenticated")


@pytest.mark.parametrize(("method", "body"), WRITES)
@pytest.mark.parametrize("role", ["bed_manager", "commission", "nobody"])
async def test_a_target_write_needs_activity_or_contracts_write(
    activity: httpx.AsyncClient, auth: Headers, role: str, method: str, body: Any
) -> None:
    response = await activity.request(method, _url(), json=body, headers=auth(role, CHU))
    _assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize(("method", "body"), WRITES)
async def test_a_target_write_is_refused_for_another_establishment(
    activity: httpx.AsyncClient, auth: Headers, method: str, body: Any
) -> None:
    response = await activity.request(method, _url(), json=body, headers=auth("direction", CH_NORD))
    _assert_problem(response, 403, "forbidden")


async def test_a_territory_target_is_for_territorial_principals_only(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    url = _url(STAYS, TERRITORY)
    _assert_problem(
        await activity.put(url, json={"value": 5}, headers=auth("direction", CHU)),
        403,
        "forbidden",
    )
    assert (
        await activity.put(url, json={"value": 5}, headers=auth("direction"))
    ).status_code == 201


@pytest.mark.parametrize("role", ["direction", "pole_manager", "it_system"])
async def test_steering_roles_set_their_establishments_targets(
    activity: httpx.AsyncClient, auth: Headers, role: str
) -> None:
    headers = auth(role, CHU, pole="CHU-IMG") if role == "pole_manager" else auth(role, CHU)
    response = await activity.put(_url(), json={"value": 5}, headers=headers)
    assert response.status_code == 201, response.text


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": 5, "owner": "me"}, "owner"),
        ({}, "value"),
        ({"value": "lots"}, "value"),
        ({"value": "12"}, "value"),
        ({"value": True}, "value"),
        ({"value": None}, "value"),
        ({"value": 5, "monthly_profile": "flat"}, "monthly_profile"),
        ({"value": 5, "monthly_profile": [0.5, "x"]}, "monthly_profile.1"),
    ],
)
async def test_a_malformed_target_is_refused_naming_the_field(
    activity: httpx.AsyncClient, auth: Headers, body: dict[str, Any], field: str
) -> None:
    response = await activity.put(_url(), json=body, headers=auth("admin"))
    _assert_problem(response, 422, "validation_failed", field)


@pytest.mark.parametrize(
    ("url", "body", "field", "rule"),
    [
        (_url(RATE), {"value": 101}, "value", "percentage"),
        (_url(RATE), {"value": 50, "monthly_profile": FLAT}, "monthly_profile", "volume_only"),
        (
            _url(),
            {"value": 5, "monthly_profile": [1 / 11] * 11},
            "monthly_profile",
            "twelve_months",
        ),
        (_url(), {"value": 5, "monthly_profile": [0.1] * 12}, "monthly_profile", "sum_to_one"),
        (_url(), {"value": -5}, "value", "non_negative"),
    ],
)
async def test_a_target_breaking_a_rule_is_refused_and_not_written(
    activity: httpx.AsyncClient,
    auth: Headers,
    url: str,
    body: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    problem = _assert_problem(
        await activity.put(url, json=body, headers=auth("admin")), 422, "invalid_input", field
    )
    assert problem["errors"][0]["rule"] == rule
    _assert_problem(await activity.get(url, headers=auth("admin")), 404, "target_not_found")


async def test_an_unknown_indicator_or_org_unit_is_a_404(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    admin = auth("admin")
    _assert_problem(
        await activity.put(_url("beds_made"), json={"value": 5}, headers=admin),
        404,
        "indicator_not_found",
    )
    _assert_problem(
        await activity.put(_url(STAYS, "CHU-NOPE"), json={"value": 5}, headers=admin),
        404,
        "org_unit_not_found",
    )
    _assert_problem(
        await activity.get("/targets", params={"indicator": "beds_made"}, headers=admin),
        404,
        "indicator_not_found",
    )


@pytest.mark.parametrize("year", ["next", "1999", "2101", "99999999999999999999"])
async def test_a_year_out_of_range_is_refused_on_every_route(
    activity: httpx.AsyncClient, auth: Headers, year: str
) -> None:
    admin = auth("admin")
    url = f"/targets/{STAYS}/CHU-IMG/{year}"
    for method, body in (("PUT", {"value": 5}), ("GET", None), ("DELETE", None)):
        response = await activity.request(method, url, json=body, headers=admin)
        _assert_problem(response, 422, "validation_failed", "year")


async def test_an_org_unit_code_with_a_control_character_is_refused_naming_it(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.put(
        _url(STAYS, "CHU%00IMG"), json={"value": 5}, headers=auth("admin")
    )
    problem = _assert_problem(response, 422, "validation_failed")
    assert [(e["field"], e["rule"]) for e in problem["errors"]] == [
        ("org_unit", "control_character")
    ]


async def test_a_year_that_is_not_a_number_or_a_forged_cursor_is_refused(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    admin = auth("admin")
    _assert_problem(
        await activity.put("/targets/stays_full/CHU-IMG/next", json={"value": 5}, headers=admin),
        422,
        "validation_failed",
        "year",
    )
    _assert_problem(
        await activity.get("/targets", params={"cursor": "not-a-cursor"}, headers=admin),
        422,
        "invalid_input",
        "cursor",
    )

"""The territory referential through its REST API, as an establishment's IT engineer uses it.

Reads, dated reads ("as it was"), moves and their history, the authorisation matrix of
every write route, bad inputs, and the ``ght.referential.orgunit.upserted`` events on the
session's real NATS.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from activity_testing import CH_NORD, CHU, SINCE
from sqlalchemy import func, select, text

from activity_svc.models import OrgUnit, OrgUnitVersion
from activity_svc.referential.tree import today
from activity_svc.settings import Settings
from ght_shared import tables
from ght_shared.db import Database
from ght_shared.events import Event
from ght_shared.testing.streams import StreamTap, relayed, tap_stream

pytestmark = pytest.mark.usefixtures("territory")

MOVE_DAY = date(2024, 7, 1)
SUBJECT = "ght.referential.orgunit.upserted"

Headers = Callable[..., dict[str, str]]
"""The ``auth`` fixture: ``auth("it_system", CHU)`` gives a role's token headers."""


def _department(code: str = "CHU-ECHO", parent: str = "CHU-IMG", **fields: Any) -> dict[str, Any]:
    return {"code": code, "kind": "department", "name": "Échographie", "parent": parent} | fields


def _scanner_under(parent: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "unit", "name": "Scanner", "parent": parent, "uf": "1101"} | fields


async def _codes(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = await client.get("/org-units", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [item["code"] for item in response.json()["items"]]


async def _written(database: Database) -> tuple[int, int, int, int]:
    """Org units, versions, outbox events and audit rows: what a refused write must not add."""
    async with database.transaction() as session:
        return (
            await session.scalar(select(func.count()).select_from(OrgUnit)) or 0,
            await session.scalar(select(func.count()).select_from(OrgUnitVersion)) or 0,
            await session.scalar(select(func.count()).select_from(tables.outbox)) or 0,
            await session.scalar(select(func.count()).select_from(tables.audit_log)) or 0,
        )


# --- reading the tree -------------------------------------------------------------------


async def test_the_list_gives_each_org_unit_as_it_is_today_with_its_beds(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/org-units", params={"kind": "unit", "finess": CHU}, headers=auth("direction", CHU)
    )
    assert response.status_code == 200
    page = response.json()
    assert [item["code"] for item in page["items"]] == [
        "CHU-1101",
        "CHU-1102",
        "CHU-1201",
        "CHU-2101",
        "CHU-2102",
    ]
    assert page["next_cursor"] is None
    cardiology = page["items"][3]
    assert cardiology == {
        "code": "CHU-2101",
        "kind": "unit",
        "name": "Cardiologie HC",
        "parent": "CHU-CAR",
        "finess": CHU,
        "uf": "2101",
        "specialty": None,
        "active": True,
        "valid_from": SINCE.isoformat(),
        "valid_to": None,
        "installed_beds": 30,
    }


async def test_the_list_filters_by_parent_and_by_code_or_name(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    reader = auth("direction", CHU)
    assert await _codes(activity, reader, parent="CHU-IMG") == ["CHU-NUC", "CHU-RAD"]
    assert await _codes(activity, reader, q="cardio") == ["CHU-2101", "CHU-2102", "CHU-CAR"]
    assert await _codes(activity, reader, q="nord-") == ["NORD-3101", "NORD-INT", "NORD-MED"]
    assert await _codes(activity, reader, q="100%") == []
    assert await _codes(activity, reader, kind="establishment") == [CH_NORD, CHU]


async def test_the_list_is_read_page_by_page_with_its_cursor(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    reader = auth("it_system", CH_NORD)
    everything = await _codes(activity, reader, limit=1000)
    assert len(everything) == 16
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = (await activity.get("/org-units", params=params, headers=reader)).json()
        seen += [item["code"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert pages == 4


async def test_a_cursor_the_api_did_not_give_is_refused_naming_it(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get(
        "/org-units", params={"cursor": "!!not-a-cursor"}, headers=auth("direction", CHU)
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "cursor"


async def test_the_list_of_a_day_before_a_move_shows_the_tree_as_it_was(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    moved = await activity.put(
        "/org-units/CHU-1101",
        json=_scanner_under("CHU-CAR", valid_from=MOVE_DAY.isoformat()),
        headers=auth("it_system", CHU),
    )
    assert moved.status_code == 200, moved.text
    reader = auth("direction", CHU)
    assert await _codes(activity, reader, parent="CHU-RAD", at="2024-06-30") == [
        "CHU-1101",
        "CHU-1102",
    ]
    assert await _codes(activity, reader, parent="CHU-RAD") == ["CHU-1102"]
    assert await _codes(activity, reader, parent="CHU-CAR") == ["CHU-1101", "CHU-2101", "CHU-2102"]
    assert await _codes(activity, reader, at="2022-12-31") == []


async def test_a_closed_org_unit_is_listed_only_when_asked(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    closed = await activity.put(
        "/org-units/CHU-1201",
        json={"kind": "unit", "name": "Scintigraphie", "parent": "CHU-NUC", "active": False},
        headers=auth("it_system", CHU),
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["active"] is False
    reader = auth("direction", CHU)
    assert await _codes(activity, reader, parent="CHU-NUC") == []
    response = await activity.get(
        "/org-units", params={"parent": "CHU-NUC", "include_inactive": True}, headers=reader
    )
    assert [(i["code"], i["active"]) for i in response.json()["items"]] == [("CHU-1201", False)]


async def test_one_org_unit_is_read_by_its_code_today_or_on_a_past_day(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    reader = auth("pole_manager", CHU)
    response = await activity.get("/org-units/CHU-RAD", headers=reader)
    assert response.status_code == 200
    assert response.json()["parent"] == "CHU-IMG"
    assert response.json()["finess"] == CHU

    unknown = await activity.get("/org-units/CHU-NOPE", headers=reader)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["code"] == "org_unit_not_found"

    not_a_code = await activity.get("/org-units/CHU%00RAD", headers=reader)
    assert not_a_code.status_code == 422
    assert not_a_code.json()["errors"][0]["field"] == "code"

    before = await activity.get("/org-units/CHU-RAD", params={"at": "2022-01-01"}, headers=reader)
    assert before.status_code == 404
    assert "2022-01-01" in before.json()["detail"]


async def test_the_tree_below_an_org_unit_is_nested_and_can_be_cut_at_a_depth(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    reader = auth("direction", CHU)
    tree = (await activity.get("/org-units/CHU-IMG/tree", headers=reader)).json()
    assert tree["code"] == "CHU-IMG"
    assert [d["code"] for d in tree["children"]] == ["CHU-NUC", "CHU-RAD"]
    radiology = tree["children"][1]
    assert [u["code"] for u in radiology["children"]] == ["CHU-1101", "CHU-1102"]
    assert radiology["children"][0]["children"] == []

    shallow = (
        await activity.get("/org-units/CHU-IMG/tree", params={"depth": 1}, headers=reader)
    ).json()
    assert [d["code"] for d in shallow["children"]] == ["CHU-NUC", "CHU-RAD"]
    assert all(d["children"] == [] for d in shallow["children"])

    territory = (await activity.get("/org-units/G4/tree", headers=reader)).json()
    assert [e["code"] for e in territory["children"]] == [CH_NORD, CHU]


async def test_the_tree_of_a_past_day_has_a_moved_unit_where_it_was(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    await activity.put(
        "/org-units/CHU-1101",
        json=_scanner_under("CHU-CAR", valid_from=MOVE_DAY.isoformat()),
        headers=auth("it_system", CHU),
    )
    reader = auth("direction", CHU)

    def units(tree: dict[str, Any]) -> set[str]:
        below = {code for child in tree["children"] for code in units(child)}
        return below | ({tree["code"]} if tree["kind"] == "unit" else set())

    before = await activity.get(
        "/org-units/CHU-IMG/tree", params={"at": "2024-01-31"}, headers=reader
    )
    now = await activity.get("/org-units/CHU-IMG/tree", headers=reader)
    assert units(before.json()) == {"CHU-1101", "CHU-1102", "CHU-1201"}
    assert units(now.json()) == {"CHU-1102", "CHU-1201"}
    missing = await activity.get(
        "/org-units/CHU-IMG/tree", params={"at": "2020-01-01"}, headers=reader
    )
    assert missing.status_code == 404


async def test_the_history_of_a_unit_tells_its_moves_renames_and_capacity(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    writer = auth("it_system", CHU)
    await activity.put(
        "/org-units/CHU-2101",
        json={
            "kind": "unit",
            "name": "Cardiologie HC",
            "parent": "CHU-CAR",
            "installed_beds": 34,
            "valid_from": "2024-01-01",
        },
        headers=writer,
    )
    await activity.put(
        "/org-units/CHU-2101",
        json={
            "kind": "unit",
            "name": "Soins intensifs de cardiologie",
            "parent": "CHU-RAD",
            "valid_from": MOVE_DAY.isoformat(),
        },
        headers=writer,
    )
    response = await activity.get("/org-units/CHU-2101/history", headers=auth("direction", CHU))
    assert response.status_code == 200
    history = response.json()
    assert (history["code"], history["uf"], history["finess"]) == ("CHU-2101", "2101", CHU)
    assert [
        (v["valid_from"], v["valid_to"], v["parent"], v["changes"]) for v in history["versions"]
    ] == [
        (SINCE.isoformat(), MOVE_DAY.isoformat(), "CHU-CAR", ["created"]),
        (MOVE_DAY.isoformat(), None, "CHU-RAD", ["moved", "renamed"]),
    ]
    assert history["versions"][1]["recorded_by"] == f"it_system-{CHU}"
    assert [(c["effective_from"], c["installed_beds"]) for c in history["capacity"]] == [
        (SINCE.isoformat(), 30),
        ("2024-01-01", 34),
    ]
    assert (
        await activity.get("/org-units/NOPE/history", headers=auth("direction", CHU))
    ).status_code == 404


# --- writing the tree -------------------------------------------------------------------


async def test_creating_an_org_unit_answers_201_with_where_to_read_it(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    response = await activity.post(
        "/org-units", json=_department(specialty="Imagerie"), headers=auth("it_system", CHU)
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created | {"valid_from": None} == {
        "code": "CHU-ECHO",
        "kind": "department",
        "name": "Échographie",
        "parent": "CHU-IMG",
        "finess": CHU,
        "uf": None,
        "specialty": "Imagerie",
        "active": True,
        "valid_from": None,
        "valid_to": None,
        "installed_beds": None,
    }
    assert created["valid_from"] == today().isoformat()
    location = urljoin(str(response.request.url), response.headers["location"])
    assert location == "http://testserver/org-units/CHU-ECHO"
    again = await activity.get(location, headers=auth("direction", CHU))
    assert again.json() == created
    async with database.transaction() as session:
        audit = (
            await session.execute(
                select(tables.audit_log.c.actor, tables.audit_log.c.action).where(
                    tables.audit_log.c.resource == "org_unit/CHU-ECHO"
                )
            )
        ).all()
    assert [tuple(row) for row in audit] == [(f"it_system-{CHU}", "org_unit.created")]


async def test_creating_an_org_unit_that_exists_is_a_conflict(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    before = await _written(database)
    response = await activity.post(
        "/org-units", json=_department(code="CHU-RAD"), headers=auth("it_system", CHU)
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "org_unit_conflict"
    assert await _written(database) == before


async def test_put_creates_then_versions_and_sending_the_same_again_changes_nothing(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    writer = auth("it_system", CHU)
    body = {
        "kind": "unit",
        "name": "Échographie",
        "parent": "CHU-RAD",
        "uf": "1103",
        "installed_beds": 4,
    }
    created = await activity.put("/org-units/CHU-1103", json=body, headers=writer)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "CHU-1103"
    assert created.json()["installed_beds"] == 4

    written = await _written(database)
    same = await activity.put(
        "/org-units/CHU-1103", json=body | {"code": "CHU-1103"}, headers=writer
    )
    assert same.status_code == 200
    assert same.json() == created.json()
    org_units, versions, outbox, audit = await _written(database)
    assert (org_units, versions, outbox) == written[:3]
    assert audit == written[3] + 1  # every write is audited, even one that changed nothing

    # The UF code may be left out when moving: it cannot change anyway.
    moved = await activity.put(
        "/org-units/CHU-1103",
        json={
            "kind": "unit",
            "name": "Échographie",
            "parent": "CHU-NUC",
            "valid_from": "2099-01-01",
        },
        headers=writer,
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["parent"], moved.json()["uf"]) == ("CHU-NUC", "1103")
    assert moved.json()["valid_from"] == "2099-01-01"
    today_s = await activity.get("/org-units/CHU-1103", headers=writer)
    assert today_s.json()["parent"] == "CHU-RAD"
    assert today_s.json()["valid_to"] == "2099-01-01"


async def test_put_on_a_code_other_than_the_bodys_is_refused(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    before = await _written(database)
    response = await activity.put(
        "/org-units/CHU-ECHO", json=_department(code="CHU-OTHER"), headers=auth("it_system", CHU)
    )
    assert response.status_code == 422
    assert response.json()["errors"][0] | {"message": ""} == {
        "field": "code",
        "rule": "matches_path",
        "message": "",
    }
    assert await _written(database) == before


async def test_a_territorial_administrator_creates_an_establishment(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.post(
        "/org-units",
        json={"code": "420000028", "kind": "establishment", "name": "CH du Sud", "parent": "G4"},
        headers=auth("admin"),
    )
    assert response.status_code == 201, response.text
    assert response.json()["finess"] == "420000028"


# --- who may write ----------------------------------------------------------------------

WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/org-units", _department()),
    ("PUT", "/org-units/CHU-ECHO", _department()),
    ("PUT", "/org-units/CHU-1101", _scanner_under("CHU-CAR")),
]
WRITE_IDS = ["post", "put-create", "put-move"]


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize(
    ("who", "status"),
    [
        (None, 401),
        (("direction", CHU), 403),
        (("pole_manager", CHU), 403),
        (("it_system", CH_NORD), 403),
        (("it_system", CHU), None),
        (("admin", "*"), None),
    ],
    ids=[
        "no-token",
        "direction-no-write-scope",
        "pole-manager-no-write-scope",
        "other-establishment",
        "own-it",
        "admin",
    ],
)
async def test_writing_below_an_establishment_needs_the_scope_and_that_establishment(
    activity: httpx.AsyncClient,
    auth: Headers,
    database: Database,
    method: str,
    path: str,
    body: dict[str, Any],
    who: tuple[str, str] | None,
    status: int | None,
) -> None:
    headers = {} if who is None else auth(*who)
    before = await _written(database)
    response = await activity.request(method, path, json=body, headers=headers)
    if status is None:
        assert response.status_code in (200, 201), response.text
        return
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert await _written(database) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/org-units",
            {"code": "420000028", "kind": "establishment", "name": "CH du Sud", "parent": "G4"},
        ),
        (
            "PUT",
            "/org-units/420000028",
            {"kind": "establishment", "name": "CH du Sud", "parent": "G4"},
        ),
        ("PUT", f"/org-units/{CHU}", {"kind": "establishment", "name": "CHU", "parent": "G4"}),
        ("PUT", "/org-units/G4", {"kind": "territory", "name": "GHT renamed"}),
    ],
    ids=["post-establishment", "put-establishment", "rename-own-establishment", "rename-territory"],
)
async def test_the_territory_and_its_establishments_are_for_territorial_principals_only(
    activity: httpx.AsyncClient,
    auth: Headers,
    database: Database,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    before = await _written(database)
    refused = await activity.request(method, path, json=body, headers=auth("it_system", CHU))
    assert refused.status_code == 403
    assert await _written(database) == before
    allowed = await activity.request(method, path, json=body, headers=auth("admin"))
    assert allowed.status_code in (200, 201), allowed.text


async def test_moving_a_unit_needs_the_target_parents_establishment_too(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    before = await _written(database)
    response = await activity.put(
        "/org-units/CHU-1101", json=_scanner_under("NORD-INT"), headers=auth("it_system", CHU)
    )
    assert response.status_code == 403
    assert response.json()["establishment"] == CH_NORD
    # A territorial principal may; the tree itself refuses to change a unit's establishment.
    response = await activity.put(
        "/org-units/CHU-1101", json=_scanner_under("NORD-INT"), headers=auth("admin")
    )
    assert response.status_code == 409
    assert response.json()["code"] == "org_unit_conflict"
    assert await _written(database) == before


@pytest.mark.parametrize(
    ("path", "who", "status"),
    [
        ("/org-units", None, 401),
        ("/org-units", ("nobody", CHU), 403),
        ("/org-units/CHU-RAD", None, 401),
        ("/org-units/CHU-RAD/tree", ("nobody", CHU), 403),
        ("/org-units/CHU-RAD/history", ("nobody", CHU), 403),
        ("/org-units/CHU-RAD/history", ("bed_manager", CH_NORD), 200),
    ],
)
async def test_reading_the_referential_needs_the_read_scope(
    activity: httpx.AsyncClient, auth: Headers, path: str, who: tuple[str, str] | None, status: int
) -> None:
    response = await activity.get(path, headers=auth(*who) if who else {})
    assert response.status_code == status


# --- bad inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "rule"),
    [
        (
            "POST",
            "/org-units",
            {"code": "420784879", "kind": "establishment", "name": "X", "parent": "G4"},
            "code",
            "finess",
        ),
        ("POST", "/org-units", _department(code="CHU ECHO"), "code", "string_pattern_mismatch"),
        ("POST", "/org-units", _department(code="-CHU"), "code", "string_pattern_mismatch"),
        ("POST", "/org-units", _department(code="C" * 41), "code", "string_pattern_mismatch"),
        ("PUT", "/org-units/CHU%20ECHO", _department(code=None), "code", "string_pattern_mismatch"),
        (
            "POST",
            "/org-units",
            _department(code="CHU-1103", kind="unit", uf="11-03", parent="CHU-RAD"),
            "uf",
            "string_pattern_mismatch",
        ),
        (
            "POST",
            "/org-units",
            _department(code="CHU-1103", kind="unit", parent="CHU-RAD"),
            "uf",
            "required",
        ),
        ("POST", "/org-units", _department(uf="1103"), "uf", "unit_only"),
        ("POST", "/org-units", _department(parent="CHU-NOPE"), "parent", "exists"),
        ("POST", "/org-units", _department(parent="CHU-RAD"), "parent", "allowed_parent_kind"),
        ("POST", "/org-units", _department(parent=None), "parent", "required"),
        (
            "PUT",
            "/org-units/CHU-RAD",
            _department(code="CHU-RAD", parent="CHU-RAD"),
            "parent",
            "cycle",
        ),
        ("POST", "/org-units", _department(colour="blue"), "colour", "extra_forbidden"),
        ("POST", "/org-units", _department(name=42), "name", "string_type"),
        ("POST", "/org-units", _department(name=""), "name", "string_too_short"),
        (
            "POST",
            "/org-units",
            _department(name="Radio\x00logie"),
            "name",
            "string_pattern_mismatch",
        ),
        ("POST", "/org-units", _department(kind="ward"), "kind", "enum"),
        ("POST", "/org-units", _department(active="yes"), "active", "bool_type"),
        (
            "POST",
            "/org-units",
            _department(valid_from="2024-13-01"),
            "valid_from",
            "date_from_datetime_parsing",
        ),
        (
            "POST",
            "/org-units",
            _department(
                code="CHU-1103", kind="unit", uf="1103", parent="CHU-RAD", installed_beds="12"
            ),
            "installed_beds",
            "int_type",
        ),
        (
            "POST",
            "/org-units",
            _department(
                code="CHU-1103", kind="unit", uf="1103", parent="CHU-RAD", installed_beds=-1
            ),
            "installed_beds",
            "greater_than_equal",
        ),
        ("POST", "/org-units", _department(installed_beds=3), "installed_beds", "unit_only"),
        (
            "POST",
            "/org-units",
            _department(code="CHU-1103", kind="unit", uf="1101", parent="CHU-RAD"),
            "uf",
            None,
        ),
        (
            "PUT",
            "/org-units/CHU-RAD",
            _department(code=None, name="Radio", valid_from="2022-06-01"),
            "valid_from",
            "parent_valid",
        ),
    ],
    ids=[
        "bad-finess",
        "code-with-space",
        "code-starting-with-dash",
        "code-too-long",
        "path-code-pattern",
        "uf-pattern",
        "unit-without-uf",
        "uf-on-a-department",
        "unknown-parent",
        "wrong-parent-kind",
        "missing-parent",
        "own-parent-cycle",
        "unknown-field",
        "name-not-a-string",
        "empty-name",
        "name-with-a-nul",
        "unknown-kind",
        "active-not-a-boolean",
        "impossible-date",
        "beds-as-a-string",
        "negative-beds",
        "beds-on-a-department",
        "uf-taken",
        "parent-not-open-yet",
    ],
)
async def test_a_bad_org_unit_is_refused_naming_the_field_and_nothing_is_written(
    activity: httpx.AsyncClient,
    auth: Headers,
    database: Database,
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
    rule: str | None,
) -> None:
    body = {key: value for key, value in body.items() if value is not None or key == "parent"}
    before = await _written(database)
    response = await activity.request(method, path, json=body, headers=auth("admin"))
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    if rule is None:  # a conflict names what clashes
        assert response.status_code == 409
        assert field in problem
    else:
        assert {"field": field, "rule": rule} in [
            {"field": e["field"], "rule": e["rule"]} for e in problem["errors"]
        ], problem
    assert await _written(database) == before


async def test_history_is_not_rewritten_before_the_current_version(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    writer = auth("it_system", CHU)
    moved = await activity.put(
        "/org-units/CHU-1101",
        json=_scanner_under("CHU-CAR", valid_from=MOVE_DAY.isoformat()),
        headers=writer,
    )
    assert moved.status_code == 200
    before = await _written(database)
    response = await activity.put(
        "/org-units/CHU-1101",
        json=_scanner_under("CHU-CAR", name="Scanner 2", valid_from="2024-01-01"),
        headers=writer,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["rule"] == "after_current_version"
    assert await _written(database) == before


async def test_a_body_that_is_not_json_is_refused(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    before = await _written(database)
    response = await activity.post(
        "/org-units",
        content=b"{not json",
        headers=auth("admin") | {"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await _written(database) == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"at": "yesterday"}, "at"),
        ({"kind": "ward"}, "kind"),
        ({"finess": "420784879"}, "finess"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"q": "ra\x00dio"}, "q"),
        ({"parent": "CHU RAD"}, "parent"),
        ({"cursor": "AA"}, "cursor"),
    ],
)
async def test_a_bad_list_filter_is_refused_naming_it(
    activity: httpx.AsyncClient, auth: Headers, params: dict[str, Any], field: str
) -> None:
    response = await activity.get("/org-units", params=params, headers=auth("direction", CHU))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


# --- events -----------------------------------------------------------------------------


def _of(tap: StreamTap, code: str) -> list[Event]:
    """The org-unit events of ``code`` received so far."""
    return [e for e in tap.received if e.data.get("code") == code]


async def test_creating_and_moving_an_org_unit_publishes_referential_events(
    activity: httpx.AsyncClient, auth: Headers, nats_url: str, activity_settings: Settings
) -> None:
    writer = auth("it_system", CHU)
    async with tap_stream(nats_url, SUBJECT) as tap:
        created = await activity.post("/org-units", json=_department(), headers=writer)
        assert created.status_code == 201
        await tap.until(lambda _: len(_of(tap, "CHU-ECHO")) == 1)
        moved = await activity.put(
            "/org-units/CHU-ECHO",
            json=_department(parent="CHU-MED", valid_from="2099-01-01"),
            headers=writer,
        )
        assert moved.status_code == 200
        await tap.until(lambda _: len(_of(tap, "CHU-ECHO")) == 2)
    first, second = _of(tap, "CHU-ECHO")
    assert first.type == "ght.referential.orgunit.upserted.v1"
    assert (first.source, first.subject, first.establishment) == (
        "activity-svc",
        "orgunit/CHU-ECHO",
        CHU,
    )
    assert first.data == {
        "code": "CHU-ECHO",
        "kind": "department",
        "name": "Échographie",
        "parent": "CHU-IMG",
        "finess": CHU,
        "uf": None,
        "specialty": None,
        "active": True,
        "valid_from": today().isoformat(),
        "installed_beds": None,
    }
    assert (second.data["parent"], second.data["valid_from"]) == ("CHU-MED", "2099-01-01")
    assert second.sequence == first.sequence + 1


async def test_sending_an_org_unit_unchanged_publishes_nothing(
    activity: httpx.AsyncClient, auth: Headers, nats_url: str, database: Database
) -> None:
    writer = auth("it_system", CHU)
    body = {"kind": "unit", "name": "IRM", "parent": "CHU-RAD", "uf": "1102"}
    await relayed(database)  # the territory's own events, published before the tap opens
    async with tap_stream(nats_url, SUBJECT) as tap:
        assert (
            await activity.put("/org-units/CHU-1102", json=body, headers=writer)
        ).status_code == 200
        beds = await activity.put(
            "/org-units/CHU-1102", json=body | {"installed_beds": 2}, headers=writer
        )
        assert beds.status_code == 200
        assert (
            await activity.put("/org-units/CHU-1102", json=body, headers=writer)
        ).status_code == 200
        # The relay publishes in commit order: once this marker is out, so is anything before.
        assert (
            await activity.post("/org-units", json=_department(), headers=writer)
        ).status_code == 201
        await tap.until(lambda _: len(_of(tap, "CHU-ECHO")) == 1)
    assert [e.data["installed_beds"] for e in _of(tap, "CHU-1102")] == [2]


async def test_a_planned_move_is_brought_forward_postponed_and_cancelled(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    headers = auth("it_system", CHU)
    move = {"kind": "department", "name": "Cardiologie", "parent": "CHU-IMG"}
    next_year = date(today().year + 1, 1, 1)
    soon = today() + timedelta(days=2)

    async def versions() -> list[tuple[str, str | None, str | None]]:
        history = await activity.get("/org-units/CHU-CAR/history", headers=headers)
        assert history.status_code == 200, history.text
        return [(v["valid_from"], v["valid_to"], v["parent"]) for v in history.json()["versions"]]

    planned = await activity.put(
        "/org-units/CHU-CAR", json={**move, "valid_from": next_year.isoformat()}, headers=headers
    )
    assert planned.status_code == 200, planned.text
    since = (await versions())[0][0]
    assert await versions() == [
        (since, next_year.isoformat(), "CHU-MED"),
        (next_year.isoformat(), None, "CHU-IMG"),
    ]
    # Brought forward: the same version, two days from now (it answered 200 and changed
    # nothing before).
    forward = await activity.put(
        "/org-units/CHU-CAR", json={**move, "valid_from": soon.isoformat()}, headers=headers
    )
    assert forward.status_code == 200, forward.text
    assert await versions() == [
        (since, soon.isoformat(), "CHU-MED"),
        (soon.isoformat(), None, "CHU-IMG"),
    ]
    yesterday = (today() - timedelta(days=1)).isoformat()
    past = await activity.put(
        "/org-units/CHU-CAR", json={**move, "valid_from": yesterday}, headers=headers
    )
    assert past.status_code == 422
    assert past.json()["errors"][0]["rule"] == "not_before_today"
    # Postponed, then cancelled: the version before it holds on.
    later = date(today().year + 1, 3, 1).isoformat()
    postponed = await activity.put(
        "/org-units/CHU-CAR", json={**move, "valid_from": later}, headers=headers
    )
    assert postponed.status_code == 200
    assert (await versions())[-1] == (later, None, "CHU-IMG")
    cancelled = await activity.delete(f"/org-units/CHU-CAR/versions/{later}", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["parent"] == "CHU-MED"
    assert await versions() == [(since, None, "CHU-MED")]
    async with database.transaction() as session:
        audited = (
            await session.execute(
                text("SELECT detail FROM audit_log WHERE action = 'org_unit.plan_cancelled'")
            )
        ).all()
    assert [(d["valid_from"], d["parent"]) for (d,) in audited] == [(later, "CHU-IMG")]

    begun = await activity.delete(f"/org-units/CHU-CAR/versions/{since}", headers=headers)
    assert begun.status_code == 409
    missing = await activity.delete(f"/org-units/CHU-CAR/versions/{later}", headers=headers)
    assert missing.status_code == 404
    refused = await activity.delete(
        f"/org-units/CHU-CAR/versions/{later}", headers=auth("it_system", CH_NORD)
    )
    assert refused.status_code in (403, 404)

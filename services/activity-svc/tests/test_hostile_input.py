"""Input a careless client or an attacker sends: huge lists, edge dates, numbers for dates,
words for booleans, control characters in identifiers. Each is a small 4xx naming the
field and the rule, with nothing written."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import orjson
import pytest
from activity_testing import CHU
from fastapi import FastAPI
from test_ingestion import act, post_records, record_count, stay

from ght_shared.app import SCOPES_EXTENSION
from ght_shared.db import Database
from ght_shared.errors import MAX_REPORTED_ERRORS
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")

EDGE_MOMENTS = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")


async def test_a_batch_of_empty_records_is_refused_in_a_small_answer(
    activity: httpx.AsyncClient, auth: Any
) -> None:
    # 150 000 items (300 000 JSON values, under the route's 400 000): refused by the
    # batch's length before any item is validated, in a small answer.
    body = b'{"records":[' + b",".join([b"{}"] * 150_000) + b"]}"
    response = await activity.post(
        "/records",
        content=body,
        headers={**auth("it_system", CHU), "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert len(response.content) < 4_096
    assert response.json()["errors"][0]["rule"] == "too_long"


async def test_a_batch_of_a_million_empty_records_is_413_before_it_is_parsed(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    # 3 MB, well within the body limit of /records (32 MB), but a million objects once
    # parsed: the values are counted as the body arrives.
    body = b'{"records":[' + b",".join([b"{}"] * 1_000_000) + b"]}"
    response = await activity.post(
        "/records",
        content=body,
        headers={**auth("it_system", CHU), "Content-Type": "application/json"},
    )

    assert response.status_code == 413, response.text[:500]
    problem = response.json()
    assert (problem["code"], problem["limit"]) == ("too_many_json_values", 400_000)
    assert await record_count(database) == 0


async def test_a_full_batch_of_bad_records_reports_the_first_errors_and_their_count(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    bad = [stay(f"S{i}", severity="x" * 60, drg="nope") for i in range(10_000)]

    response = await post_records(activity, auth("it_system", CHU), bad)

    assert response.status_code == 422
    problem = response.json()
    assert len(problem["errors"]) == MAX_REPORTED_ERRORS
    assert problem["error_count"] >= 20_000
    assert len(response.content) < 64 * 1024
    assert len(problem["detail"]) < 1_000
    assert await record_count(database) == 0


async def test_a_huge_unknown_field_name_is_not_echoed_back(
    activity: httpx.AsyncClient, auth: Any
) -> None:
    record = {**stay("S1"), "k" * 100_000: 1}
    response = await post_records(activity, auth("it_system", CHU), [record])

    assert response.status_code == 422
    assert len(response.content) < 4_096


@pytest.mark.parametrize("moment", EDGE_MOMENTS)
async def test_an_edge_moment_in_a_query_is_a_422_naming_it(
    activity: httpx.AsyncClient, auth: Any, moment: str
) -> None:
    response = await activity.get("/alerts", params={"since": moment}, headers=auth("admin"))

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "since"
    assert response.json()["errors"][0]["rule"] == "year_range"


@pytest.mark.parametrize("moment", EDGE_MOMENTS)
@pytest.mark.parametrize("path", ["/alerts", "/imports"])
async def test_an_edge_moment_in_a_cursor_is_a_422_naming_it(
    activity: httpx.AsyncClient, auth: Any, moment: str, path: str
) -> None:
    key = orjson.dumps([moment, "7b1e7f4e-5a53-4a37-9c53-5d0b3e3b6a11"])
    cursor = base64.urlsafe_b64encode(key).decode().rstrip("=")

    response = await activity.get(path, params={"cursor": cursor}, headers=auth("admin"))

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    ("record", "field", "rule"),
    [
        (act("A1", date=1705708800), "date", "iso_8601"),
        (act("A1", coded_on=1705708800), "coded_on", "iso_8601"),
        (stay("S1", admitted_at=1705708800), "admitted_at", "iso_8601"),
        (act("A1", coded="off"), "coded", "bool_type"),
        (act("A1", coded=1), "coded", "bool_type"),
        (act("A1", date="0001-01-01"), "date", "year_range"),
        (stay("S1", discharged_at="9999-12-31T23:59:59-14:00"), "discharged_at", "year_range"),
        (act("A1", source="actes\r\nFAKE LOG LINE"), "source", "control_character"),
        (act("A1\x1b[31m"), "source_id", "control_character"),
        (act("1A\u202egnp.exe"), "source_id", "control_character"),
        (act("A\u200b1"), "source_id", "control_character"),
    ],
)
async def test_lax_input_is_refused_naming_the_field_and_the_rule(
    activity: httpx.AsyncClient,
    auth: Any,
    database: Database,
    record: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    response = await post_records(activity, auth("it_system", CHU), [record])

    assert response.status_code == 422, response.text
    errors = [(e["field"], e["rule"]) for e in response.json()["errors"]]
    assert any(f.endswith(f".{field}") and r == rule for f, r in errors), errors
    assert await record_count(database) == 0


@pytest.mark.parametrize("number", ["0.5", "1700000000", "-1"])
async def test_a_number_is_not_a_moment_in_a_query(
    activity: httpx.AsyncClient, auth: Any, number: str
) -> None:
    # Found by the fuzzing run: ?since=0.5 was read as half a second after 1970.
    response = await activity.get("/alerts", params={"since": number}, headers=auth("admin"))

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "since"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/targets", {"indicator": "a\x00b"}),
        ("/alerts", {"org_unit": "\x1b[31m"}),
        ("/alert-rules", {"indicator": "\u202e"}),
        ("/org-units/a%00b/history", {}),
    ],
)
async def test_a_control_character_in_a_query_or_path_is_a_422(
    activity: httpx.AsyncClient, auth: Any, path: str, params: dict[str, str]
) -> None:
    response = await activity.get(path, params=params, headers=auth("admin"))

    assert response.status_code == 422, response.text


async def test_a_file_name_with_a_nul_is_a_422_with_nothing_imported(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    # Found by the fuzzing run: the NUL reached PostgreSQL, a 500.
    response = await activity.post(
        "/imports",
        params={"filename": "acts\x00.csv"},
        content=b"kind,source,source_id,finess,unit,date,code,amount\n",
        headers={**auth("it_system", CHU), "Content-Type": "text/csv"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "filename"
    assert await record_count(database) == 0


@pytest.mark.parametrize("day", ["0", "1700000000", "0001-01-01"])
async def test_a_number_or_an_edge_year_is_not_a_day_to_read_the_tree_at(
    activity: httpx.AsyncClient, auth: Any, day: str
) -> None:
    # Found by the fuzzing run: ?at=0 read the tree as it was on 1 January 1970.
    response = await activity.get("/org-units", params={"at": day}, headers=auth("admin"))

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "at"


async def test_every_route_that_declares_a_scope_is_401_without_a_token(
    activity_app: FastAPI, activity: httpx.AsyncClient
) -> None:
    # Every operation of the OpenAPI document but the probes declares a scope (the extension
    # the gateway reads), and each, new ones included, refuses a call with no token before
    # reading anything else.
    operations = [
        (method.upper(), path, operation)
        for path, by_method in activity_app.openapi()["paths"].items()
        if not path.startswith("/health/")
        for method, operation in by_method.items()
    ]
    assert [(m, p) for m, p, operation in operations if SCOPES_EXTENSION not in operation] == []
    calls = [(m, re.sub(r"\{(\w+)\}", _path_value, p)) for m, p, _ in operations]
    assert len(calls) >= 33
    for method, path in calls:
        response = await activity.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["code"] == "unauthenticated", (method, path)


async def test_every_route_that_declares_a_scope_is_403_to_a_token_without_it(
    activity_app: FastAPI, activity: httpx.AsyncClient, auth: Headers
) -> None:
    # A valid token holding no scope (analytics and exports included) reads nothing.
    calls = [
        (method.upper(), re.sub(r"\{(\w+)\}", _path_value, path))
        for path, by_method in activity_app.openapi()["paths"].items()
        if not path.startswith("/health/")
        for method in by_method
    ]
    for method, path in calls:
        response = await activity.request(method, path, headers=auth("nobody"))
        assert response.status_code == 403, (method, path, response.text)


def _path_value(param: re.Match[str]) -> str:
    name = param.group(1)
    if name.endswith("id"):
        return "6f1c1a5e-0000-4000-8000-000000000000"
    if name in {"valid_from", "day"}:
        return "2026-01-01"
    return "CHU-MED"

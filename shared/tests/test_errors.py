"""Every error a client can meet is one RFC 9457 problem+json shape, never a 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ght_shared.app import ServiceParts, create_service_app
from ght_shared.errors import PROBLEM_JSON, DomainError
from ght_shared.schemas import StrictModel
from ght_shared.settings import ServiceSettings
from ght_shared.testing.plugin import running_app


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TESTSVC_")
    service_name: str = "test-svc"


class BedCreate(StrictModel):
    label: str = Field(min_length=1)
    capacity: int = Field(ge=1)
    opens_on: date


class BedAlreadyReserved(DomainError):
    status = 409
    code = "bed_already_reserved"
    title = "Bed already reserved"


router = APIRouter()


@router.post("/beds", status_code=201)
async def create_bed(bed: BedCreate) -> dict[str, Any]:
    return bed.model_dump(mode="json")


@router.post("/beds/{bed_id}/reservations")
async def reserve_bed(bed_id: int) -> None:
    raise BedAlreadyReserved(f"Bed {bed_id} is already reserved.", bed_id=bed_id)


@pytest.fixture(scope="module")
async def client(make_settings) -> AsyncIterator[httpx.AsyncClient]:
    settings = await make_settings(_Settings)
    app = create_service_app(settings, ServiceParts(title="t", routers=[router]))
    async with running_app(app) as client:
        yield client


VALID_BED = {"label": "A-12", "capacity": 2, "opens_on": "2025-03-01"}


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:ght:problem:{code}"
    assert body["title"]
    assert body["detail"]
    return body


def _errors_by_field(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {error["field"]: error for error in body["errors"]}


async def test_a_valid_body_is_accepted(client):
    response = await client.post("/beds", json=VALID_BED)
    assert response.status_code == 201, response.text
    assert response.json() == VALID_BED


class TestAnInvalidBodyIs422:
    async def test_naming_each_field_of_the_wrong_type_and_the_rule_it_breaks(self, client):
        bed = {**VALID_BED, "capacity": "two", "opens_on": "next tuesday"}
        body = _problem(await client.post("/beds", json=bed), 422, "validation_failed")
        errors = _errors_by_field(body)
        assert set(errors) == {"capacity", "opens_on"}
        assert errors["capacity"]["rule"] == "int_parsing"
        assert errors["capacity"]["in"] == "body"
        assert errors["capacity"]["message"]
        assert errors["opens_on"]["rule"].startswith("date_")
        assert "capacity" in body["detail"] and "opens_on" in body["detail"]

    async def test_naming_a_value_out_of_its_bounds(self, client):
        body = _problem(
            await client.post("/beds", json={**VALID_BED, "capacity": 0}), 422, "validation_failed"
        )
        assert _errors_by_field(body)["capacity"]["rule"] == "greater_than_equal"

    async def test_naming_a_missing_field(self, client):
        bed = {k: v for k, v in VALID_BED.items() if k != "label"}
        body = _problem(await client.post("/beds", json=bed), 422, "validation_failed")
        assert _errors_by_field(body)["label"]["rule"] == "missing"

    async def test_naming_an_unknown_field_instead_of_dropping_it(self, client):
        bed = {**VALID_BED, "colour": "blue"}
        body = _problem(await client.post("/beds", json=bed), 422, "validation_failed")
        assert _errors_by_field(body)["colour"]["rule"] == "extra_forbidden"
        assert "colour" in body["detail"]

    async def test_for_a_body_that_is_not_an_object(self, client):
        body = _problem(await client.post("/beds", json=[VALID_BED]), 422, "validation_failed")
        assert body["errors"][0]["in"] == "body"

    async def test_for_a_path_parameter_of_the_wrong_type(self, client):
        body = _problem(
            await client.post("/beds/not-a-number/reservations"), 422, "validation_failed"
        )
        error = _errors_by_field(body)["bed_id"]
        assert error["in"] == "path"
        assert error["rule"] == "int_parsing"

    async def test_for_a_large_body_of_invalid_json_without_echoing_it(self, client):
        garbage = b"{" + b"\x01not json at all, " * (900 * 1024 // 18)
        assert len(garbage) > 900_000
        response = await client.post(
            "/beds", content=garbage, headers={"Content-Type": "application/json"}
        )
        body = _problem(response, 422, "validation_failed")
        assert body["errors"] == [
            {
                "field": "body",
                "in": "body",
                "rule": "json_invalid",
                "message": "Invalid JSON at character 1: "
                "Expecting property name enclosed in double quotes",
            }
        ]
        assert len(response.content) < 2_000

    async def test_a_huge_body_of_garbage_is_413_not_parsed(self, client):
        garbage = b"{" + b"\x01not json at all, " * (5 * 1024 * 1024 // 18)
        response = await client.post(
            "/beds", content=garbage, headers={"Content-Type": "application/json"}
        )
        body = _problem(response, 413, "payload_too_large")
        assert body["limit"] == 1_048_576
        assert len(response.content) < 2_000

    async def test_for_truncated_json_saying_where_it_breaks(self, client):
        truncated = '{"label": "A-12", "capacity": 2,'
        response = await client.post(
            "/beds", content=truncated, headers={"Content-Type": "application/json"}
        )
        body = _problem(response, 422, "validation_failed")
        [error] = body["errors"]
        assert (error["field"], error["rule"]) == ("body", "json_invalid")
        assert error["message"] == (
            f"Invalid JSON at character {len(truncated)}: "
            "Expecting property name enclosed in double quotes"
        )
        assert body["detail"] == "Invalid value for: body"


class TestADomainError:
    async def test_renders_its_status_code_detail_and_extras(self, client):
        response = await client.post("/beds/7/reservations")
        body = _problem(response, 409, "bed_already_reserved")
        assert body["title"] == "Bed already reserved"
        assert body["detail"] == "Bed 7 is already reserved."
        assert body["bed_id"] == 7

    async def test_carries_the_request_id_of_its_response_header(self, client):
        response = await client.post("/beds/7/reservations")
        body = _problem(response, 409, "bed_already_reserved")
        assert body["request_id"]
        assert body["request_id"] == response.headers["x-request-id"]

    async def test_carries_a_request_id_sent_by_the_caller(self, client):
        response = await client.post(
            "/beds/7/reservations", headers={"X-Request-ID": "gateway-req-0042"}
        )
        assert response.headers["x-request-id"] == "gateway-req-0042"
        assert _problem(response, 409, "bed_already_reserved")["request_id"] == "gateway-req-0042"


class TestTheRequestId:
    async def test_is_propagated_on_a_successful_response(self, client):
        response = await client.post(
            "/beds", json=VALID_BED, headers={"X-Request-ID": "abc-123.def_456:7"}
        )
        assert response.status_code == 201
        assert response.headers["x-request-id"] == "abc-123.def_456:7"

    @pytest.mark.parametrize(
        "incoming",
        ["has spaces", "x" * 129, "new\\nline", "<script>"],
        ids=["spaces", "too-long", "escape", "markup"],
    )
    async def test_replaces_an_unsafe_incoming_id_with_a_fresh_one(self, client, incoming):
        response = await client.post("/beds", json=VALID_BED, headers={"X-Request-ID": incoming})
        assert response.status_code == 201
        assert response.headers["x-request-id"] != incoming
        assert len(response.headers["x-request-id"]) == 32

    async def test_is_fresh_for_each_request_without_one(self, client):
        first = await client.post("/beds", json=VALID_BED)
        second = await client.post("/beds", json=VALID_BED)
        assert first.headers["x-request-id"] != second.headers["x-request-id"]


class TestHttpErrors:
    async def test_an_unknown_route_is_a_404_problem(self, client):
        response = await client.get("/no/such/route")
        body = _problem(response, 404, "not_found")
        assert body["request_id"] == response.headers["x-request-id"]

    async def test_a_wrong_method_is_a_405_problem(self, client):
        response = await client.delete("/beds")
        _problem(response, 405, "method_not_allowed")
        assert "POST" in response.headers["allow"]


class TestLastResortAnswers:
    async def test_an_unexpected_error_is_a_500_problem_carrying_the_request_id(
        self, probe_settings
    ):
        router = APIRouter()

        @router.get("/boom")
        async def boom() -> None:
            raise RuntimeError("a bug")

        settings = probe_settings
        app = create_service_app(settings, ServiceParts(title="t", routers=[router]))
        async with running_app(app) as client:
            response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-request-id"] == "req-500"
        assert response.json()["request_id"] == "req-500"
        assert response.json()["code"] == "internal_error"
        assert "a bug" not in response.text

    async def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(
        self, probe_settings
    ):
        router = APIRouter()

        @router.post("/small")
        async def small(body: dict) -> dict:
            return {"keys": len(body)}

        @router.post("/imports")
        async def upload(body: dict) -> dict:
            return {"keys": len(body)}

        settings = probe_settings.model_copy(update={"max_body_bytes": 2048})
        parts = ServiceParts(title="t", routers=[router], upload_paths=["/imports"])
        app = create_service_app(settings, parts)
        big = {"k": "x" * 5000}
        async with running_app(app) as client:
            assert (await client.post("/small", json={"a": 1})).status_code == 200
            refused = await client.post("/small", json=big)
            assert refused.status_code == 413
            assert refused.json()["code"] == "payload_too_large"
            assert refused.json()["limit"] == 2048

            async def chunks():
                for _ in range(10):
                    yield b" " * 1000  # no Content-Length: counted as it streams

            streamed = await client.post(
                "/small", content=chunks(), headers={"content-type": "application/json"}
            )
            assert streamed.status_code == 413
            assert (await client.post("/imports", json=big)).status_code == 200


batch_router = APIRouter()


@batch_router.post("/batches")
async def receive_batch(beds: list[BedCreate]) -> dict[str, int]:
    return {"received": len(beds)}


async def test_a_route_with_its_own_body_limit_accepts_more_than_the_default_up_to_it(
    make_settings,
):
    settings = await make_settings(_Settings)
    parts = ServiceParts(
        title="t",
        routers=[router, batch_router],
        body_limits={"/batches": 4 * 1_048_576},
        json_value_limits={"/batches": 1_000_000},
    )
    async with running_app(create_service_app(settings, parts)) as client:
        batch = [VALID_BED] * 30_000  # about 1.7 MB of JSON: above the default 1 MiB
        accepted = await client.post("/batches", json=batch)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"received": 30_000}
        too_large = await client.post("/batches", json=batch * 3)
        assert _problem(too_large, 413, "payload_too_large")["limit"] == 4 * 1_048_576
        elsewhere = await client.post("/beds", json={**VALID_BED, "label": "x" * 2_000_000})
        assert _problem(elsewhere, 413, "payload_too_large")["limit"] == 1_048_576


async def test_a_json_body_of_many_small_values_is_413_before_it_is_parsed(make_settings):
    """1 MB of [{},{},...] parses into 330 000 objects (tens of MB) before any list bound
    is checked: the values are counted as the body arrives, wherever its chunks fall."""
    settings = (await make_settings(_Settings)).model_copy(update={"max_json_values": 1_000})
    parts = ServiceParts(
        title="t",
        routers=[router, batch_router, uploads],
        json_value_limits={"/batches": 3_000},
        upload_paths=["/uploads"],
    )
    empties = b"[" + b",".join([b"{}"] * 1_500) + b"]"

    async def in_chunks(body: bytes, every: int) -> AsyncIterator[bytes]:
        for at in range(0, len(body), every):
            yield body[at : at + every]

    async with running_app(create_service_app(settings, parts)) as client:
        for content_type in ("application/json", "application/merge-patch+json", None):
            headers = {"content-type": content_type} if content_type else {}
            refused = await client.post("/beds", content=empties, headers=headers)
            assert _problem(refused, 413, "too_many_json_values")["limit"] == 1_000
        streamed = await client.post(
            "/beds", content=in_chunks(empties, 7), headers={"content-type": "application/json"}
        )
        assert _problem(streamed, 413, "too_many_json_values")["limit"] == 1_000
        small = await client.post("/beds", json=VALID_BED)
        assert small.status_code != 413, small.text
        batch = await client.post("/batches", json=[VALID_BED] * 500)  # about 2 000 values
        assert batch.json() == {"received": 500}
        too_many = await client.post("/batches", json=[VALID_BED] * 1_000)
        assert _problem(too_many, 413, "too_many_json_values")["limit"] == 3_000
        not_json = await client.post(
            "/uploads", content=empties, headers={"content-type": "application/x-ndjson"}
        )
        assert not_json.json() == {"size": len(empties)}


uploads = APIRouter()


@uploads.post("/uploads")
async def upload(request: Request) -> dict[str, int]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return {"size": size}


async def test_a_client_gone_mid_upload_is_a_4xx_not_a_server_error(make_settings, caplog):
    """The gateway killed while it streams a file to the service: the service's body ends
    early (ClientDisconnect). Nothing is done with it, and no 500 is logged or counted."""
    settings = await make_settings(_Settings)
    app = create_service_app(settings, ServiceParts(title="t", routers=[uploads]))
    received = [{"type": "http.request", "body": b"kind,source\n", "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return received.pop(0) if received else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/uploads",
        "raw_path": b"/uploads",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"svc"), (b"content-type", b"text/csv")],
        "client": ("127.0.0.1", 50000),
        "server": ("svc", 80),
    }
    async with running_app(app):
        with caplog.at_level(logging.INFO):
            await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

"""Routing of ``/api/<service>/...`` through the gateway, against real upstream processes.

The four services and a test-only echo upstream (``echo_upstream.py``) run as uvicorn
processes; the gateway is served by uvicorn on a real socket (``routing_servers.py``).
The breaker and header rules are also tested as plain code.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from gateway_testing import bearer, client_token, password_token
from routing_servers import (
    GatewayServer,
    ServiceStack,
    UvicornProcess,
    dead_url,
    echo_process,
)

from ght_gateway import proxy
from ght_gateway.proxy import timeout_for, without_hop_by_hop
from ght_gateway.settings import Settings, Upstreams
from ght_gateway.upstream import BreakerState, CircuitBreaker, Permit, Upstream
from ght_shared.auth import SERVICES
from ght_shared.errors import install_error_handlers
from ght_shared.testing.plugin import wait_for

pytestmark = pytest.mark.xdist_group("gateway-routing")

MIB = 1_048_576
PROBLEM = "application/problem+json"


# -- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def base_settings(make_gateway_settings: Any) -> Settings:
    """The gateway on one migrated database for the module: its keys sign every token here."""
    settings: Settings = await make_gateway_settings()
    return settings


def routed(**upstreams: str) -> dict[str, Any]:
    """Settings overrides sending the named services to these URLs, the others nowhere."""
    urls = {service: upstreams.get(service) or dead_url() for service in SERVICES}
    return {"upstreams": Upstreams(**urls)}


@asynccontextmanager
async def gateway(
    base: Settings, **overrides: Any
) -> AsyncIterator[tuple[GatewayServer, httpx.AsyncClient]]:
    settings = base.model_copy(update=overrides)
    async with GatewayServer(settings) as server, server.client() as client:
        yield server, client


_tokens: dict[str, dict[str, str]] = {}


async def auth(client: httpx.AsyncClient, who: str) -> dict[str, str]:
    """``Authorization`` of a demo machine client (``si-*``) or user, fetched once."""
    if who not in _tokens:
        if who.startswith("si-"):
            token = await client_token(client, who)
        else:
            token = await password_token(client, who)
        _tokens[who] = bearer(token)
    return _tokens[who]


async def requests_served(upstream: UvicornProcess) -> int:
    """How many requests the echo upstream has answered (its own counter, asked directly)."""
    async with httpx.AsyncClient(trust_env=False) as direct:
        count: int = (await direct.get(f"{upstream.url}/stats")).json()["requests"]
    return count


def problem_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


# -- the breaker, as plain code ----------------------------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failing(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.failed(permit)


def probing_breaker() -> tuple[ManualClock, CircuitBreaker, Permit]:
    """A breaker opened by one failure, its reset time over, and the probe it let through."""
    clock = ManualClock()
    breaker = CircuitBreaker(1, reset_s=10, clock=clock)
    failing(breaker, 1)
    clock.now += 10
    probe = breaker.acquire()
    assert probe is not None
    return clock, breaker, probe


def test_a_breaker_opens_after_the_configured_number_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(3, reset_s=10, clock=ManualClock())
    failing(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    failing(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.acquire() is None
    assert breaker.retry_after_s() == 10


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(3, reset_s=10, clock=ManualClock())
    failing(breaker, 2)
    permit = breaker.acquire()
    assert permit is not None
    breaker.succeeded(permit)
    failing(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_an_open_breaker_lets_exactly_one_probe_through_once_its_reset_time_is_over() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, reset_s=10, clock=clock)
    failing(breaker, 1)
    clock.now += 9.5
    assert breaker.acquire() is None
    assert breaker.retry_after_s() == 1
    clock.now += 0.5
    assert breaker.state is BreakerState.HALF_OPEN
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    assert breaker.acquire() is None  # one probe at a time


def test_a_successful_probe_closes_the_breaker() -> None:
    _, breaker, probe = probing_breaker()
    breaker.succeeded(probe)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.acquire() is not None


def test_a_failed_probe_opens_the_breaker_for_another_full_wait() -> None:
    clock, breaker, probe = probing_breaker()
    breaker.failed(probe)
    assert breaker.state is BreakerState.OPEN
    clock.now += 9
    assert breaker.acquire() is None
    assert breaker.times_opened == 1  # reopening is not a new opening


def test_a_probe_that_ends_without_verdict_lets_another_request_probe() -> None:
    _, breaker, probe = probing_breaker()
    breaker.release(probe)  # e.g. the caller went away
    assert breaker.acquire() is not None


# -- the header and timeout rules, as plain code -----------------------------------------------


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Private"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Private", b"secret"),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Authorization", b"Basic eDp5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Trailer", b"X-Checksum"),
        (b"Authorization", b"Bearer abc"),
        (b"Content-Type", b"application/json"),
    ]
    assert without_hop_by_hop(headers) == [
        (b"authorization", b"Bearer abc"),
        (b"content-type", b"application/json"),
    ]


def test_import_routes_wait_longer_than_the_other_routes() -> None:
    settings = Settings(
        upstream_timeout_s=10,
        upstream_import_timeout_s=300,
        upstream_import_prefixes=("/api/activity/imports",),
    )
    assert timeout_for(settings, "/api/activity/imports/pmsi") == 300
    assert timeout_for(settings, "/api/activity/records") == 10
    assert timeout_for(settings, "/api/beds/imports/x") == 10


def test_a_service_url_keeps_the_encoded_path_and_query_as_sent() -> None:
    upstream = Upstream(
        "beds", "http://beds.internal:8003/base/", httpx.AsyncClient(), CircuitBreaker(1, 1)
    )
    url = upstream.url("/wards/a%2Fb?q=%20x&q=2")
    assert str(url) == "http://beds.internal:8003/base/wards/a%2Fb?q=%20x&q=2"


async def test_other_gateway_routes_under_api_win_over_the_routing_whatever_the_order() -> None:
    territory = APIRouter()

    @territory.get("/api/territory/overview")
    async def overview() -> dict[str, str]:
        return {"from": "territory"}

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(proxy.router)  # included first on purpose
    app.include_router(territory)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/api/territory/overview")).json() == {"from": "territory"}
        problem_of(await client.get("/api/pharmacy/stock"), 404, "unknown_service")


# -- access ------------------------------------------------------------------------------------


async def test_a_machine_client_reaches_the_readiness_of_every_service(
    base_settings: Settings, services: ServiceStack
) -> None:
    urls = {service: services.url(service) for service in SERVICES}
    async with gateway(base_settings, **routed(**urls)) as (_, client):
        headers = await auth(client, "si-chu")
        for service in SERVICES:
            response = await client.get(f"/api/{service}/health/ready", headers=headers)
            assert response.status_code == 200, (service, response.text)
            assert response.json()["status"] == "ready"


async def test_a_request_without_a_valid_token_gets_401(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    before = await requests_served(echo)
    async with gateway(base_settings, **routed(beds=echo.url)) as (_, client):
        problem_of(await client.get("/api/beds/anything"), 401, "unauthenticated")
        forged = {"Authorization": "Bearer not.a.token"}
        problem_of(await client.get("/api/beds/anything", headers=forged), 401, "unauthenticated")
    assert await requests_served(echo) == before  # nothing unauthenticated reached the service


async def test_a_write_needs_the_write_scope_of_that_service(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    overrides = routed(beds=echo.url, staffing=echo.url)
    async with gateway(base_settings, **overrides) as (_, client):
        bed_manager = await auth(client, "lits.chu")  # beds:write, staffing:read only
        refused = await client.post("/api/staffing/needs", json={}, headers=bed_manager)
        body = problem_of(refused, 403, "forbidden")
        assert body["required_scope"] == "staffing:write"
        allowed = await client.post("/api/beds/movements", json={"n": 1}, headers=bed_manager)
        assert allowed.status_code == 200
        assert allowed.json()["path"] == "/movements"
        reading = await client.get("/api/staffing/needs", headers=bed_manager)
        assert reading.status_code == 200


async def test_an_unknown_service_gets_404(base_settings: Settings) -> None:
    async with gateway(base_settings, **routed()) as (_, client):
        headers = await auth(client, "si-chu")
        body = problem_of(
            await client.get("/api/pharmacy/stock", headers=headers), 404, "unknown_service"
        )
        assert body["service"] == "pharmacy"


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        (b"/api/beds/steering/1/../../movements", "dot_segment"),
        (b"/api/beds/steering/../movements", "dot_segment"),
        (b"/api/beds/./movements", "dot_segment"),
        (b"/api/beds/steering/..", "dot_segment"),
        (b"/api/../beds/movements", "dot_segment"),
        (b"/api/beds/steering/%2e%2e/movements", "encoded_separator"),
        (b"/api/beds/steering/%2E./movements", "encoded_separator"),
        (b"/api/beds/steering/1%2F..%2F..%2Fmovements", "encoded_separator"),
        (b"/api/beds/steering/1%2f..%2fmovements", "encoded_separator"),
        (b"/api/beds/steering/..%5Cmovements", "encoded_separator"),
        (b"/api/beds/steering/..%5cmovements", "encoded_separator"),
        (b"/api/beds/steering/..\\movements", "backslash"),
        (b"/api/beds//movements", "empty_segment"),
        (b"/api/beds/steering//1", "empty_segment"),
    ],
)
async def test_a_path_a_server_could_read_as_another_is_refused_before_any_check(
    base_settings: Settings, echo: UvicornProcess, target: bytes, rule: str
) -> None:
    before = await requests_served(echo)
    async with gateway(base_settings, **routed(beds=echo.url)) as (server, client):
        documents = server.app.state.service_documents
        await wait_for(lambda: documents.document("beds") is not None)
        # contracts:write passes the check of PUT /steering/{id} only: sent as is
        # (httpx would remove the dot segments), nothing may reach POST /movements.
        direction = await auth(client, "direction.chu")
        for method in ("PUT", "POST"):
            response = await client.request(
                method, "/api/beds/x", headers=direction, json={}, extensions={"target": target}
            )
            body = problem_of(response, 400, "unsafe_path")
            assert [(e["field"], e["rule"]) for e in body["errors"]] == [("path", rule)]
        # Refused before the token is even looked at.
        problem_of(
            await client.get("/api/beds/x", extensions={"target": target}), 400, "unsafe_path"
        )
    assert await requests_served(echo) == before


async def test_dots_slashes_and_encodings_inside_a_segment_are_routed_as_sent(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    async with gateway(base_settings, **routed(beds=echo.url)) as (_, client):
        headers = await auth(client, "si-chu")
        target = b"/api/beds/wards/a.b..c/beds%20x/?q=..%2F"
        response = await client.get("/api/beds/x", headers=headers, extensions={"target": target})

    assert response.status_code == 200, response.text
    assert response.json()["raw_path"] == "/wards/a.b..c/beds%20x/"
    assert response.json()["query"] == "q=..%2F"


# -- what crosses the gateway ------------------------------------------------------------------


def headers_seen(echoed: dict[str, Any]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in echoed["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


async def test_request_id_trace_forwarding_and_the_token_reach_the_service(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    request_id = f"routing-{uuid.uuid4().hex}"
    trace_id = uuid.uuid4().hex
    caller_span = "00f067aa0ba902b7"
    async with gateway(base_settings, **routed(beds=echo.url)) as (server, client):
        headers = {
            **await auth(client, "si-chu"),
            "X-Request-ID": request_id,
            "traceparent": f"00-{trace_id}-{caller_span}-01",
            "X-Forwarded-For": "203.0.113.7",
            "X-Custom": "kept",
        }
        response = await client.get(
            "/api/beds/wards/a%20b/beds?status=free&note=%20x&status=held", headers=headers
        )
        direct = await client.get("/api/beds/echo", headers=await auth(client, "si-chu"))
    assert response.status_code == 200, response.text
    echoed = response.json()
    seen = headers_seen(echoed)
    assert echoed["raw_path"] == "/wards/a%20b/beds"  # forwarded as sent, not decoded
    assert echoed["query"] == "status=free&note=%20x&status=held"
    # The gateway's own id, not the caller's: services and logs key the request by it.
    own_id = response.headers["x-request-id"]
    assert own_id != request_id and len(own_id) == 32
    assert seen["x-request-id"] == [own_id]
    [traceparent] = seen["traceparent"]
    assert traceparent.split("-")[1] == trace_id
    assert traceparent.split("-")[2] != caller_span  # the gateway's own span
    assert seen["authorization"] == [headers["Authorization"]]
    # The gateway's uvicorn trusts its loopback peer as a proxy and took the client from the
    # chain; a caller connecting directly is added to the chain.
    assert seen["x-forwarded-for"] == ["203.0.113.7"]
    assert headers_seen(direct.json())["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{server.port}"]
    assert seen["x-custom"] == ["kept"]
    assert response.headers.get_list("x-request-id") == [own_id]
    assert len(response.headers.get_list("traceparent")) == 1


async def test_hop_by_hop_headers_are_dropped_in_both_directions(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    async with gateway(base_settings, **routed(beds=echo.url)) as (_, client):
        headers = {
            **await auth(client, "si-chu"),
            "Connection": "X-Client-Hop",
            "X-Client-Hop": "must not cross the gateway",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eDp5",
        }
        echoed = (await client.get("/api/beds/echo", headers=headers)).json()
        answer = await client.get("/api/beds/hop", headers=await auth(client, "si-chu"))
    seen = headers_seen(echoed)
    for name in ("connection", "x-client-hop", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen, name
    assert answer.status_code == 200
    assert answer.content == b"hop"
    assert answer.headers["x-kept"] == "yes"
    for name in ("x-upstream-hop", "keep-alive", "proxy-authenticate", "trailer"):
        assert name not in answer.headers, name
    assert answer.headers.get("connection", "").lower() != "x-upstream-hop"


# -- bodies ------------------------------------------------------------------------------------


async def test_a_large_response_is_streamed_while_the_service_is_still_sending_it(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    size = 32 * MIB
    gate = uuid.uuid4().hex
    async with gateway(base_settings, **routed(beds=echo.url)) as (_, client):
        headers = await auth(client, "si-chu")
        params = {"size": str(size), "gate": gate}
        async with client.stream(
            "GET", "/api/beds/stream", params=params, headers=headers
        ) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            # The service holds everything after its first chunk until the gate opens: a
            # gateway buffering whole bodies would deliver nothing here.
            first = await asyncio.wait_for(anext(chunks), 10)
            async with httpx.AsyncClient(trust_env=False) as direct:
                await direct.post(f"{echo.url}/gate/{gate}")
            received = len(first) + sum([len(chunk) async for chunk in chunks])
    assert 0 < len(first) < size
    assert received == size


async def test_a_large_upload_to_an_import_route_is_streamed_to_the_service(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    chunk = b"p" * (256 * 1024)
    chunks = 40  # 10 MiB, ten times the normal body limit
    name = uuid.uuid4().hex

    async def service_has_bytes() -> bool:
        async with httpx.AsyncClient(trust_env=False) as direct:
            return (await direct.get(f"{echo.url}/progress/{name}")).json()["received"] > 0

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        # The rest waits until the service has bytes: a gateway reading the whole body
        # before calling the service would wait for ever here.
        deadline = time.monotonic() + 10
        while not await service_has_bytes():
            assert time.monotonic() < deadline, "the service got nothing of the upload"
            await asyncio.sleep(0.02)
        for _ in range(chunks - 1):
            yield chunk

    overrides = {
        **routed(beds=echo.url),
        "upstream_import_prefixes": ("/api/beds/imports",),
    }
    async with gateway(base_settings, **overrides) as (_, client):
        headers = await auth(client, "si-chu")
        response = await client.post(
            f"/api/beds/imports/movements?progress={name}", content=body(), headers=headers
        )
        declared = await client.put(
            "/api/beds/imports/census", content=b"c" * (3 * MIB), headers=headers
        )
    assert response.status_code == 200, response.text
    assert response.json()["body_bytes"] == len(chunk) * chunks
    assert response.json()["body_sha256"] == hashlib.sha256(chunk * chunks).hexdigest()
    assert declared.status_code == 200, declared.text
    assert declared.json()["body_bytes"] == 3 * MIB


async def test_a_body_over_the_limit_on_a_normal_route_gets_413(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"z" * (256 * 1024)

    async with gateway(base_settings, **routed(beds=echo.url)) as (_, client):
        headers = await auth(client, "si-chu")
        declared = await client.post(
            "/api/beds/movements", content=b"z" * (2 * MIB), headers=headers
        )
        streamed = await client.post("/api/beds/movements", content=chunked(), headers=headers)
    assert problem_of(declared, 413, "payload_too_large")["limit"] == base_settings.max_body_bytes
    problem_of(streamed, 413, "payload_too_large")


# -- failures ----------------------------------------------------------------------------------


async def test_a_slow_service_gets_504_within_the_timeout_but_an_import_route_waits_longer(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    overrides = {
        **routed(beds=echo.url),
        "upstream_timeout_s": 0.5,
        "upstream_import_timeout_s": 5.0,
        "upstream_import_prefixes": ("/api/beds/imports",),
    }
    async with gateway(base_settings, **overrides) as (_, client):
        headers = await auth(client, "si-chu")
        started = time.monotonic()
        timed_out = await client.get("/api/beds/slow?seconds=3", headers=headers)
        waited = time.monotonic() - started
        imported = await client.get("/api/beds/imports/slow?seconds=1", headers=headers)
    body = problem_of(timed_out, 504, "upstream_timeout")
    assert body["service"] == "beds"
    assert waited < 2.5  # the 0.5 s timeout, not the service's 3 s
    assert imported.status_code == 200
    assert imported.json() == {"slept": 1.0}


async def test_an_unreachable_service_gets_503_with_retry_after_at_once(
    base_settings: Settings,
) -> None:
    async with gateway(base_settings, **routed()) as (_, client):
        headers = await auth(client, "si-chu")
        started = time.monotonic()
        response = await client.get("/api/activity/records", headers=headers)
        waited = time.monotonic() - started
    body = problem_of(response, 503, "upstream_unavailable")
    assert body["service"] == "activity"
    assert "activity" in body["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert waited < 2.0


async def test_a_get_is_retried_on_connect_errors_but_a_post_is_not(
    base_settings: Settings,
) -> None:
    overrides = {**routed(), "upstream_retries": 2, "breaker_failures": 10}
    async with gateway(base_settings, **overrides) as (server, client):
        headers = await auth(client, "si-chu")
        read = await client.get("/api/beds/movements", headers=headers)
        write = await client.post("/api/beds/movements", json={}, headers=headers)
        retries = server.app.state.metrics.registry.get_sample_value(
            "ght_upstream_retries_total", {"upstream": "beds"}
        )
    assert problem_of(read, 503, "upstream_unavailable")["attempts"] == 3
    assert problem_of(write, 503, "upstream_unavailable")["attempts"] == 1
    assert retries == 2


async def test_the_breaker_opens_after_repeated_failures_and_closes_once_the_service_is_back(
    base_settings: Settings, tmp_path: Path
) -> None:
    service = echo_process(tmp_path)
    await service.start()
    clock = ManualClock()
    overrides = {
        **routed(beds=service.url),
        "breaker_failures": 3,
        "breaker_reset_s": 30.0,
        "upstream_retries": 0,
    }
    try:
        async with gateway(base_settings, **overrides) as (server, client):
            server.app.state.upstreams.breaker("beds").clock = clock
            registry = server.app.state.metrics.registry
            headers = await auth(client, "si-chu")
            assert (await client.get("/api/beds/echo", headers=headers)).status_code == 200

            service.stop()
            for _ in range(3):
                problem_of(
                    await client.get("/api/beds/echo", headers=headers), 503, "upstream_unavailable"
                )
            service.spawn()  # back on the same port...
            await service.wait_live()
            refused = await client.get("/api/beds/echo", headers=headers)
            body = problem_of(refused, 503, "circuit_open")
            assert body["service"] == "beds"
            assert refused.headers["retry-after"] == "30"
            assert (
                registry.get_sample_value("ght_upstream_breaker_state", {"upstream": "beds"}) == 2
            )
            assert await requests_served(service) == 0  # ...but not called while open

            clock.now += 30  # half-open: the next request is the probe
            assert (await client.get("/api/beds/echo", headers=headers)).status_code == 200
            assert (await client.get("/api/beds/echo", headers=headers)).status_code == 200
            assert (
                registry.get_sample_value("ght_upstream_breaker_state", {"upstream": "beds"}) == 0
            )
            assert (
                registry.get_sample_value("ght_upstream_breaker_opened", {"upstream": "beds"}) == 1
            )
            outcomes = {
                outcome: registry.get_sample_value(
                    "ght_upstream_requests_total",
                    {"upstream": "beds", "method": "GET", "outcome": outcome},
                )
                for outcome in ("200", "unreachable", "circuit_open")
            }
            # 200: the three routed reads, and the service's OpenAPI document that the
            # gateway read at its start for the scopes of the routes (scopes.py).
            assert outcomes == {"200": 3 + 1, "unreachable": 3, "circuit_open": 1}
            metrics_url = f"http://127.0.0.1:{server.app.state.metrics_port}/metrics"
            async with httpx.AsyncClient(trust_env=False) as scraper:
                scraped = (await scraper.get(metrics_url)).text
            assert 'ght_upstream_breaker_state{upstream="beds"} 0.0' in scraped
    finally:
        service.stop()


# -- the scopes a service declares -------------------------------------------------------------


async def test_a_route_asks_for_the_scopes_its_service_declares_for_it(
    base_settings: Settings, echo: UvicornProcess
) -> None:
    async with gateway(base_settings, **routed(beds=echo.url)) as (server, client):
        documents = server.app.state.service_documents
        await wait_for(lambda: documents.document("beds") is not None)
        direction = await auth(client, "direction.chu")  # contracts:write, not beds:write
        # The service declares that this route accepts contracts:write: it gets through.
        passed = await client.put("/api/beds/steering/1", json={}, headers=direction)
        assert passed.status_code == 200, passed.text
        assert passed.json()["path"] == "/steering/1"
        # The other writes of the service take its write scope only.
        refused = await client.post("/api/beds/movements", json={}, headers=direction)
        body = problem_of(refused, 403, "forbidden")
        assert body["required_scope"] == "beds:write"
        assert body["detail"].startswith("POST on the beds service")
        commission = await auth(client, "commission")  # neither scope
        body = problem_of(
            await client.put("/api/beds/steering/1", json={}, headers=commission), 403, "forbidden"
        )
        assert body["required_scope"] == ["beds:write", "contracts:write"]


async def test_without_the_services_document_the_gateway_asks_for_the_default_scope(
    base_settings: Settings,
) -> None:
    async with gateway(base_settings, **routed()) as (_, client):  # no service reachable
        direction = await auth(client, "direction.chu")
        response = await client.put("/api/beds/steering/1", json={}, headers=direction)
        assert problem_of(response, 403, "forbidden")["required_scope"] == "beds:write"

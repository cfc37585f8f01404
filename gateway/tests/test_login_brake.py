"""The brake on guessing passwords: per account and address, atomic, and no lever on
machine clients (ADR 0014)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from gateway_testing import DEMO_PASSWORD, client_token, from_address, password_token
from sqlalchemy import func, select

from ght_gateway.main import create_app
from ght_gateway.models import LoginAttempt
from ght_gateway.settings import RateLimit
from ght_shared.db import Database
from ght_shared.testing.plugin import running_app

WRONG = "not-the-password"
# The per-address token bucket of /auth/token is not what these tests are about.
OPEN_DOOR = {"token_ip_limit": RateLimit(rate=100, burst=1000)}


def _password(username: str, password: str) -> dict[str, str]:
    return {"grant_type": "password", "username": username, "password": password}


@asynccontextmanager
async def _running(make_gateway_settings: Any, **overrides: Any) -> AsyncIterator[FastAPI]:
    app = create_app(await make_gateway_settings(**OPEN_DOOR, **overrides))
    async with running_app(app):
        yield app


async def test_a_stranger_cannot_lock_a_machine_client_out(gateway_app: FastAPI, gateway):
    async with from_address(gateway_app, "203.0.113.7") as stranger:
        for _ in range(8):  # as a person (only the stranger's address is slowed)...
            response = await stranger.post("/auth/token", data=_password("client:si-chu", WRONG))
            assert response.status_code in (401, 429)
        # ... and as the client itself: no brake on 256-bit secrets, nothing to lock.
        for _ in range(8):
            response = await stranger.post(
                "/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "si-chu",
                    "client_secret": WRONG,
                },
            )
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_client"

    assert (await client_token(gateway, "si-chu"))["access_token"]


async def test_failures_from_one_address_do_not_slow_the_owner_at_another(
    gateway_app: FastAPI, gateway
):
    async with from_address(gateway_app, "203.0.113.8") as stranger:
        for _ in range(5):
            response = await stranger.post("/auth/token", data=_password("commission", WRONG))
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_grant"  # RFC 6749 §5.2
        refused = await stranger.post("/auth/token", data=_password("commission", DEMO_PASSWORD))
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_attempts"

    async with from_address(gateway_app, "198.51.100.20") as owner:
        assert (await password_token(owner, "commission"))["access_token"]


async def test_guesses_spread_over_addresses_slow_the_unfamiliar_ones_only(
    make_gateway_settings: Any,
):
    async with _running(
        make_gateway_settings, login_max_failures=3, login_account_max_failures=4
    ) as app:
        async with from_address(app, "198.51.100.1") as owner:
            await password_token(owner, "admin")  # this address is now familiar
        for last_byte in range(4):
            async with from_address(app, f"203.0.113.{last_byte}") as stranger:
                response = await stranger.post("/auth/token", data=_password("admin", WRONG))
                assert response.status_code == 401

        async with from_address(app, "203.0.113.200") as newcomer:
            response = await newcomer.post("/auth/token", data=_password("admin", DEMO_PASSWORD))
            assert response.status_code == 429
        async with from_address(app, "198.51.100.1") as owner:
            assert (await password_token(owner, "admin"))["access_token"]


async def test_concurrent_guesses_are_counted_one_by_one(make_gateway_settings: Any):
    async with (
        _running(make_gateway_settings, login_max_failures=5) as app,
        from_address(app, "203.0.113.50") as attacker,
    ):
        responses = await asyncio.gather(
            *(
                attacker.post("/auth/token", data=_password("direction.chu", WRONG))
                for _ in range(12)
            )
        )
        database = Database(app.state.settings)
        try:
            async with database.transaction() as session:
                checked = await session.scalar(
                    select(func.count()).where(LoginAttempt.username == "direction.chu")
                )
        finally:
            await database.dispose()

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * 5 + [429] * 7
    assert checked == 5  # the password was checked five times, not twelve


async def test_every_token_error_carries_the_oauth_error(gateway: httpx.AsyncClient):
    cases = [
        ({"grant_type": "implicit"}, 400, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "admin"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, 400, "invalid_grant"),
        ({**_password("admin", DEMO_PASSWORD), "scope": "nothing:at-all"}, 400, "invalid_scope"),
        ({"grant_type": "x" * 5000}, 400, "invalid_request"),
    ]
    for form, status, error in cases:
        response = await gateway.post("/auth/token", data=form)
        assert (response.status_code, response.json()["error"]) == (status, error), form
        assert response.headers["content-type"] == "application/problem+json"

"""What the gateway's tests share: the demo password and token helpers (fixtures: conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

ALEMBIC_INI = Path(__file__).parents[1] / "alembic.ini"
DEMO_PASSWORD = "demo-password-for-tests"


async def password_token(
    client: httpx.AsyncClient, username: str, password: str = DEMO_PASSWORD, **form: str
) -> dict[str, Any]:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": password, **form},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def client_token(
    client: httpx.AsyncClient, client_id: str, secret: str = DEMO_PASSWORD
) -> dict[str, Any]:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: dict[str, Any] | str) -> dict[str, str]:
    value = token if isinstance(token, str) else token["access_token"]
    return {"Authorization": f"Bearer {value}"}


def from_address(app: Any, ip: str) -> httpx.AsyncClient:
    """A client of ``app`` (its lifespan already entered) calling from address ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40_000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")

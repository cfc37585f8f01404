"""The gateway's long-lived parts, built in its lifespan and reachable from a request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI, Request

from ght_gateway.access import AccessLogWriter
from ght_gateway.demo import ensure_demo_identities
from ght_gateway.identity import LoginGuard
from ght_gateway.keys import KeyStore
from ght_gateway.ratelimit import TokenBuckets
from ght_gateway.revocations import Revoker
from ght_gateway.settings import Settings
from ght_gateway.tokens import TokenIssuer
from ght_shared.auth import TokenVerifier
from ght_shared.db import Database

_log = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: Settings
    keys: KeyStore
    issuer: TokenIssuer
    login_guard: LoginGuard
    revoker: Revoker
    token_buckets: TokenBuckets
    """Per-IP buckets of the token endpoint."""


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@asynccontextmanager
async def identity_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Signing keys, token issuer, revocations, brute-force guard, access log; demo
    identities if asked."""
    settings: Settings = app.state.settings
    database: Database = app.state.database
    verifier: TokenVerifier = app.state.token_verifier
    await verifier.revocations.refresh()  # nothing revoked is accepted, even at start
    revoker = Revoker(
        verifier.revocations,
        keep_for=timedelta(seconds=settings.access_token_ttl_s + settings.jwt_leeway_s + 1),
    )
    keys = KeyStore(
        database, settings.encryption_key, settings.signing_algorithm, settings.access_token_ttl_s
    )
    app.state.gateway = Gateway(
        settings=settings,
        keys=keys,
        issuer=TokenIssuer(
            keys,
            revoker,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl_s=settings.access_token_ttl_s,
            refresh_ttl_s=settings.refresh_token_ttl_s,
        ),
        login_guard=LoginGuard(settings),
        revoker=revoker,
        token_buckets=TokenBuckets(),
    )
    writer = AccessLogWriter(database, app.state.metrics)
    app.state.access_log = writer
    writer.start()
    if settings.demo:
        await ensure_demo_identities(database, settings.demo_password)
    try:
        yield
    finally:
        await writer.stop()

"""App factory of the gateway: ``uvicorn ght_gateway.main:create_app --factory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

import ght_gateway
from ght_gateway import admin_api, auth_api, feed, overview, proxy
from ght_gateway.access import RateLimitHeadersMiddleware, record_access
from ght_gateway.openapi import install_merged_openapi
from ght_gateway.ratelimit import TokenBuckets
from ght_gateway.revocations import current_revocations
from ght_gateway.runtime import identity_lifespan
from ght_gateway.scopes import route_scopes_lifespan
from ght_gateway.settings import Settings
from ght_gateway.upstream import upstreams_lifespan
from ght_shared.app import ServiceParts, create_service_app
from ght_shared.auth import TokenVerifier
from ght_shared.metrics import metrics_listener

_log = logging.getLogger(__name__)


@asynccontextmanager
async def metrics_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """``/metrics`` on ``metrics_host:metrics_port``, never on the public port."""
    settings: Settings = app.state.settings
    registry = app.state.metrics.registry
    with metrics_listener(registry, settings.metrics_host, settings.metrics_port) as port:
        app.state.metrics_port = port
        _log.info("metrics listening", extra={"host": settings.metrics_host, "port": port})
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app(
        settings,
        ServiceParts(
            title="gateway",
            description=ght_gateway.__doc__ or "",
            routers=(
                auth_api.token_router,
                auth_api.router,
                admin_api.router,
                overview.router,
                feed.router,
                proxy.router,
            ),
            lifespans=(
                metrics_lifespan,
                identity_lifespan,
                feed.feed_lifespan,
                upstreams_lifespan,
                route_scopes_lifespan,
            ),
            upload_paths=settings.upstream_import_prefixes,
            public_metrics=False,
            request_observers=(record_access,),
            middleware=(
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(settings.cors_origins),
                    allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                    allow_headers=[
                        "Authorization",
                        "Content-Type",
                        "X-Request-ID",
                        "Last-Event-ID",
                    ],
                    expose_headers=[
                        "X-Request-ID",
                        "Retry-After",
                        "RateLimit-Limit",
                        "RateLimit-Remaining",
                        "RateLimit-Reset",
                    ],
                    max_age=600,
                ),
                Middleware(RateLimitHeadersMiddleware),
            ),
        ),
    )
    # The gateway verifies its own tokens with the keys and revocations of its database,
    # not over HTTP.
    app.state.token_verifier = TokenVerifier(
        settings,
        jwks_loader=lambda: app.state.gateway.keys.jwks(),
        revocations_loader=lambda: current_revocations(app.state.database),
    )
    app.state.request_buckets = TokenBuckets()
    install_merged_openapi(app, settings.openapi_cache_s)
    return app

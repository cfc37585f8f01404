"""App factory of the gateway: ``uvicorn ght_gateway.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

from ght_gateway.settings import Settings
from ght_shared.app import ServiceParts, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="gateway",
            description=(
                "The single entry point of the territorial platform: identity and tokens, "
                "routing to the services, rate limits, territorial aggregation, live feed."
            ),
        ),
    )

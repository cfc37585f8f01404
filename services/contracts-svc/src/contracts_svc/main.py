"""App factory of contracts-svc: ``uvicorn contracts_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

from ght_shared.app import ServiceParts, create_service_app
from contracts_svc.events import CONSUMERS, STREAM
from contracts_svc.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="contracts-svc",
            description="Contracts service of the territorial platform: contracts of objectives and means (COM / contrats de pôle), service contracts and cooperation agreements, their objectives, means, reviews and incentive.",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )

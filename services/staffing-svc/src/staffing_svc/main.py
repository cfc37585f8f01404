"""App factory of staffing-svc: ``uvicorn staffing_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

from ght_shared.app import ServiceParts, create_service_app
from staffing_svc.events import CONSUMERS, STREAM
from staffing_svc.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="staffing-svc",
            description="Staffing service of the territorial platform: practitioners working across sites, their authorisations, staffing needs, assignments and on-call rotas.",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )

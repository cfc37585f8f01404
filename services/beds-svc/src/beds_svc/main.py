"""App factory of beds-svc: ``uvicorn beds_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

from ght_shared.app import ServiceParts, create_service_app
from beds_svc.events import CONSUMERS, STREAM
from beds_svc.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="beds-svc",
            description="Beds service of the territorial platform: beds, their status and allocation, shared capacity, strain levels and inter-site transfers.",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )

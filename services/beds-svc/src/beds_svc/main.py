"""App factory of beds-svc: ``uvicorn beds_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

import beds_svc
from beds_svc.consumers import CONSUMERS
from beds_svc.events import STREAM
from beds_svc.settings import Settings
from ght_shared.app import ServiceParts, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="beds-svc",
            description=beds_svc.__doc__ or "",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )

"""App factory of activity-svc: ``uvicorn activity_svc.main:create_app --factory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import activity_svc
from activity_svc.consumers import CONSUMERS
from activity_svc.events import STREAM
from activity_svc.indicators.api import router as indicators_router
from activity_svc.ingestion.api import router as ingestion_router
from activity_svc.ingestion.parts import recover_imports, recover_periodically
from activity_svc.referential.api import router as referential_router
from activity_svc.settings import Settings
from activity_svc.steering.api import router as steering_router
from ght_shared.app import ServiceParts, background_task, create_service_app

_log = logging.getLogger(__name__)


@asynccontextmanager
async def recover_interrupted_imports(app: FastAPI) -> AsyncIterator[None]:
    """Settle what imports interrupted by a crash left (see ingestion.parts): at start-up,
    then every minute (each import also does, once it holds its establishments' locks)."""
    try:
        await recover_imports(app.state.database)
    except Exception:  # the database may be down: the periodic task tries again
        _log.exception("could not recover interrupted imports at start-up")
    async with background_task(recover_periodically(app.state.database), "recover-imports"):
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(
        settings,
        ServiceParts(
            title="activity-svc",
            description=activity_svc.__doc__ or "",
            routers=(referential_router, ingestion_router, indicators_router, steering_router),
            owned_streams=(STREAM,),
            upload_paths=("/imports",),
            body_limits={
                "/records": settings.records_body_bytes,
                "/withdrawals": settings.records_body_bytes,
            },
            json_value_limits={"/records": settings.records_json_values},
            consumers=CONSUMERS,
            lifespans=(recover_interrupted_imports,),
        ),
    )

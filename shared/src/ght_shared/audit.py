"""The append-only audit trail of writes: who, when, what, on which request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ght_shared import tables
from ght_shared.auth import Principal
from ght_shared.context import request_id_var


async def record_audit(
    session: AsyncSession,
    principal: Principal | str,
    action: str,
    resource: str,
    *,
    establishment: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record a write in the caller's transaction (it is kept only if the write is)."""
    await session.execute(
        insert(tables.audit_log).values(
            at=datetime.now(UTC),
            actor=principal.sub if isinstance(principal, Principal) else principal,
            action=action,
            resource=resource,
            establishment=establishment,
            request_id=request_id_var.get(),
            detail=detail or {},
        )
    )

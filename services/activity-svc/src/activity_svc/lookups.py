"""Finding what a request or an event names: an indicator, an org unit, a subtree.

Each lookup raises the service's 404 when the thing does not exist, so that routes, use
cases and consumers refuse an unknown code the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from activity_svc.catalogue import INDICATORS_BY_CODE, Indicator
from activity_svc.errors import IndicatorNotFound, OrgUnitNotFound
from activity_svc.models import OrgUnit, OrgUnitVersion

MAX_DEPTH = 32
"""Deeper than any tree (territory > establishment > site > pôle > department > unit)."""


def indicator_of(code: str) -> Indicator:
    """The catalogue's indicator ``code`` (404 ``indicator_not_found`` otherwise)."""
    indicator = INDICATORS_BY_CODE.get(code)
    if indicator is None:
        raise IndicatorNotFound(f"No indicator {code!r} in the catalogue.", indicator=code)
    return indicator


async def org_unit_of(session: AsyncSession, code: str) -> OrgUnit:
    """The org unit ``code`` (404 ``org_unit_not_found`` otherwise)."""
    # PostgreSQL text cannot hold NUL: such a code names no org unit (not a 500).
    unit = await session.get(OrgUnit, code) if "\x00" not in code else None
    if unit is None:
        raise OrgUnitNotFound(f"No org unit {code!r}.", org_unit=code)
    return unit


def subtree(root: str) -> Select[Any]:
    """``root`` and every org unit below it in today's tree (a query of their codes)."""
    version = aliased(OrgUnitVersion)
    below = (
        select(OrgUnit.code.label("code"), literal_column("0").label("depth"))
        .where(OrgUnit.code == root)
        .cte("below", recursive=True)
    )
    below = below.union_all(
        select(version.code, below.c.depth + 1)
        .join(below, and_(version.parent == below.c.code, version.valid_to.is_(None)))
        .where(below.c.depth < MAX_DEPTH)
    )
    return select(below.c.code)

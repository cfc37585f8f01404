"""Comments on figures: the cadre de gestion's explanation of a change ("fermeture de
6 lits en octobre"), written on an indicator of an org unit in a month and shown with
that figure (dashboards, values) to whoever reads it, the chef de pôle first.

Who may write one is who may steer the org unit (its establishment's direction, a pôle
manager on their own pôle and below); only its author (or an administrator) removes it.
Each write is audited. A figure holds at most :data:`MAX_PER_FIGURE` comments.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.access import ensure_may_steer, may_read
from activity_svc.errors import CommentNotFound, TooManyComments
from activity_svc.indicators.schemas import CommentRead
from activity_svc.lookups import indicator_of, org_unit_of
from activity_svc.models import FigureComment
from ght_shared.audit import record_audit
from ght_shared.auth import Principal
from ght_shared.errors import Forbidden

MAX_PER_FIGURE = 50
"""Enough for a dialogue on one figure; a bound on what each dashboard cell carries."""

ADMIN = "admin"

FigureKey = tuple[str, str, date]
"""(org unit, indicator, month)."""


async def add_comment(
    session: AsyncSession, actor: Principal, indicator: str, org_unit: str, month: date, text: str
) -> FigureComment:
    """Write ``text`` on the figure (404 for an unknown indicator or org unit, 403 for an
    org unit the actor may not steer, 409 ``too_many_comments`` past the bound)."""
    indicator_of(indicator)
    unit = await org_unit_of(session, org_unit)
    await ensure_may_steer(session, actor, unit)
    held = await session.scalar(
        select(func.count()).where(
            FigureComment.org_unit == org_unit,
            FigureComment.indicator == indicator,
            FigureComment.month == month,
        )
    )
    if (held or 0) >= MAX_PER_FIGURE:
        raise TooManyComments(
            f"{indicator} of {org_unit} in {month:%Y-%m} holds {MAX_PER_FIGURE} comments"
            " already: remove one first.",
            indicator=indicator,
            org_unit=org_unit,
        )
    comment = FigureComment(
        id=uuid.uuid4(),
        indicator=indicator,
        org_unit=org_unit,
        finess=unit.finess,
        month=month,
        text=text,
        author=actor.sub,
        author_name=actor.name or actor.sub,
        written_at=datetime.now(UTC),
    )
    session.add(comment)
    await session.flush()
    await record_audit(
        session,
        actor,
        "comment.added",
        f"comment/{comment.id}",
        establishment=unit.finess,
        detail={"indicator": indicator, "org_unit": org_unit, "period": f"{month:%Y-%m}"},
    )
    return comment


async def remove_comment(
    session: AsyncSession, actor: Principal, comment_id: uuid.UUID
) -> FigureComment:
    """Remove a comment: its author's or an administrator's (403 for anyone else; 404
    ``comment_not_found`` for one the actor may not read or that does not exist)."""
    comment = await session.get(FigureComment, comment_id, with_for_update=True)
    if comment is None or not may_read(actor, comment.finess):
        raise CommentNotFound(f"No comment {comment_id}.", comment=str(comment_id))
    if comment.author != actor.sub and ADMIN not in actor.roles:
        raise Forbidden(
            f"Only its author ({comment.author}) removes a comment.", comment=str(comment_id)
        )
    await session.delete(comment)
    await record_audit(
        session,
        actor,
        "comment.removed",
        f"comment/{comment.id}",
        establishment=comment.finess,
        detail={
            "indicator": comment.indicator,
            "org_unit": comment.org_unit,
            "period": f"{comment.month:%Y-%m}",
            "author": comment.author,
            "text": comment.text,
        },
    )
    return comment


async def comments_on(
    session: AsyncSession,
    org_units: Collection[str],
    indicators: Collection[str],
    months: Collection[date],
) -> dict[FigureKey, list[CommentRead]]:
    """The comments of these figures, oldest first, in one statement."""
    if not (org_units and indicators and months):
        return {}
    rows = await session.scalars(
        select(FigureComment)
        .where(
            FigureComment.org_unit.in_(org_units),
            FigureComment.indicator.in_(indicators),
            FigureComment.month.between(min(months), max(months)),
        )
        .order_by(FigureComment.written_at, FigureComment.id)
    )
    found: dict[FigureKey, list[CommentRead]] = defaultdict(list)
    for comment in rows:
        found[(comment.org_unit, comment.indicator, comment.month)].append(CommentRead.of(comment))
    return found

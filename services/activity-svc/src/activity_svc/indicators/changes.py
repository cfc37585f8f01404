"""``ght.activity.indicator.updated``: one event per indicator x org unit x month changed.

Called by ingestion in the merge's transaction with the unit-months the merge touched,
so an import of 10 000 records into one unit-month gives one event per indicator and
org unit, never one per record.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc import events
from activity_svc.catalogue import indicators_reading
from activity_svc.indicators.values import Scope, compute_figures, first_of_month
from activity_svc.steering.alerts import evaluate_alerts
from ght_shared.outbox import add_events

# The org units (as they were in the month) above the changed units: the levels people
# steer (department, pôle, site, establishment, territory).
_ANCESTORS = text(
    """
    SELECT DISTINCT m.ancestor, c.month, o.finess
    FROM unnest(CAST(:units AS text[]), CAST(:months AS date[])) AS c(unit, month)
    JOIN org_unit_membership m ON m.unit = c.unit
        AND m.valid_from <= c.month AND (m.valid_to IS NULL OR c.month < m.valid_to)
    JOIN org_unit o ON o.code = m.ancestor
    WHERE o.kind IN ('department', 'pole', 'site', 'establishment', 'territory')
    """
)


async def publish_indicator_changes(
    session: AsyncSession,
    changed: set[tuple[str, date]],
    measures: set[str],
    import_id: uuid.UUID | None,
) -> int:
    """Add one ``indicator.updated`` event per indicator x org unit x month that changed,
    then evaluate the alert rules on the same figures; return the number of events.

    ``changed`` holds the (unit code, month) whose measures ``measures`` changed. The
    events cover:

    - the indicators reading one of ``measures`` (``bed_days`` for a capacity change);
    - the org units above each changed unit *as it was that month* (the scope the
      portal shows by default), of kinds department, pôle, site, establishment and
      territory. The units (UF) themselves get no event: there are hundreds per
      establishment, one import would publish thousands of events nobody watches, and a
      unit's figures stay readable through ``GET /indicators/{code}/values``;
    - the changed months only: a change in March also moves the year to date of the
      months after it and next year's comparisons, but their own monthly value did not
      change, so they get no event (a reader wanting them asks the API).

    The figures are computed in one batch (one statement for every org unit and month),
    in the caller's transaction, so the events carry the merged values.
    """
    indicators = indicators_reading(measures)
    if not changed or not indicators:
        return 0
    units = [unit for unit, _ in changed]
    months = [first_of_month(month) for _, month in changed]
    rows = (await session.execute(_ANCESTORS, {"units": units, "months": months})).all()
    if not rows:
        return 0
    # Month order per org unit: the events of one aggregate get their sequence in order.
    wanted = sorted((ancestor, month) for ancestor, month, _ in rows)
    finess_of = {ancestor: finess for ancestor, _, finess in rows}
    figures = await compute_figures(session, indicators, wanted, finess_of, Scope.AS_WAS)
    extra = {"import_id": str(import_id)} if import_id is not None else {}
    await add_events(
        session,
        [events.indicator_updated({**f.event_data(), **extra}, f.finess) for f in figures],
    )
    await evaluate_alerts(session, figures)
    return len(figures)

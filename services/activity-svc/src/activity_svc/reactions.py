"""What follows a change across concepts: the figures it moved are published and the
alert rules evaluated on them, in the change's transaction (outbox).

Every change that moves a figure publishes one ``ght.activity.indicator.updated`` per
indicator x org unit x month and checks the same figures against the alert rules:

- an import (:func:`figures_changed`), with the unit-months its merge touched and the
  measures that changed, so 10 000 records into one unit-month give one event per
  indicator and org unit, never one per record;
- a unit's installed beds (:func:`capacity_changed`), with the unit's months from the
  change on and ``bed_days``;
- a target (:func:`targets_changed`), whose month, year to date and year are part of
  the event's ``data``;
- a move in the tree (:func:`tree_changing`, then :func:`tree_changed`), with every
  indicator of the org units above the moved units before and after, from the move on;
- the day an establishment's data is complete up to moving (:func:`cells_completed`),
  with the months that became complete.

A new alert rule changes no figure: :func:`rule_created` only checks it against the
figures already there. The use cases call these; nothing here checks rights.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import (
    BED_DAYS,
    INDICATORS,
    INDICATORS_BY_CODE,
    Indicator,
    indicators_reading,
)
from activity_svc.events import SOURCE
from activity_svc.indicators.values import Scope, compute_figures
from activity_svc.lookups import MAX_DEPTH
from activity_svc.models import AlertRule
from activity_svc.months import add_months, first_of_month
from activity_svc.referential.tree import today
from activity_svc.steering.evaluation import evaluate_alerts
from ght_shared.outbox import add_events

RULE_MONTHS = 12
"""A new rule is checked on the figures of the last 12 months (the current one included)."""

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

# The months from :first to :last in which each of :org_units, and the org units down to
# :depth levels below them in today's tree (the tree alert rules watch), has figures:
# a unit_month row of a unit below it as it was that month. Steered levels only, as above.
_MONTHS_WITH_FIGURES = text(
    """
    WITH RECURSIVE watched (code, depth) AS (
        SELECT code, 0 FROM unnest(CAST(:org_units AS text[])) AS code
        UNION ALL
        SELECT version.code, watched.depth + 1
        FROM watched
        JOIN org_unit_version AS version
            ON version.parent = watched.code AND version.valid_to IS NULL
        WHERE watched.depth < :depth
    )
    SELECT DISTINCT m.ancestor, u.month, o.finess
    FROM watched
    JOIN org_unit o ON o.code = watched.code
    JOIN org_unit_membership m ON m.ancestor = o.code
    JOIN unit_month u ON u.unit = m.unit
        AND m.valid_from <= u.month AND (m.valid_to IS NULL OR u.month < m.valid_to)
    WHERE o.kind IN ('department', 'pole', 'site', 'establishment', 'territory')
      AND u.month BETWEEN CAST(:first AS date) AND CAST(:last AS date)
    """
)


CAPACITY_MONTHS = 36
"""The most months one capacity change republishes (the latest): three years, as the
longest backlog an import would republish."""

# The months whose bed days the unit's beds installed from :effective_from make up: a
# month counts the beds installed on its first day, so from the first month starting on
# or after that day until the unit's next capacity change. Only the months in which
# the unit has figures (a unit_month row), the latest first.
_MONTHS_OF_CAPACITY = text(
    """
    SELECT u.month FROM unit_month u
    WHERE u.unit = :unit AND u.month >= :effective_from
      AND NOT EXISTS (
          SELECT FROM unit_capacity c
          WHERE c.unit = u.unit AND c.effective_from > :effective_from
            AND c.effective_from <= u.month
      )
    ORDER BY u.month DESC
    LIMIT :limit
    """
)


COMPLETED_MONTHS = 36
"""The most months a move of an establishment's complete-up-to day republishes (the
latest), as for a capacity change."""

# The unit-months of an establishment from one month to another.
_CELLS_OF_ESTABLISHMENT = text(
    """
    SELECT u.unit, u.month FROM unit_month u JOIN org_unit o ON o.code = u.unit
    WHERE o.finess = :finess AND u.month BETWEEN :first AND :last
    """
)


async def cells_completed(
    session: AsyncSession, moved: Mapping[str, tuple[date | None, date | None]]
) -> set[tuple[str, date]]:
    """The unit-months whose figures an establishment's complete-up-to day moving from
    one day to another changed (``moved``: the days before and after, None unknown): the
    months from the earlier day's to the later one's, which became complete or partial,
    at most :data:`COMPLETED_MONTHS` per establishment."""
    cells: set[tuple[str, date]] = set()
    for finess, days in sorted(moved.items()):
        known = [day for day in days if day is not None]
        if not known:
            continue
        # Unknown is taken as complete: from an unknown day, every month from the new
        # one's on changed.
        last = first_of_month(max(known) if None not in days else today())
        first = max(first_of_month(min(known)), add_months(last, 1 - COMPLETED_MONTHS))
        rows = await session.execute(
            _CELLS_OF_ESTABLISHMENT, {"finess": finess, "first": first, "last": last}
        )
        cells.update((unit, month) for unit, month in rows)
    return cells


Placed = tuple[str, date, str | None]
"""An org unit, a month and the org unit's establishment (FINESS)."""


# The unit-months below :code (then or now) from :first on.
_CELLS_BELOW = text(
    """
    SELECT DISTINCT u.unit, u.month
    FROM org_unit_membership m JOIN unit_month u ON u.unit = m.unit
    WHERE m.ancestor = :code AND u.month >= :first
    """
)


@dataclass(frozen=True)
class TreeMove:
    """What a change of the tree may move: the unit-months below the org unit from the
    change's month on, and the org units above them before the change."""

    cells: frozenset[tuple[str, date]]
    before: frozenset[Placed]


async def tree_changing(session: AsyncSession, code: str, valid_from: date) -> TreeMove:
    """Before a new version of ``code`` from ``valid_from``: its unit-months from then on
    (the latest :data:`COMPLETED_MONTHS` months at most) and their org units above."""
    first = max(
        first_of_month(valid_from), add_months(first_of_month(today()), 1 - COMPLETED_MONTHS)
    )
    rows = await session.execute(_CELLS_BELOW, {"code": code, "first": first})
    cells = frozenset((unit, month) for unit, month in rows)
    return TreeMove(cells, frozenset(await _placed(session, cells)))


async def tree_changed(session: AsyncSession, move: TreeMove) -> int:
    """After the change: every indicator of the org units above those unit-months, before
    or after it, is republished where the org units above changed (a unit moved from one
    pôle to another changes both), and evaluated; return the number of events."""
    after = frozenset(await _placed(session, move.cells))
    if after == move.before:
        return 0  # a new name, or a move that changes no month with figures
    return await _publish(session, INDICATORS, sorted(move.before | after), None)


async def _placed(session: AsyncSession, cells: Collection[tuple[str, date]]) -> list[Placed]:
    if not cells:
        return []
    units = [unit for unit, _ in cells]
    months = [month for _, month in cells]
    rows = (await session.execute(_ANCESTORS, {"units": units, "months": months})).all()
    return [(ancestor, month, finess) for ancestor, month, finess in rows]


async def figures_changed(
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
    placed = await _placed(session, {(unit, first_of_month(month)) for unit, month in changed})
    return await _publish(session, indicators, placed, import_id)


async def capacity_changed(session: AsyncSession, unit: str, effective_from: date) -> int:
    """Publish the occupancy figures that ``unit``'s beds installed from ``effective_from``
    changed, and evaluate the alert rules on them; return the number of events.

    The org units above the unit as it was each month get ``indicator.updated`` for the
    indicators reading ``bed_days``, for the months from the change on in which the unit
    has figures (at most :data:`CAPACITY_MONTHS`, the latest). A month in which the unit
    recorded nothing gets none: its figures are read through the API, and the next
    import touching that month publishes them (a change dated in the future: its
    months' first records).
    """
    months = await session.scalars(
        _MONTHS_OF_CAPACITY,
        {"unit": unit, "effective_from": effective_from, "limit": CAPACITY_MONTHS},
    )
    return await figures_changed(session, {(unit, month) for month in months}, {BED_DAYS}, None)


async def targets_changed(session: AsyncSession, targets: Iterable[tuple[str, str, int]]) -> int:
    """Publish the figures of the changed (indicator, org unit, year) targets and
    re-evaluate the alert rules on them; return the number of events.

    The event's ``data`` carries the month's and the year's target, so a new, changed or
    removed target changes the event of each month of its year that has figures, for
    its org unit only (the org units below have targets of their own). A target of a
    unit (UF) publishes nothing, as units get no event.
    """
    years_by_indicator: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for indicator, org_unit, year in targets:
        years_by_indicator[indicator].add((org_unit, year))
    count = 0
    for code, org_unit_years in sorted(years_by_indicator.items()):
        years = {year for _, year in org_unit_years}
        placed = await _months_with_figures(
            session,
            {org_unit for org_unit, _ in org_unit_years},
            date(min(years), 1, 1),
            date(max(years), 12, 1),
        )
        wanted = [p for p in placed if (p[0], p[1].year) in org_unit_years]
        count += await _publish(session, [INDICATORS_BY_CODE[code]], wanted, None)
    return count


async def rule_created(session: AsyncSession, rule: AlertRule) -> None:
    """Check a rule just created against the figures already there, as an import would.

    Its org unit and every org unit below it (today's tree, steered levels), over the
    last :data:`RULE_MONTHS` months that have figures: the rule raises at once what the
    next import would otherwise have been the first to raise. Only this rule is
    evaluated: the others have already seen these figures.
    """
    this_month = first_of_month(today())
    placed = await _months_with_figures(
        session,
        {rule.org_unit},
        add_months(this_month, 1 - RULE_MONTHS),
        this_month,
        depth=MAX_DEPTH,
    )
    figures = await compute_figures(
        session,
        [INDICATORS_BY_CODE[rule.indicator]],
        sorted((code, month) for code, month, _ in placed),
        {code: finess for code, _, finess in placed},
        Scope.AS_WAS,
    )
    await evaluate_alerts(session, figures, rules={rule.id})


async def _publish(
    session: AsyncSession,
    indicators: Sequence[Indicator],
    placed: Sequence[Placed],
    import_id: uuid.UUID | None,
) -> int:
    """Compute the figures of ``indicators`` for the ``placed`` org unit-months, add their
    events and evaluate the alert rules on them; return the number of events."""
    if not placed or not indicators:
        return 0
    # Month order per org unit: the events of one aggregate get their sequence in order.
    wanted = sorted((code, month) for code, month, _ in placed)
    finess_of = {code: finess for code, _, finess in placed}
    figures = await compute_figures(session, indicators, wanted, finess_of, Scope.AS_WAS)
    await add_events(
        session,
        [f.payload(import_id).event(source=SOURCE, establishment=f.finess) for f in figures],
    )
    await evaluate_alerts(session, figures)
    return len(figures)


async def _months_with_figures(
    session: AsyncSession, org_units: Collection[str], first: date, last: date, depth: int = 0
) -> list[Placed]:
    """The (org unit, month, FINESS) with figures from ``first`` to ``last`` for
    ``org_units`` of a steered level, and ``depth`` levels below them in today's tree."""
    rows = await session.execute(
        _MONTHS_WITH_FIGURES,
        {
            "org_units": sorted(org_units),
            "depth": depth,
            "first": first_of_month(first),
            "last": first_of_month(last),
        },
    )
    return [(code, month, finess) for code, month, finess in rows]

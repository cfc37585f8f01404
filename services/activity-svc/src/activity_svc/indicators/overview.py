"""The activity part of the gateway's territorial overview (``docs/overview.md``).

Per establishment, a few headline volumes at the latest month with data: their year to
date against the same period last year. The same for the territory, territorial
callers only.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import INDICATORS_BY_CODE, Indicator
from activity_svc.indicators.schemas import ActivityHeadline, ActivityOverview, HeadlineFigure
from activity_svc.indicators.values import Scope, compute_figures

HEADLINE: tuple[Indicator, ...] = tuple(
    INDICATORS_BY_CODE[code]
    for code in (
        "stays_full",
        "stays_ambulatory",
        "outpatient_acts",
        "consultations",
        "imaging_exams",
        "revenue",
        "expenses",
    )
)

# An establishment's units never leave it (a unit cannot change establishment), so the
# latest month of its units is the establishment's, whatever the tree's history; one
# index probe per unit (the primary key of unit_month read backwards).
_LATEST_MONTHS = text(
    """
    SELECT o.finess, max(last.month)
    FROM org_unit o
    CROSS JOIN LATERAL (SELECT max(u.month) AS month FROM unit_month u WHERE u.unit = o.code)
        AS last
    WHERE o.kind = 'unit' AND o.finess = ANY(CAST(:establishments AS text[]))
    GROUP BY o.finess
    """
)


async def activity_overview(
    session: AsyncSession, establishments: Collection[str] | None, with_territory: bool
) -> ActivityOverview:
    """The headline of ``establishments`` (every establishment when None), and the
    territory's when ``with_territory``; an establishment without data has an empty one."""
    query = "SELECT code, kind FROM org_unit WHERE kind IN ('establishment', 'territory')"
    known = (await session.execute(text(query))).all()
    chosen = sorted(
        code
        for code, kind in known
        if kind == "establishment" and (establishments is None or code in establishments)
    )
    territory = next((code for code, kind in known if kind == "territory"), None)
    latest: dict[str, date] = {}
    if chosen or (with_territory and territory):
        scope = chosen if not with_territory else [c for c, k in known if k == "establishment"]
        rows = await session.execute(_LATEST_MONTHS, {"establishments": scope})
        latest = {finess: month for finess, month in rows if month is not None}
    wanted = [(code, latest[code]) for code in chosen if code in latest]
    if with_territory and territory is not None and latest:
        wanted.append((territory, max(latest.values())))
    figures = await compute_figures(
        session, HEADLINE, wanted, {code: code for code in chosen}, Scope.AS_WAS
    )
    headlines: dict[str, list[HeadlineFigure]] = {code: [] for code in chosen}
    if with_territory and territory is not None:
        headlines.setdefault(territory, [])
    for f in figures:
        indicator = INDICATORS_BY_CODE[f.indicator]
        headlines[f.org_unit].append(
            HeadlineFigure(
                indicator=f.indicator,
                label_fr=indicator.label_fr,
                unit=indicator.unit,
                period=f.period.strftime("%Y-%m"),
                year_to_date=f.year_to_date,
                same_period_last_year=f.year_to_date_last_year,
                change=f.year_to_date_variation_pct,
            )
        )
    overview = ActivityOverview(
        establishments={code: ActivityHeadline(headline=headlines[code]) for code in chosen}
    )
    if with_territory:
        overview.territory = ActivityHeadline(
            headline=headlines.get(territory, []) if territory else []
        )
    return overview

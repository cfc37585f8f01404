"""The activity part of the gateway's territorial overview (``docs/overview.md``).

Per establishment, a few headline volumes at the last month whose data is complete:
their year to date against the same period last year. The same for the territory
(the earliest of its establishments' complete months), territorial callers only.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import INDICATORS_BY_CODE, Indicator
from activity_svc.completeness import (
    completeness_of,
    last_complete_month,
    territory_complete_up_to,
)
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
    completeness = await completeness_of(session)
    complete = {code: completeness[code].complete_up_to for code in chosen if code in completeness}
    # An establishment without data has no month to show.
    wanted = [(code, last_complete_month(day)) for code, day in complete.items() if day]
    territory_day = territory_complete_up_to(completeness)
    if with_territory and territory is not None and territory_day is not None:
        wanted.append((territory, last_complete_month(territory_day)))
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
                change=f.year_to_date_variation,  # volumes: in %
            )
        )
    overview = ActivityOverview(
        establishments={
            code: ActivityHeadline(complete_up_to=complete.get(code), headline=headlines[code])
            for code in chosen
        }
    )
    if with_territory:
        overview.territory = ActivityHeadline(
            complete_up_to=territory_day,
            headline=headlines.get(territory, []) if territory else [],
        )
    return overview

"""The activity part of the gateway's territorial overview (``docs/overview.md``).

Per establishment, a few headline volumes at the last month whose data is complete:
their year to date against the same period last year. The same for the territory
(the earliest of its establishments' complete months), territorial callers only, with
the commission's standing comparisons: the same indicators across the establishments in
their maternities, imaging, emergencies (``COMPARISONS``), read like the analytics.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import COMPARISONS, INDICATORS_BY_CODE, Comparison, Indicator
from activity_svc.completeness import (
    completeness_of,
    last_complete_month,
    territory_complete_up_to,
)
from activity_svc.indicators.analytics import (
    AnalyticsQuery,
    Dimension,
    IndicatorCell,
    cells_of,
    summed_rows,
    total_of,
)
from activity_svc.indicators.schemas import (
    ActivityHeadline,
    ActivityOverview,
    ComparedEstablishment,
    ComparedFigure,
    ComparedIndicator,
    HeadlineFigure,
    SpecialtyComparison,
    TerritoryHeadline,
)
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
        overview.territory = TerritoryHeadline(
            complete_up_to=territory_day,
            headline=headlines.get(territory, []) if territory else [],
        )
        if territory is not None and territory_day is not None:
            month = last_complete_month(territory_day)
            overview.territory.comparisons = [
                await specialty_comparison(session, c, territory, month) for c in COMPARISONS
            ]
    return overview


_ESTABLISHMENTS = text(
    """
    SELECT v.code, v.name FROM org_unit_version v
    WHERE v.parent = :territory AND v.valid_from <= :day
        AND (v.valid_to IS NULL OR v.valid_to > :day)
    ORDER BY v.name, v.code
    """
)


async def specialty_comparison(
    session: AsyncSession, comparison: Comparison, territory: str, month: date
) -> SpecialtyComparison:
    """The comparison's indicators in each establishment's units of its specialties, year
    to date at ``month``, against last year's: one statement on the cube."""
    first = date(month.year, 1, 1)
    query = AnalyticsQuery(
        org_unit=territory,
        indicators=comparison.indicators,
        dimensions=[Dimension.ORG_UNIT],
        first=first,
        last=month,
        filters={Dimension.SPECIALTY: comparison.specialties},
        limit=1000,
    )
    rows, _ = await summed_rows(session, query)
    by_establishment = {str(row.keys[0]): row for row in rows}
    total = total_of(rows)
    territory_cells = cells_of(comparison.indicators, total.this, total.last)
    establishments = (
        await session.execute(_ESTABLISHMENTS, {"territory": territory, "day": month})
    ).all()
    cells = {
        code: cells_of(comparison.indicators, row.this, row.last)
        for code, row in by_establishment.items()
    }
    empty = IndicatorCell(None, None, None)
    return SpecialtyComparison(
        key=comparison.key,
        label_fr=comparison.label_fr,
        specialties=list(comparison.specialties),
        first_month=f"{first:%Y-%m}",
        last_month=f"{month:%Y-%m}",
        indicators=[
            ComparedIndicator(
                indicator=indicator.code,
                label_fr=indicator.label_fr,
                unit=indicator.unit,
                variation_unit=indicator.variation_unit,
                territory=ComparedFigure(**_figure(territory_cells[indicator.code])),
                establishments=[
                    ComparedEstablishment(
                        finess=code,
                        name=name,
                        **_figure(cells.get(code, {}).get(indicator.code, empty)),
                    )
                    for code, name in establishments
                ],
            )
            for indicator in comparison.indicators
        ],
    )


def _figure(cell: IndicatorCell) -> dict[str, float | None]:
    return {"value": cell.value, "last_year": cell.last_year, "variation": cell.variation}

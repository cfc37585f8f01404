"""The figures of one indicator for one org unit and one month, as every reader gets them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from activity_svc.catalogue import VariationUnit
from activity_svc.months import last_day_of
from ght_shared.payloads.activity import IndicatorUpdated


def variation_pct(value: float | None, reference: float | None) -> float | None:
    """``(value - reference) / |reference| x 100``; None without a non-zero reference."""
    if value is None or reference is None or reference == 0:
        return None
    return (value - reference) / abs(reference) * 100.0


@dataclass(frozen=True)
class Figures:
    """An indicator's value for a month with its comparisons (None where not computable).

    Variations are in % of the reference (``(value - reference) / |reference| x 100``),
    or for a rate in points (``value - reference``), as ``variation_unit`` says; the
    projection applies last year's seasonal profile to this year's year to date.
    """

    indicator: str
    org_unit: str
    finess: str | None
    period: date
    """The month (its first day)."""
    value: float | None
    same_period_last_year: float | None
    variation: float | None
    year_to_date: float | None
    year_to_date_last_year: float | None
    year_to_date_variation: float | None
    projection: float | None
    variation_unit: VariationUnit = "%"
    """``%`` of the reference, or ``points`` for a rate."""
    target: float | None = None
    """The target of the month (the year's target spread by its monthly profile)."""
    target_year_to_date: float | None = None
    target_year: float | None = None
    complete_up_to: date | None = None
    """The day the org unit's data is complete up to (None: unknown, taken as complete)."""
    partial: bool = False
    """The month is not complete: it counts its days up to ``complete_up_to`` (the year to
    date too), against the same days last year; no projection, no alert."""

    @property
    def complete_days(self) -> int:
        """The days of the month its figures count (all of them in a complete month)."""
        days = last_day_of(self.period).day
        if not self.partial or self.complete_up_to is None:
            return days
        return max(0, min(days, (self.complete_up_to - self.period).days + 1))

    def payload(self, import_id: uuid.UUID | None = None) -> IndicatorUpdated:
        """The ``ght.activity.indicator.updated`` of these figures (``import_id``: the
        import that changed them, when one did)."""
        caused_by = {"import_id": import_id} if import_id is not None else {}
        return IndicatorUpdated(
            indicator=self.indicator,
            org_unit=self.org_unit,
            period=self.period.strftime("%Y-%m"),
            value=self.value,
            same_period_last_year=self.same_period_last_year,
            variation=self.variation,
            variation_pct=variation_pct(self.value, self.same_period_last_year),
            year_to_date=self.year_to_date,
            year_to_date_last_year=self.year_to_date_last_year,
            year_to_date_variation=self.year_to_date_variation,
            year_to_date_variation_pct=variation_pct(
                self.year_to_date, self.year_to_date_last_year
            ),
            variation_unit=self.variation_unit,
            projection=self.projection,
            target=self.target,
            target_year=self.target_year,
            partial=self.partial,
            complete_up_to=self.complete_up_to,
            **caused_by,
        )

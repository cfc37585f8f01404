"""Months as their first day: the period of every figure."""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache


def first_of_month(day: date) -> date:
    return day.replace(day=1)


def add_months(month: date, n: int) -> date:
    """The first day of the month ``n`` months after ``month`` (before when negative)."""
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, last: date) -> tuple[date, ...]:
    """Every month from ``first`` to ``last`` included (first days)."""
    return _months_between(first_of_month(first), first_of_month(last))


@cache
def _months_between(first: date, last: date) -> tuple[date, ...]:
    months = []
    month = first
    while month <= last:
        months.append(month)
        month = add_months(month, 1)
    return tuple(months)


def last_day_of(month: date) -> date:
    """The last day of ``month``'s month."""
    return add_months(first_of_month(month), 1) - timedelta(days=1)

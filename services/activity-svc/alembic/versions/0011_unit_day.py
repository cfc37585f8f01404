"""The measures by unit and day, for the partial months (ADR 0024).

``unit_day`` keeps, per unit and day a record occurred on (a stay's discharge day), the
measures ``activity_cube`` keeps; the merges and withdrawals add to it as to
``unit_month``. A partial month's figures (the days up to the one its data is complete up
to, and the same days a year before) are summed from here instead of from the records.
Filled here from the records already stored.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The catalogue's measures at this revision but the spread one (name, record kind,
# condition, value over a record ``d``), as the merges sum them, frozen here: a later
# change of the measures has its own migration.
_D = "(d.coded_on - d.occurred_on)"
_DELAYS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7))
_DELAYS += ((8, 10), (11, 14), (15, 21), (22, 30), (31, 45), (46, 60), (61, 90))
MEASURES: tuple[tuple[str, str, str, str], ...] = (
    ("stays_full", "stay", "d.mode = 'full'", "1"),
    ("stays_ambulatory", "stay", "d.mode = 'ambulatory'", "1"),
    ("stay_days", "stay", "d.mode = 'full'", "d.stay_days"),
    ("stays_severity_34", "stay", "d.mode = 'full' AND d.severity >= 3", "1"),
    ("surgical_stays", "stay", "substr(d.drg, 3, 1) = 'C'", "1"),
    (
        "surgical_stays_ambulatory",
        "stay",
        "substr(d.drg, 3, 1) = 'C' AND d.mode = 'ambulatory'",
        "1",
    ),
    ("stay_valuation", "stay", "TRUE", "coalesce(d.amount, 0)"),
    ("outpatient_acts", "outpatient_act", "TRUE", "1"),
    ("outpatient_acts_coded", "outpatient_act", "d.coded", "1"),
    *(
        (
            f"coding_delay_b{i:02d}",
            "outpatient_act",
            f"d.coded AND {_D} >= {a} AND {_D} <= {b}",
            "1",
        )
        for i, (a, b) in enumerate(_DELAYS)
    ),
    ("coding_delay_b15", "outpatient_act", f"d.coded AND {_D} >= 91", "1"),
    ("imaging_exams", "imaging_exam", "TRUE", "1"),
    ("consultations", "consultation", "TRUE", "1"),
    ("revenue", "revenue", "TRUE", "d.amount"),
    *(
        (f"expenses_title_{t}", "expense", f"d.budget_title = {t}", "d.amount")
        for t in (1, 2, 3, 4)
    ),
)
KEYS = ("unit", "day")

BACKFILL = f"""
INSERT INTO unit_day (unit, day, {", ".join(name for name, *_ in MEASURES)})
SELECT d.unit, d.occurred_on, {
    ", ".join(
        f"coalesce(sum({value}) FILTER (WHERE d.kind = '{kind}' AND ({condition})), 0)"
        for _, kind, condition, value in MEASURES
    )
}
FROM activity_record d GROUP BY 1, 2
"""


def upgrade() -> None:
    op.create_table(
        "unit_day",
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *(
            sa.Column(name, sa.Double(), server_default="0", nullable=False)
            for name, *_ in MEASURES
        ),
        sa.PrimaryKeyConstraint(*KEYS),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("unit_day")

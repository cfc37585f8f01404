"""Bed occupancy by the days stays were present in each month (ADR 0020).

``unit_month.occupied_days`` counts each full stay's nights in every month it spans,
where ``stay_days`` counts them all in the discharge month; it is filled here from the
records already stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A stay's nights: from its admission day (discharge day less its days) to the day before
# its discharge, each counted in its month.
BACKFILL = """
INSERT INTO unit_month AS u (unit, month, updated_at, occupied_days)
SELECT r.unit, CAST(p.month AS date), now(),
    sum(least(r.occurred_on, CAST(p.month + interval '1 month' AS date))
        - greatest(r.occurred_on - r.stay_days, CAST(p.month AS date)))
FROM activity_record r CROSS JOIN LATERAL generate_series(
    date_trunc('month', CAST(r.occurred_on - r.stay_days AS timestamp)),
    date_trunc('month', CAST(r.occurred_on - 1 AS timestamp)),
    interval '1 month') AS p(month)
WHERE r.kind = 'stay' AND r.mode = 'full' AND r.stay_days > 0
GROUP BY r.unit, p.month
ON CONFLICT (unit, month) DO UPDATE SET occupied_days = EXCLUDED.occupied_days
"""


def upgrade() -> None:
    op.add_column(
        "unit_month",
        sa.Column("occupied_days", sa.Double(), server_default="0", nullable=False),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_column("unit_month", "occupied_days")

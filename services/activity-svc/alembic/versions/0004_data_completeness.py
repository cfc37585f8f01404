"""How far each establishment's data is complete (ADR 0018).

``data_completeness`` holds, per establishment, the day its system declared its data
complete up to (with an import), and the last day its records cover that had ended
when they were received. The second is filled here from the records already stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_completeness",
        sa.Column("finess", sa.Text(), sa.ForeignKey("org_unit.code"), primary_key=True),
        sa.Column("declared_up_to", sa.Date(), nullable=True),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("declared_by", sa.Text(), nullable=True),
        sa.Column("last_day_received", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The records' day of receipt in the establishments' time zone (settings' default).
    op.execute(
        """
        INSERT INTO data_completeness (finess, last_day_received, updated_at)
        SELECT r.finess, max(r.occurred_on), now()
        FROM activity_record r
        WHERE r.occurred_on < (r.received_at AT TIME ZONE 'Europe/Paris')::date
        GROUP BY r.finess
        """
    )


def downgrade() -> None:
    op.drop_table("data_completeness")

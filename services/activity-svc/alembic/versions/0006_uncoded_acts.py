"""The coding worklist's index: outpatient acts not coded yet, by unit and day.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "activity_record_uncoded",
        "activity_record",
        ["unit", "occurred_on"],
        postgresql_where=sa.text("kind = 'outpatient_act' AND NOT coded"),
    )


def downgrade() -> None:
    op.drop_index("activity_record_uncoded", table_name="activity_record")

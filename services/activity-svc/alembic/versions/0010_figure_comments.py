"""Comments on figures: what a person wrote of an indicator of an org unit in a month.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "figure_comment",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("org_unit", sa.Text(), sa.ForeignKey("org_unit.code"), nullable=False),
        sa.Column("finess", sa.Text(), nullable=True),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("author_name", sa.Text(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "figure_comment_figure",
        "figure_comment",
        ["org_unit", "indicator", "month", "written_at"],
    )


def downgrade() -> None:
    op.drop_table("figure_comment")

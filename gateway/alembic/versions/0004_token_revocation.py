"""Revoked access tokens (by subject, login session or token id).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE token_revocation (
            key         text PRIMARY KEY,
            kind        text NOT NULL CHECK (kind IN ('sub', 'sid', 'jti')),
            revoked_at  timestamptz NOT NULL,
            expires_at  timestamptz NOT NULL,
            reason      text NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX token_revocation_expires_at ON token_revocation (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE token_revocation")

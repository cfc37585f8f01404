"""Identity (users, machine clients, signing keys, refresh tokens, login attempts) and access log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE user_account (
            id              uuid PRIMARY KEY,
            username        text NOT NULL UNIQUE,
            display_name    text NOT NULL,
            password_hash   text NOT NULL,
            roles           text[] NOT NULL,
            establishments  text[] NOT NULL,
            pole            text,
            active          boolean NOT NULL DEFAULT true,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE machine_client (
            id              uuid PRIMARY KEY,
            client_id       text NOT NULL UNIQUE,
            name            text NOT NULL,
            secret_hash     text NOT NULL,
            roles           text[] NOT NULL,
            establishments  text[] NOT NULL,
            active          boolean NOT NULL DEFAULT true,
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE signing_key (
            kid                    text PRIMARY KEY,
            algorithm              text NOT NULL,
            public_jwk             jsonb NOT NULL,
            private_key_encrypted  bytea NOT NULL,
            created_at             timestamptz NOT NULL DEFAULT now(),
            retired_at             timestamptz,
            verify_until           timestamptz
        )
        """
    )
    op.execute(
        """
        CREATE TABLE refresh_token (
            id          uuid PRIMARY KEY,
            family_id   uuid NOT NULL,
            user_id     uuid NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
            token_hash  bytea NOT NULL UNIQUE,
            issued_at   timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,
            used_at     timestamptz,
            revoked_at  timestamptz
        )
        """
    )
    op.execute("CREATE INDEX refresh_token_family ON refresh_token (family_id)")
    op.execute("CREATE INDEX refresh_token_user ON refresh_token (user_id)")
    op.execute(
        """
        CREATE TABLE login_attempt (
            id        bigserial PRIMARY KEY,
            username  text NOT NULL,
            ip        text,
            at        timestamptz NOT NULL DEFAULT now(),
            success   boolean NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX login_attempt_username_at ON login_attempt (username, at)")
    op.execute("CREATE INDEX login_attempt_ip_at ON login_attempt (ip, at)")
    op.execute(
        """
        CREATE TABLE access_log (
            id           bigserial PRIMARY KEY,
            at           timestamptz NOT NULL,
            principal    text,
            method       text NOT NULL,
            route        text NOT NULL,
            path         text NOT NULL,
            status       integer NOT NULL,
            duration_ms  double precision NOT NULL,
            request_id   text,
            client_ip    text
        )
        """
    )
    op.execute("CREATE INDEX access_log_at ON access_log (at)")
    op.execute("CREATE INDEX access_log_principal_at ON access_log (principal, at)")
    # Append-only, like the audit log (the function comes from the infra migration).
    op.execute(
        """
        CREATE TRIGGER access_log_no_rewrite BEFORE UPDATE OR DELETE ON access_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
        """
    )


def downgrade() -> None:
    for table in (
        "access_log",
        "login_attempt",
        "refresh_token",
        "signing_key",
        "machine_client",
        "user_account",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")

"""Cutting access tokens off before they expire (ADR 0015).

A revocation names a subject (every token of an account or client issued until now),
a login session (``sid``: the tokens of one refresh-token family) or one token
(``jti``). It is a row of ``token_revocation``, kept until no token it concerns can
still be valid (revoked at + access-token lifetime + leeway). This gateway process
refuses the tokens at once; the other replicas and the services read the list
(``GET /auth/revocations``) every few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ght_gateway.models import TokenRevocation
from ght_shared.auth import RevocationList, revocation_key
from ght_shared.db import Database


class Revoked(StrEnum):
    """What a revocation names."""

    SUBJECT = "sub"
    SESSION = "sid"
    TOKEN = "jti"


@dataclass(frozen=True)
class Revoker:
    revocations: RevocationList
    """The list this process checks tokens against."""
    keep_for: timedelta
    """The longest a token may still be accepted: access-token lifetime plus leeway."""

    async def revoke(self, session: AsyncSession, kind: Revoked, value: str, reason: str) -> None:
        """Refuse from now on the tokens ``kind`` = ``value`` names (issued until now)."""
        now = datetime.now(UTC)
        key = revocation_key(kind, value)
        row = {
            "key": key,
            "kind": kind.value,
            "revoked_at": now,
            "expires_at": now + self.keep_for,
            "reason": reason,
        }
        upsert = insert(TokenRevocation).values(row)
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=[TokenRevocation.key],
                set_={
                    name: upsert.excluded[name] for name in ("revoked_at", "expires_at", "reason")
                },
            )
        )
        # Revocations are rare: the rows no token needs any more go at the same time.
        await session.execute(delete(TokenRevocation).where(TokenRevocation.expires_at < now))
        self.revocations.add(key, now.timestamp())


async def current_revocations(database: Database) -> dict[str, float]:
    """Every revocation still in force: key → when (seconds since the epoch)."""
    async with database.transaction() as session:
        rows = await session.execute(
            select(TokenRevocation.key, TokenRevocation.revoked_at).where(
                TokenRevocation.expires_at > datetime.now(UTC)
            )
        )
        return {key: revoked_at.timestamp() for key, revoked_at in rows}

"""Access tokens (short-lived JWTs) and rotating refresh tokens.

A refresh token is an opaque random string; only its SHA-256 is stored. Each
use spends it and issues the next one of the same family. Presenting a spent
token again means it was copied: the whole family is revoked, so both the
thief and the owner must log in again (OAuth 2.0 Security BCP, RFC 9700 §4.14),
and the access tokens of that login (its ``sid``) are revoked with it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ght_gateway.identity import Identity, user_identity
from ght_gateway.keys import KeyStore
from ght_gateway.models import RefreshToken, UserAccount
from ght_gateway.revocations import Revoked, Revoker
from ght_gateway.roles import scope_string
from ght_shared.errors import DomainError


class InvalidGrant(DomainError):
    """The OAuth2 ``invalid_grant`` error: a refresh token that cannot be used."""

    status = 400
    code = "invalid_grant"
    title = "Invalid grant"


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


class TokenIssuer:
    def __init__(
        self,
        keys: KeyStore,
        revoker: Revoker,
        *,
        issuer: str,
        audience: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
    ) -> None:
        self.keys = keys
        self.revoker = revoker
        self.issuer = issuer
        self.audience = audience
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s

    async def access_token(
        self, identity: Identity, scopes: frozenset[str], session_id: uuid.UUID | None = None
    ) -> str:
        """A signed access token; ``session_id`` is the refresh-token family of a login."""
        signer = await self.keys.signer()
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": identity.subject,
            # To the millisecond: a revocation refuses the tokens issued until it.
            "iat": round(now, 3),
            "nbf": int(now),
            "exp": int(now) + self.access_ttl_s,
            "jti": uuid.uuid4().hex,
            "name": identity.name,
            "roles": list(identity.roles),
            "establishments": list(identity.establishments),
            "scope": scope_string(scopes),
        }
        if identity.pole:
            claims["pole"] = identity.pole
        if session_id is not None:
            claims["sid"] = session_id.hex
        return jwt.encode(
            claims, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid}
        )

    async def issue(
        self,
        session: AsyncSession,
        identity: Identity,
        scopes: frozenset[str],
        *,
        with_refresh: bool,
        family_id: uuid.UUID | None = None,
    ) -> IssuedToken:
        refresh = None
        if with_refresh:
            assert isinstance(identity.user_id, uuid.UUID)
            family_id = family_id or uuid.uuid4()
            refresh = await self._new_refresh_token(session, identity.user_id, family_id)
        return IssuedToken(
            access_token=await self.access_token(
                identity, scopes, session_id=family_id if with_refresh else None
            ),
            expires_in=self.access_ttl_s,
            scope=scope_string(scopes),
            refresh_token=refresh,
        )

    async def refresh(self, session: AsyncSession, presented: str) -> IssuedToken:
        """Spend ``presented`` and issue the next tokens of its family."""
        now = datetime.now(UTC)
        row = await session.scalar(
            select(RefreshToken)
            .where(RefreshToken.token_hash == _digest(presented))
            .with_for_update()
        )
        if row is None:
            raise InvalidGrant("Unknown refresh token.")
        if row.used_at is not None or row.revoked_at is not None:
            if row.used_at is not None and row.revoked_at is None:
                # A spent token presented again: it was copied. Revoke the family.
                await self.revoke_login(session, row.family_id, "refresh token reused")
                raise ReusedRefreshToken(
                    "Refresh token reused: every session of this login is revoked."
                )
            raise InvalidGrant("Refresh token revoked.")
        if row.expires_at <= now:
            raise InvalidGrant("Refresh token expired.")
        row.used_at = now
        user = await session.get(UserAccount, row.user_id)
        if user is None or not user.active:
            await self.revoke_login(session, row.family_id, "account disabled")
            raise InvalidGrant("The account is disabled.")
        identity = user_identity(user)  # roles as they are now, not as they were at login
        return await self.issue(
            session, identity, identity.scopes, with_refresh=True, family_id=row.family_id
        )

    async def revoke_login(self, session: AsyncSession, family_id: uuid.UUID, reason: str) -> None:
        """End one login: its refresh tokens and the access tokens issued with them."""
        await revoke_family(session, family_id)
        await self.revoker.revoke(session, Revoked.SESSION, family_id.hex, reason)

    async def logout(self, session: AsyncSession, presented: str, username: str) -> bool:
        """End the login of ``username``'s refresh token ``presented``; False if unknown."""
        row = await session.scalar(
            select(RefreshToken)
            .join(UserAccount, UserAccount.id == RefreshToken.user_id)
            .where(RefreshToken.token_hash == _digest(presented), UserAccount.username == username)
        )
        if row is None:
            return False
        await self.revoke_login(session, row.family_id, "logout")
        return True

    async def _new_refresh_token(
        self, session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID
    ) -> str:
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        session.add(
            RefreshToken(
                family_id=family_id,
                user_id=user_id,
                token_hash=_digest(token),
                issued_at=now,
                expires_at=now + timedelta(seconds=self.refresh_ttl_s),
            )
        )
        await session.flush()
        return token


class ReusedRefreshToken(InvalidGrant):
    """Raised after the family is revoked: the caller must commit that revocation."""


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def revoke_user_logins(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Revoke every refresh token of a user (disabled, or a new password)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()

"""People and machine clients: their credentials, their rights, and the brute-force brake.

Passwords and client secrets are hashed with argon2id (RFC 9106 parameters of
argon2-cffi), computed in a worker thread so that a login never stalls the
event loop. After ``login_max_failures`` failed attempts on one account within
``login_window_s``, every further attempt must wait (exponential backoff from
the last failure) and is refused with 429 before the password is even checked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ght_gateway.models import LoginAttempt, MachineClient, UserAccount
from ght_gateway.roles import establishment_rule_violation
from ght_gateway.settings import Settings
from ght_shared.auth import Role, scopes_for
from ght_shared.errors import Conflict, DomainError, NotFound, TooManyRequests

_log = logging.getLogger(__name__)
_hasher = PasswordHasher()  # argon2id

# Hashed once, so that an unknown username costs as much as a wrong password.
_UNKNOWN_ACCOUNT_HASH = _hasher.hash(secrets.token_urlsafe(16))


class InvalidCredentials(DomainError):
    status = 401
    code = "invalid_credentials"
    title = "Invalid credentials"


class TooManyAttempts(TooManyRequests):
    code = "too_many_attempts"
    title = "Too many attempts"


class InvalidAccount(DomainError):
    status = 422
    code = "invalid_account"
    title = "Invalid account"


async def hash_secret(secret: str) -> str:
    return await asyncio.to_thread(_hasher.hash, secret)


async def verify_secret(hashed: str, secret: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(hashed, secret)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Identity:
    """Who a token is issued to, with what it may do."""

    subject: str
    name: str
    roles: tuple[str, ...]
    establishments: tuple[str, ...]
    pole: str | None
    kind: str  # "user" or "client"
    user_id: object | None = None  # the user's id, for refresh tokens

    @property
    def scopes(self) -> frozenset[str]:
        return scopes_for(self.roles)


def user_identity(user: UserAccount) -> Identity:
    return Identity(
        subject=user.username,
        name=user.display_name,
        roles=tuple(user.roles),
        establishments=tuple(user.establishments),
        pole=user.pole,
        kind="user",
        user_id=user.id,
    )


def client_identity(client: MachineClient) -> Identity:
    return Identity(
        subject=f"client:{client.client_id}",
        name=client.name,
        roles=tuple(client.roles),
        establishments=tuple(client.establishments),
        pole=None,
        kind="client",
    )


def check_rights(roles: Iterable[str], establishments: list[str], pole: str | None) -> None:
    """Refuse (422) roles that do not fit the establishments or the pôle."""
    violation = establishment_rule_violation(roles, establishments, pole)
    if violation is not None:
        raise InvalidAccount(violation, field="establishments")


# -- brute force ----------------------------------------------------------------------------


class LoginGuard:
    """Counts failed attempts per account and imposes an exponential wait past the limit."""

    def __init__(self, settings: Settings) -> None:
        self.max_failures = settings.login_max_failures
        self.window = timedelta(seconds=settings.login_window_s)
        self.backoff_base_s = settings.login_backoff_base_s

    async def check(self, session: AsyncSession, account: str, ip: str | None) -> None:
        """Raise :class:`TooManyAttempts` while ``account`` must wait before trying again."""
        now = datetime.now(UTC)
        failures, last_failure = (
            await session.execute(
                select(func.count(), func.max(LoginAttempt.at)).where(
                    LoginAttempt.username == account,
                    LoginAttempt.success.is_(False),
                    LoginAttempt.at > now - self.window,
                )
            )
        ).one()
        if failures < self.max_failures or last_failure is None:
            return
        excess = failures - self.max_failures
        wait_s = min(self.backoff_base_s * 2**excess, self.window.total_seconds())
        remaining = (last_failure + timedelta(seconds=wait_s) - now).total_seconds()
        if remaining > 0:
            _log.warning(
                "login throttled",
                extra={"account": account, "ip": ip, "failures": failures, "wait_s": remaining},
            )
            raise TooManyAttempts(
                f"Too many failed attempts for this account; retry in {math.ceil(remaining)} s.",
                retry_after_s=math.ceil(remaining),
            )

    async def record(
        self, session: AsyncSession, account: str, ip: str | None, success: bool
    ) -> None:
        session.add(LoginAttempt(username=account, ip=ip, success=success, at=datetime.now(UTC)))
        await session.flush()
        if not success:
            _log.warning("login failed", extra={"account": account, "ip": ip})


async def _check_secret(
    session: AsyncSession,
    guard: LoginGuard,
    account: str,
    ip: str | None,
    stored: UserAccount | MachineClient | None,
    secret: str,
) -> None:
    """Refuse a throttled account, an unknown or disabled one or a wrong secret; log the try."""
    await guard.check(session, account, ip)
    if stored is None:
        hashed = _UNKNOWN_ACCOUNT_HASH  # as costly as a known account: no timing oracle
    else:
        hashed = stored.password_hash if isinstance(stored, UserAccount) else stored.secret_hash
    valid = await verify_secret(hashed, secret)
    ok = stored is not None and valid and stored.active
    await guard.record(session, account, ip, success=ok)
    if not ok:
        raise InvalidCredentials("Unknown account or wrong password or secret.")


async def authenticate_user(
    session: AsyncSession, guard: LoginGuard, username: str, password: str, ip: str | None
) -> Identity:
    user = await session.scalar(select(UserAccount).where(UserAccount.username == username))
    await _check_secret(session, guard, username, ip, user, password)
    assert user is not None
    return user_identity(user)


async def authenticate_client(
    session: AsyncSession, guard: LoginGuard, client_id: str, secret: str, ip: str | None
) -> Identity:
    client = await session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    await _check_secret(session, guard, f"client:{client_id}", ip, client, secret)
    assert client is not None
    return client_identity(client)


# -- accounts -------------------------------------------------------------------------------


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    display_name: str,
    password: str,
    roles: list[str],
    establishments: list[str],
    pole: str | None = None,
) -> UserAccount:
    if Role.IT_SYSTEM in roles:
        raise InvalidAccount("it_system is the role of machine clients, not of people.")
    check_rights(roles, establishments, pole)
    if await session.scalar(select(UserAccount.id).where(UserAccount.username == username)):
        raise Conflict(f"User {username!r} exists already.", field="username")
    user = UserAccount(
        username=username,
        display_name=display_name,
        password_hash=await hash_secret(password),
        roles=list(roles),
        establishments=list(establishments),
        pole=pole,
        active=True,
    )
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, username: str) -> UserAccount:
    user = await session.scalar(select(UserAccount).where(UserAccount.username == username))
    if user is None:
        raise NotFound(f"No user {username!r}.")
    return user


async def create_client(
    session: AsyncSession, *, client_id: str, name: str, establishment: str, secret: str
) -> MachineClient:
    if await session.scalar(select(MachineClient.id).where(MachineClient.client_id == client_id)):
        raise Conflict(f"Client {client_id!r} exists already.", field="client_id")
    client = MachineClient(
        client_id=client_id,
        name=name,
        secret_hash=await hash_secret(secret),
        roles=[Role.IT_SYSTEM.value],
        establishments=[establishment],
        active=True,
    )
    session.add(client)
    await session.flush()
    return client


async def get_client(session: AsyncSession, client_id: str) -> MachineClient:
    client = await session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    if client is None:
        raise NotFound(f"No client {client_id!r}.")
    return client

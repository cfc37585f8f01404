"""People and machine clients: their credentials, their rights, and the brute-force brake.

Passwords and client secrets are hashed with argon2id (RFC 9106 parameters of
argon2-cffi), computed in a worker thread so that a login never stalls the
event loop. People's passwords are braked (:class:`LoginGuard`, ADR 0014);
machine secrets, 256 random bits, are not: no stranger can lock a client out.
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

    def __init__(self, detail: str, *, client: bool) -> None:
        super().__init__(detail)
        self.oauth_error = "invalid_client" if client else "invalid_grant"  # RFC 6749 §5.2


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
    """The brake on guessing a person's password (ADR 0014).

    Failures are counted per account *and source address*: past ``login_max_failures``
    within ``login_window_s`` from one address, that address must wait (exponential
    backoff from its last failure), refused with 429 before the password is checked.
    A stranger thus slows only their own address, never the owner's. Against guesses
    spread over many addresses, past ``login_account_max_failures`` failures of the
    account from anywhere, the addresses the account has not logged in from within
    ``login_familiar_days`` wait too; the familiar ones never do.

    The check and the attempt are serialised per account (a transaction-level advisory
    lock held until the attempt is recorded), so concurrent guesses are counted one by
    one: a burst of twelve passes five at most.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_failures = settings.login_max_failures
        self.account_max_failures = settings.login_account_max_failures
        self.window = timedelta(seconds=settings.login_window_s)
        self.familiar = timedelta(days=settings.login_familiar_days)
        self.backoff_base_s = settings.login_backoff_base_s

    async def check(self, session: AsyncSession, account: str, ip: str | None) -> None:
        """Raise :class:`TooManyAttempts` while ``account`` must wait before trying again
        from ``ip``; until the transaction ends, other attempts on ``account`` wait."""
        await session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"login:{account}", 0)))
        )
        now = datetime.now(UTC)
        from_ip = LoginAttempt.ip.is_not_distinct_from(ip)
        failed = ~LoginAttempt.success
        here, last_here, anywhere, last_anywhere, familiar = (
            await session.execute(
                select(
                    func.count().filter(failed, from_ip),
                    func.max(LoginAttempt.at).filter(failed, from_ip),
                    func.count().filter(failed),
                    func.max(LoginAttempt.at).filter(failed),
                    func.bool_or(
                        LoginAttempt.success & from_ip & (LoginAttempt.at > now - self.familiar)
                    ),
                ).where(
                    LoginAttempt.username == account,
                    LoginAttempt.at > now - max(self.window, self.familiar),
                    LoginAttempt.success | (LoginAttempt.at > now - self.window),
                )
            )
        ).one()
        waits = [self._wait(here, self.max_failures, last_here, now)]
        if not familiar:
            waits.append(self._wait(anywhere, self.account_max_failures, last_anywhere, now))
        remaining = max(waits)
        if remaining > 0:
            _log.warning(
                "login throttled",
                extra={"account": account, "ip": ip, "failures": here, "wait_s": remaining},
            )
            raise TooManyAttempts(
                "Too many failed attempts for this account from this address; "
                f"retry in {math.ceil(remaining)} s.",
                retry_after_s=math.ceil(remaining),
            )

    def _wait(self, failures: int, limit: int, last: datetime | None, now: datetime) -> float:
        """Seconds still to wait after ``failures`` past ``limit``, the last one at ``last``."""
        if failures < limit or last is None:
            return 0.0
        wait_s = min(self.backoff_base_s * 2 ** (failures - limit), self.window.total_seconds())
        return (last + timedelta(seconds=wait_s) - now).total_seconds()


async def _check_secret(
    session: AsyncSession,
    guard: LoginGuard | None,
    account: str,
    ip: str | None,
    stored: UserAccount | MachineClient | None,
    secret: str,
) -> None:
    """Refuse a throttled account, an unknown or disabled one or a wrong secret; log the try.

    ``guard`` is None for machine clients: their secrets cannot be guessed.
    """
    if guard is not None:
        await guard.check(session, account, ip)
    if stored is None:
        hashed = _UNKNOWN_ACCOUNT_HASH  # as costly as a known account: no timing oracle
    else:
        hashed = stored.password_hash if isinstance(stored, UserAccount) else stored.secret_hash
    valid = await verify_secret(hashed, secret)
    ok = stored is not None and valid and stored.active
    session.add(LoginAttempt(username=account, ip=ip, success=ok, at=datetime.now(UTC)))
    await session.flush()
    if not ok:
        _log.warning("login failed", extra={"account": account, "ip": ip})
        raise InvalidCredentials(
            "Unknown account or wrong password or secret.", client=guard is None
        )


async def authenticate_user(
    session: AsyncSession, guard: LoginGuard, username: str, password: str, ip: str | None
) -> Identity:
    user = await session.scalar(select(UserAccount).where(UserAccount.username == username))
    await _check_secret(session, guard, username, ip, user, password)
    assert user is not None
    return user_identity(user)


async def authenticate_client(
    session: AsyncSession, client_id: str, secret: str, ip: str | None
) -> Identity:
    client = await session.scalar(select(MachineClient).where(MachineClient.client_id == client_id))
    await _check_secret(session, None, f"client:{client_id}", ip, client, secret)
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

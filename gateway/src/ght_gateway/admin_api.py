"""Administration: users, machine clients, signing-key rotation, the access log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from ght_gateway import identity
from ght_gateway.models import AccessLogEntry, MachineClient, UserAccount
from ght_gateway.revocations import Revoked
from ght_gateway.runtime import gateway_of
from ght_gateway.schemas import (
    AccessLogRead,
    ClientCreate,
    ClientRead,
    ClientUpdate,
    ClientWithSecret,
    KeyRotated,
    UserCreate,
    UserRead,
    UserUpdate,
)
from ght_gateway.security import AUTHENTICATED_RESPONSES, AdminPrincipal
from ght_gateway.tokens import revoke_user_logins
from ght_shared.audit import record_audit
from ght_shared.db import SessionDep
from ght_shared.pagination import Cursor, Page, decode_cursor
from ght_shared.schemas import Moment, PathKey, Printable

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such account."}}

router = APIRouter(prefix="/admin", tags=["admin"], responses=AUTHENTICATED_RESPONSES)


# -- users ----------------------------------------------------------------------------------


@router.get("/users", summary="List the portal's users", response_model=list[UserRead])
async def list_users(_: AdminPrincipal, session: SessionDep) -> list[UserAccount]:
    return list(await session.scalars(select(UserAccount).order_by(UserAccount.username)))


@router.post(
    "/users",
    status_code=201,
    summary="Create a user",
    response_model=UserRead,
    responses={409: {"description": "The username is taken (`conflict`)."}},
)
async def create_user(body: UserCreate, admin: AdminPrincipal, session: SessionDep) -> UserAccount:
    user = await identity.create_user(
        session,
        username=body.username,
        display_name=body.display_name,
        password=body.password,
        roles=[role.value for role in body.roles],
        establishments=body.establishments,
        pole=body.pole,
    )
    await record_audit(
        session,
        admin,
        "user.created",
        f"user/{user.username}",
        detail={"roles": user.roles, "establishments": user.establishments},
    )
    return user


@router.get("/users/{username}", summary="One user", response_model=UserRead, responses=_NOT_FOUND)
async def read_user(username: PathKey, _: AdminPrincipal, session: SessionDep) -> UserAccount:
    return await identity.get_user(session, username)


@router.patch(
    "/users/{username}", summary="Change a user", response_model=UserRead, responses=_NOT_FOUND
)
async def update_user(
    request: Request,
    username: PathKey,
    body: UserUpdate,
    admin: AdminPrincipal,
    session: SessionDep,
) -> UserAccount:
    """A change of rights or password, or a disabled account, cuts off the access tokens
    already issued (a refresh gives tokens with the new rights); a new password or a
    disabled account also ends every login."""
    user = await identity.get_user(session, username)
    changes = body.model_dump(exclude_unset=True, exclude={"password"})
    roles = [str(role) for role in changes.pop("roles", user.roles)]
    establishments = changes.pop("establishments", user.establishments)
    pole = changes.pop("pole", user.pole)
    identity.check_rights(roles, establishments, pole)
    user.roles, user.establishments, user.pole = roles, establishments, pole
    for name, value in changes.items():
        setattr(user, name, value)
    if body.password is not None:
        user.password_hash = await identity.hash_secret(body.password)
    user.updated_at = datetime.now(UTC)
    await session.flush()
    changed = sorted(body.model_dump(exclude_unset=True))
    if not user.active or body.password is not None:
        await revoke_user_logins(session, user.id)
    if set(changed) & {"roles", "establishments", "pole", "active", "password"}:
        await gateway_of(request).revoker.revoke(
            session, Revoked.SUBJECT, username, reason=f"user updated: {', '.join(changed)}"
        )
    await record_audit(
        session, admin, "user.updated", f"user/{username}", detail={"fields": changed}
    )
    return user


# -- machine clients ------------------------------------------------------------------------


@router.get("/clients", summary="List the machine clients", response_model=list[ClientRead])
async def list_clients(_: AdminPrincipal, session: SessionDep) -> list[MachineClient]:
    return list(await session.scalars(select(MachineClient).order_by(MachineClient.client_id)))


@router.post(
    "/clients",
    status_code=201,
    summary="Register an establishment's system (its secret is shown once)",
    response_model=ClientWithSecret,
    responses={409: {"description": "The client id is taken (`conflict`)."}},
)
async def create_client(
    body: ClientCreate, admin: AdminPrincipal, session: SessionDep
) -> ClientWithSecret:
    secret = identity.new_client_secret()
    client = await identity.create_client(
        session,
        client_id=body.client_id,
        name=body.name,
        establishment=body.establishment,
        secret=secret,
    )
    await record_audit(
        session,
        admin,
        "client.created",
        f"client/{client.client_id}",
        establishment=body.establishment,
    )
    return ClientWithSecret(**ClientRead.model_validate(client).model_dump(), client_secret=secret)


@router.patch(
    "/clients/{client_id}",
    summary="Rename, disable or give a new secret to a client",
    response_model=ClientRead | ClientWithSecret,
    responses=_NOT_FOUND,
)
async def update_client(
    request: Request,
    client_id: PathKey,
    body: ClientUpdate,
    admin: AdminPrincipal,
    session: SessionDep,
) -> ClientRead | ClientWithSecret:
    """Disabling a client or giving it a new secret cuts off its access tokens."""
    client = await identity.get_client(session, client_id)
    if body.name is not None:
        client.name = body.name
    if body.active is not None:
        client.active = body.active
    secret = identity.new_client_secret() if body.rotate_secret else None
    if secret is not None:
        client.secret_hash = await identity.hash_secret(secret)
    await session.flush()
    if body.active is False or secret is not None:
        await gateway_of(request).revoker.revoke(
            session,
            Revoked.SUBJECT,
            identity.client_identity(client).subject,
            reason="client disabled" if body.active is False else "client secret rotated",
        )
    await record_audit(
        session,
        admin,
        "client.updated",
        f"client/{client_id}",
        detail={"fields": sorted(body.model_dump(exclude_unset=True))},
    )
    read = ClientRead.model_validate(client)
    return read if secret is None else ClientWithSecret(**read.model_dump(), client_secret=secret)


# -- signing keys ---------------------------------------------------------------------------


@router.post(
    "/keys/rotate",
    summary="Sign with a new key; the previous one verifies until its tokens expire",
    response_model=KeyRotated,
)
async def rotate_keys(request: Request, admin: AdminPrincipal, session: SessionDep) -> KeyRotated:
    keys = gateway_of(request).keys
    kid = await keys.rotate()
    request.app.state.token_verifier.forget_keys()
    await record_audit(session, admin, "signing_key.rotated", f"signing_key/{kid}")
    return KeyRotated(kid=kid, keys=[key["kid"] for key in (await keys.jwks())["keys"]])


# -- access log -----------------------------------------------------------------------------


@router.get(
    "/audit",
    summary="Page through the access log, newest first",
    response_model=Page[AccessLogRead],
)
async def access_log(
    request: Request,
    _: AdminPrincipal,
    session: SessionDep,
    principal: Annotated[Printable | None, Query(max_length=200)] = None,
    path_prefix: Annotated[Printable | None, Query(max_length=500)] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    request_id: Annotated[Printable | None, Query(max_length=128)] = None,
    client_request_id: Annotated[Printable | None, Query(max_length=128)] = None,
    since: Moment | None = None,
    until: Moment | None = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Entries per page.")] = 100,
    cursor: Cursor = None,
) -> Page[AccessLogRead]:
    await request.app.state.access_log.flush()  # what is queued is part of the answer
    query = select(AccessLogEntry).order_by(AccessLogEntry.id.desc()).limit(limit + 1)
    if principal is not None:
        query = query.where(AccessLogEntry.principal == principal)
    if path_prefix is not None:
        escaped = path_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(AccessLogEntry.path.like(f"{escaped}%"))
    if status is not None:
        query = query.where(AccessLogEntry.status == status)
    if request_id is not None:
        query = query.where(AccessLogEntry.request_id == request_id)
    if client_request_id is not None:
        query = query.where(AccessLogEntry.client_request_id == client_request_id)
    if since is not None:
        query = query.where(AccessLogEntry.at >= since)
    if until is not None:
        query = query.where(AccessLogEntry.at < until)
    if cursor is not None:
        (before_id,) = decode_cursor(cursor, int)
        query = query.where(AccessLogEntry.id < before_id)
    rows = (await session.scalars(query)).all()
    return Page.of(rows, limit, key=lambda row: (row.id,), read=AccessLogRead.model_validate)

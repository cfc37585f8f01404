"""Request and response models of the gateway's own API (auth and admin)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from ght_gateway.roles import PERSON_ROLES
from ght_shared.auth import TERRITORY, Role
from ght_shared.identifiers import Finess, is_finess
from ght_shared.schemas import Flag, PatchModel, ReadModel, StrictModel

Username = Annotated[
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
ClientId = Annotated[
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
Password = Annotated[str, StringConstraints(min_length=12, max_length=256)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
PoleCode = Annotated[str, StringConstraints(min_length=1, max_length=32)]


def _establishments(values: list[str]) -> list[str]:
    for value in values:
        if value != TERRITORY and not is_finess(value):
            raise ValueError(
                f"{value!r} is neither a FINESS number (9 digits with its Luhn key) nor '*'"
            )
    if len(set(values)) != len(values):
        raise ValueError("an establishment is listed twice")
    return values


class TokenResponse(BaseModel):
    """RFC 6749 §5.1."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str
    refresh_token: str | None = None


class Me(BaseModel):
    sub: str
    name: str | None
    roles: list[str]
    establishments: list[str]
    pole: str | None
    scope: list[str]
    expires_at: datetime


EstablishmentKey = Annotated[str, StringConstraints(min_length=1, max_length=9)]
"""A FINESS, or ``*`` for the territory."""
MAX_ESTABLISHMENTS = 100
"""More than a territory holds: a bound checked before the items are."""


class UserCreate(StrictModel):
    username: Username
    display_name: Name
    password: Password
    roles: list[Role] = Field(min_length=1, max_length=len(Role))
    establishments: list[EstablishmentKey] = Field(min_length=1, max_length=MAX_ESTABLISHMENTS)
    pole: PoleCode | None = None

    @field_validator("roles")
    @classmethod
    def _person_roles(cls, roles: list[Role]) -> list[Role]:
        if not set(roles) <= PERSON_ROLES:
            raise ValueError("it_system is the role of machine clients, not of people")
        return roles

    _check_establishments = field_validator("establishments")(_establishments)


class UserUpdate(PatchModel):
    """A change of some of a user's fields: a field left out keeps its value; only
    ``pole`` may be null (no pôle)."""

    NULLABLE = frozenset({"pole"})

    display_name: Name | SkipJsonSchema[None] = None
    password: Password | SkipJsonSchema[None] = None
    roles: (
        Annotated[list[Role], Field(min_length=1, max_length=len(Role))] | SkipJsonSchema[None]
    ) = None
    establishments: (
        Annotated[list[EstablishmentKey], Field(min_length=1, max_length=MAX_ESTABLISHMENTS)]
        | SkipJsonSchema[None]
    ) = None
    pole: PoleCode | None = None
    active: Flag | SkipJsonSchema[None] = None

    @field_validator("roles")
    @classmethod
    def _person_roles(cls, roles: list[Role] | None) -> list[Role] | None:
        if roles is not None and not set(roles) <= PERSON_ROLES:
            raise ValueError("it_system is the role of machine clients, not of people")
        return roles

    @field_validator("establishments")
    @classmethod
    def _check_establishments(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _establishments(values)


class UserRead(ReadModel):
    id: uuid.UUID
    username: str
    display_name: str
    roles: list[str]
    establishments: list[str]
    pole: str | None
    active: bool
    created_at: datetime
    updated_at: datetime


class ClientCreate(StrictModel):
    client_id: ClientId
    name: Name
    establishment: Finess


class ClientUpdate(PatchModel):
    """A change of some of a client's fields: a field left out keeps its value, none may
    be null."""

    name: Name | SkipJsonSchema[None] = None
    active: Flag | SkipJsonSchema[None] = None
    rotate_secret: Flag = False


class ClientRead(ReadModel):
    id: uuid.UUID
    client_id: str
    name: str
    roles: list[str]
    establishments: list[str]
    active: bool
    created_at: datetime


class ClientWithSecret(ClientRead):
    client_secret: str = Field(description="Shown once: only its hash is stored.")


class KeyRotated(BaseModel):
    kid: str
    keys: list[str] = Field(description="Every kid the JWKS publishes now, newest first.")


class AccessLogRead(ReadModel):
    id: int
    at: datetime
    principal: str | None
    method: str
    route: str
    path: str
    status: int
    duration_ms: float
    request_id: str | None
    client_request_id: str | None
    client_ip: str | None

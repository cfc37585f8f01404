"""Roles, the scopes they grant and the establishments they may act for: the one table.

``docs/roles.md`` is this table for readers; a test checks that both agree.
The gateway checks a coarse scope per route; each service checks the fine
rights again (scope and establishment ownership) on every write.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from ght_shared.auth import TERRITORY


class Role(StrEnum):
    ADMIN = "admin"
    COMMISSION = "commission"
    DIRECTION = "direction"
    POLE_MANAGER = "pole_manager"
    BED_MANAGER = "bed_manager"
    STAFFING_COORDINATOR = "staffing_coordinator"
    IT_SYSTEM = "it_system"


SERVICES = ("contracts", "activity", "beds", "staffing")

READ_ALL = frozenset(f"{service}:read" for service in SERVICES) | {"territory:read"}

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.ADMIN: READ_ALL
    | {f"{service}:write" for service in SERVICES}
    | {"contracts:approve", "admin"},
    Role.COMMISSION: READ_ALL | {"contracts:approve"},
    Role.DIRECTION: READ_ALL | {"contracts:write"},
    Role.POLE_MANAGER: READ_ALL | {"contracts:write"},
    Role.BED_MANAGER: READ_ALL | {"beds:write"},
    Role.STAFFING_COORDINATOR: READ_ALL | {"staffing:write"},
    Role.IT_SYSTEM: READ_ALL | {"activity:write", "beds:write", "staffing:write"},
}

PERSON_ROLES = frozenset(Role) - {Role.IT_SYSTEM}
"""Roles a portal user may hold; ``it_system`` is for machine clients only."""

TERRITORIAL_ROLES = frozenset({Role.ADMIN, Role.COMMISSION})
"""Roles that act for the whole territory (establishments ``*``)."""

ONE_ESTABLISHMENT_ROLES = frozenset(
    {Role.DIRECTION, Role.POLE_MANAGER, Role.BED_MANAGER, Role.IT_SYSTEM}
)
"""Roles bound to exactly one establishment (FINESS)."""


def scopes_for(roles: Iterable[str]) -> frozenset[str]:
    """Every scope the roles grant together."""
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_SCOPES[Role(role)]
    return frozenset(granted)


def scope_string(scopes: Iterable[str]) -> str:
    return " ".join(sorted(scopes))


def establishment_rule_violation(
    roles: Iterable[str], establishments: list[str], pole: str | None
) -> str | None:
    """Why these roles cannot go with these establishments and pôle, or None when they can."""
    roles = {Role(role) for role in roles}
    territorial = TERRITORY in establishments
    if territorial and len(establishments) > 1:
        return "'*' (the whole territory) stands alone in establishments"
    if roles & TERRITORIAL_ROLES and not territorial:
        return "admin and commission act for the whole territory: establishments must be ['*']"
    if roles & ONE_ESTABLISHMENT_ROLES and (territorial or len(establishments) != 1):
        names = ", ".join(sorted(roles & ONE_ESTABLISHMENT_ROLES))
        return f"{names}: exactly one establishment (FINESS) is required"
    if Role.STAFFING_COORDINATOR in roles and len(establishments) != 1:
        return "staffing_coordinator: one establishment or ['*'] (the territory)"
    if Role.POLE_MANAGER in roles and not pole:
        return "pole_manager: the pôle (its code) is required"
    return None


STEERING_PATHS: dict[str, tuple[str, ...]] = {
    "activity": ("/targets", "/alert-rules", "/alerts/"),
}
"""Writes that are steering decisions (targets, alert rules): the direction, chefs de pôle
and cadres de gestion make them with ``contracts:write`` as well as ``<service>:write``."""


def route_scopes(service: str, method: str, path: str = "/") -> tuple[str, ...]:
    """The coarse scopes (any one of them) the gateway asks for on ``/api/{service}{path}``."""
    if method.upper() in ("GET", "HEAD", "OPTIONS"):
        return (f"{service}:read",)
    if path.startswith(STEERING_PATHS.get(service, ())):
        return (f"{service}:write", "contracts:write")
    return (f"{service}:write",)

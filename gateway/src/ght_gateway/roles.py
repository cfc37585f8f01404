"""The gateway's rules on roles: which establishments and pôle each may act for.

The roles and the scopes they grant are the platform's (``ght_shared.auth.ROLE_SCOPES``);
``docs/roles.md`` shows them, and a test checks that both agree.
The gateway checks a coarse scope per route; each service checks the fine rights again
(scope and establishment ownership) on every write.
"""

from __future__ import annotations

from collections.abc import Iterable

from ght_shared.auth import TERRITORIAL_ROLES, TERRITORY, Role

PERSON_ROLES = frozenset(Role) - {Role.IT_SYSTEM}
"""Roles a portal user may hold; ``it_system`` is for machine clients only."""

ONE_ESTABLISHMENT_ROLES = frozenset(
    {Role.DIRECTION, Role.POLE_MANAGER, Role.BED_MANAGER, Role.IT_SYSTEM}
)
"""Roles bound to exactly one establishment (FINESS)."""


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

"""Who may read and write what in activity-svc, on top of the scope checks.

- Reading the referential needs ``activity:read``.
- Reading figures (indicators, dashboards, records, imports, alerts) of an org unit
  needs ``activity:read`` and the right to act for its establishment; the territory
  root's figures are for territorial principals only.
- Writing records needs ``activity:write`` and each record's establishment.
- Writing the referential needs ``activity:write``: an establishment's tree for its
  own principals; the territory and its establishments for territorial principals only.
- Targets and alert rules are steering decisions: ``activity:write`` or
  ``contracts:write`` (direction, chefs de pôle and cadres de gestion negotiate them),
  and the org unit's establishment; a chef de pôle or cadre de gestion (role
  ``pole_manager`` alone) steers their own pôle (the token's ``pole``) and below only.
  They read the whole establishment's figures, as the dialogue de gestion shares them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from ght_shared.auth import Principal, ensure_establishment, require_scope
from ght_shared.errors import Forbidden

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token (`unauthenticated`)."},
    403: {
        "description": "The token lacks the scope, or does not act for the establishment"
        " concerned (`forbidden`)."
    },
}
"""The answers of every route behind a token, for the routers' OpenAPI documents."""

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown resource."}}

POLE_MANAGER = "pole_manager"
_ESTABLISHMENT_WIDE = frozenset({"admin", "direction", "it_system"})

READ = "activity:read"
WRITE = "activity:write"
STEER = ("activity:write", "contracts:write")


Reader = Annotated[Principal, Depends(require_scope(READ))]
Writer = Annotated[Principal, Depends(require_scope(WRITE))]
Steerer = Annotated[Principal, Depends(require_scope(*STEER))]


def ensure_may_read(principal: Principal, finess: str | None) -> None:
    """Refuse (403) figures of an establishment, or of the territory (``finess`` None)."""
    if finess is None:
        if not principal.is_territorial:
            raise Forbidden("Territory-wide figures are for territorial roles only.")
        return
    ensure_establishment(principal, finess)


def ensure_may_write(principal: Principal, finess: str | None) -> None:
    """Refuse (403) a write for an establishment, or for the territory (``finess`` None)."""
    ensure_may_read(principal, finess)


def is_pole_bound(principal: Principal) -> bool:
    """A chef de pôle or cadre de gestion with no establishment-wide role: their steering
    is limited to their pôle."""
    roles = set(principal.roles)
    return POLE_MANAGER in roles and not roles & _ESTABLISHMENT_WIDE

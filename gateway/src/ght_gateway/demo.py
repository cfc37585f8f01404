"""The demo identities of ``make run`` (settings ``demo``; refused in production settings).

The demo territory is a "G4": one university hospital (CHU) and three general
hospitals (CH). Every demo user and machine client has the password or secret
``GHT_DEMO_PASSWORD`` (default ``demo``). Existing accounts are left as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from ght_gateway.identity import hash_secret
from ght_gateway.models import MachineClient, UserAccount
from ght_shared.auth import TERRITORY, Role
from ght_shared.db import Database

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoEstablishment:
    finess: str
    name: str
    client_id: str


ESTABLISHMENTS = (
    DemoEstablishment("420784878", "CHU de la Vallée", "si-chu"),
    DemoEstablishment("420000010", "Centre hospitalier du Nord", "si-ch-nord"),
    DemoEstablishment("420000028", "Centre hospitalier des Monts", "si-ch-monts"),
    DemoEstablishment("420000036", "Centre hospitalier du Lac", "si-ch-lac"),
)
CHU = ESTABLISHMENTS[0].finess


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    role: Role
    establishment: str
    pole: str | None = None


USERS = (
    DemoUser("admin", "Administrateur de la plateforme", Role.ADMIN, TERRITORY),
    DemoUser("commission", "Commission territoriale", Role.COMMISSION, TERRITORY),
    DemoUser("direction.chu", "Direction du CHU", Role.DIRECTION, CHU),
    DemoUser(
        "cadre.chu", "Cadre de gestion, pôle imagerie (CHU)", Role.POLE_MANAGER, CHU, "CHU-IMG"
    ),
    DemoUser("lits.chu", "Gestionnaire de lits du CHU", Role.BED_MANAGER, CHU),
    DemoUser(
        "effectifs.g4",
        "Coordination des effectifs médicaux (G4)",
        Role.STAFFING_COORDINATOR,
        TERRITORY,
    ),
)


async def ensure_demo_identities(database: Database, password: str) -> None:
    """Create the demo users and one machine client per establishment, if missing."""
    secret_hash = await hash_secret(password)  # one hash for all: they share the password
    async with database.transaction() as session:
        users = set(await session.scalars(select(UserAccount.username)))
        clients = set(await session.scalars(select(MachineClient.client_id)))
        for user in USERS:
            if user.username not in users:
                session.add(
                    UserAccount(
                        username=user.username,
                        display_name=user.display_name,
                        password_hash=secret_hash,
                        roles=[user.role.value],
                        establishments=[user.establishment],
                        pole=user.pole,
                        active=True,
                    )
                )
        for establishment in ESTABLISHMENTS:
            if establishment.client_id not in clients:
                session.add(
                    MachineClient(
                        client_id=establishment.client_id,
                        name=f"SI {establishment.name}",
                        secret_hash=secret_hash,
                        roles=[Role.IT_SYSTEM.value],
                        establishments=[establishment.finess],
                        active=True,
                    )
                )
    _log.info("demo identities ready", extra={"users": len(USERS), "clients": len(ESTABLISHMENTS)})

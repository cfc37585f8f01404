"""Constants and builders shared by activity-svc's tests: a small territory, tokens."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.events import STREAM
from activity_svc.referential.tree import OrgUnitChange, OrgUnitKind, upsert_org_unit
from ght_shared.events import Event

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"

TERRITORY = "G4"
CHU = "420784878"
CH_NORD = "420000010"
SINCE = date(2023, 1, 1)


@dataclass(frozen=True)
class Node:
    code: str
    kind: OrgUnitKind
    name: str
    parent: str | None
    uf: str | None = None
    beds: int | None = None


# The CHU: two pôles; imaging has two departments, medicine one. CH du Nord: one pôle.
SMALL_TERRITORY: tuple[Node, ...] = (
    Node(TERRITORY, OrgUnitKind.TERRITORY, "GHT test", None),
    Node(CHU, OrgUnitKind.ESTABLISHMENT, "CHU de la Vallée", TERRITORY),
    Node(CH_NORD, OrgUnitKind.ESTABLISHMENT, "CH du Nord", TERRITORY),
    Node("CHU-IMG", OrgUnitKind.POLE, "Pôle imagerie", CHU),
    Node("CHU-MED", OrgUnitKind.POLE, "Pôle médecine", CHU),
    Node("CHU-RAD", OrgUnitKind.DEPARTMENT, "Radiologie", "CHU-IMG"),
    Node("CHU-NUC", OrgUnitKind.DEPARTMENT, "Médecine nucléaire", "CHU-IMG"),
    Node("CHU-CAR", OrgUnitKind.DEPARTMENT, "Cardiologie", "CHU-MED"),
    Node("CHU-1101", OrgUnitKind.UNIT, "Scanner", "CHU-RAD", uf="1101"),
    Node("CHU-1102", OrgUnitKind.UNIT, "IRM", "CHU-RAD", uf="1102"),
    Node("CHU-1201", OrgUnitKind.UNIT, "Scintigraphie", "CHU-NUC", uf="1201"),
    Node("CHU-2101", OrgUnitKind.UNIT, "Cardiologie HC", "CHU-CAR", uf="2101", beds=30),
    Node("CHU-2102", OrgUnitKind.UNIT, "Cardiologie HDJ", "CHU-CAR", uf="2102", beds=10),
    Node("NORD-MED", OrgUnitKind.POLE, "Pôle médecine", CH_NORD),
    Node("NORD-INT", OrgUnitKind.DEPARTMENT, "Médecine interne", "NORD-MED"),
    Node("NORD-3101", OrgUnitKind.UNIT, "Médecine interne HC", "NORD-INT", uf="3101", beds=24),
)


async def build_territory(
    session: AsyncSession, nodes: tuple[Node, ...] = SMALL_TERRITORY, since: date = SINCE
) -> None:
    """Create ``nodes`` (parents first) valid from ``since``, as the referential API would."""
    for node in nodes:
        await upsert_org_unit(
            session,
            OrgUnitChange(
                code=node.code,
                kind=node.kind,
                name=node.name,
                parent=node.parent,
                valid_from=since,
                uf=node.uf,
                installed_beds=node.beds,
            ),
            actor="test",
        )


async def published(
    nats_url: str, subject: str, ids: set[str], timeout_s: float = 15.0
) -> list[Event]:
    """The events of ``ids`` as JetStream delivers them (each as often as it is stored)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subscription = await js.pull_subscribe(
            subject,
            stream=STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT),
        )
        found: list[Event] = []
        deadline = time.monotonic() + timeout_s
        while {str(e.id) for e in found} != ids:
            assert time.monotonic() < deadline, "the relay did not publish every event"
            try:
                messages = await subscription.fetch(1000, timeout=1)
            except nats.errors.TimeoutError:
                await asyncio.sleep(0.1)  # not published yet: fetch what follows
                continue
            for message in messages:
                event = Event.from_bytes(message.data)
                if str(event.id) in ids:
                    found.append(event)
                await message.ack()
        return found
    finally:
        await nc.close()

"""A consumer handler with a countable effect, for tests and benchmarks of delivery guarantees.

Each applied event inserts one row into ``test_effect``; counting rows per
event id shows whether every event was applied exactly once.
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ght_shared.events import Event, new_event
from ght_shared.urls import plain_url

CREATE_EFFECT_TABLE = """
CREATE TABLE IF NOT EXISTS test_effect (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL,
    aggregate    text NOT NULL,
    sequence     bigint NOT NULL,
    event_time   timestamptz NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def random_word(n: int = 10) -> str:
    """Letters only: usable inside an event type and a NATS subject token."""
    return "".join(random.choices(string.ascii_lowercase, k=n))


@dataclass
class EffectProbe:
    """Events of one throwaway type in a stream, and a handler that records their effect."""

    owner: str = "beds"
    entity: str = field(default_factory=random_word)

    @property
    def event_type(self) -> str:
        return f"ght.{self.owner}.{self.entity}.happened.v1"

    @property
    def subject(self) -> str:
        return f"ght.{self.owner}.{self.entity}.happened"

    def event(self, aggregate: str, n: int = 0) -> Event:
        return new_event(
            source=f"{self.owner}-svc",
            type=self.event_type,
            subject=aggregate,
            data={"n": n, "probe": self.entity},
        )

    async def handle(self, session: AsyncSession, event: Event) -> None:
        await session.execute(
            text(
                "INSERT INTO test_effect (event_id, aggregate, sequence, event_time)"
                " VALUES (:id, :aggregate, :sequence, :time)"
            ),
            {
                "id": event.id,
                "aggregate": event.subject,
                "sequence": event.sequence,
                "time": event.time,
            },
        )


async def create_effect_table(database_url: str) -> None:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute(CREATE_EFFECT_TABLE)
    finally:
        await conn.close()


@dataclass(frozen=True)
class EffectCounts:
    rows: int
    distinct_events: int

    @property
    def applied_exactly_once(self) -> bool:
        return self.rows == self.distinct_events


async def count_effects(database_url: str) -> EffectCounts:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM test_effect"
        )
    finally:
        await conn.close()
    assert row is not None
    return EffectCounts(row["n"], row["d"])


def event_ids(events: list[Event]) -> set[uuid.UUID]:
    return {e.id for e in events}

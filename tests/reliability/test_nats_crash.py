"""Nothing acknowledged is lost when NATS is killed: every event is applied exactly once."""

from __future__ import annotations

import asyncio

import asyncpg

from ght_shared.testing.effects import EffectProbe, count_effects
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import wait_for
from ght_shared.urls import plain_url

EVENTS = 1000
PER_TRANSACTION = 10
UNPUBLISHED = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


async def _unpublished(database_url: str) -> int:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return await conn.fetchval(UNPUBLISHED)
    finally:
        await conn.close()


async def test_a_thousand_events_survive_nats_killed_and_restarted_midway(
    nats_server, make_reliability_settings
):
    settings = await make_reliability_settings(nats_server.url)
    probe = EffectProbe()
    async with Pipeline(settings, {probe.subject: probe.handle}) as pipeline:
        for batch in range(EVENTS // PER_TRANSACTION):
            await pipeline.write(
                [
                    probe.event(f"bed/{(batch * PER_TRANSACTION + i) % 37}", batch)
                    for i in range(PER_TRANSACTION)
                ]
            )
            if batch == EVENTS // PER_TRANSACTION // 2:
                nats_server.kill()  # SIGKILL, in the middle of the stream of writes
            if batch == EVENTS // PER_TRANSACTION // 2 + 30:
                # Writes went on while NATS was down: they wait in the outbox.
                assert await _unpublished(settings.database_url) > 0
                nats_server.start()
            await asyncio.sleep(0.02)

        async def all_applied() -> bool:
            return (await count_effects(settings.database_url)).distinct_events == EVENTS

        await wait_for(all_applied, timeout=90, interval=0.25)
        await asyncio.sleep(1.0)  # let any late redelivery arrive before counting

    counts = await count_effects(settings.database_url)
    assert counts.distinct_events == EVENTS
    assert counts.rows == EVENTS, "an event was applied twice"
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        unpublished = await conn.fetchval(UNPUBLISHED)
        out_of_order = await conn.fetchval(
            """
            SELECT count(*) FROM (
                SELECT sequence, lag(sequence) OVER (PARTITION BY aggregate ORDER BY id) AS prev
                FROM test_effect
            ) t WHERE prev IS NOT NULL AND sequence < prev
            """
        )
    finally:
        await conn.close()
    assert unpublished == 0
    assert out_of_order == 0, "an aggregate's events were applied out of order"

"""A relay killed between publishing and marking: the duplicate is absorbed by the inbox."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

import asyncpg

from ght_shared.testing.effects import EffectProbe, count_effects
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import wait_for
from ght_shared.urls import plain_url

# A relay process that publishes a batch and dies (SIGKILL) before marking it published.
RELAY_THAT_DIES_BEFORE_MARKING = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from ght_shared.messaging import NatsConnection
    from ght_shared.outbox import OutboxRelay
    from ght_shared.settings import ServiceSettings

    class DyingRelay(OutboxRelay):
        async def _mark_published(self, conn, ids):
            print(f"published {len(ids)}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    async def main():
        settings = ServiceSettings.model_validate_json(sys.argv[1])
        nats = NatsConnection(settings.nats_url, "dying-relay")
        nats.start()
        await DyingRelay(settings, nats).run()

    asyncio.run(main())
    """
)


async def _unpublished(database_url: str) -> int:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()


async def test_events_published_twice_after_a_relay_crash_are_applied_once(
    nats_server, make_reliability_settings
):
    # A short duplicate window, so that JetStream stores the second publish and the
    # consumer's inbox, not NATS deduplication, has to absorb it.
    settings = await make_reliability_settings(nats_server.url, stream_duplicate_window_s=0.5)
    probe = EffectProbe()
    async with Pipeline(settings, {probe.subject: probe.handle}, relay=False) as pipeline:
        written = await pipeline.write([probe.event(f"bed/{n}", n) for n in range(50)])

        dying = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RELAY_THAT_DIES_BEFORE_MARKING,
            settings.model_dump_json(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(dying.communicate(), 60)
        assert dying.returncode == -signal.SIGKILL, stderr.decode()
        assert "published 50" in stdout.decode()
        assert await _unpublished(settings.database_url) == 50
        await wait_for(lambda: pipeline.consumer.handled == 50)

        await asyncio.sleep(1.0)  # past the duplicate window
        pipeline.start_relay()  # the restarted relay publishes the 50 events again
        await wait_for(lambda: pipeline.relay.published_total == 50)
        await wait_for(lambda: pipeline.consumer.handled == 100)

    assert await _unpublished(settings.database_url) == 0
    counts = await count_effects(settings.database_url)
    assert (counts.rows, counts.distinct_events) == (len(written), len(written))
    absorbed = pipeline.metrics.consumed.labels(pipeline.consumer.spec.durable, "duplicate")
    assert absorbed._value.get() == 50

"""The consumer's lag, as the metric operators watch."""

from __future__ import annotations

import asyncio

from ght_shared.events import Event
from ght_shared.testing.effects import EffectProbe
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import wait_for


async def test_the_lag_counts_messages_not_yet_acknowledged_and_falls_back_to_zero(
    probe_settings,
):
    probe = EffectProbe()
    release = asyncio.Event()

    async def slow(session, event: Event) -> None:
        await release.wait()
        await probe.handle(session, event)

    async with Pipeline(probe_settings, {probe.subject: slow}) as pipeline:
        await pipeline.write([probe.event(f"bed/{n}") for n in range(5)])
        await wait_for(lambda: pipeline.relay.published_total == 5)
        gauge = pipeline.metrics.consumer_lag.labels(pipeline.consumer.spec.durable)

        async def lag_is(expected: int) -> bool:
            return await pipeline.consumer.pending() == expected

        await wait_for(lambda: lag_is(5))
        assert gauge._value.get() == 5
        release.set()
        await wait_for(lambda: pipeline.consumer.handled == 5)
        await wait_for(lambda: lag_is(0))
        assert gauge._value.get() == 0

"""The durable, idempotent consumer on the session's real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import nats

from ght_shared.events import Event
from ght_shared.testing.effects import EffectProbe, count_effects
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import wait_for
from ght_shared.urls import plain_url


async def _fetch(settings, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def _publish_raw(nats_url: str, subject: str, payload: bytes, msg_id: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def test_every_event_is_applied_once_and_recorded_in_the_inbox(probe_settings):
    probe = EffectProbe()
    async with Pipeline(probe_settings, {probe.subject: probe.handle}) as pipeline:
        for n in range(30):
            await pipeline.write([probe.event(f"bed/{n % 4}", n)])
        await wait_for(lambda: pipeline.consumer.handled >= 30)
    counts = await count_effects(probe_settings.database_url)
    assert (counts.rows, counts.distinct_events) == (30, 30)
    inbox = await _fetch(probe_settings, "SELECT consumer FROM inbox")
    assert len(inbox) == 30
    assert {r["consumer"] for r in inbox} == {f"{probe_settings.service_name}__beds"}


async def test_a_redelivered_event_has_no_second_effect(probe_settings):
    probe = EffectProbe()
    async with Pipeline(probe_settings, {probe.subject: probe.handle}) as pipeline:
        (event,) = await pipeline.write([probe.event("bed/1")])
        await wait_for(lambda: pipeline.consumer.handled == 1)
        # The same event again under another message id: JetStream stores it, the inbox absorbs it.
        await _publish_raw(probe_settings.nats_url, probe.subject, event.to_bytes(), "other-id")
        await wait_for(lambda: pipeline.consumer.handled == 2)
    counts = await count_effects(probe_settings.database_url)
    assert counts.rows == 1
    duplicates = pipeline.metrics.consumed.labels(pipeline.consumer.spec.durable, "duplicate")
    assert duplicates._value.get() == 1


async def test_events_of_other_types_are_acknowledged_without_effect(probe_settings):
    probe, other = EffectProbe(), EffectProbe()
    handlers = {probe.subject: probe.handle}
    spec_filters = (probe.subject, other.subject)
    async with Pipeline(probe_settings, handlers) as pipeline:
        pipeline.consumer.spec = pipeline.consumer.spec.__class__(
            service=probe_settings.service_name,
            stream="BEDS",
            handlers=handlers,
            filter_subjects=spec_filters,
        )
        await pipeline.write([other.event("bed/9"), probe.event("bed/1")])
        await wait_for(lambda: pipeline.consumer.handled == 2)
    counts = await count_effects(probe_settings.database_url)
    assert counts.rows == 1


async def test_a_failing_handler_is_retried_with_backoff_then_dead_lettered_while_others_flow(
    probe_settings,
):
    probe = EffectProbe()
    attempts: list[float] = []

    async def handle(session, event: Event) -> None:
        if event.data["n"] == 13:
            attempts.append(asyncio.get_running_loop().time())
            raise ValueError("bed 13 is unknown to this service")
        await probe.handle(session, event)

    async with Pipeline(probe_settings, {probe.subject: handle}) as pipeline:
        await pipeline.write([probe.event(f"bed/{n}", n) for n in range(12, 16)])
        await wait_for(lambda: pipeline.consumer.handled == 4, timeout=15)
        # The dead-letter event goes out through the outbox like any other.
        await wait_for(lambda: pipeline.relay.published_total == 5)

    assert len(attempts) == probe_settings.consumer_max_deliver
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.04 for gap in gaps), gaps  # nak-ed with a delay, not hammered
    counts = await count_effects(probe_settings.database_url)
    assert counts.rows == 3  # the three others were applied
    letters = await _fetch(probe_settings, "SELECT event_type, error, deliveries FROM dead_letter")
    assert len(letters) == 1
    assert letters[0]["event_type"] == probe.event_type
    assert "bed 13 is unknown" in letters[0]["error"]
    assert letters[0]["deliveries"] == probe_settings.consumer_max_deliver
    events = await _fetch(probe_settings, "SELECT event_type FROM outbox ORDER BY id")
    assert events[-1]["event_type"] == "ght.beds.dead_letter.recorded.v1"


async def test_an_unreadable_message_is_dead_lettered_at_once(probe_settings):
    probe = EffectProbe()
    async with Pipeline(probe_settings, {probe.subject: probe.handle}) as pipeline:
        await _publish_raw(probe_settings.nats_url, probe.subject, b"{not json", "garbage-1")
        await pipeline.write([probe.event("bed/1")])
        await wait_for(lambda: pipeline.consumer.handled == 2)
    letters = await _fetch(probe_settings, "SELECT error, deliveries FROM dead_letter")
    assert len(letters) == 1
    assert letters[0]["error"].startswith("unreadable event")
    assert (await count_effects(probe_settings.database_url)).rows == 1


async def test_stopping_drains_the_batch_in_hand_and_returns(probe_settings):
    probe = EffectProbe()
    release = asyncio.Event()

    async def slow(session, event: Event) -> None:
        await release.wait()
        await probe.handle(session, event)

    pipeline = Pipeline(probe_settings, {probe.subject: slow})
    async with pipeline:
        await pipeline.write([probe.event("bed/1")])
        await wait_for(lambda: pipeline.relay.published_total == 1)
        await asyncio.sleep(0.3)  # the consumer now holds the message
        pipeline.consumer.stop()
        release.set()
    # Leaving the pipeline waited for the handler instead of cancelling it.
    assert pipeline.consumer.handled == 1
    assert (await count_effects(probe_settings.database_url)).rows == 1

"""The transactional outbox and its relay, on the session's real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio

import asyncpg
import nats
import pytest

from ght_shared.db import Database
from ght_shared.events import Event
from ght_shared.messaging import NatsConnection
from ght_shared.outbox import OutboxRelay, add_event, add_events
from ght_shared.streams import STREAMS, ensure_stream
from ght_shared.testing.effects import EffectProbe
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import wait_for
from ght_shared.urls import plain_url


async def _outbox_rows(settings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        return await conn.fetch(
            "SELECT id, event_id, aggregate, published_at, payload FROM outbox ORDER BY id"
        )
    finally:
        await conn.close()


async def _stream_messages(nats_url: str, subject: str, count: int) -> list:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, stream="BEDS")
        messages = []
        while len(messages) < count:
            messages += await sub.fetch(count - len(messages), timeout=5)
        for m in messages:
            await m.ack()
        return messages
    finally:
        await nc.close()


async def test_an_event_added_in_a_rolled_back_transaction_is_never_stored(probe_settings):
    database = Database(probe_settings)
    probe = EffectProbe()
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await add_event(session, probe.event("bed/1"))
            raise RuntimeError("the business change failed")
    async with database.transaction() as session:
        await add_event(session, probe.event("bed/2"))
    await database.dispose()
    rows = await _outbox_rows(probe_settings)
    assert [r["aggregate"] for r in rows] == ["bed/2"]


async def test_each_aggregate_gets_its_own_gapless_sequence(probe_settings):
    database = Database(probe_settings)
    probe = EffectProbe()
    async with database.transaction() as session:
        first = await add_events(session, [probe.event("bed/1"), probe.event("bed/2")])
    async with database.transaction() as session:
        second = await add_events(session, [probe.event("bed/1"), probe.event("bed/1")])
    await database.dispose()
    assert [(e.subject, e.sequence) for e in first + second] == [
        ("bed/1", 1),
        ("bed/2", 1),
        ("bed/1", 2),
        ("bed/1", 3),
    ]


async def test_a_batch_is_stored_in_its_order_with_payloads_that_decode_to_the_stored_events(
    probe_settings,
):
    database = Database(probe_settings)
    probe = EffectProbe()
    events = [probe.event(f"bed/{n % 7}", n) for n in range(2800)]
    async with database.transaction() as session:
        stored = await add_events(session, events)
    await database.dispose()
    conn = await asyncpg.connect(plain_url(probe_settings.database_url))
    try:
        rows = await conn.fetch("SELECT * FROM outbox ORDER BY id")
    finally:
        await conn.close()
    assert [r["event_id"] for r in rows] == [e.id for e in events]
    assert [Event.from_bytes(r["payload"]) for r in rows] == stored
    assert [e.sequence for e in stored if e.subject == "bed/3"] == list(range(1, 401))
    assert all(e.sequence == 0 for e in events)  # the caller's events are left as they were
    row, event = rows[0], stored[0]
    assert (row["event_type"], row["subject"], row["aggregate"]) == (
        event.type,
        event.nats_subject,
        event.subject,
    )
    assert row["created_at"] == event.time
    assert (row["published_at"], row["attempts"], row["last_error"]) == (None, 0, None)


async def test_a_rolled_back_batch_leaves_neither_events_nor_sequence_numbers(probe_settings):
    database = Database(probe_settings)
    probe = EffectProbe()
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await add_events(session, [probe.event(f"bed/{n % 3}", n) for n in range(300)])
            raise RuntimeError("the business change failed")
    async with database.transaction() as session:
        (stored,) = await add_events(session, [probe.event("bed/1")])
    await database.dispose()
    assert [r["aggregate"] for r in await _outbox_rows(probe_settings)] == ["bed/1"]
    assert stored.sequence == 1


async def test_the_relay_publishes_in_order_with_the_event_id_as_message_id(probe_settings):
    probe = EffectProbe()
    async with Pipeline(probe_settings, {}, consumer=False) as pipeline:
        written = []
        for n in range(20):
            written += await pipeline.write([probe.event(f"bed/{n % 3}", n)])
        await wait_for(lambda: pipeline.relay.published_total == 20)
    messages = await _stream_messages(probe_settings.nats_url, probe.subject, 20)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [str(e.id) for e in written]
    rows = await _outbox_rows(probe_settings)
    assert all(r["published_at"] is not None for r in rows)


async def test_a_row_committed_late_with_a_lower_id_is_still_published(probe_settings):
    # Sequences commit out of order: a relay reading "ids above the last seen" would skip it.
    probe = EffectProbe()
    async with Pipeline(probe_settings, {}, consumer=False) as pipeline:
        slow = pipeline.database.sessionmaker()
        await slow.begin()
        await add_event(slow, probe.event("bed/slow"))  # takes the lower id, not committed
        await pipeline.write([probe.event("bed/fast")])
        await wait_for(lambda: pipeline.relay.published_total == 1)
        await slow.commit()
        await slow.close()
        await wait_for(lambda: pipeline.relay.published_total == 2)
    rows = await _outbox_rows(probe_settings)
    assert rows[0]["aggregate"] == "bed/slow"
    assert rows[0]["published_at"] is not None


async def test_notify_wakes_the_relay_long_before_its_polling_timer(probe_settings):
    settings = probe_settings.model_copy(update={"outbox_poll_interval_s": 30.0})
    probe = EffectProbe()
    async with Pipeline(settings, {}, consumer=False) as pipeline:
        await wait_for(lambda: pipeline.relay.is_leader)
        await asyncio.sleep(0.2)  # the relay now waits on its 30 s timer
        await pipeline.write([probe.event("bed/1")])
        await wait_for(lambda: pipeline.relay.published_total == 1, timeout=3)


async def test_only_one_relay_of_a_service_publishes_and_a_standby_takes_over(probe_settings):
    probe = EffectProbe()
    nats_conn = NatsConnection(probe_settings.nats_url, "standby")
    nats_conn.start()
    standby = OutboxRelay(probe_settings, nats_conn)
    async with Pipeline(probe_settings, {}, consumer=False) as pipeline:
        await wait_for(lambda: pipeline.relay.is_leader)
        standby_task = asyncio.create_task(standby.run())
        await asyncio.sleep(0.5)
        assert not standby.is_leader
        await pipeline.write([probe.event("bed/1")])
        await wait_for(lambda: pipeline.relay.published_total == 1)
        assert standby.published_total == 0
    # The leader has stopped and released its lock: the standby leads within its retry delay.
    await wait_for(lambda: standby.is_leader, timeout=5)
    async with Database(probe_settings).transaction() as session:
        await add_event(session, probe.event("bed/2"))
    await wait_for(lambda: standby.published_total == 1, timeout=5)
    standby.stop()
    await standby_task
    await nats_conn.close()


async def test_stream_provisioning_is_idempotent_and_durable(nats_url):
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for _ in range(2):
            await ensure_stream(js, STREAMS["STAFFING"], replicas=1, duplicate_window_s=300)
        info = await js.stream_info("STAFFING")
        assert info.config.subjects == ["ght.staffing.>"]
        assert info.config.storage == "file"
        assert info.config.duplicate_window == 300
        assert info.config.num_replicas == 1
    finally:
        await nc.close()


async def test_the_relay_prunes_events_published_beyond_the_retention(probe_settings):
    probe = EffectProbe()
    database = Database(probe_settings)
    async with database.transaction() as session:
        await add_events(session, [probe.event("bed/old"), probe.event("bed/recent")])
    conn = await asyncpg.connect(plain_url(probe_settings.database_url))
    try:
        await conn.execute(
            "UPDATE outbox SET published_at = now() - interval '8 days' WHERE aggregate = 'bed/old'"
        )
        await conn.execute(
            "UPDATE outbox SET published_at = now() - interval '1 day'"
            " WHERE aggregate = 'bed/recent'"
        )
    finally:
        await conn.close()
    await database.dispose()
    async with Pipeline(probe_settings, {}, consumer=False) as pipeline:
        await wait_for(lambda: pipeline.relay.is_leader)
        await asyncio.sleep(0.3)
    rows = await _outbox_rows(probe_settings)
    assert [r["aggregate"] for r in rows] == ["bed/recent"]

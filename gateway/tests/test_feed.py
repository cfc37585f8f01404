"""The live feed, ``GET /events/stream``: real outbox, real NATS, a real uvicorn server.

Events are committed through a service's outbox (``Pipeline``: outbox table, relay,
JetStream) and read back as Server-Sent Events over TCP, because httpx's ASGI
transport buffers a streaming response whole. They are events of the platform's own
types (the feed forwards no other), built from their payload models; those a service
consumes name units and contracts no service knows, so that a consumer would skip them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
import uvicorn
from fastapi.openapi.utils import get_openapi
from gateway_testing import DEMO_PASSWORD, bearer, client_token, password_token
from prometheus_client import CollectorRegistry

from ght_gateway.feed import EventRing, FeedClosing, FeedEvent, LiveFeed
from ght_gateway.main import create_app
from ght_gateway.settings import Settings
from ght_shared.auth import Principal
from ght_shared.devservers import NatsServer, free_port
from ght_shared.events import Event, new_event
from ght_shared.messaging import NatsConnection
from ght_shared.payloads import PAYLOADS, payload_for
from ght_shared.payloads.activity import AlertClosed, AlertRaised, BatchIngested, IndicatorUpdated
from ght_shared.payloads.beds import (
    BedStatusChanged,
    CapacityChanged,
    StrainChanged,
    TransferAccepted,
    TransferCancelled,
    TransferCompleted,
    TransferDeclined,
    TransferExpired,
    TransferRequested,
    _Transfer,
)
from ght_shared.payloads.common import DeadLetterRecorded
from ght_shared.payloads.contracts import (
    ContractAmended,
    ContractClosed,
    ContractPeriod,
    ContractSigned,
    ObjectiveStatusChanged,
)
from ght_shared.payloads.referential import OrgUnitUpserted
from ght_shared.payloads.staffing import (
    AssignmentCancelled,
    AssignmentConfirmed,
    NeedFilled,
    NeedOpened,
    NeedUncovered,
)
from ght_shared.settings import ServiceSettings
from ght_shared.streams import STREAMS
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import wait_for

CHU = "420784878"
CH_NORD = "420000010"
HEARTBEAT_S = 0.3
CLIENT_QUEUE = 8
RING_SIZE = 50
STREAMS_PER_PRINCIPAL = 3
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


TERRITORIAL = frozenset({"admin", "commission", "effectifs.g4"})
"""Demo principals acting for the whole territory: admin, commission, staffing coordinator."""
OF_CHU = frozenset({"direction.chu", "cadre.chu", "lits.chu", "si-chu"})
"""The CHU's direction, pôle manager, bed manager and IT system."""
OF_NORD = frozenset({"si-ch-nord"})
ROLES = TERRITORIAL | OF_CHU | OF_NORD
EVERYONE = ROLES
NOBODY: frozenset[str] = frozenset()


def bed_event(establishment: str | None = CHU, **extra: Any) -> Event:
    """A bed status change of ``establishment`` (``extra`` fields added to its data)."""
    changed = BedStatusChanged(
        bed=f"bed-{uuid.uuid4().hex[:8]}",
        unit="CHU-2101",
        establishment=establishment or CHU,
        specialty=None,
        from_=None,
        to="U",
        at=NOW,
        **extra,
    )
    return changed.event(source="beds-svc", establishment=establishment)


# --- reading a stream -----------------------------------------------------------------------


@dataclass
class Frame:
    """One dispatched SSE message, or one comment line."""

    event: str | None = None
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comment: str | None = None

    @property
    def json(self) -> Any:
        return orjson.loads(self.data)


class SseReader:
    """Parses a ``text/event-stream`` body as the WHATWG spec says (the parts used here)."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next_frame(self, timeout: float = 5.0) -> Frame:
        frame = Frame()
        started = False
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line.startswith(":"):
                    return Frame(comment=line[1:].strip())
                if not line:
                    if started:
                        return frame
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                started = True
                if name == "event":
                    frame.event = value
                elif name == "id":
                    frame.id = value
                elif name == "data":
                    frame.data = f"{frame.data}\n{value}" if frame.data else value
                elif name == "retry":
                    frame.retry = int(value)
        raise EOFError("the stream ended")

    async def next_event(self, timeout: float = 5.0) -> Frame:
        """The next message with an event name (heartbeats and ``retry:`` skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next_frame(max(deadline - time.monotonic(), 0.01))
            if frame.event is not None:
                return frame


# --- a gateway on a real port ---------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn in the test's event loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class LiveGateway:
    port: int
    server: uvicorn.Server
    feed: LiveFeed
    registry: CollectorRegistry
    http: httpx.AsyncClient
    tokens: dict[str, str]
    metrics_url: str

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    @contextlib.asynccontextmanager
    async def stream(
        self,
        who: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[SseReader]:
        """An open stream of ``who``, registered with the feed once this yields."""
        async with self.http.stream(
            "GET",
            "/events/stream",
            params=params,
            headers={**bearer(self.tokens[who]), **(headers or {})},
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SseReader(response)
            first = await reader.next_frame()
            assert first.retry == 100  # written once the client is registered
            yield reader


@pytest.fixture(scope="module")
async def live(make_gateway_settings: Any) -> AsyncIterator[LiveGateway]:
    """The gateway app served by uvicorn on a free port, following every stream."""
    settings: Settings = await make_gateway_settings(
        feed_heartbeat_s=HEARTBEAT_S,
        feed_client_queue=CLIENT_QUEUE,
        feed_ring_size=RING_SIZE,
        feed_retry_ms=100,
        feed_max_streams_per_principal=STREAMS_PER_PRINCIPAL,
    )
    app = create_app(settings)
    port = free_port()
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or serving.done(), timeout=30)
        assert not serving.done(), "uvicorn did not start"
        feed: LiveFeed = app.state.feed
        # Events are forwarded from the moment every subscription is up (DeliverPolicy.NEW).
        await wait_for(lambda: feed.following == set(STREAMS), timeout=30)
        url = f"http://127.0.0.1:{port}"
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            tokens = {
                who: (
                    await (
                        client_token(http, who)
                        if who.startswith("si-")
                        else password_token(http, who)
                    )
                )["access_token"]
                for who in ROLES
            }
            metrics_url = f"http://127.0.0.1:{app.state.metrics_port}/metrics"
            registry = app.state.metrics.registry
            yield LiveGateway(port, server, feed, registry, http, tokens, metrics_url)
    finally:
        # uvicorn waits for open responses before it stops: end the streams first.
        with contextlib.suppress(AttributeError):
            app.state.feed.end_streams()
        server.should_exit = True
        await asyncio.wait_for(serving, 15)


@pytest.fixture(scope="module")
async def outbox(make_settings: Any) -> AsyncIterator[Pipeline]:
    """A beds-svc-like writer: outbox table and relay publishing to the test NATS."""
    settings = await make_settings(ServiceSettings, None, service_name="beds-svc")
    async with Pipeline(settings, {}, consumer=False) as pipeline:
        yield pipeline


# --- delivery and visibility ----------------------------------------------------------------


async def test_an_event_committed_through_the_outbox_reaches_a_connected_client(
    live: LiveGateway, outbox: Pipeline
) -> None:
    async with live.stream("commission") as stream:
        (stored,) = await outbox.write([bed_event(CHU)])

        frame = await stream.next_event()

        assert frame.id == str(stored.id)
        assert frame.event == stored.type
        cloud_event = frame.json
        assert cloud_event["specversion"] == "1.0"
        assert cloud_event["source"] == "beds-svc"
        assert cloud_event["establishment"] == CHU
        assert cloud_event["sequence"] == stored.sequence
        assert cloud_event["data"] == stored.data
        metrics = (await live.http.get(live.metrics_url)).text
        assert "ght_feed_clients 1.0" in metrics
        assert "ght_feed_events_forwarded_total" in metrics


async def test_types_keeps_only_the_events_matching_one_of_its_patterns(
    live: LiveGateway, outbox: Pipeline
) -> None:
    patterns = "ght.beds.capacity.*, ght.beds.transfer.?ccepted.*"
    accepted = TransferAccepted(
        request="feed-t1",
        from_=CH_NORD,
        to=CHU,
        specialty="cardiologie",
        urgency="urgent",
        at=NOW,
        expires_at=NOW,
    )
    capacity = CapacityChanged(unit="FEED-NO-SUCH-UNIT", establishment=CHU, installed=1)
    async with live.stream("commission", params={"types": patterns}) as stream:
        events = await outbox.write(
            [
                bed_event(CHU),
                capacity.event(source="beds-svc", establishment=CHU),
                bed_event(CH_NORD),
                accepted.event(source="beds-svc", establishment=CH_NORD),
            ]
        )

        received = [(await stream.next_event()).event for _ in range(2)]

    assert received == [events[1].type, events[3].type]


async def test_a_bad_type_pattern_is_refused_with_a_problem_naming_the_field(
    live: LiveGateway,
) -> None:
    response = await live.http.get(
        "/events/stream",
        params={"types": "ght.beds.*,ght.beds.[bed"},
        headers=bearer(live.tokens["commission"]),
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert [error["field"] for error in problem["errors"]] == ["types"]
    assert "ght.beds.[bed" in problem["errors"][0]["message"]


def test_the_openapi_document_describes_the_stream() -> None:
    app = create_app(Settings())
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)

    operation = document["paths"]["/events/stream"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {parameter["name"] for parameter in operation["parameters"]} == {
        "types",
        "last_event_id",
        "Last-Event-ID",
    }


async def test_a_stream_without_a_token_is_refused_with_401(live: LiveGateway) -> None:
    response = await live.http.get("/events/stream")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_an_idle_stream_receives_heartbeat_comments(live: LiveGateway) -> None:
    async with live.stream("si-ch-nord") as stream:
        started = time.monotonic()
        first = await stream.next_frame(timeout=3 * HEARTBEAT_S)
        second = await stream.next_frame(timeout=3 * HEARTBEAT_S)

    assert (first.comment, second.comment) == ("heartbeat", "heartbeat")
    assert time.monotonic() - started >= HEARTBEAT_S


# --- who sees what: every event type, every role ---------------------------------------------


def _transfer(kind: type[_Transfer], origin: str, to: str | None, **extra: Any) -> Event:
    transfer = kind(
        request=f"feed-{uuid.uuid4().hex[:8]}",
        from_=origin,
        to=to,
        specialty="cardiologie",
        urgency="urgent",
        at=NOW,
        **extra,
    )
    return transfer.event(source="beds-svc", establishment=origin)


def _strain(scope: str, key: str, establishment: str | None) -> Event:
    strain = StrainChanged(
        scope=scope,
        key=key,
        establishment=establishment,
        level="tension",
        previous_level="normal",
        occupancy=0.93,
        available=4,
    )
    return strain.event(source="beds-svc", establishment=establishment)


def _org_unit(code: str, kind: str, parent: str | None, finess: str | None) -> Event:
    unit = OrgUnitUpserted(
        code=code,
        kind=kind,
        name=code,
        parent=parent,
        finess=finess,
        uf=None,
        specialty=None,
        active=True,
        valid_from=date(2026, 1, 1),
        installed_beds=None,
    )
    return unit.event(source="activity-svc", establishment=finess)


def _indicator(org_unit: str, establishment: str | None) -> Event:
    figures = IndicatorUpdated(
        indicator="stays",
        org_unit=org_unit,
        period="2026-10",
        value=1250.0,
        same_period_last_year=1200.0,
        variation_pct=4.2,
        year_to_date=11800.0,
        year_to_date_last_year=11500.0,
        year_to_date_variation_pct=2.6,
        projection=None,
        target=None,
        target_year=None,
    )
    return figures.event(source="activity-svc", establishment=establishment)


def _alert(org_unit: str, establishment: str | None) -> Event:
    alert = AlertRaised(
        alert=uuid.uuid4(),
        rule=uuid.uuid4(),
        indicator="stays",
        org_unit=org_unit,
        period="2026-10",
        value=900.0,
        reference=1200.0,
        deviation=-25.0,
        threshold=10.0,
        basis="last_year",
        direction="below",
        message="Stays 25 % below last year.",
    )
    return alert.event(source="activity-svc", establishment=establishment)


def _alert_closed(org_unit: str, establishment: str | None) -> Event:
    closed = AlertClosed(
        alert=uuid.uuid4(),
        rule=uuid.uuid4(),
        indicator="stays",
        org_unit=org_unit,
        period="2026-11",
        reason="within_threshold",
    )
    return closed.event(source="activity-svc", establishment=establishment)


def _contract(kind: type[ContractSigned | ContractAmended], establishment: str | None) -> Event:
    # No objective and a contract activity-svc does not know: its consumer writes nothing.
    contract = kind(
        contract=f"feed-{uuid.uuid4().hex[:8]}",
        kind="pole_contract",
        period=ContractPeriod(start=date(2026, 1, 1), end=date(2026, 12, 31)),
    )
    return contract.event(source="contracts-svc", establishment=establishment)


def _need(kind: type[NeedOpened | NeedFilled | NeedUncovered], establishment: str) -> Event:
    extra = {"assignment": "feed-a1"} if kind is NeedFilled else {}
    need = kind(
        need=f"feed-{uuid.uuid4().hex[:8]}",
        establishment=establishment,
        site="SITE-1",
        specialty="anesthesie",
        kind="garde",
        start=NOW,
        end=NOW,
        **extra,
    )
    return need.event(source="staffing-svc", establishment=establishment)


def _assignment(
    kind: type[AssignmentConfirmed | AssignmentCancelled], home: str, host: str
) -> Event:
    assignment = kind(
        assignment=f"feed-{uuid.uuid4().hex[:8]}",
        practitioner="10001234567",
        home_establishment=home,
        host_establishment=host,
        host_site="SITE-1",
        specialty="anesthesie",
        kind="garde",
        start=NOW,
        end=NOW,
        cross_site=home != host,
    )
    return assignment.event(source="staffing-svc", establishment=host)


def _unknown(event_type: str) -> Event:
    return new_event(
        source="beds-svc", type=event_type, subject="bed/feed", data={}, establishment=CHU
    )


def visibility_cases() -> list[tuple[str, Event, frozenset[str]]]:
    """(case, event, who sees it): every event type of ``ght_shared.payloads``, and two
    types of no model."""
    capacity = CapacityChanged(unit="FEED-NO-SUCH-UNIT", establishment=CH_NORD, installed=3)
    closed = ContractClosed(
        contract="feed-closed", kind="cooperation_agreement", closed_on=NOW.date()
    )
    objective = ObjectiveStatusChanged(
        objective="feed-o1",
        contract="feed-c1",
        indicator="stays",
        org_unit="CHU-IMG",
        year=2026,
        target=14000.0,
        achieved=13100.0,
        status="at_risk",
        previous_status="on_track",
    )
    batch = BatchIngested(
        batch=uuid.uuid4(),
        source="pmsi",
        sources=["pmsi"],
        establishment=CHU,
        period=None,
        accepted=10,
        rejected=0,
        format="csv",
    )
    dead_letter = DeadLetterRecorded(
        consumer="activity__beds",
        event_id=None,
        event_type=None,
        nats_subject="ght.beds.capacity.changed",
        error="unreadable",
        deliveries=1,
    )
    return [
        ("a unit of the CHU", _org_unit("CHU-FEED", "unit", "CHU-IMG", CHU), EVERYONE),
        ("the territory root", _org_unit("GHT-G4", "territory", None, None), EVERYONE),
        (
            "an import of the CHU",
            batch.event(source="activity-svc", establishment=CHU),
            TERRITORIAL | OF_CHU,
        ),
        ("figures of a CHU pôle", _indicator("CHU-IMG", CHU), TERRITORIAL | OF_CHU),
        ("figures of the territory", _indicator("GHT-G4", None), TERRITORIAL),
        ("an alert of the CH du Nord", _alert("NORD-MED", CH_NORD), TERRITORIAL | OF_NORD),
        ("an alert of the territory", _alert("GHT-G4", None), TERRITORIAL),
        (
            "a closed alert of the CH du Nord",
            _alert_closed("NORD-MED", CH_NORD),
            TERRITORIAL | OF_NORD,
        ),
        ("a closed alert of the territory", _alert_closed("GHT-G4", None), TERRITORIAL),
        ("a CHU bed", bed_event(CHU), TERRITORIAL | OF_CHU),
        (
            "capacity of a Nord unit",
            capacity.event(source="beds-svc", establishment=CH_NORD),
            TERRITORIAL | OF_NORD,
        ),
        ("an open transfer request", _transfer(TransferRequested, CHU, None), EVERYONE),
        ("a transfer accepted", _transfer(TransferAccepted, CHU, CH_NORD, expires_at=NOW), ROLES),
        ("a transfer declined", _transfer(TransferDeclined, CH_NORD, CHU), ROLES),
        ("an open request cancelled", _transfer(TransferCancelled, CH_NORD, None), EVERYONE),
        ("a transfer completed", _transfer(TransferCompleted, CHU, CHU), TERRITORIAL | OF_CHU),
        ("a transfer expired", _transfer(TransferExpired, CH_NORD, CH_NORD), TERRITORIAL | OF_NORD),
        ("a CHU unit's strain", _strain("unit", "CHU-2101", CHU), TERRITORIAL | OF_CHU),
        ("the Nord's strain", _strain("establishment", CH_NORD, CH_NORD), TERRITORIAL | OF_NORD),
        ("a specialty's strain", _strain("specialty", "reanimation", None), EVERYONE),
        ("the territory's strain", _strain("territory", "GHT-G4", None), EVERYONE),
        ("a CHU contract signed", _contract(ContractSigned, CHU), TERRITORIAL | OF_CHU),
        ("a Nord contract amended", _contract(ContractAmended, CH_NORD), TERRITORIAL | OF_NORD),
        ("an agreement closed", closed.event(source="contracts-svc"), TERRITORIAL),
        (
            "a CHU objective",
            objective.event(source="contracts-svc", establishment=CHU),
            TERRITORIAL | OF_CHU,
        ),
        ("a CHU need opened", _need(NeedOpened, CHU), TERRITORIAL | OF_CHU),
        ("a Nord need filled", _need(NeedFilled, CH_NORD), TERRITORIAL | OF_NORD),
        ("a CHU need uncovered", _need(NeedUncovered, CHU), TERRITORIAL | OF_CHU),
        ("a Nord doctor at the CHU", _assignment(AssignmentConfirmed, CH_NORD, CHU), ROLES),
        (
            "a CHU doctor at the CHU",
            _assignment(AssignmentCancelled, CHU, CHU),
            TERRITORIAL | OF_CHU,
        ),
        ("a dead letter", dead_letter.event(source="activity-svc"), TERRITORIAL),
        ("a type of no model", _unknown("ght.beds.feed_probe.changed.v1"), NOBODY),
        ("a version of no model", _unknown("ght.beds.bed.status_changed.v9"), NOBODY),
    ]


def test_the_cases_cover_every_event_type() -> None:
    covered = {payload_for(event.type) for _, event, _ in visibility_cases()}

    assert covered - {None} == set(PAYLOADS)


async def test_each_event_type_reaches_exactly_the_roles_its_visibility_names(
    live: LiveGateway, outbox: Pipeline
) -> None:
    cases = visibility_cases()
    received: dict[str, list[str]] = {who: [] for who in ROLES}
    withheld = live.metric("ght_feed_events_withheld_total")

    async def read(who: str, stream: SseReader) -> None:
        while True:
            frame = await stream.next_frame(timeout=30)
            if frame.event is not None:
                received[who].append(frame.id or "")

    async with contextlib.AsyncExitStack() as streams:
        readers = [
            asyncio.create_task(read(who, await streams.enter_async_context(live.stream(who))))
            for who in sorted(ROLES)
        ]
        try:
            # A few at a time: a stream's queue holds CLIENT_QUEUE events. Each batch received
            # and dispatched (those of no model withheld), every queue written out: what a
            # stream has not read by then, it will not read.
            for start in range(0, len(cases), CLIENT_QUEUE // 2):
                batch = cases[start : start + CLIENT_QUEUE // 2]
                await outbox.write([event for _, event, _ in batch])
                await wait_for(
                    lambda batch=batch: all(
                        str(event.id) in live.feed.ring for _, event, seen in batch if seen
                    )
                )
                await wait_for(lambda: all(client.queue.empty() for client in live.feed.clients))
            await wait_for(lambda: live.metric("ght_feed_events_withheld_total") == withheld + 2)
            await asyncio.sleep(5 * HEARTBEAT_S)
        finally:
            for reader in readers:
                reader.cancel()

    name = {str(event.id): case for case, event, _ in cases}
    seen_by = {
        case: sorted(who for who in ROLES if str(event.id) in received[who])
        for case, event, _ in cases
    }
    assert seen_by == {case: sorted(expected) for case, _, expected in cases}
    assert all(frame in name for frames in received.values() for frame in frames)


async def test_a_token_without_a_services_read_scope_sees_none_of_its_events(
    live: LiveGateway, outbox: Pipeline
) -> None:
    narrowed = await password_token(live.http, "commission", scope="territory:read beds:read")
    async with live.http.stream(
        "GET", "/events/stream", headers=bearer(narrowed["access_token"])
    ) as response:
        stream = SseReader(response)
        assert (await stream.next_frame()).retry is not None
        await outbox.write([_org_unit("GHT-G4", "territory", None, None)])
        (bed,) = await outbox.write([bed_event(CH_NORD)])

        assert (await stream.next_event()).id == str(bed.id)


async def test_a_principal_holds_a_bounded_number_of_streams_released_as_they_close(
    live: LiveGateway,
) -> None:
    await wait_for(lambda: not live.feed.clients, timeout=5)
    si_chu = "client:si-chu"  # the token's subject
    async with contextlib.AsyncExitStack() as streams:
        held = [
            await streams.enter_async_context(live.stream("si-chu"))
            for _ in range(STREAMS_PER_PRINCIPAL - 1)
        ]
        async with live.stream("si-chu"):
            async with asyncio.timeout(5):  # an endless stream if it were let through
                refused = await live.http.get(
                    "/events/stream", headers=bearer(live.tokens["si-chu"])
                )
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "5"
            problem = refused.json()
            assert (problem["code"], problem["limit"]) == (
                "too_many_streams",
                STREAMS_PER_PRINCIPAL,
            )
            # Another principal, even of the same establishment, is not held back.
            async with live.stream("direction.chu"):
                pass
        # Closing one stream gives its place back.
        await wait_for(lambda: live.feed.streams_of[si_chu] == STREAMS_PER_PRINCIPAL - 1)
        async with live.stream("si-chu"):
            assert len(held) + 1 == live.feed.streams_of[si_chu]
    await wait_for(lambda: si_chu not in live.feed.streams_of, timeout=5)


# --- resuming -------------------------------------------------------------------------------


async def test_a_client_resuming_with_last_event_id_receives_what_it_missed(
    live: LiveGateway, outbox: Pipeline
) -> None:
    async with live.stream("commission") as stream:
        (seen,) = await outbox.write([bed_event(CHU)])
        assert (await stream.next_event()).id == str(seen.id)
    missed = await outbox.write([bed_event(CHU), bed_event(CH_NORD)])
    await wait_for(lambda: str(missed[-1].id) in live.feed.ring, timeout=5)

    async with live.stream("commission", headers={"Last-Event-ID": str(seen.id)}) as stream:
        by_header = [(await stream.next_event()).id for _ in missed]
    # Clients that cannot set headers (a plain EventSource's first connection) use the query.
    async with live.stream("commission", params={"last_event_id": str(seen.id)}) as stream:
        by_query = [(await stream.next_event()).id for _ in missed]

    assert by_header == by_query == [str(event.id) for event in missed]


async def test_an_unknown_last_event_id_gets_a_reset_then_live_events(
    live: LiveGateway, outbox: Pipeline
) -> None:
    unknown = str(uuid.uuid4())
    async with live.stream("commission", headers={"Last-Event-ID": unknown}) as stream:
        reset = await stream.next_event()
        (live_event,) = await outbox.write([bed_event(CHU)])
        after = await stream.next_event()

    assert reset.event == "reset"
    assert reset.json["reason"] == "unknown_last_event_id"
    # The reset moves the client's Last-Event-ID to now, so it is not asked again.
    assert reset.id is not None and reset.id != unknown
    assert after.id == str(live_event.id)


def test_the_ring_forgets_the_oldest_events_beyond_its_size() -> None:
    ring = EventRing(3)
    events = [FeedEvent.of(bed_event(CHU)) for _ in range(5)]
    for event in events:
        ring.append(event)

    assert len(ring) == 3
    assert ring.after(events[1].id) is None
    assert ring.after(events[2].id) == events[3:]
    assert ring.after(events[4].id) == []
    assert ring.latest_id == events[4].id


# --- slow clients, expiry, shutdown ---------------------------------------------------------


async def test_a_client_that_never_reads_is_dropped_and_its_events_released(
    live: LiveGateway,
) -> None:
    feed = live.feed
    dropped_before = live.metric("ght_feed_clients_dropped_total")
    # The other tests' streams are closed; their server side may take a moment to notice.
    await wait_for(lambda: not feed.clients, timeout=5)
    # A tiny receive window, and no read at all: the socket fills, then the client's queue.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", live.port))
    _, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(
            b"GET /events/stream HTTP/1.1\r\nHost: gateway\r\n"
            b"Authorization: Bearer " + live.tokens["commission"].encode() + b"\r\n\r\n"
        )
        await writer.drain()
        (slow,) = await wait_for(lambda: set(feed.clients), timeout=5)
        assert live.metric("ght_feed_clients") == 1

        # Megabytes of events, handed to the feed where its subscriptions hand theirs: through
        # the session's JetStream they would weigh on every other test.
        padding = "x" * 65_536
        sent = 0
        while slow.ended is None:
            assert sent < 1_000, "the client was never dropped"
            feed.dispatch(FeedEvent.of(bed_event(CHU, padding=padding)))
            sent += 1
            # Never more than its queue waits for the client, whatever was sent.
            assert slow.queue.qsize() <= CLIENT_QUEUE
            await asyncio.sleep(0.005)

        assert slow not in feed.clients
        assert slow.queue.qsize() <= 1  # at most the end marker: its events were released
        assert live.metric("ght_feed_clients_dropped_total") == dropped_before + 1
        assert live.metric("ght_feed_clients") == 0
        # Its response, stuck in a write that never completes, is cut: no request runs on.
        await wait_for(lambda: not live.server.server_state.tasks, timeout=5)
    finally:
        writer.close()


async def test_a_stream_ends_with_expired_when_its_token_expires(live: LiveGateway) -> None:
    principal = Principal.model_validate(
        {"sub": "short-lived", "establishments": ["*"], "exp": int(time.time()) + 1}
    )
    client = live.feed.open(principal, None, None)

    frames = [frame async for frame in live.feed.frames(client)]

    assert frames[-1].startswith(b"event: expired\n")
    assert client not in live.feed.clients


async def test_closing_the_feed_ends_its_streams_and_refuses_new_ones() -> None:
    # A feed of its own (never started): closing the module's would end the other tests' streams.
    settings = Settings(feed_heartbeat_s=60)
    feed = LiveFeed(settings, NatsConnection(settings.nats_url, "unused"), CollectorRegistry())
    principal = Principal(sub="someone", establishments=("*",))
    client = feed.open(principal, None, None)
    frames = feed.frames(client)
    await anext(frames)
    reading = asyncio.create_task(anext(frames))
    await asyncio.sleep(0)

    await feed.close()

    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reading, 2)
    assert feed.clients == set()
    with pytest.raises(FeedClosing):
        feed.open(principal, None, None)


async def test_sigterm_stops_a_gateway_with_open_streams_promptly(
    gateway_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": gateway_settings.database_url,
        "GATEWAY_NATS_URL": gateway_settings.nats_url,
        "GATEWAY_ENVIRONMENT": "test",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_DEMO": "true",
        "GATEWAY_DEMO_PASSWORD": DEMO_PASSWORD,
        "GATEWAY_METRICS_PORT": "0",
    }
    log = tmp_path / "gateway.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "uvicorn", "ght_gateway.main:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(5, read=None)) as http:

            async def answers() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/health/live")).status_code == 200
                return False

            await wait_for(answers, timeout=30, interval=0.2)
            token = await password_token(http, "commission")
            async with http.stream("GET", "/events/stream", headers=bearer(token)) as response:
                stream = SseReader(response)
                assert (await stream.next_frame()).retry is not None

                process.send_signal(signal.SIGTERM)

                # uvicorn stops only once every response is over: the stream must end.
                with pytest.raises(EOFError):
                    while True:
                        await stream.next_frame(timeout=5)
        exit_code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # uvicorn re-raises the signal it stopped on once its shutdown is complete.
    assert exit_code in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()


@pytest.mark.reliability
async def test_after_a_nats_crash_the_feed_resumes_at_the_next_event_it_had_not_seen(
    nats_server: NatsServer,
) -> None:
    settings = Settings(nats_url=nats_server.url, environment="test")
    connection = NatsConnection(nats_server.url, "gateway")
    connection.start()
    feed = LiveFeed(settings, connection, CollectorRegistry())
    feed.start()
    publisher = await nats.connect(nats_server.url, max_reconnect_attempts=-1)
    try:
        await wait_for(lambda: feed.following == set(STREAMS), timeout=15)
        commission = Principal(sub="commission", establishments=("*",), scope="beds:read")
        client = feed.open(commission, None, None)
        before = bed_event(CHU)
        await publish(publisher, before)
        assert (await asyncio.wait_for(client.queue.get(), 5)) == FeedEvent.of(before)

        nats_server.kill()
        nats_server.start()
        # Published before the feed has noticed: a subscription starting at "new" would miss it.
        during = bed_event(CHU)
        await publish(publisher, during)

        assert (await asyncio.wait_for(client.queue.get(), 10)) == FeedEvent.of(during)
        await asyncio.sleep(0.2)
        assert client.queue.empty()  # and nothing twice
    finally:
        await publisher.close()
        await feed.close()
        await connection.close()


async def publish(client: nats.NATS, event: Event, timeout: float = 10.0) -> None:
    """Publish as the outbox relay does: retried until a PubAck, de-duplicated by id."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.jetstream().publish(
                event.nats_subject,
                event.to_bytes(),
                timeout=1.0,
                headers={"Nats-Msg-Id": str(event.id)},
            )
            return
        except nats.errors.Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)

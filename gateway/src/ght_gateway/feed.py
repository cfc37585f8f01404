"""The live feed: ``GET /events/stream`` pushes the platform's events as Server-Sent Events.

One JetStream subscription per stream and per gateway process (an ephemeral
pull consumer, no acknowledgement) feeds an in-memory ring of the last events
and is fanned out to every connected client; a browser never costs a NATS
consumer. Each client has a bounded queue: a client that cannot keep up is
dropped, the gateway's memory does not grow with it. The ring lets a client
that reconnects with ``Last-Event-ID`` receive what it missed, or an
``event: reset`` when that id is no longer (or never was) in this process's
ring. See ``docs/adr/0007-live-feed.md``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import fnmatch
import itertools
import logging
import re
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import AfterValidator, ValidationError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ght_gateway.security import AUTHENTICATED_RESPONSES, require
from ght_gateway.settings import Settings
from ght_shared.auth import Principal
from ght_shared.errors import ServiceUnavailable, TooManyRequests
from ght_shared.events import Event
from ght_shared.messaging import NatsConnection
from ght_shared.payloads import Audience, Visibility, payload_for
from ght_shared.streams import STREAMS, ensure_stream, stream_for_subject

_log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One event of the stream (OpenAPI 3.1: the schema of each event).",
    "required": ["data"],
    "properties": {
        "id": {"type": "string", "description": "The event's id, for Last-Event-ID."},
        "event": {"type": "string", "description": "Its type, or a control event's name."},
        "data": {"type": "string", "description": "Its CloudEvents JSON, on one line."},
        "retry": {"type": "integer", "description": "Reconnection delay in ms."},
    },
}

# JetStream side. A fetch waits this long for events. No idle heartbeats on it: with them
# nats-py may hold an event until the next heartbeat (up to 0.5 s measured); instead an
# idle subscription asks for its consumer every CONSUMER_CHECK_S, to tell "no event yet"
# from "the consumer or the connection is gone" (a NATS restart).
FETCH_BATCH = 256
FETCH_TIMEOUT_S = 2.0
CONSUMER_CHECK_S = 5.0
# The server deletes a consumer nobody pulls from for this long (a gateway that died).
CONSUMER_INACTIVE_S = 60.0
RESUBSCRIBE_MIN_S = 0.5
RESUBSCRIBE_MAX_S = 5.0
CLOSE_TIMEOUT_S = FETCH_TIMEOUT_S + 1.0

# Client side.
FRAMES_PER_WRITE = 64
"""Queued events written to a client in one send: fewer, larger writes under load."""
FINAL_WRITE_GRACE_S = 2.0
"""How long a dropped or closed stream may take to write its last frame before it is cut."""
MAX_TYPE_PATTERNS = 20
_TYPE_PATTERN = re.compile(r"^[a-z0-9_.*?]+$")

HEARTBEAT_FRAME = b": heartbeat\n\n"


# --- events as the feed keeps them ----------------------------------------------------------


def sse_frame(data: bytes, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One Server-Sent Events message; ``data`` must hold no line break (compact JSON)."""
    head = b""
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def control_frame(event: str, *, event_id: str | None = None, **data: Any) -> bytes:
    """A message of the feed itself (``reset``, ``dropped``, ``expired``), data as JSON."""
    return sse_frame(orjson.dumps(data), event=event, event_id=event_id)


def read_scope_of(event: Event) -> str | None:
    """The scope that reads the event's owner on the REST API: ``beds:read`` for the
    ``BEDS`` stream; None for a subject no stream holds."""
    try:
        return f"{stream_for_subject(event.nats_subject).name.lower()}:read"
    except LookupError:
        return None


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """An event as the feed forwards it: who may see it, and its SSE frame built once."""

    id: str
    type: str
    audience: Audience | None
    """From the type's payload model; None for a type of no model (never forwarded)."""
    read_scope: str | None
    frame: bytes

    @classmethod
    def of(cls, event: Event) -> FeedEvent:
        event_id = str(event.id)
        model = payload_for(event.type)
        return cls(
            id=event_id,
            type=event.type,
            audience=model.audience(event) if model is not None else None,
            read_scope=read_scope_of(event),
            # Re-serialised rather than forwarded raw: orjson output has no line break,
            # which the SSE data field forbids.
            frame=sse_frame(event.to_bytes(), event=event.type, event_id=event_id),
        )

    @property
    def forwarded(self) -> bool:
        """False for an event no one may see: its type has no model (fail closed)."""
        return self.audience is not None and self.read_scope is not None

    def visible_to(self, principal: Principal) -> bool:
        """The rule of the type's :class:`Visibility`, for a principal holding the scope
        that reads the event's owner (as the REST API asks)."""
        audience = self.audience
        if audience is None or self.read_scope is None or not principal.has_scope(self.read_scope):
            return False
        if audience.visibility is Visibility.PUBLIC or principal.is_territorial:
            return True
        if audience.visibility is Visibility.ESTABLISHMENT:
            return any(principal.may_act_for(finess) for finess in audience.establishments)
        return False


class EventRing:
    """The last ``size`` events in arrival order, found by id in constant time."""

    def __init__(self, size: int) -> None:
        self._events: deque[FeedEvent] = deque(maxlen=size)
        self._positions: dict[str, int] = {}
        self._next_position = 0

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._positions

    @property
    def latest_id(self) -> str | None:
        return self._events[-1].id if self._events else None

    def append(self, event: FeedEvent) -> None:
        if len(self._events) == self._events.maxlen:
            del self._positions[self._events[0].id]
        self._events.append(event)
        self._positions[event.id] = self._next_position
        self._next_position += 1

    def after(self, event_id: str) -> list[FeedEvent] | None:
        """The events that came after ``event_id``; None when it is not in the ring."""
        position = self._positions.get(event_id)
        if position is None:
            return None
        first_kept = self._next_position - len(self._events)
        return list(itertools.islice(self._events, position - first_kept + 1, None))


# --- the ?types= filter ---------------------------------------------------------------------


def validate_type_patterns(value: str | None) -> str | None:
    """Check ``?types=``: comma-separated globs on the event type, e.g. ``ght.beds.*``."""
    if value is None:
        return None
    patterns = [pattern.strip() for pattern in value.split(",")]
    if len(patterns) > MAX_TYPE_PATTERNS:
        raise ValueError(f"at most {MAX_TYPE_PATTERNS} patterns are accepted")
    for pattern in patterns:
        if not _TYPE_PATTERN.match(pattern):
            raise ValueError(
                f"{pattern!r} is not a pattern on event types: use lower-case letters, digits,"
                " '_', '.', and the wildcards '*' and '?' (e.g. ght.beds.*), comma-separated"
            )
    return ",".join(patterns)


def compile_type_patterns(value: str | None) -> re.Pattern[str] | None:
    """One regular expression matching any of the (validated) patterns; None matches all."""
    if value is None:
        return None
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in value.split(",")))


# --- clients --------------------------------------------------------------------------------


class End(enum.Enum):
    """Why a stream ends, when the gateway ends it."""

    DROPPED = "dropped"
    """The client fell ``feed_client_queue`` events behind."""
    CLOSING = "closing"
    """The gateway is shutting down; the client reconnects elsewhere."""


class FeedClient:
    """One open stream: who reads it, what it asked for, and the events waiting for it."""

    def __init__(
        self, principal: Principal, types: re.Pattern[str] | None, queue_size: int
    ) -> None:
        self.principal = principal
        self.types = types
        self.opening: list[bytes] = []
        """Frames written before the live events: ``retry:``, then a reset or the missed events."""
        self.replayed = 0
        self.queue: asyncio.Queue[FeedEvent | End] = asyncio.Queue(queue_size)
        self.ended: End | None = None
        self.ending = asyncio.Event()
        """Set when the gateway ends the stream: it then has a grace period to finish."""

    def may_see(self, event: FeedEvent) -> bool:
        """Whether the event is visible to this principal and matches ``?types=``."""
        if not event.visible_to(self.principal):
            return False
        return self.types is None or self.types.match(event.type) is not None

    def end(self, why: End) -> None:
        """End the stream: what was queued is discarded, ``why`` is the last thing it reads."""
        if self.ended is not None:
            return
        self.ended = why
        # Emptied so that a client stuck in a write holds no events any more.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(why)
        self.ending.set()


# --- metrics --------------------------------------------------------------------------------


class FeedMetrics:
    """The feed's Prometheus metrics, in the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge(
            "ght_feed_clients", "SSE clients connected to the live feed.", registry=registry
        )
        self.received = Counter(
            "ght_feed_events_received",
            "Events received from JetStream by the live feed.",
            ["stream"],
            registry=registry,
        )
        self.forwarded = Counter(
            "ght_feed_events_forwarded", "Events written to SSE clients.", registry=registry
        )
        self.dropped = Counter(
            "ght_feed_clients_dropped",
            "SSE clients dropped because they read too slowly.",
            registry=registry,
        )
        self.withheld = Counter(
            "ght_feed_events_withheld",
            "Events forwarded to no one: their type has no payload model.",
            registry=registry,
        )
        self.resets = Counter(
            "ght_feed_resets",
            "Streams opened with a Last-Event-ID no longer in the ring (sent event: reset).",
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry, clients: Callable[[], int]) -> FeedMetrics:
        """The feed metrics of ``registry``, counting ``clients``.

        Registered once per registry: an app's lifespan may run more than once, and a
        registry refuses a second metric of the same name.
        """
        metrics = _METRICS.get(registry)
        if metrics is None:
            metrics = _METRICS[registry] = cls(registry)
        metrics.clients.set_function(lambda: float(clients()))
        return metrics


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, FeedMetrics] = weakref.WeakKeyDictionary()


# --- the feed -------------------------------------------------------------------------------


class FeedClosing(ServiceUnavailable):
    """503: the gateway is stopping; the client reconnects (to another replica)."""

    code = "feed_closing"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class FeedFull(ServiceUnavailable):
    """503: this process already serves ``feed_max_clients`` streams."""

    code = "feed_full"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class TooManyStreams(TooManyRequests):
    """429: the principal already holds ``feed_max_streams_per_principal`` streams here."""

    code = "too_many_streams"


class LiveFeed:
    """The process's subscription to every stream, its ring of recent events and its clients."""

    def __init__(
        self, settings: Settings, nats: NatsConnection, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.nats = nats
        self.ring = EventRing(settings.feed_ring_size)
        self.clients: set[FeedClient] = set()
        self.streams_of: collections.Counter[str] = collections.Counter()
        """Open streams per principal (``sub``)."""
        self.metrics = FeedMetrics.of(registry, lambda: len(self.clients))
        self.following: set[str] = set()
        """Streams whose subscription is up: events published from now on will be seen."""
        self.closing = False
        self.stopped = False
        """Set by :meth:`close`: the followers leave their loops (cancellation is not enough)."""
        self._followers: list[asyncio.Task[None]] = []

    # Events in.

    def start(self) -> None:
        """Follow every stream of EVENTS.md in the background."""
        for name in STREAMS:
            follower = _StreamFollower(self, name)
            self._followers.append(asyncio.create_task(follower.run(), name=f"feed-{name}"))

    def receive(self, stream: str, raw: bytes) -> None:
        """Take one message of a stream: parse it, then hand it to the ring and the clients."""
        self.metrics.received.labels(stream).inc()
        try:
            event = Event.from_bytes(raw)
        except (ValidationError, orjson.JSONDecodeError) as exc:
            _log.warning("live feed: unreadable event skipped", extra={"stream": stream})
            _log.debug("unreadable event: %s", exc)
            return
        self.dispatch(FeedEvent.of(event))

    def dispatch(self, event: FeedEvent) -> None:
        """Keep ``event`` in the ring and queue it for every client that may see it."""
        if not event.forwarded:
            self.metrics.withheld.inc()
            _log.debug("live feed: event of no known type withheld", extra={"type": event.type})
            return
        if event.id in self.ring:
            return  # a redelivery (JetStream is at least once): clients have it already
        self.ring.append(event)
        for client in list(self.clients):
            if not client.may_see(event):
                continue
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.drop(client)

    # Clients.

    def open(
        self, principal: Principal, types: str | None, last_event_id: str | None
    ) -> FeedClient:
        """Register a client, its opening frames ready: a reset, or the events it missed.

        Synchronous on purpose: no event can slip between the replay taken from the
        ring and the registration that queues the next ones.
        """
        if self.closing:
            raise FeedClosing("The gateway is shutting down; reconnect in a moment.")
        if len(self.clients) >= self.settings.feed_max_clients:
            raise FeedFull(
                "This gateway serves as many live streams as it may; retry shortly.",
                limit=self.settings.feed_max_clients,
            )
        cap = self.settings.feed_max_streams_per_principal
        if self.streams_of[principal.sub] >= cap:
            raise TooManyStreams(
                f"{principal.sub} already has {cap} live streams open on this gateway: close"
                " one (or share one between views) before opening another.",
                retry_after_s=5,
                limit=cap,
            )
        client = FeedClient(
            principal, compile_type_patterns(types), self.settings.feed_client_queue
        )
        client.opening.append(f"retry: {self.settings.feed_retry_ms}\n\n".encode())
        if last_event_id:
            missed = self.ring.after(last_event_id)
            if missed is None:
                self.metrics.resets.inc()
                # The id moves the client's cursor to now (empty: forget it), so that its
                # next reconnection does not ask for the unknown id again.
                client.opening.append(
                    control_frame(
                        "reset",
                        event_id=self.ring.latest_id or "",
                        reason="unknown_last_event_id",
                        detail="Events since your Last-Event-ID are not available here: "
                        "reload your views; live events follow.",
                    )
                )
            else:
                replay = [event.frame for event in missed if client.may_see(event)]
                client.opening.extend(replay)
                client.replayed = len(replay)
        self.clients.add(client)
        self.streams_of[principal.sub] += 1
        return client

    def drop(self, client: FeedClient) -> None:
        """End a client that fell too far behind (its queue is full)."""
        if client.ended is None:
            self.metrics.dropped.inc()
            _log.info("live feed: slow client dropped", extra={"principal": client.principal.sub})
        client.end(End.DROPPED)
        self.release(client)

    def release(self, client: FeedClient) -> None:
        """Forget a client whose stream is over, however it ended (once)."""
        if client not in self.clients:
            return
        self.clients.remove(client)
        self.streams_of[client.principal.sub] -= 1
        if self.streams_of[client.principal.sub] <= 0:
            del self.streams_of[client.principal.sub]

    async def frames(self, client: FeedClient) -> AsyncGenerator[bytes, None]:
        """The bytes of one stream: its opening, then events, heartbeats when idle, its end."""
        try:
            opening, client.opening = client.opening, []
            for start in range(0, len(opening), FRAMES_PER_WRITE):
                yield b"".join(opening[start : start + FRAMES_PER_WRITE])
            self.metrics.forwarded.inc(client.replayed)
            expires_at = client.principal.expires_at
            while True:
                wait_s = self.settings.feed_heartbeat_s
                if expires_at is not None:
                    wait_s = min(wait_s, expires_at - time.time())
                    if wait_s <= 0:
                        # The token is no longer valid: its holder must reconnect with a new one.
                        yield control_frame("expired", reason="token_expired")
                        return
                try:
                    async with asyncio.timeout(wait_s):
                        item = await client.queue.get()
                except TimeoutError:
                    yield HEARTBEAT_FRAME
                    continue
                chunk, forwarded, end = _take_frames(item, client.queue)
                if end is End.DROPPED:
                    chunk += control_frame(
                        "dropped",
                        reason="too_slow",
                        detail="This stream fell too far behind and was closed; reconnect "
                        "with Last-Event-ID.",
                    )
                if chunk:
                    yield chunk
                self.metrics.forwarded.inc(forwarded)
                if end is not None:
                    return
        finally:
            self.release(client)

    def end_streams(self) -> None:
        """Refuse new streams and end the open ones, so that the HTTP server can stop."""
        self.closing = True
        for client in list(self.clients):
            client.end(End.CLOSING)

    async def close(self) -> None:
        """End the streams, cancel the subscriptions and delete their consumers."""
        self.end_streams()
        self.stopped = True
        for task in self._followers:
            task.cancel()
        # Bounded: a cancellation landing inside nats-py's fetch (its inner task and
        # asyncio.wait_for) can be swallowed; the follower then sees ``stopped`` after its
        # fetch times out (FETCH_TIMEOUT_S).
        if not self._followers:
            return
        _, stuck = await asyncio.wait(self._followers, timeout=CLOSE_TIMEOUT_S)
        if stuck:
            _log.warning("live feed: %d subscriptions did not stop in time", len(stuck))
        self._followers.clear()


def _take_frames(
    item: FeedEvent | End, queue: asyncio.Queue[FeedEvent | End]
) -> tuple[bytes, int, End | None]:
    """``item`` and what else is queued (up to a write's worth): bytes, events, end if any."""
    frames: list[bytes] = []
    while True:
        if isinstance(item, End):
            return b"".join(frames), len(frames), item
        frames.append(item.frame)
        if len(frames) >= FRAMES_PER_WRITE or queue.empty():
            return b"".join(frames), len(frames), None
        item = queue.get_nowait()


class _Gap(Exception):
    """Messages went missing between the server and us (a consumer sequence was skipped)."""


class _StreamFollower:
    """Forwards the new events of one stream; after any failure, resubscribes where it stopped.

    An ephemeral pull consumer without acknowledgements, held in the server's memory: the
    gateway keeps no durable state. The first subscription starts after the stream's last
    message (the events published from now on, as ``DeliverPolicy.NEW``) but by sequence,
    so a later one continues at the next sequence not yet forwarded: neither a gap nor a
    duplicate across NATS reconnects or server restarts.
    """

    def __init__(self, feed: LiveFeed, stream: str) -> None:
        self.feed = feed
        self.stream = stream
        self.next_sequence: int | None = None
        self.consumer: str | None = None

    async def run(self) -> None:
        await self.feed.nats.wait_connected()
        delay = RESUBSCRIBE_MIN_S
        while not self.feed.stopped:
            subscription: JetStreamContext.PullSubscription | None = None
            try:
                subscription = await self._subscribe()
                self.feed.following.add(self.stream)
                delay = RESUBSCRIBE_MIN_S
                await self._forward(subscription)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning(
                    "live feed: subscription to %s lost, resubscribing: %s %s",
                    self.stream,
                    exc.__class__.__name__,
                    exc,
                    extra={"stream": self.stream, "next_sequence": self.next_sequence},
                )
            finally:
                self.feed.following.discard(self.stream)
                await self._unsubscribe(subscription)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_S)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js = self.feed.nats.jetstream
        settings = self.feed.settings
        # The owner may not have started yet: the stream's definition is shared, so create it.
        await ensure_stream(
            js,
            STREAMS[self.stream],
            replicas=settings.stream_replicas,
            duplicate_window_s=settings.stream_duplicate_window_s,
        )
        if self.next_sequence is None:
            stream = await js.stream_info(self.stream)
            self.next_sequence = stream.state.last_seq + 1
        config = ConsumerConfig(
            description=f"live feed of {settings.service_name}",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.next_sequence,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=CONSUMER_INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        info = await js.add_consumer(self.stream, config)
        self.consumer = info.name
        _log.info(
            "live feed: following %s from sequence %d",
            self.stream,
            self.next_sequence,
            extra={"stream": self.stream},
        )
        subscription: JetStreamContext.PullSubscription = await js.pull_subscribe_bind(
            consumer=info.name, stream=self.stream
        )
        return subscription

    async def _forward(self, subscription: JetStreamContext.PullSubscription) -> None:
        delivered = 0
        checked_at = time.monotonic()
        while not self.feed.stopped:
            try:
                messages = await subscription.fetch(FETCH_BATCH, FETCH_TIMEOUT_S)
            except (FetchTimeoutError, NatsTimeoutError):
                if time.monotonic() - checked_at > CONSUMER_CHECK_S:
                    # Raises (not found, no responders) when the server lost the consumer.
                    await subscription.consumer_info()
                    checked_at = time.monotonic()
                continue  # nothing was published
            # Any other error (no responder, connection closed) goes up: resubscribe.
            checked_at = time.monotonic()
            for message in messages:
                sequences = message.metadata.sequence
                delivered += 1
                if sequences.consumer != delivered:
                    raise _Gap(f"expected delivery {delivered}, got {sequences.consumer}")
                self.next_sequence = sequences.stream + 1
                self.feed.receive(self.stream, message.data)

    async def _unsubscribe(self, subscription: JetStreamContext.PullSubscription | None) -> None:
        if subscription is not None:
            with suppress(Exception):
                await subscription.unsubscribe()
        if self.consumer is not None and self.feed.nats.connected:
            # Not required (the server forgets it after CONSUMER_INACTIVE_S) but tidy.
            with suppress(Exception):
                await asyncio.wait_for(
                    self.feed.nats.jetstream.delete_consumer(self.stream, self.consumer), 1.0
                )
        self.consumer = None


# --- HTTP -----------------------------------------------------------------------------------


class EventStreamResponse(StreamingResponse):
    """An SSE response that also ends when the gateway abandons its client.

    A client that stopped reading leaves its last write blocked for ever (the socket
    is full): once the feed has ended the stream, the write gets ``FINAL_WRITE_GRACE_S``
    and is then cut, so that neither the task nor the connection outlives it.
    """

    media_type = EVENT_STREAM

    def __init__(self, feed: LiveFeed, client: FeedClient) -> None:
        frames = feed.frames(client)
        super().__init__(
            frames,
            headers={
                "Cache-Control": "no-cache, no-transform",
                # Proxies (nginx) must not buffer the stream.
                "X-Accel-Buffering": "no",
            },
        )
        self._frames = frames
        self._feed = feed
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tasks = [
            asyncio.create_task(self.stream_response(send)),
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(self._cut_when_abandoned()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            # Runs the generator's cleanup now, even when it was left suspended in a write;
            # and a client that left before its first frame never ran it at all.
            await self._frames.aclose()
            self._feed.release(self._client)
        for outcome in outcomes:
            # A write to a client that left is the ordinary end of a stream, not an error.
            if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                raise outcome

    async def _cut_when_abandoned(self) -> None:
        await self._client.ending.wait()
        await asyncio.sleep(FINAL_WRITE_GRACE_S)


router = APIRouter(tags=["live feed"])

FeedReader = Annotated[Principal, Depends(require("territory:read"))]
TypePatterns = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Comma-separated glob patterns on the event type, e.g. "
        "`ght.beds.*,ght.staffing.need.*`; all events when absent.",
    ),
    AfterValidator(validate_type_patterns),
]


def live_feed(request: Request) -> LiveFeed:
    feed: LiveFeed = request.app.state.feed
    return feed


@router.get(
    "/events/stream",
    response_class=EventStreamResponse,
    status_code=200,
    summary="Live events (Server-Sent Events)",
    responses={
        200: {
            "description": "An endless `text/event-stream`. Each event: `id:` its id, `event:` "
            "its type, `data:` its CloudEvents JSON. Control events: `reset` (the "
            "Last-Event-ID is unknown here: reload your views), `dropped` (the client read "
            "too slowly), `expired` (the token expired). Comment lines are heartbeats.",
            "content": {EVENT_STREAM: {"schema": SSE_EVENT_SCHEMA}},
        },
        429: {"description": "The caller holds its maximum of streams (`too_many_streams`)."},
        503: {"description": "The gateway is shutting down or serves its maximum of streams."},
        **AUTHENTICATED_RESPONSES,
    },
)
async def event_stream(
    principal: FeedReader,
    feed: Annotated[LiveFeed, Depends(live_feed)],
    types: TypePatterns = None,
    last_event_id: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Resume after this event id, for clients that cannot send the "
            "Last-Event-ID header (the header wins when both are given).",
        ),
    ] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=200)
    ] = None,
) -> EventStreamResponse:
    """The events the caller may see, as they happen.

    Who sees an event is declared by its type (`docs/roles.md`, "The live feed"): public
    types reach every principal, establishment types the territorial principals and those
    of the establishments they concern, territorial types territorial principals only;
    the caller needs the read scope of the event's owner too, and a type without a model
    is never forwarded. A client
    that reconnects with `Last-Event-ID` receives the events it missed while they are
    still in this gateway's memory, else an `event: reset`.
    """
    # The header wins: on reconnecting, a browser sends the id it last received there,
    # while the URL keeps the one the stream was first opened with.
    client = feed.open(principal, types, last_event_id_header or last_event_id)
    return EventStreamResponse(feed, client)


# --- lifespan -------------------------------------------------------------------------------


@asynccontextmanager
async def feed_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Follow the streams while the app runs; end every stream and subscription on exit."""
    settings: Settings = app.state.settings
    feed = LiveFeed(settings, app.state.nats, app.state.metrics.registry)
    app.state.feed = feed
    feed.start()
    restore_handlers = _end_streams_on_exit_signals(feed)
    try:
        yield
    finally:
        restore_handlers()
        await feed.close()


_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _end_streams_on_exit_signals(feed: LiveFeed) -> Callable[[], None]:
    """Chain the server's SIGINT/SIGTERM handlers so that a stop signal ends the streams first.

    uvicorn waits for open responses to finish before it runs the lifespan's shutdown, and
    an event stream never finishes: without this it would wait for ever (or until killed).
    Only a Python handler installed by the server is chained; returns the undo.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}

    for signum in _EXIT_SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(
            signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            loop.call_soon_threadsafe(feed.end_streams)
            previous(signum, frame)

        signal.signal(signum, handler)
        installed[signum] = (handler, previous)

    def restore() -> None:
        for signum, (handler, previous) in installed.items():
            # Leave a handler installed since by someone else in place.
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)

    return restore

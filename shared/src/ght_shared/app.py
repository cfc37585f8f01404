"""The application builder every service and the gateway use.

It wires the mechanics once (settings, database, NATS, token verifier,
problem+json errors, request context, health, metrics, outbox relay,
consumers) so that a service's ``main.py`` only names its own parts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ght_shared import health
from ght_shared.auth import TokenVerifier
from ght_shared.consumer import Consumer, ConsumerSpec
from ght_shared.context import (
    child_traceparent,
    client_request_id_var,
    request_id_var,
    traceparent_var,
)
from ght_shared.db import Database
from ght_shared.errors import install_error_handlers, problem, unexpected_error_response
from ght_shared.logs import configure_logging
from ght_shared.messaging import NatsConnection
from ght_shared.metrics import ServiceMetrics, install_metrics, route_label
from ght_shared.openapi import install_problem_openapi
from ght_shared.outbox import OutboxRelay
from ght_shared.queries import refuse_unknown_query_parameters
from ght_shared.settings import ServiceSettings
from ght_shared.streams import STREAMS, ensure_stream

_log = logging.getLogger(__name__)
_SAFE_REQUEST_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


RequestObserver = Callable[[Scope, int, float], None]
"""Sees each answered request, in its context (request id), after the response: no await."""


@dataclass(frozen=True)
class ServiceParts:
    """What a service brings to the builder."""

    title: str
    description: str = ""
    routers: Sequence[APIRouter] = ()
    owned_streams: Sequence[str] = ()
    upload_paths: Sequence[str] = ()
    """Path prefixes accepting large bodies (file imports), up to ``max_upload_bytes``."""
    body_limits: Mapping[str, int] = field(default_factory=dict)
    """Path prefix -> body limit in bytes, for routes between the two (large JSON batches)."""
    json_value_limits: Mapping[str, int] = field(default_factory=dict)
    """Path prefix -> most JSON values a body may hold, where ``max_json_values`` is too
    few (large JSON batches)."""
    lifespans: Sequence[Callable[[FastAPI], AbstractAsyncContextManager[None]]] = ()
    """Extra resources of the service, entered in order once the runtime is up."""
    consumers: Sequence[ConsumerSpec] = ()
    middleware: Sequence[Middleware] = ()
    """The service's own middleware, inside the request context (request id, body limit)."""
    request_observers: Sequence[RequestObserver] = ()
    """Called once per request with the status the client got and the duration (seconds)."""
    public_metrics: bool = True
    """Serve ``/metrics`` on the app itself; False where the app is public (the gateway
    serves them on a port of its own, ``metrics_listener``)."""
    version: str = "0.1.0"
    extra_tags: Sequence[dict[str, str]] = field(default_factory=tuple)


@dataclass
class Runtime:
    """The process's long-lived resources, reachable as ``app.state.runtime``."""

    settings: ServiceSettings
    database: Database
    nats: NatsConnection
    metrics: ServiceMetrics
    relay: OutboxRelay
    consumers: list[Consumer]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    provisioning: asyncio.Task[None] | None = None


class BodyTooLarge(Exception):
    pass


def _parsed_as_json(content_type: bytes) -> bool:
    """Whether FastAPI reads a body of this type as JSON: no type, ``application/json``
    or ``application/*+json`` (``application/x-ndjson`` is read line by line)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return (
        not media
        or media == b"application/json"
        or (media.startswith(b"application/") and media.endswith(b"+json"))
    )


def _json_values(chunk: bytes) -> int:
    """An upper bound of the JSON values and members that start in ``chunk``: every one
    but the first follows a comma or opens an array or object (commas inside strings make
    it an over-estimate). Counted at C speed, as the body arrives, before it is parsed."""
    return chunk.count(b",") + chunk.count(b"[") + chunk.count(b"{")


def _by_prefix(path: str, limits: Mapping[str, int], default: int) -> int:
    for prefix, limit in limits.items():
        if path.startswith(prefix):
            return limit
    return default


class RequestContextMiddleware:
    """Per request: id and trace context, body size limit, metrics, access log, last-resort errors.

    Pure ASGI, so bodies stream through without buffering.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        max_upload_bytes: int,
        upload_paths: Sequence[str] = (),
        observers: Sequence[RequestObserver] = (),
        body_limits: Mapping[str, int] | None = None,
        trust_request_id: bool = True,
        max_json_values: int | None = None,
        json_value_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.trust_request_id = trust_request_id
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_paths = tuple(upload_paths)
        self.body_limits = dict(body_limits or {})
        self.observers = tuple(observers)
        self.max_json_values = max_json_values
        self.json_value_limits = dict(json_value_limits or {})

    def _is_upload(self, path: str) -> bool:
        return bool(self.upload_paths) and path.startswith(self.upload_paths)

    def _body_limit(self, path: str) -> int:
        default = self.max_upload_bytes if self._is_upload(path) else self.max_body_bytes
        return _by_prefix(path, self.body_limits, default)

    def _json_value_limit(self, path: str, headers: Mapping[bytes, bytes]) -> int | None:
        """The most JSON values the body may hold; None where it is not parsed here as a
        whole (an upload is streamed, a CSV or NDJSON body is read line by line)."""
        if self.max_json_values is None or self._is_upload(path):
            return None
        if not _parsed_as_json(headers.get(b"content-type", b"")):
            return None
        return _by_prefix(path, self.json_value_limits, self.max_json_values)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        safe = incoming if len(incoming) <= 128 and set(incoming) <= _SAFE_REQUEST_ID else ""
        # A public door never lets a caller choose the id its logs are keyed by: the
        # caller's is kept beside it, as its correlation id (an unsafe one is dropped).
        request_id = (safe if self.trust_request_id else "") or uuid.uuid4().hex
        client_request_id = None if self.trust_request_id else safe or None
        traceparent = child_traceparent(headers.get(b"traceparent", b"").decode("latin-1"))
        rid_token = request_id_var.set(request_id)
        crid_token = client_request_id_var.set(client_request_id)
        tp_token = traceparent_var.set(traceparent)
        started = time.perf_counter()
        status = 500
        response_started = False
        limit = self._body_limit(scope["path"])
        received = 0
        value_limit = self._json_value_limit(scope["path"], headers)
        values = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if refused:
                return  # a 413 went out already: whatever the app answers is dropped
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", request_id.encode()))
                message["headers"].append((b"traceparent", traceparent.encode()))
            await send(message)

        refused = False

        async def refuse(response: Response) -> None:
            nonlocal refused
            await response(scope, receive, send_with_id)
            refused = True

        def too_large() -> Response:
            return problem(
                413,
                "payload_too_large",
                "Payload too large",
                f"The request body exceeds the limit of {limit} bytes.",
                limit=limit,
            )

        def too_many_values() -> Response:
            return problem(
                413,
                "too_many_json_values",
                "Payload too large",
                f"The JSON body holds more than {value_limit} values (counted as its commas,"
                " brackets and braces), the limit of this route.",
                limit=value_limit,
            )

        async def receive_limited() -> Message:
            nonlocal received, values
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if value_limit is not None:
                    values += _json_values(body)
                refusal = (
                    too_large()
                    if received > limit
                    else too_many_values()
                    if value_limit is not None and values > value_limit
                    else None
                )
                if refusal is not None:
                    # Answer now: the app may turn the error below into its own 400.
                    if not response_started:
                        await refuse(refusal)
                    raise BodyTooLarge
            return message

        try:
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > limit:
                await refuse(too_large())
            else:
                await self.app(scope, receive_limited, send_with_id)
        except BodyTooLarge:
            if not refused:
                raise
        except Exception as exc:
            if response_started or refused:
                raise  # the response has started: nothing sensible can be sent any more
            await unexpected_error_response(exc)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.request_seconds.labels(scope["method"], route).observe(elapsed)
            _log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            for observe in self.observers:
                try:
                    observe(scope, status, elapsed)
                except Exception:
                    _log.exception("request observer failed")
            request_id_var.reset(rid_token)
            client_request_id_var.reset(crid_token)
            traceparent_var.reset(tp_token)


@asynccontextmanager
async def background_task(coroutine: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``coroutine`` as a task for the duration of the ``async with``; cancel it after."""
    task = asyncio.create_task(coroutine, name=name)
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


GC_THRESHOLDS = (50_000, 20, 20)
"""The collector's thresholds in a service process (Python's are 700, 10, 10).

A request or an import that builds many objects (40 000 events at the end of a large
import: 1.1 s with Python's thresholds, 0.67 s with these) otherwise triggers full
collections of the whole heap again and again, all its long-lived objects included.
The first threshold counts container objects allocated and not yet freed: cyclic
garbage waits for 50 000 of them instead of 700, a few megabytes at most."""


def create_service_app(settings: ServiceSettings, parts: ServiceParts) -> FastAPI:
    """Build the FastAPI app of one deployable from its settings and its parts."""
    configure_logging(settings.service_name, settings.log_level)
    gc.set_threshold(*GC_THRESHOLDS)
    metrics = ServiceMetrics(settings.service_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await _start(app, settings, parts, metrics)
        try:
            async with AsyncExitStack() as extras:
                for extra in parts.lifespans:
                    await extras.enter_async_context(extra(app))
                yield
        finally:
            await app.state.token_verifier.revocations.close()
            await _stop(runtime)

    app = FastAPI(
        title=parts.title,
        description=parts.description,
        version=parts.version,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.token_verifier = TokenVerifier(settings)
    install_error_handlers(app)
    install_problem_openapi(app)
    if parts.public_metrics:
        install_metrics(app, metrics)
    for middleware in reversed(parts.middleware):  # the first listed runs first
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload_paths=parts.upload_paths,
        body_limits=parts.body_limits,
        observers=parts.request_observers,
        trust_request_id=settings.trust_request_id,
        max_json_values=settings.max_json_values,
        json_value_limits=parts.json_value_limits,
    )
    strict_query = [Depends(refuse_unknown_query_parameters)]
    app.include_router(health.router, dependencies=strict_query)
    for router in parts.routers:
        declare_route_scopes(router)
        app.include_router(router, dependencies=strict_query)
    return app


SCOPES_EXTENSION = "x-required-scopes"
"""The OpenAPI extension of an operation listing the scopes of which the caller needs one."""


def declare_route_scopes(router: APIRouter) -> None:
    """Write each route's scopes into its OpenAPI operation (:data:`SCOPES_EXTENSION`).

    The scopes are those of the route's ``require_scope(...)`` dependency: the gateway
    reads them from the document to check a route's coarse scope, so that a service
    declares its routes' scopes once, in its own code.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        found = _required_scopes(route.dependant)
        if len(found) > 1:
            raise ValueError(f"{route.path}: one scope dependency per route, not {found}")
        if found:
            route.openapi_extra = {**(route.openapi_extra or {}), SCOPES_EXTENSION: list(found[0])}


def _required_scopes(dependant: Dependant) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for dependency in dependant.dependencies:
        scopes = getattr(dependency.call, "required_scopes", None)
        if scopes:
            found.append(tuple(scopes))
        else:
            found += _required_scopes(dependency)
    return list(dict.fromkeys(found))


async def _start(
    app: FastAPI, settings: ServiceSettings, parts: ServiceParts, metrics: ServiceMetrics
) -> Runtime:
    database = Database(settings)
    nats = NatsConnection(settings.nats_url, settings.service_name, settings.nats_connect_timeout_s)
    nats.start()
    relay = OutboxRelay(settings, nats, metrics)
    consumers = [Consumer(spec, settings, database, nats, metrics) for spec in parts.consumers]
    runtime = Runtime(settings, database, nats, metrics, relay, consumers)
    app.state.database = database
    app.state.nats = nats
    app.state.runtime = runtime
    runtime.provisioning = asyncio.create_task(_provision(settings, nats, parts.owned_streams))
    runtime.tasks.append(asyncio.create_task(relay.run(), name="outbox-relay"))
    for consumer in consumers:
        runtime.tasks.append(asyncio.create_task(consumer.run(), name=consumer.spec.durable))
    _log.info("started", extra={"streams": list(parts.owned_streams)})
    return runtime


async def _provision(
    settings: ServiceSettings, nats: NatsConnection, streams: Sequence[str]
) -> None:
    await nats.wait_connected()
    while True:
        try:
            for name in streams:
                await ensure_stream(
                    nats.jetstream,
                    STREAMS[name],
                    replicas=settings.stream_replicas,
                    duplicate_window_s=settings.stream_duplicate_window_s,
                )
            return
        except Exception as exc:
            _log.warning("stream provisioning failed, retrying: %s", exc)
            await asyncio.sleep(1.0)


async def _stop(runtime: Runtime, grace_s: float = 10.0) -> None:
    """Drain in order: consumers finish their batch, the relay its publish, then close pools."""
    if runtime.provisioning is not None:
        runtime.provisioning.cancel()
    for consumer in runtime.consumers:
        consumer.stop()
    runtime.relay.stop()
    _, pending = await asyncio.wait(runtime.tasks, timeout=grace_s) if runtime.tasks else ((), ())
    for task in pending:
        task.cancel()
    for task in pending:
        with suppress(asyncio.CancelledError, Exception):
            await task
    await runtime.nats.close()
    await runtime.database.dispose()
    _log.info("stopped")

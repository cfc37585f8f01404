"""The gateway's connections to the four services: one HTTP client and one circuit breaker each.

:class:`Upstreams` is built once per process by :func:`upstreams_lifespan` and kept on
``app.state.upstreams`` (:func:`upstreams_of` from a request). Everything that calls a
service goes through it, so every call shares the same pools, breakers, retry rule,
trace propagation and metrics:

- the router of ``/api/<service>/...`` (``proxy.py``) streams requests with
  :meth:`Upstreams.send`;
- aggregations (the territorial overview, the merged OpenAPI document) read JSON with
  :meth:`Upstreams.get_json`::

      upstreams = upstreams_of(request)
      try:
          beds = await upstreams.get_json(
              "beds", "/beds/availability?establishment=420784878",
              headers={"Authorization": request.headers["authorization"]},
          )
      except UpstreamError as exc:   # 502/503/504 problem, names the service
          beds = None                # show the rest of the overview

Rules (see ``docs/adr/0006-gateway-routing.md``):

- retries only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE), only when the
  connection could not be opened (nothing was sent, nothing received), never once the
  request body has started to flow;
- a breaker per service opens after ``breaker_failures`` consecutive failed requests
  (unreachable, timed out, broken connection: an HTTP answer, even a 500, is a success for
  the breaker since the service is alive); while open, calls fail at once with
  :class:`CircuitOpen`; after ``breaker_reset_s`` one probe request goes through and its
  outcome closes or reopens the breaker;
- ``X-Request-ID`` and ``traceparent`` of the current request are sent along.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import aiohttp
from fastapi import FastAPI, Request
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from yarl import URL

from ght_gateway.settings import Settings
from ght_shared.auth import SERVICES
from ght_shared.context import request_id_var, traceparent_var
from ght_shared.errors import DomainError, NotFound

_log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods a request may be sent again with (RFC 9110 §9.2.2)."""

HOP_BY_HOP_HEADERS = frozenset(
    {
        # RFC 9110 §7.6.1 (connection-specific fields)...
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        # ...and the other per-hop fields of RFC 2616 §13.5.1, meant for the proxy itself.
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

_RETRY_BACKOFF_S = 0.05
_MAX_JSON_BYTES = 16 * 1_048_576


# -- errors ------------------------------------------------------------------------------------


class UnknownService(NotFound):
    code = "unknown_service"
    title = "Unknown service"

    def __init__(self, service: str) -> None:
        super().__init__(
            f"No service is named {service!r}; the services are: {', '.join(SERVICES)}.",
            service=service,
        )


class UpstreamError(DomainError):
    """Root of the failures to get an answer from a service (502 when nothing more precise)."""

    status = 502
    code = "bad_gateway"
    title = "Bad gateway"

    def __init__(self, service: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, service=service, **extra)
        self.service = service


class UpstreamUnavailable(UpstreamError):
    """The service cannot be reached now: 503 with ``Retry-After``."""

    status = 503
    code = "upstream_unavailable"
    title = "Service unavailable"

    def __init__(self, service: str, detail: str, retry_after_s: int, **extra: Any) -> None:
        super().__init__(service, detail, retry_after=retry_after_s, **extra)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class CircuitOpen(UpstreamUnavailable):
    """Refused without calling the service: its breaker is open after repeated failures."""

    code = "circuit_open"
    title = "Service temporarily unavailable"


class UpstreamBusy(UpstreamUnavailable):
    """Every connection of the gateway's pool to the service is in use."""

    code = "upstream_busy"
    title = "Service busy"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    title = "Gateway timeout"


class UpstreamBadResponse(UpstreamError):
    """:meth:`Upstreams.get_json` got a non-2xx status or a body that is not JSON."""

    code = "upstream_bad_response"
    title = "Bad response from a service"

    def __init__(self, service: str, detail: str, upstream_status: int, **extra: Any) -> None:
        super().__init__(service, detail, upstream_status=upstream_status, **extra)
        self.upstream_status = upstream_status


# -- circuit breaker ---------------------------------------------------------------------------


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit:
    """Leave to send one request, from :meth:`CircuitBreaker.acquire`."""

    __slots__ = ("probe",)

    def __init__(self, probe: bool) -> None:
        self.probe = probe


class CircuitBreaker:
    """Consecutive-failure breaker: closed → open → half-open (one probe) → closed or open.

    Single event loop, no lock needed. The caller reports each request it was let
    through: :meth:`succeeded`, :meth:`failed`, or :meth:`release` when it ended without
    telling anything about the service (cancelled, refused body).
    """

    def __init__(
        self, failure_threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self.clock = clock
        """Where the time comes from (a test may put a manual clock here)."""
        self._failures = 0
        self._opened_at: float | None = None
        self._probe: Permit | None = None
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def acquire(self) -> Permit | None:
        """A permit to call the service now, or None: fail fast without calling it."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(probe=False)
        if state is BreakerState.HALF_OPEN and self._probe is None:
            self._probe = Permit(probe=True)
            return self._probe
        return None

    def succeeded(self, permit: Permit) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe = None

    def failed(self, permit: Permit) -> None:
        self._failures += 1
        # A failed probe, or a failure while already open, restarts the wait.
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            if self._opened_at is None:
                self.times_opened += 1
            self._opened_at = self.clock()
            self._probe = None

    def release(self, permit: Permit) -> None:
        """The request ended without a verdict: let another one probe."""
        if self._probe is permit:
            self._probe = None

    def retry_after_s(self) -> int:
        """Whole seconds a client should wait before trying again (at least 1)."""
        if self._opened_at is None:
            return 1
        remaining = self.reset_s - (self.clock() - self._opened_at)
        return max(1, math.ceil(remaining))


# -- metrics -----------------------------------------------------------------------------------


_STATE_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class UpstreamMetrics(Collector):
    """Upstream calls and breaker states, in the app's registry (``/metrics``).

    - ``ght_upstream_requests_total{upstream,method,outcome}``: outcome is the status code
      answered by the service, or ``unreachable``, ``timeout``, ``broken``, ``busy``,
      ``circuit_open`` when it did not answer;
    - ``ght_upstream_request_duration_seconds{upstream}``: until the response headers;
    - ``ght_upstream_retries_total{upstream}``: attempts sent again after a connect error;
    - ``ght_upstream_breaker_state{upstream}``: 0 closed, 1 half-open, 2 open (read at
      scrape time, so an open breaker shows half-open as soon as its wait is over);
    - ``ght_upstream_breaker_opened_total{upstream}``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ght_upstream_requests",
            "Requests the gateway sent to a service, by outcome.",
            ["upstream", "method", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "ght_upstream_request_duration_seconds",
            "Time until a service's response headers.",
            ["upstream"],
            registry=registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.retries = Counter(
            "ght_upstream_retries",
            "Attempts sent again after a connect error.",
            ["upstream"],
            registry=registry,
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        registry.register(self)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families())

    def _families(self) -> Iterable[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "ght_upstream_breaker_state",
            "Circuit breaker of a service: 0 closed, 1 half-open, 2 open.",
            labels=["upstream"],
        )
        opened = GaugeMetricFamily(
            "ght_upstream_breaker_opened",
            "Times the breaker of a service opened since the process started.",
            labels=["upstream"],
        )
        for name, breaker in self.breakers.items():
            state.add_metric([name], _STATE_VALUES[breaker.state])
            opened.add_metric([name], float(breaker.times_opened))
        yield state
        yield opened

    @classmethod
    def of(cls, app: FastAPI) -> UpstreamMetrics:
        """The app's instance, created on first use (a registry takes each name once)."""
        metrics: UpstreamMetrics | None = getattr(app.state, "upstream_metrics", None)
        if metrics is None:
            metrics = cls(app.state.metrics.registry)
            app.state.upstream_metrics = metrics
        return metrics


# -- request body ------------------------------------------------------------------------------


class StreamedBody:
    """A request body passed through chunk by chunk; knows whether it has started to flow.

    A retry is only safe while nothing of it was consumed: the client's bytes cannot be
    read twice, and keeping them to replay would mean holding the whole body in memory.

    While :meth:`Upstreams.send` waits for the service, each chunk must be written within
    the request's timeout: the time from handing a chunk over to being asked for the next
    one is the time its write took (the client's own pace is not counted).
    """

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks
        self.started = False
        self._write_timeout_s: float | None = None
        self._on_stall: Callable[[], None] | None = None

    def _watch(self, timeout_s: float | None, on_stall: Callable[[], None] | None) -> None:
        self._write_timeout_s = timeout_s
        self._on_stall = on_stall

    def _stalled(self) -> None:
        if self._on_stall is not None:
            self._on_stall()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._flow()

    async def _flow(self) -> AsyncIterator[bytes]:
        if self.started:
            raise RuntimeError("The request body was already sent and cannot be read again.")
        self.started = True
        loop = asyncio.get_running_loop()
        async for chunk in self._chunks:
            if not chunk:  # an empty chunk would end a chunked body early
                continue
            timeout_s = self._write_timeout_s
            watchdog = loop.call_later(timeout_s, self._stalled) if timeout_s else None
            try:
                yield chunk  # resumed once the chunk is written
            finally:
                if watchdog is not None:
                    watchdog.cancel()


# -- responses ---------------------------------------------------------------------------------


class UpstreamBodyError(Exception):
    """The service's body could not be read to its end (timed out, or the connection broke)."""

    def __init__(self, service: str, cause: BaseException, timed_out: bool) -> None:
        super().__init__(f"{service}: {cause!r}")
        self.service = service
        self.cause = cause
        self.timed_out = timed_out


class UpstreamResponse:
    """A service's response from :meth:`Upstreams.send`: headers read, body not yet.

    ``raw_headers`` are the pairs as received (bytes, in order, repeated names kept);
    :meth:`aiter_raw` yields the body as it arrives, never decoded (``Content-Encoding``
    is the service's), and raises :class:`UpstreamBodyError` if it stops half-way.
    :meth:`aclose` must be awaited in every case (it gives the connection back).
    """

    __slots__ = ("_closed", "_response", "_service", "_slots", "status_code")

    def __init__(
        self, service: str, response: aiohttp.ClientResponse, slots: asyncio.Semaphore
    ) -> None:
        self._service = service
        self._response = response
        self._slots = slots
        self._closed = False
        self.status_code: int = response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._response.headers

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return self._response.raw_headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def complete(self) -> bool:
        """Whether the whole body has already been received (reading it cannot wait)."""
        return self._response.content.is_eof()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamBodyError(
                self._service, exc, timed_out=isinstance(exc, TimeoutError)
            ) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        response = self._response
        if response.content.at_eof():
            response.release()  # read to its end: the connection goes back to the pool
        else:
            response.close()
        self._slots.release()


# -- the clients -------------------------------------------------------------------------------


class Upstream:
    """One service: its base URL, its pooled client, its breaker."""

    def __init__(
        self,
        name: str,
        base_url: str,
        client: aiohttp.ClientSession,
        breaker: CircuitBreaker,
        max_connections: int = 100,
    ) -> None:
        self.name = name
        self.base_url = URL(base_url)
        self.client = client
        self.breaker = breaker
        self.slots = asyncio.Semaphore(max_connections)
        """Requests in flight (each holds a connection until its response is closed)."""
        self._origin = str(self.base_url.origin())
        self._prefix = self.base_url.raw_path.rstrip("/")

    def url(self, target: str) -> URL:
        """The service's URL of ``target`` (a path with its query string, percent-encoded)."""
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        # Already-encoded bytes pass as they are (%2F must stay %2F); others are encoded.
        raw = self._origin + self._prefix + quote(path, safe=_PATH_SAFE)
        if query:
            raw += "?" + quote(query, safe=_QUERY_SAFE)
        return URL(raw, encoded=True)


_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# aiohttp adds these when the request has none: a proxy sends only what it was given.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# h11 (httpx) accepted response heads up to 16 KiB.
_MAX_HEADER_BYTES = 16 * 1024

HeaderPairs = Iterable[tuple[str, str]]


def trace_headers() -> dict[str, str]:
    """``X-Request-ID`` and ``traceparent`` of the request being served (if any)."""
    headers: dict[str, str] = {}
    request_id = request_id_var.get()
    if request_id:
        headers["x-request-id"] = request_id
    traceparent = traceparent_var.get()
    if traceparent:
        headers["traceparent"] = traceparent
    return headers


class Upstreams:
    """The clients and breakers of the four services (``app.state.upstreams``).

    ``send`` is the one way out: breaker, retries, timeouts, metrics. ``get_json`` is a
    convenience on top of it for aggregations. Build it with an event loop running (the
    lifespan does).
    """

    def __init__(self, settings: Settings, metrics: UpstreamMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.default_timeout_s = settings.upstream_timeout_s
        self.connect_timeout_s = settings.upstream_connect_timeout_s
        self.retries = settings.upstream_retries
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._upstreams: dict[str, Upstream] = {}
        for name in SERVICES:
            client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=settings.upstream_max_connections,
                    limit_per_host=0,
                    keepalive_timeout=settings.upstream_keepalive_expiry_s,
                ),
                timeout=self._timeout(self.default_timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),  # shared by every caller: keep none
                auto_decompress=False,  # bodies pass through as the service sent them
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                trust_env=False,  # no proxy from the environment between gateway and services
                max_line_size=_MAX_HEADER_BYTES,
                max_field_size=_MAX_HEADER_BYTES,
            )
            # aiohttp sends an idempotent request again on its own when a kept-alive
            # connection breaks; the retry rule here is ours alone (connect errors only).
            client._retry_connection = False
            breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
            self._upstreams[name] = Upstream(
                name,
                getattr(settings.upstreams, name),
                client,
                breaker,
                settings.upstream_max_connections,
            )
            if metrics is not None:
                metrics.breakers[name] = breaker

    def _timeout(self, read_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(read_s)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=self.connect_timeout_s, sock_read=read_s
            )
            self._timeouts[read_s] = timeout
        return timeout

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._upstreams)

    def __contains__(self, service: object) -> bool:
        return service in self._upstreams

    def get(self, service: str) -> Upstream:
        """The service named ``service``; :class:`UnknownService` (404) if there is none."""
        try:
            return self._upstreams[service]
        except KeyError:
            raise UnknownService(service) from None

    def breaker(self, service: str) -> CircuitBreaker:
        return self.get(service).breaker

    async def aclose(self) -> None:
        for upstream in self._upstreams.values():
            await upstream.client.close()

    async def send(
        self,
        service: str,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | HeaderPairs | None = None,
        body: StreamedBody | None = None,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> UpstreamResponse:
        """Send one request to a service and return its response, body not read yet.

        The caller must ``await response.aclose()`` (or read it whole). ``target`` is
        the service-side path with its query string (``/beds?ward=A``); ``headers`` are
        sent as given (add :func:`trace_headers` yourself, or use :meth:`get_json`).
        ``timeout_s`` bounds each wait for the service (connecting excepted): the
        response headers, each chunk read or written. ``retries`` replaces
        ``upstream_retries`` for this request (an idempotent one).

        Raises :class:`CircuitOpen`, :class:`UpstreamUnavailable`, :class:`UpstreamBusy`
        (503), :class:`UpstreamTimeout` (504) or :class:`UpstreamError` (502).
        """
        upstream = self.get(service)
        method = method.upper()
        breaker = upstream.breaker
        permit = breaker.acquire()
        if permit is None:
            self._count(service, method, "circuit_open")
            raise CircuitOpen(
                service,
                f"The {service} service failed repeatedly; the gateway stops calling it for a "
                "while.",
                breaker.retry_after_s(),
            )
        read_s = timeout_s or self.default_timeout_s
        timeout = self._timeout(read_s)
        retried = self.retries if retries is None else retries
        attempts = 1 + retried if method in IDEMPOTENT_METHODS else 1
        url = upstream.url(target)
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        # Host is the service's (aiohttp sets it from the URL); a body without
        # Content-Length is sent chunked by aiohttp, which sets Transfer-Encoding itself.
        sent = [
            (name, value)
            for name, value in pairs
            if (lowered := name.lower()) != "host" and lowered != "transfer-encoding"
        ]
        slots = upstream.slots
        started = time.perf_counter()
        try:
            for attempt in range(1, attempts + 1):
                if slots.locked():
                    try:
                        async with asyncio.timeout(self.connect_timeout_s):
                            await slots.acquire()
                    except TimeoutError as exc:
                        # Our own pool is full: says nothing about the service's health.
                        self._count(service, method, "busy")
                        raise UpstreamBusy(
                            service,
                            f"Too many requests in flight to the {service} service; retry shortly.",
                            1,
                        ) from exc
                else:
                    await slots.acquire()  # free: returns at once
                try:
                    response = await self._request(upstream, method, url, sent, body, timeout)
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                    slots.release()
                    if attempt < attempts and (body is None or not body.started):
                        if self.metrics is not None:
                            self.metrics.retries.labels(service).inc()
                        await asyncio.sleep(_RETRY_BACKOFF_S * 2 ** (attempt - 1))
                        continue
                    breaker.failed(permit)
                    self._count(service, method, "unreachable")
                    _log.warning(
                        "upstream unreachable",
                        extra={"upstream": service, "attempts": attempt, "error": repr(exc)},
                    )
                    raise UpstreamUnavailable(
                        service,
                        f"The {service} service cannot be reached; retry shortly.",
                        breaker.retry_after_s(),
                        attempts=attempt,
                    ) from exc
                except TimeoutError as exc:
                    slots.release()
                    breaker.failed(permit)
                    self._count(service, method, "timeout")
                    raise UpstreamTimeout(
                        service,
                        f"The {service} service did not answer within {read_s:g} s.",
                        timeout_s=read_s,
                    ) from exc
                except (aiohttp.ClientError, OSError) as exc:
                    slots.release()
                    breaker.failed(permit)
                    self._count(service, method, "broken")
                    _log.warning(
                        "upstream connection broken",
                        extra={"upstream": service, "error": repr(exc)},
                    )
                    raise UpstreamError(
                        service, f"The connection to the {service} service broke: {exc!r}."
                    ) from exc
                except BaseException:
                    slots.release()
                    raise
                breaker.succeeded(permit)
                self._count(service, method, str(response.status))
                if self.metrics is not None:
                    self.metrics.seconds.labels(service).observe(time.perf_counter() - started)
                return UpstreamResponse(service, response, slots)
            raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
        finally:
            # A probe cancelled (client gone) or stopped by a refused body said nothing.
            breaker.release(permit)

    async def _request(
        self,
        upstream: Upstream,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        body: StreamedBody | None,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """One attempt; the response headers are read. aiohttp times the reads (from the
        end of the body on); the body's writes are timed here."""
        if body is None:
            return await upstream.client.request(
                method,
                url,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,  # a redirect is the client's to follow
            )
        async with asyncio.timeout(None) as deadline:
            loop = asyncio.get_running_loop()
            body._watch(timeout.sock_read, lambda: deadline.reschedule(loop.time()))
            try:
                return await upstream.client.request(
                    method, url, headers=headers, data=body, timeout=timeout, allow_redirects=False
                )
            finally:
                body._watch(None, None)

    async def get_json(
        self,
        service: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        max_bytes: int = _MAX_JSON_BYTES,
        retries: int | None = None,
    ) -> Any:
        """GET ``target`` from a service and return its decoded JSON body.

        Adds ``Accept: application/json`` and the current request's ``X-Request-ID`` and
        ``traceparent``; pass the caller's ``Authorization`` in ``headers`` (the services
        check the token themselves). Idempotent, so retried on connect errors.

        Raises the errors of :meth:`send`, and :class:`UpstreamBadResponse` (502) for a
        non-2xx status (``upstream_status``; the service's problem is in ``extra``), a
        body over ``max_bytes`` or one that is not JSON.
        """
        sent = {"accept": "application/json", **trace_headers()}
        sent.update({name.lower(): value for name, value in (headers or {}).items()})
        response = await self.send(
            service, "GET", target, headers=sent, timeout_s=timeout_s, retries=retries
        )
        try:
            content = bytearray()
            async for chunk in response.aiter_raw():
                content += chunk
                if len(content) > max_bytes:
                    raise UpstreamBadResponse(
                        service,
                        f"The {service} service answered more than {max_bytes} bytes.",
                        response.status_code,
                    )
        except UpstreamBodyError as exc:
            if exc.timed_out:
                raise UpstreamTimeout(
                    service, f"The {service} service stopped sending."
                ) from exc.cause
            raise UpstreamError(
                service, f"The connection to the {service} service broke: {exc.cause!r}."
            ) from exc.cause
        finally:
            await response.aclose()
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if content and encoding in ("gzip", "x-gzip", "deflate"):
            # Not asked for (no Accept-Encoding is sent), but decoded if a service does it.
            try:
                inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)
                content = bytearray(inflate.decompress(content, max_bytes + 1))
            except zlib.error:
                content = bytearray(b"\xff")  # not JSON: reported below
            if len(content) > max_bytes:
                raise UpstreamBadResponse(
                    service,
                    f"The {service} service answered more than {max_bytes} bytes.",
                    response.status_code,
                )
        try:
            document = json.loads(content) if content else None
        except ValueError:
            document = None
            if response.is_success:
                raise UpstreamBadResponse(
                    service,
                    f"The {service} service answered a body that is not JSON.",
                    response.status_code,
                ) from None
        if not response.is_success:
            raise UpstreamBadResponse(
                service,
                f"The {service} service answered {response.status_code} to GET {target}.",
                response.status_code,
                upstream_problem=document,
            )
        return document

    def _count(self, service: str, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(service, method, outcome).inc()


def upstreams_of(request: Request) -> Upstreams:
    upstreams: Upstreams = request.app.state.upstreams
    return upstreams


@asynccontextmanager
async def upstreams_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the clients of the services (``app.state.upstreams``); close them at shutdown."""
    upstreams = Upstreams(app.state.settings, UpstreamMetrics.of(app))
    app.state.upstreams = upstreams
    try:
        yield
    finally:
        await upstreams.aclose()

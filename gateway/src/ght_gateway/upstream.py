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
import http.cookiejar
import json
import logging
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ght_gateway.roles import SERVICES
from ght_gateway.settings import Settings
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


class StreamedBody(httpx.AsyncByteStream):
    """A request body passed through chunk by chunk; knows whether it has started to flow.

    A retry is only safe while nothing of it was consumed: the client's bytes cannot be
    read twice, and keeping them to replay would mean holding the whole body in memory.
    """

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.started:
            raise httpx.StreamConsumed()
        self.started = True
        async for chunk in self._chunks:
            if chunk:  # an empty chunk would end a chunked body early
                yield chunk


# -- the clients -------------------------------------------------------------------------------


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """The clients are shared by every caller: never keep a service's cookies for the next."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class Upstream:
    """One service: its base URL, its pooled client, its breaker."""

    def __init__(
        self, name: str, base_url: str, client: httpx.AsyncClient, breaker: CircuitBreaker
    ) -> None:
        self.name = name
        self.base_url = httpx.URL(base_url)
        self.client = client
        self.breaker = breaker

    def url(self, target: str) -> httpx.URL:
        """The service's URL of ``target`` (a path with its query string, percent-encoded)."""
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        # Already-encoded bytes pass as they are (%2F must stay %2F); others are encoded.
        raw = self.base_url.raw_path.split(b"?")[0].rstrip(b"/") + _encoded(path, _PATH_SAFE)
        if query:
            raw += b"?" + _encoded(query, _QUERY_SAFE)
        return self.base_url.copy_with(raw_path=raw)


_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def _encoded(text: str, safe: str) -> bytes:
    return quote(text, safe=safe).encode("ascii")


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
    convenience on top of it for aggregations.
    """

    def __init__(self, settings: Settings, metrics: UpstreamMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.default_timeout_s = settings.upstream_timeout_s
        self.connect_timeout_s = settings.upstream_connect_timeout_s
        self.retries = settings.upstream_retries
        limits = httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_keepalive,
            keepalive_expiry=settings.upstream_keepalive_expiry_s,
        )
        self._upstreams: dict[str, Upstream] = {}
        for name in SERVICES:
            client = httpx.AsyncClient(
                limits=limits,
                timeout=httpx.Timeout(self.default_timeout_s, connect=self.connect_timeout_s),
                follow_redirects=False,  # a redirect is the client's to follow
                trust_env=False,  # no proxy from the environment between gateway and services
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            )
            breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
            self._upstreams[name] = Upstream(
                name, getattr(settings.upstreams, name), client, breaker
            )
            if metrics is not None:
                metrics.breakers[name] = breaker

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
            await upstream.client.aclose()

    async def send(
        self,
        service: str,
        method: str,
        target: str,
        *,
        headers: httpx.Headers | Mapping[str, str] | None = None,
        body: StreamedBody | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """Send one request to a service and return its response, body not read yet.

        The caller must ``await response.aclose()`` (or read it whole). ``target`` is
        the service-side path with its query string (``/beds?ward=A``); ``headers`` are
        sent as given (add :func:`trace_headers` yourself, or use :meth:`get_json`).
        ``timeout_s`` bounds each wait for the service (connecting excepted): the
        response headers, each chunk read or written.

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
        timeout = httpx.Timeout(
            timeout_s or self.default_timeout_s,
            connect=self.connect_timeout_s,
            pool=self.connect_timeout_s,
        )
        attempts = 1 + self.retries if method in IDEMPOTENT_METHODS else 1
        url = upstream.url(target)
        sent = httpx.Headers(headers)
        # httpx adds Host itself only to the requests it encodes the body of.
        sent["host"] = url.netloc.decode("ascii")
        started = time.perf_counter()
        try:
            for attempt in range(1, attempts + 1):
                request = httpx.Request(
                    method,
                    url,
                    headers=sent,
                    stream=body if body is not None else httpx.ByteStream(b""),
                    extensions={"timeout": timeout.as_dict()},
                )
                try:
                    response = await upstream.client.send(request, stream=True)
                except httpx.PoolTimeout as exc:
                    # Our own pool is full: says nothing about the service's health.
                    self._count(service, method, "busy")
                    raise UpstreamBusy(
                        service,
                        f"Too many requests in flight to the {service} service; retry shortly.",
                        1,
                    ) from exc
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
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
                except httpx.TimeoutException as exc:
                    breaker.failed(permit)
                    self._count(service, method, "timeout")
                    raise UpstreamTimeout(
                        service,
                        f"The {service} service did not answer within "
                        f"{timeout.read or self.default_timeout_s:g} s.",
                        timeout_s=timeout.read,
                    ) from exc
                except httpx.TransportError as exc:
                    breaker.failed(permit)
                    self._count(service, method, "broken")
                    _log.warning(
                        "upstream connection broken",
                        extra={"upstream": service, "error": repr(exc)},
                    )
                    raise UpstreamError(
                        service, f"The connection to the {service} service broke: {exc!r}."
                    ) from exc
                breaker.succeeded(permit)
                self._count(service, method, str(response.status_code))
                if self.metrics is not None:
                    self.metrics.seconds.labels(service).observe(time.perf_counter() - started)
                return response
            raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
        finally:
            # A probe cancelled (client gone) or stopped by a refused body said nothing.
            breaker.release(permit)

    async def get_json(
        self,
        service: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        max_bytes: int = _MAX_JSON_BYTES,
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
        response = await self.send(service, "GET", target, headers=sent, timeout_s=timeout_s)
        try:
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > max_bytes:
                    raise UpstreamBadResponse(
                        service,
                        f"The {service} service answered more than {max_bytes} bytes.",
                        response.status_code,
                    )
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(service, f"The {service} service stopped sending.") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(
                service, f"The connection to the {service} service broke: {exc!r}."
            ) from exc
        finally:
            await response.aclose()
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

"""Routing: ``/api/{service}/{path}`` → the service's ``/{path}``, bodies streamed both ways.

The caller must hold a valid token and the coarse scope of the route: the one the service
declares for it in its OpenAPI document, else ``beds:read`` for a safe method and
``beds:write`` otherwise (:mod:`ght_gateway.scopes`); the service checks the fine rights
again with the same token (``Authorization`` is forwarded). Hop-by-hop headers are
dropped in both directions; ``X-Request-ID``, ``traceparent`` and
``X-Forwarded-For/Proto/Host`` are set. Timeouts, retries and the breaker are those of
:class:`ght_gateway.upstream.Upstreams`; import routes (``settings.upstream_import_prefixes``)
get ``upstream_import_timeout_s`` and the upload body limit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Annotated
from urllib.parse import quote_from_bytes

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from ght_gateway.scopes import RouteScopes
from ght_gateway.security import GatewayPrincipal
from ght_gateway.settings import Settings
from ght_gateway.upstream import (
    HOP_BY_HOP_HEADERS,
    StreamedBody,
    UnknownService,
    UpstreamBodyError,
    UpstreamResponse,
    trace_headers,
    upstreams_of,
)
from ght_shared.auth import SERVICES, Principal, ensure_scope
from ght_shared.errors import InvalidInput
from ght_shared.queries import forwards_query

_log = logging.getLogger(__name__)

PROXY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Set by the gateway itself, never copied from the caller.
_REPLACED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "expect",  # the gateway's server answered the 100-continue already
        "x-request-id",
        "traceparent",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    }
)
# The gateway's own middleware adds these to every response (see ght_shared.app); the
# service's copies would duplicate them.
_REPLACED_RESPONSE_HEADERS = frozenset({"x-request-id", "traceparent", "date", "server"})
_PATH_SAFE = b"/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + b"?"


# An encoded dot, slash or backslash: a service (or a proxy in front of it) may decode it
# into a path other than the one whose scope the gateway checked.
_ENCODED_SEPARATOR = re.compile(rb"%(2e|2f|5c)", re.IGNORECASE)


class UnsafePath(InvalidInput):
    """400: a routed path the gateway will not forward as it might not be the one checked."""

    status = 400
    code = "unsafe_path"
    title = "Unsafe path"


def path_violation(raw_path: bytes) -> tuple[str, str] | None:
    """Why a routed path is refused, as ``(rule, message)``; None when it is safe.

    The gateway checks a route's scope on the path as sent and forwards it as sent: a path
    that a server could read as another one (``/targets/../records``) would pass the
    check of one route and reach another, so it is refused rather than normalised.
    """
    path = raw_path.split(b"?", 1)[0]
    if _ENCODED_SEPARATOR.search(path):
        return "encoded_separator", "an encoded '.', '/' or '\\' (%2e, %2f, %5c) is not accepted"
    if b"\\" in path:
        return "backslash", "a backslash is not accepted"
    segments = path.split(b"/")[1:]
    if any(segment in (b".", b"..") for segment in segments):
        return "dot_segment", "a '.' or '..' segment is not accepted"
    if b"" in segments[:-1]:  # a trailing slash is the service's to answer
        return "empty_segment", "an empty segment ('//') is not accepted"
    return None


def without_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` less the hop-by-hop fields and those the ``Connection`` header names."""
    headers = [(name.lower(), value) for name, value in headers]
    named = {
        token.strip().lower().encode("latin-1")
        for name, value in headers
        if name == b"connection"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    }
    dropped = {name.encode() for name in HOP_BY_HOP_HEADERS} | named
    return [(name, value) for name, value in headers if name not in dropped]


def timeout_for(settings: Settings, path: str) -> float:
    """How long to wait for the service: import routes get ``upstream_import_timeout_s``."""
    if path.startswith(settings.upstream_import_prefixes):
        return settings.upstream_import_timeout_s
    return settings.upstream_timeout_s


class ServiceRoute(APIRoute):
    """``/api/{service}/...``, a full match only when ``service`` is one of the services.

    So any other ``/api/...`` route of the gateway (``/api/territory/overview``) wins
    whatever the order the routers are included in; an unknown name still ends here
    (a partial match, used when nothing else matches) and gets 404 ``unknown_service``.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.FULL and child_scope["path_params"].get("service") not in SERVICES:
            return Match.PARTIAL, child_scope
        return match, child_scope


router = APIRouter(tags=["routing"], route_class=ServiceRoute)


async def _known_service(request: Request, service: str) -> str:
    """The service named by the path, once the path is known to be safe to route (400)."""
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    violation = path_violation(raw_path)
    if violation is not None:
        rule, message = violation
        raise UnsafePath(f"The path cannot be routed: {message}.", field="path", rule=rule)
    if service not in SERVICES:
        raise UnknownService(service)
    return service


async def _authorised(
    request: Request,
    service: Annotated[str, Depends(_known_service)],
    principal: GatewayPrincipal,
) -> Principal:
    """The caller, if it holds the route's coarse scope (403 otherwise)."""
    path = "/" + request.path_params.get("path", "").lstrip("/")
    route_scopes: RouteScopes = request.app.state.route_scopes
    scopes = route_scopes.required(service, request.method, path)
    ensure_scope(principal, *scopes, action=f"{request.method} on the {service} service")
    return principal


def _service_target(request: Request) -> str:
    """The service-side path and query, still percent-encoded as the caller sent them."""
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    # "/api/<service>/<rest>": keep <rest> byte for byte (decoding would turn %2F into /).
    rest = raw_path.split(b"?", 1)[0].split(b"/", 3)[3] if raw_path.count(b"/") >= 3 else b""
    target = "/" + quote_from_bytes(rest, safe=_PATH_SAFE)
    query: bytes = request.scope.get("query_string", b"")
    if query:
        target += "?" + quote_from_bytes(query, safe=_QUERY_SAFE)
    return target


def _request_headers(request: Request) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The headers to send to the service, and whether the request has a body."""
    incoming = [(name.lower(), value) for name, value in request.headers.raw]
    has_length = any(name == b"content-length" for name, _ in incoming)
    chunked = any(
        name == b"transfer-encoding" and b"chunked" in value.lower() for name, value in incoming
    )
    forwarded_for = [value for name, value in incoming if name == b"x-forwarded-for"]
    headers = [
        (name, value)
        for name, value in without_hop_by_hop(incoming)
        if name.decode("latin-1") not in _REPLACED_REQUEST_HEADERS
    ]
    if chunked and not has_length:
        # The body keeps flowing in chunks to the service; its length is unknown here.
        headers.append((b"transfer-encoding", b"chunked"))
    chain = [hop.strip() for value in forwarded_for for hop in value.split(b",") if hop.strip()]
    client = request.client.host.encode("latin-1") if request.client else None
    # Behind a trusted proxy, uvicorn (--proxy-headers) has already taken the client from
    # this chain: appending it again would name it twice.
    if client and client not in chain:
        chain.append(client)
    if chain:
        headers.append((b"x-forwarded-for", b", ".join(chain)))
    headers.append((b"x-forwarded-proto", request.url.scheme.encode("latin-1")))
    host = request.headers.get("host")
    if host:
        headers.append((b"x-forwarded-host", host.encode("latin-1")))
    headers.extend((name.encode(), value.encode()) for name, value in trace_headers().items())
    has_body = chunked or any(
        name == b"content-length" and value.strip() not in (b"", b"0") for name, value in incoming
    )
    return headers, has_body


def _text(raw: bytes) -> str:
    """A header as text for the client, which sends it UTF-8 encoded: the same bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class UpstreamStreamBroken(RuntimeError):
    """The service's body stopped half-way: the connection to the caller is cut, so the
    caller cannot take a truncated body for a complete one."""


class ProxiedResponse(Response):
    """A service's response passed through as it arrives (status, headers, raw body).

    The body is never decoded (``Content-Encoding`` stays the service's) nor held whole;
    if the caller disconnects, the service's response is closed at once.
    """

    def __init__(self, upstream: UpstreamResponse, service: str) -> None:
        self.upstream = upstream
        self.service = service
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = [
            (name, value)
            for name, value in without_hop_by_hop(upstream.raw_headers)
            if name.decode("latin-1") not in _REPLACED_RESPONSE_HEADERS
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        broken: UpstreamBodyError | None = None

        async def stream() -> None:
            nonlocal broken
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            try:
                async for chunk in self.upstream.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamBodyError as exc:
                broken = exc
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            if self.upstream.complete:
                # The whole body is here already: nothing more to read from the service,
                # so nothing to stop if the caller leaves (a write to a gone client returns).
                await stream()
            else:
                async with anyio.create_task_group() as group:

                    async def stream_then_stop() -> None:
                        await stream()
                        group.cancel_scope.cancel()

                    group.start_soon(stream_then_stop)
                    # uvicorn (ASGI 2.3) drops writes to a gone client silently: watch for
                    # the disconnect to stop reading the service.
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()
        finally:
            await self.upstream.aclose()
        if broken is not None:
            _log.warning(
                "upstream body broken off",
                extra={"upstream": self.service, "error": repr(broken.cause)},
            )
            raise UpstreamStreamBroken(f"{self.service}: {broken.cause!r}") from broken.cause
        if self.background is not None:
            await self.background()


@router.api_route(
    "/api/{service}/{path:path}",
    methods=PROXY_METHODS,
    include_in_schema=False,  # the services' own paths are in the merged document (openapi.py)
)
@forwards_query  # the service checks its own parameters
async def route_to_service(
    request: Request, service: str, _: Annotated[Principal, Depends(_authorised)]
) -> Response:
    """Send the request to the service and stream its answer back."""
    settings: Settings = request.app.state.settings
    headers, has_body = _request_headers(request)
    upstream = await upstreams_of(request).send(
        service,
        request.method,
        _service_target(request),
        headers=[(_text(name), _text(value)) for name, value in headers],
        body=StreamedBody(request.stream()) if has_body else None,
        timeout_s=timeout_for(settings, request.url.path),
    )
    return ProxiedResponse(upstream, service)

"""One OpenAPI document for the whole platform: the gateway's routes and the services' under
``/api/<service>``.

``GET /openapi.json`` (and so ``/docs``) fetches each service's ``/openapi.json`` through
:class:`ght_gateway.upstream.Upstreams` (same breakers), reuses it for
``settings.openapi_cache_s`` (a failure for at most 5 s), and merges:

- paths: ``/health/ready`` of beds becomes ``/api/beds/health/ready``;
- components: each name gets the service's prefix (``HTTPValidationError`` of beds becomes
  ``beds.HTTPValidationError``) and every ``$ref`` (and discriminator mapping) follows;
- operations: ``operationId`` prefixed (``beds__ready_health_ready_get``), tags prefixed
  (``beds: health``), security replaced by the gateway's bearer token (what the gateway
  asks for; the same token reaches the service), and the gateway's own error answers
  (400, 401, 403, 429, 502, 503, 504) added where the service does not document them;
- a service that cannot be fetched is left out: it is named in ``x-unavailable`` and in
  ``info.description``; the document itself never fails.

The gateway's own routes keep FastAPI's schema generation: :func:`install_merged_openapi`
wraps ``app.openapi`` rather than replacing it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from ght_gateway.upstream import UpstreamError, Upstreams
from ght_shared.auth import SERVICES

_log = logging.getLogger(__name__)

Document = dict[str, Any]

GATEWAY_BEARER = "gatewayBearer"
PROBLEM_SCHEMA = "GatewayProblem"
COMPONENT_SECTIONS = (
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "securitySchemes",
    "links",
    "callbacks",
    "pathItems",
)
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_FAILURE_CACHE_S = 5.0
_FETCH_TIMEOUT_S = 3.0

_GATEWAY_ERRORS = {
    "400": "The path cannot be routed: a `.` or `..` segment, or an encoded `.`, `/` or `\\` "
    "(problem+json `unsafe_path`).",
    "401": "No valid bearer token (problem+json `unauthenticated`).",
    "403": "The token lacks the route's scope: one of its `x-required-scopes`, else "
    "`<service>:read` or `<service>:write` (problem+json `forbidden`).",
    "429": "Rate limit of the caller exceeded (problem+json `rate_limited`, `Retry-After`).",
    "502": "The service's connection broke (problem+json `bad_gateway`).",
    "503": "The service cannot be reached or its breaker is open (problem+json "
    "`upstream_unavailable` or `circuit_open`, `Retry-After`).",
    "504": "The service did not answer in time (problem+json `upstream_timeout`).",
}


def service_prefix(service: str) -> str:
    """The prefix of a service's component names in the merged document."""
    return f"{service}."


def _escape_pointer(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _unescape_pointer(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _rewrite_ref(ref: str, service: str) -> str:
    """A local ``$ref`` of the service's document, pointing into the merged document."""
    if ref.startswith("#/components/"):
        parts = ref.split("/")  # "#", "components", section, name, ...
        if len(parts) >= 4:
            parts[3] = _escape_pointer(service_prefix(service) + _unescape_pointer(parts[3]))
            return "/".join(parts)
    if ref.startswith("#/paths/"):
        parts = ref.split("/")
        if len(parts) >= 3:
            parts[2] = _escape_pointer(f"/api/{service}" + _unescape_pointer(parts[2]))
            return "/".join(parts)
    return ref  # external references are left as they are


def _rewrite_refs(node: Any, service: str) -> Any:
    """A copy of ``node`` with every local reference rewritten for the merged document."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = _rewrite_ref(value, service)
            elif key == "discriminator" and isinstance(value, dict):
                out[key] = _rewrite_refs(value, service)
                mapping = value.get("mapping")
                if isinstance(mapping, dict):
                    out[key]["mapping"] = {
                        name: _rewrite_ref(target, service) if isinstance(target, str) else target
                        for name, target in mapping.items()
                    }
            else:
                out[key] = _rewrite_refs(value, service)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, service) for item in node]
    return node


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}
            }
        },
    }


def _gateway_operation(operation: dict[str, Any], service: str) -> dict[str, Any]:
    """A service's operation as the gateway serves it."""
    operation = dict(operation)
    if "operationId" in operation:
        operation["operationId"] = f"{service}__{operation['operationId']}"
    operation["tags"] = [f"{service}: {tag}" for tag in operation.get("tags", [])] or [service]
    # The gateway asks for its bearer token on every routed path and forwards it, so that
    # is the one requirement to show; the services' own schemes are not merged.
    operation["security"] = [{GATEWAY_BEARER: []}]
    responses = dict(operation.get("responses", {}))
    for status, description in _GATEWAY_ERRORS.items():
        responses.setdefault(status, _problem_response(description))
    operation["responses"] = responses
    return operation


@dataclass(frozen=True)
class ServiceSection:
    """What one service contributes to the merged document."""

    paths: dict[str, Any]
    components: dict[str, dict[str, Any]]
    tags: list[dict[str, Any]]


def service_section(service: str, document: Mapping[str, Any]) -> ServiceSection:
    """Prefix a service's paths, component names, references, operation ids and tags."""
    rewritten: Document = _rewrite_refs(dict(document), service)
    paths: dict[str, Any] = {}
    for path, item in (rewritten.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        routed = {
            key: _gateway_operation(value, service) if key in _HTTP_METHODS else value
            for key, value in item.items()
            if key != "servers"  # the gateway is the server
        }
        paths[f"/api/{service}{path}"] = routed
    components: dict[str, dict[str, Any]] = {}
    for section, entries in (rewritten.get("components") or {}).items():
        if section == "securitySchemes" or not isinstance(entries, dict):
            continue
        components[section] = {
            service_prefix(service) + name: value for name, value in entries.items()
        }
    tags = [
        {**tag, "name": f"{service}: {tag['name']}"}
        for tag in rewritten.get("tags") or []
        if isinstance(tag, dict) and "name" in tag
    ]
    return ServiceSection(paths, components, tags)


def merge_documents(
    own: Mapping[str, Any], services: Mapping[str, Mapping[str, Any] | None]
) -> Document:
    """The gateway's own document with each available service's section added.

    ``services`` maps every service name to its document, or None when it could not be
    fetched: such a service is listed in ``x-unavailable`` and ``info.description``.
    """
    merged: Document = copy.deepcopy(dict(own))
    paths: dict[str, Any] = merged.setdefault("paths", {})
    components: dict[str, Any] = merged.setdefault("components", {})
    tags: list[dict[str, Any]] = merged.setdefault("tags", [])
    unavailable = sorted(name for name, document in services.items() if document is None)
    for name, document in services.items():
        if document is None:
            continue
        section = service_section(name, copy.deepcopy(dict(document)))
        paths.update(section.paths)
        for kind, entries in section.components.items():
            components.setdefault(kind, {}).update(entries)
        tags.extend(section.tags)
    components.setdefault("securitySchemes", {})[GATEWAY_BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token of the gateway (`POST /auth/token`).",
    }
    components.setdefault("schemas", {})[PROBLEM_SCHEMA] = {
        "type": "object",
        "title": "Problem (RFC 9457)",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "Stable machine-readable reason."},
            "request_id": {"type": "string"},
            "service": {"type": "string", "description": "The service concerned, if any."},
        },
        "additionalProperties": True,
    }
    if not tags:
        del merged["tags"]
    info = merged.setdefault("info", {})
    routed = ", ".join(f"`/api/{name}`" for name in services)
    description = info.get("description", "").rstrip()
    description += f"\n\nThe services are routed under {routed}."
    if unavailable:
        description += (
            "\n\n**Not available right now, so not in this document:** "
            + ", ".join(unavailable)
            + "."
        )
    info["description"] = description.lstrip()
    merged["x-unavailable"] = unavailable
    return merged


class ServiceDocuments:
    """The services' OpenAPI documents, fetched at request time and reused a while."""

    def __init__(
        self,
        cache_s: float,
        services: tuple[str, ...] = SERVICES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_s = cache_s
        self.services = services
        self._clock = clock
        self._documents: dict[str, Document | None] = dict.fromkeys(services)
        self._fetched_at: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.version = 0
        """Bumped whenever a document changes, so merged results can be reused."""

    @property
    def documents(self) -> dict[str, Document | None]:
        return dict(self._documents)

    def document(self, service: str) -> Document | None:
        """The service's document fetched last (None: never fetched, or it failed)."""
        return self._documents.get(service)

    def _stale(self, service: str) -> bool:
        fetched_at = self._fetched_at.get(service)
        if fetched_at is None:
            return True
        lifetime = self.cache_s if self._documents[service] is not None else _FAILURE_CACHE_S
        return self._clock() - fetched_at >= min(lifetime, self.cache_s)

    async def refresh(self, upstreams: Upstreams) -> None:
        """Fetch, concurrently, the documents that are missing or too old."""
        async with self._lock:  # one fetch at a time, however many readers wait
            stale = [service for service in self.services if self._stale(service)]
            if not stale:
                return
            fetched = await asyncio.gather(*(self._fetch(upstreams, name) for name in stale))
            for service, document in zip(stale, fetched, strict=True):
                if document != self._documents[service]:
                    self.version += 1
                self._documents[service] = document
                self._fetched_at[service] = self._clock()

    async def _fetch(self, upstreams: Upstreams, service: str) -> Document | None:
        try:
            document = await upstreams.get_json(
                service,
                "/openapi.json",
                timeout_s=min(_FETCH_TIMEOUT_S, upstreams.default_timeout_s),
                retries=0,  # the next refresh tries again
            )
        except UpstreamError as exc:
            _log.info("openapi of %s left out: %s", service, exc.detail)
            return None
        if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
            _log.warning("openapi of %s left out: not an OpenAPI document", service)
            return None
        return document


def install_merged_openapi(app: FastAPI, cache_s: float) -> None:
    """Serve the merged document at ``app.openapi_url`` and from ``app.openapi()``.

    ``app.openapi()`` stays synchronous, as FastAPI wants: it merges the gateway's own
    schema (FastAPI's generation, cached by FastAPI) with the service documents fetched
    last. The route refreshes those (async) first.
    """
    own_schema = app.openapi  # FastAPI's generator of the gateway's own routes
    documents = ServiceDocuments(cache_s)
    cached: dict[str, Any] = {}

    def merged_openapi() -> Document:
        key = documents.version
        if cached.get("key") != key:
            cached["document"] = merge_documents(own_schema(), documents.documents)
            cached["key"] = key
        document: Document = cached["document"]
        return document

    async def openapi_json(request: Request) -> JSONResponse:
        upstreams: Upstreams | None = getattr(request.app.state, "upstreams", None)
        if upstreams is not None:
            await documents.refresh(upstreams)
        return JSONResponse(merged_openapi())

    app.openapi = merged_openapi  # type: ignore[method-assign]
    app.state.service_documents = documents
    url = app.openapi_url
    if url is None:
        return
    route = Route(url, openapi_json, methods=["GET"], include_in_schema=False)
    for index, existing in enumerate(app.router.routes):
        if isinstance(existing, Route) and existing.path == url:
            app.router.routes[index] = route
            break
    else:
        app.router.routes.append(route)

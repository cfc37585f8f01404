"""The coarse scope the gateway asks for on ``/api/{service}/...``: the one each service
declares for its route, read from the service's OpenAPI document.

A service's route says which scopes it accepts with its ``require_scope(...)``
dependency; the shared app builder writes them into the operation as
``x-required-scopes`` (any one of them). The gateway reads the documents it already
fetches for the merged OpenAPI (``openapi.ServiceDocuments``) and, for a request,
asks for the scopes of the operation whose method and path template match. Where a
service declares nothing for the route, or its document could not be fetched yet, it asks
for the default: ``<service>:read`` for GET, HEAD and OPTIONS, ``<service>:write``
otherwise. The service checks its fine rights again behind (defence in depth).

The documents are read when the gateway starts, before it serves (at most a few seconds),
then in the background: one that could not be fetched is asked for again every few
seconds, the others every ``openapi_cache_s``; a request never waits for one. A failed
refresh keeps the last document read. Until a service's first document is read, its
routes get the default scopes: stricter, never wider. Where the table and the service
could disagree: a route hidden from the document (``include_in_schema=False``) gets the
default, as does a path the service would redirect (a trailing ``/``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeGuard

from fastapi import FastAPI

from ght_gateway.openapi import ServiceDocuments
from ght_shared.app import SCOPES_EXTENSION, background_task

_log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_S = 5.0
"""How soon a document that could not be fetched is asked for again."""
STARTUP_WAIT_S = 5.0
"""How long the gateway's start waits for the services' documents."""
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def default_scopes(service: str, method: str) -> tuple[str, ...]:
    """``<service>:read`` for a safe method, ``<service>:write`` for the others."""
    return (f"{service}:read",) if method.upper() in SAFE_METHODS else (f"{service}:write",)


@dataclass(frozen=True)
class _Declared:
    first: str | None
    """The template's first segment when it is literal (a cheap filter), else None."""
    pattern: re.Pattern[str]
    scopes: tuple[str, ...]


class ScopeTable:
    """The scopes one service's document declares, per method in the document's order.

    FastAPI writes the paths in the order the routes are declared, and the service
    routes a request to the first route that matches: the table answers the same way.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._routes: dict[str, list[_Declared]] = defaultdict(list)
        for path, item in (document.get("paths") or {}).items():
            if not isinstance(path, str) or not isinstance(item, dict):
                continue
            first = _first_segment(path)
            declared_first = None if first.startswith("{") else first
            pattern = _template(path)
            for method, operation in item.items():
                scopes = operation.get(SCOPES_EXTENSION) if isinstance(operation, dict) else None
                if method in _METHODS and _valid(scopes):
                    self._routes[method.upper()].append(
                        _Declared(declared_first, pattern, tuple(scopes))
                    )

    def scopes(self, method: str, path: str) -> tuple[str, ...] | None:
        """The scopes declared for ``method`` on ``path``; None when none is."""
        first = _first_segment(path)
        for declared in self._routes.get(method.upper(), ()):
            if (declared.first is None or declared.first == first) and declared.pattern.match(path):
                return declared.scopes
        return None


class RouteScopes:
    """What the gateway asks for on each routed request."""

    def __init__(self, documents: ServiceDocuments) -> None:
        self.documents = documents
        self._tables: dict[str, tuple[Mapping[str, Any], ScopeTable]] = {}

    def required(self, service: str, method: str, path: str) -> tuple[str, ...]:
        """The scopes (any one of them) ``method`` on ``/api/{service}{path}`` needs."""
        table = self._table(service)
        declared = table.scopes(method, path) if table is not None else None
        return declared or default_scopes(service, method)

    def _table(self, service: str) -> ScopeTable | None:
        """The table of the service's latest document; of the last one fetched when the
        latest fetch failed (a service busy for a moment keeps its routes' scopes)."""
        document = self.documents.document(service)
        cached = self._tables.get(service)
        if document is None:
            return cached[1] if cached is not None else None
        if cached is None or cached[0] is not document:
            cached = (document, ScopeTable(document))
            self._tables[service] = cached
        return cached[1]


def _template(path: str) -> re.Pattern[str]:
    """The pattern of an OpenAPI path template, ``{name}`` being one segment."""
    parts = [
        "[^/]+" if segment.startswith("{") and segment.endswith("}") else re.escape(segment)
        for segment in path.split("/")
    ]
    return re.compile("^" + "/".join(parts) + "$")


def _first_segment(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


def _valid(scopes: object) -> TypeGuard[list[str]]:
    return (
        isinstance(scopes, list)
        and bool(scopes)
        and all(isinstance(scope, str) and scope for scope in scopes)
    )


@asynccontextmanager
async def route_scopes_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Keep the services' documents fresh in the background (every ``openapi_cache_s``)."""
    documents: ServiceDocuments = app.state.service_documents
    app.state.route_scopes = RouteScopes(documents)
    # Before the first request: the services started first (make run, a cluster's
    # readiness) have their documents read already; the others, a few seconds after
    # they answer.
    try:
        await asyncio.wait_for(documents.refresh(app.state.upstreams), STARTUP_WAIT_S)
    except TimeoutError:
        _log.warning("the services' OpenAPI documents were not all read at start-up")

    async def refresh_forever() -> None:
        while True:
            try:
                # Only the missing (retried after a few seconds) and the old documents.
                await documents.refresh(app.state.upstreams)
            except Exception:  # a service down is logged by the fetch; keep going
                _log.exception("refreshing the services' OpenAPI documents failed")
            missing = any(documents.document(name) is None for name in documents.services)
            await asyncio.sleep(RETRY_S if missing else max(documents.cache_s, 1.0))

    async with background_task(refresh_forever(), "route-scopes"):
        yield

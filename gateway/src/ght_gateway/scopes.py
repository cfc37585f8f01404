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

The documents are fetched in the background from the gateway's start (one that cannot be
fetched is asked for again every few seconds, without retries) and refreshed every
``openapi_cache_s``; a request never waits for one. Until a service's document is there,
its routes get the default scopes: stricter, never wider.
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
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def default_scopes(service: str, method: str) -> tuple[str, ...]:
    """``<service>:read`` for a safe method, ``<service>:write`` for the others."""
    return (f"{service}:read",) if method.upper() in SAFE_METHODS else (f"{service}:write",)


@dataclass(frozen=True)
class _Declared:
    pattern: re.Pattern[str]
    scopes: tuple[str, ...]
    parameters: int


class ScopeTable:
    """The scopes one service's document declares, by method and first path segment."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._routes: dict[tuple[str, str], list[_Declared]] = defaultdict(list)
        for path, item in (document.get("paths") or {}).items():
            if not isinstance(path, str) or not isinstance(item, dict):
                continue
            pattern = _template(path)
            for method, operation in item.items():
                scopes = operation.get(SCOPES_EXTENSION) if isinstance(operation, dict) else None
                if method not in _METHODS or not _valid(scopes):
                    continue
                declared = _Declared(pattern, tuple(scopes), path.count("{"))
                first = _first_segment(path)
                key = "{}" if first.startswith("{") else first
                self._routes[method.upper(), key].append(declared)
        for routes in self._routes.values():
            # A literal segment wins over a parameter (``/imports/x`` before ``/{id}``).
            routes.sort(key=lambda declared: declared.parameters)

    def scopes(self, method: str, path: str) -> tuple[str, ...] | None:
        """The scopes declared for ``method`` on ``path``; None when none is."""
        method = method.upper()
        for key in (_first_segment(path), "{}"):  # literal first segments, then parameters
            for declared in self._routes.get((method, key), ()):
                if declared.pattern.match(path):
                    return declared.scopes
        return None


class RouteScopes:
    """What the gateway asks for on each routed request."""

    def __init__(self, documents: ServiceDocuments) -> None:
        self.documents = documents
        self._tables: dict[str, tuple[int, ScopeTable]] = {}

    def required(self, service: str, method: str, path: str) -> tuple[str, ...]:
        """The scopes (any one of them) ``method`` on ``/api/{service}{path}`` needs."""
        document = self.documents.document(service)
        if document is None:
            return default_scopes(service, method)
        return self._table(service, document).scopes(method, path) or default_scopes(
            service, method
        )

    def _table(self, service: str, document: Mapping[str, Any]) -> ScopeTable:
        cached = self._tables.get(service)
        if cached is None or cached[0] != id(document):
            cached = (id(document), ScopeTable(document))
            self._tables[service] = cached
        return cached[1]


def _template(path: str) -> re.Pattern[str]:
    """The pattern of an OpenAPI path template: ``{name}`` is one segment (``{name:path}``
    the rest of the path)."""
    parts = []
    for segment in path.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append(".+" if segment.endswith(":path}") else "[^/]+")
        else:
            parts.append(re.escape(segment))
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

"""Unknown query parameters are a 422, never silently ignored.

A misspelt or unsupported filter (``?coded=false`` where the route has no ``coded``)
would answer every record as if it were applied: the caller reads the wrong figures.
Every route of a service refuses a query parameter it does not declare, naming it; a
route that forwards its query to another (the gateway's proxy) says so with
:func:`forwards_query`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def forwards_query(endpoint: Endpoint) -> Endpoint:
    """Mark a route whose query is passed on as it is (checked by the route it reaches)."""
    endpoint.forwards_query = True  # type: ignore[attr-defined]
    return endpoint


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


def declared_query_parameters(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` reads, its dependencies' included (by their alias);
    read once per route, kept on it."""
    names: frozenset[str] | None = getattr(route, "_declared_query", None)
    if names is None:
        names = frozenset(_query_names(route.dependant))
        route._declared_query = names  # type: ignore[attr-defined]
    return names


async def refuse_unknown_query_parameters(request: Request) -> None:
    """A dependency of every route: 422 ``unknown_parameter`` for each query parameter the
    route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or getattr(route.endpoint, "forwards_query", False):
        return
    known = declared_query_parameters(route)
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in known]
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "unknown_parameter",
                    "loc": ("query", name),
                    "msg": f"is not a parameter of this route (it accepts: {accepted})",
                }
                for name in unknown
            ]
        )

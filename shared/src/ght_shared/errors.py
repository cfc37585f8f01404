"""One error root and its RFC 9457 ``application/problem+json`` rendering.

Domain code raises subclasses of :class:`DomainError` (nouns of what went
wrong, each with an HTTP status and a stable ``code``); the handlers installed
by :func:`install_error_handlers` render them, request validation failures and
an unavailable database the same way, so a client always reads one shape.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import asyncpg
import asyncpg.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from ght_shared.context import request_id_var

PROBLEM_JSON = "application/problem+json"
MAX_REPORTED_ERRORS = 100
"""A validation failure reports its first errors and how many there were in all."""
MAX_ERROR_TEXT = 200
"""Longest field path or message echoed back: a client's 1 MB key is not returned."""
_log = logging.getLogger(__name__)


class DomainError(Exception):
    """Root of every error a service reports to its caller."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def headers(self) -> dict[str, str]:
        """Response headers the error calls for (``WWW-Authenticate``, ``Retry-After``...)."""
        return {}


class NotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    code = "conflict"
    title = "Conflict"


class InvalidInput(DomainError):
    """A request that is well formed but breaks a rule (422), naming the field and the rule.

    The body has the shape of a validation failure (``errors``: field, rule, message), so
    a client reads both alike.
    """

    status = 422
    code = "invalid_input"
    title = "Invalid input"

    def __init__(self, detail: str, *, field: str, rule: str, **extra: Any) -> None:
        super().__init__(
            detail, errors=[{"field": field, "rule": rule, "message": detail}], **extra
        )


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class ServiceUnavailable(DomainError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class TooManyRequests(DomainError):
    """Refused for now: retry after ``retry_after_s`` seconds (sent as ``Retry-After``)."""

    status = 429
    code = "too_many_requests"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after_s, **extra)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build a problem+json response; ``code`` is the stable machine-readable reason."""
    body: dict[str, Any] = {
        "type": f"urn:ght:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(loc: Sequence[int | str]) -> str:
    # FastAPI prefixes the location with where the value came from (body, query...).
    parts = [str(p) for p in loc]
    return ".".join(parts[1:]) if len(parts) > 1 else ".".join(parts)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def without_null_alternative(errors: Sequence[Any]) -> list[Any]:
    """A field typed ``X | None`` given a wrong value fails both alternatives, and pydantic
    reports one error per alternative with its tag in the location (``active.bool``,
    ``active.none``): keep X's, at the field's own location."""
    nullable = {
        tuple(err["loc"][:-1])
        for err in errors
        if err.get("type") == "none_required" and err.get("loc") and err["loc"][-1] == "none"
    }
    kept = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        prefix = next((p for p in nullable if loc[: len(p)] == p and len(loc) > len(p)), None)
        if prefix is None:
            kept.append(err)
        elif err.get("type") != "none_required":
            kept.append({**err, "loc": prefix + loc[len(prefix) + 1 :]})
    return kept


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Turn pydantic errors into ``{field, rule, message}`` entries a person can act on
    (the first :data:`MAX_REPORTED_ERRORS`, each bounded; never the input itself)."""
    out = []
    for err in errors[:MAX_REPORTED_ERRORS]:
        loc = err.get("loc", ())
        field = _field_path(loc)
        message = err.get("msg", "invalid value")
        if err.get("type") == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
            # FastAPI puts the decoder's character offset where a field name would be.
            field = str(loc[0])
            reason = (err.get("ctx") or {}).get("error", message)
            message = f"Invalid JSON at character {loc[1]}: {reason}"
        discriminator = (err.get("ctx") or {}).get("discriminator")
        if err.get("type") in ("union_tag_invalid", "union_tag_not_found") and discriminator:
            # Name the field that chose the variant (e.g. records.0.kind), not its parent.
            field = f"{field}.{str(discriminator).strip(chr(39))}" if field else field
        out.append(
            {
                "field": _clip(field),
                "in": str(loc[0]) if loc else "body",
                "rule": err.get("type", "invalid"),
                "message": _clip(message),
            }
        )
    return out


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem(
        exc.status, exc.code, exc.title, exc.detail, headers=exc.headers() or None, **exc.extra
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    every = without_null_alternative(exc.errors())
    errors = validation_errors(every)
    fields = sorted({e["field"] for e in errors})
    named = ", ".join(fields[:10]) + (f" and {len(fields) - 10} more" if len(fields) > 10 else "")
    detail = f"Invalid value for: {named or 'request'}"
    if len(every) > len(errors):
        detail += f" ({len(every)} errors; the first {len(errors)} are listed)"
    return problem(
        422,
        "validation_failed",
        "Invalid request",
        detail,
        errors=errors,
        error_count=len(every),
    )


_UNPARSABLE_BODY = "There was an error parsing the body"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method the path answers to, over all its routes (Starlette names the first's)."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        # FastAPI's answer to a body it cannot decode: the same shape as a JSON syntax error.
        return problem(
            422,
            "validation_failed",
            "Invalid request",
            "The request body cannot be parsed.",
            errors=[
                {
                    "field": "body",
                    "in": "body",
                    "rule": "unparsable",
                    "message": "The body is not valid for its Content-Type (encoding, syntax).",
                }
            ],
        )
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return problem(
        exc.status_code,
        code,
        str(exc.detail) if exc.status_code != 404 else "Not found",
        str(exc.detail),
        headers=headers or None,
    )


def _unavailable_problem() -> JSONResponse:
    return problem(
        503,
        "database_unavailable",
        "Service unavailable",
        "The service's database cannot be reached; retry shortly.",
        headers={"Retry-After": "5"},
    )


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    _log.warning("database unavailable: %s", exc.__class__.__name__)
    return _unavailable_problem()


async def _db_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated or _is_connection_error(exc):
        return await _database_unavailable(request, exc)
    raise exc


_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
)


def _is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the database cannot be reached."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, _CONNECTION_ERRORS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


async def _client_disconnected(_: Request, exc: Exception) -> JSONResponse:
    # The client (or the gateway in front, killed mid-upload) went away before the body
    # was read: its transaction rolls back, nobody reads this answer, and it is no
    # server error (it must not show as a 500 in the logs and metrics).
    _log.info("client disconnected before its request body was read")
    return problem(
        400,
        "client_disconnected",
        "Client disconnected",
        "The request body ended before it was complete: nothing was done with it.",
    )


def unexpected_error_response(exc: BaseException) -> JSONResponse:
    """The answer to an error no handler knows: 503 if the database is gone, else 500.

    Called by the request-context middleware, inside the request's context, so the
    log line and the problem carry the request id.
    """
    if _is_connection_error(exc):
        _log.warning("database unavailable: %s", exc.__class__.__name__)
        return _unavailable_problem()
    _log.error("unhandled error", exc_info=exc)
    return problem(500, "internal_error", "Internal error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Render the errors of ``app`` as problem+json (the rest: ``unexpected_error_response``)."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _db_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    # Raised raw by the driver when the server is down before SQLAlchemy can wrap them.
    for exc_class in _CONNECTION_ERRORS:
        app.add_exception_handler(exc_class, _database_unavailable)

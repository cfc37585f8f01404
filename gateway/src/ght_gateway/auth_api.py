"""OAuth2 token endpoint, JWKS, revocation list, ``/auth/me`` and logout."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ght_gateway.identity import (
    Identity,
    InvalidCredentials,
    TooManyAttempts,
    authenticate_client,
    authenticate_user,
)
from ght_gateway.revocations import current_revocations
from ght_gateway.runtime import gateway_of
from ght_gateway.schemas import Me, TokenResponse
from ght_gateway.security import AUTHENTICATED_RESPONSES, GatewayPrincipal
from ght_gateway.tokens import InvalidGrant, IssuedToken, ReusedRefreshToken
from ght_shared.db import database_of
from ght_shared.errors import DomainError, TooManyRequests, validation_errors


class OAuthErrorRoute(APIRoute):
    """The token endpoint's errors carry RFC 6749's ``error`` (§5.2) beside ``code``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                errors = validation_errors(exc.errors())
                fields = ", ".join(sorted({e["field"] for e in errors}))
                raise InvalidRequest(
                    f"Invalid value for: {fields}", errors=errors, error="invalid_request"
                ) from exc
            except DomainError as exc:
                exc.extra.setdefault("error", _oauth_error(exc))
                raise

        return handler


def _oauth_error(exc: DomainError) -> str:
    if isinstance(exc, InvalidCredentials):
        return exc.oauth_error
    if isinstance(exc, TooManyRequests):
        return "temporarily_unavailable"
    if exc.code in OAUTH_ERRORS:
        return exc.code
    return "invalid_request"


OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "invalid_scope",
        "unsupported_grant_type",
    }
)

router = APIRouter(tags=["auth"])
token_router = APIRouter(tags=["auth"], route_class=OAuthErrorRoute)

GRANT_TYPES = ("password", "client_credentials", "refresh_token")


class UnsupportedGrantType(DomainError):
    code = "unsupported_grant_type"
    title = "Unsupported grant type"


class InvalidRequest(DomainError):
    code = "invalid_request"
    title = "Invalid token request"


class InvalidScope(DomainError):
    code = "invalid_scope"
    title = "Invalid scope"


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """``client_secret_basic`` (RFC 6749 §2.3.1)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        client_id, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("Malformed Basic credentials.", field="authorization") from None
    if not sep:
        raise InvalidRequest("Malformed Basic credentials.", field="authorization")
    return client_id, secret


def _granted_scopes(identity: Identity, requested: str | None) -> frozenset[str]:
    """The scopes to put in the token: all the roles grant, or the requested subset."""
    if not requested:
        return identity.scopes
    wanted = frozenset(requested.split())
    beyond = wanted - identity.scopes
    if beyond:
        raise InvalidScope(
            f"Not granted to this account: {' '.join(sorted(beyond))}.", field="scope"
        )
    return wanted


def _required(value: str | None, field: str, grant_type: str) -> str:
    if not value:
        raise InvalidRequest(f"{field} is required with grant_type={grant_type}.", field=field)
    return value


@token_router.post(
    "/auth/token",
    summary="Get an access token (OAuth2: password, client_credentials, refresh_token)",
    response_model=TokenResponse,
    responses={
        400: {
            "description": "invalid_request, invalid_grant, invalid_scope (problem+json, with "
            "RFC 6749's `error`)"
        },
        401: {"description": "Wrong credentials (`error`: invalid_grant or invalid_client)"},
        429: {"description": "Too many attempts for this account or from this address"},
    },
)
async def token(
    request: Request,
    grant_type: Annotated[
        str, Form(min_length=1, max_length=64, description=" | ".join(GRANT_TYPES))
    ],
    username: Annotated[str | None, Form(max_length=200)] = None,
    password: Annotated[str | None, Form(max_length=1000)] = None,
    client_id: Annotated[str | None, Form(max_length=200)] = None,
    client_secret: Annotated[str | None, Form(max_length=1000)] = None,
    refresh_token: Annotated[str | None, Form(max_length=200)] = None,
    scope: Annotated[str | None, Form(max_length=1000)] = None,
) -> JSONResponse:
    gateway = gateway_of(request)
    ip = _client_ip(request)
    decision = gateway.token_buckets.take(f"ip:{ip}", gateway.settings.token_ip_limit)
    if not decision.allowed:
        raise TooManyRequests(
            "Too many token requests from this address.", retry_after_s=decision.retry_after_s
        )
    if grant_type not in GRANT_TYPES:
        raise UnsupportedGrantType(
            f"grant_type must be one of {', '.join(GRANT_TYPES)}.", field="grant_type"
        )
    # Failed attempts and a revoked family must be committed although the request fails.
    failure: DomainError | None = None
    issued: IssuedToken | None = None
    async with database_of(request).transaction() as session:
        try:
            if grant_type == "password":
                identity = await authenticate_user(
                    session,
                    gateway.login_guard,
                    _required(username, "username", grant_type),
                    _required(password, "password", grant_type),
                    ip,
                )
                issued = await gateway.issuer.issue(
                    session, identity, _granted_scopes(identity, scope), with_refresh=True
                )
            elif grant_type == "client_credentials":
                basic = _basic_credentials(request)
                cid, secret = basic or (
                    _required(client_id, "client_id", grant_type),
                    _required(client_secret, "client_secret", grant_type),
                )
                identity = await authenticate_client(session, cid, secret, ip)
                # No refresh token for clients: they hold their credentials (RFC 6749 §4.4.3).
                issued = await gateway.issuer.issue(
                    session, identity, _granted_scopes(identity, scope), with_refresh=False
                )
            else:
                issued = await gateway.issuer.refresh(
                    session, _required(refresh_token, "refresh_token", grant_type)
                )
        except (InvalidCredentials, TooManyAttempts, ReusedRefreshToken) as exc:
            failure = exc
    if failure is not None:
        raise failure
    assert issued is not None
    body = TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        scope=issued.scope,
        refresh_token=issued.refresh_token,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@router.get("/.well-known/jwks.json", summary="The public keys that verify the gateway's tokens")
async def jwks(request: Request, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=60"
    return await gateway_of(request).keys.jwks()


@router.get(
    "/auth/revocations",
    summary="The access tokens refused before their expiry (digests), for the services",
)
async def revocations(request: Request, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"
    revoked = await current_revocations(database_of(request))
    return {"revoked": [{"key": key, "at": at} for key, at in revoked.items()]}


@router.get(
    "/auth/me",
    summary="Who the token says you are",
    response_model=Me,
    responses=AUTHENTICATED_RESPONSES,
)
async def me(principal: GatewayPrincipal) -> Me:
    return Me(
        sub=principal.sub,
        name=principal.name,
        roles=list(principal.roles),
        establishments=list(principal.establishments),
        pole=principal.pole,
        scope=sorted(principal.scopes),
        expires_at=datetime.fromtimestamp(principal.expires_at or 0, UTC),
    )


@router.post(
    "/auth/logout",
    status_code=204,
    summary="Revoke a refresh token (and every token of its login)",
    responses={400: {"description": "No such refresh token"}, **AUTHENTICATED_RESPONSES},
)
async def logout(
    request: Request,
    principal: GatewayPrincipal,
    refresh_token: Annotated[str, Form(max_length=200)],
) -> Response:
    async with database_of(request).transaction() as session:
        if not await gateway_of(request).issuer.logout(session, refresh_token, principal.sub):
            raise InvalidGrant("Unknown refresh token.", field="refresh_token")
    return Response(status_code=204)

"""Who calls the gateway, what they may reach, and how fast.

``GatewayPrincipal`` verifies the bearer token (the gateway's own keys, read
in-process) and takes one token from the caller's rate-limit bucket; the
decision is kept on the request so that every response carries its
``RateLimit-*`` headers (``access.RateLimitHeadersMiddleware``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from ght_gateway.ratelimit import Decision, TokenBuckets
from ght_gateway.settings import RateLimit, Settings
from ght_shared.auth import Principal, current_principal, require_scope
from ght_shared.errors import TooManyRequests


class RateLimited(TooManyRequests):
    code = "rate_limited"
    title = "Rate limit exceeded"

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            f"Too many requests: the limit is {decision.limit} in a burst; "
            f"retry in {decision.retry_after_s} s.",
            retry_after_s=decision.retry_after_s,
        )
        self.decision = decision

    def headers(self) -> dict[str, str]:
        return self.decision.headers()


def limit_for(settings: Settings, roles: tuple[str, ...]) -> RateLimit:
    """The most generous limit among the principal's roles (the smallest when none is set)."""
    limits = [settings.rate_limits[role] for role in roles if role in settings.rate_limits]
    if not limits:
        return min(settings.rate_limits.values(), key=lambda limit: limit.rate)
    return max(limits, key=lambda limit: limit.rate)


def request_buckets(request: Request) -> TokenBuckets:
    buckets: TokenBuckets = request.app.state.request_buckets
    return buckets


async def gateway_principal(request: Request) -> Principal:
    """The verified caller, within its rate limit (401 without a valid token, 429 past it)."""
    principal = await current_principal(request)
    settings: Settings = request.app.state.settings
    decision = request_buckets(request).take(
        f"sub:{principal.sub}", limit_for(settings, principal.roles)
    )
    request.state.rate_limit = decision
    if not decision.allowed:
        raise RateLimited(decision)
    return principal


GatewayPrincipal = Annotated[Principal, Depends(gateway_principal)]

AUTHENTICATED_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token (`unauthenticated`)."},
    403: {"description": "The token lacks the scope this needs (`forbidden`)."},
    429: {"description": "The caller's rate limit is exceeded (`rate_limited`, `Retry-After`)."},
}
"""The answers of every route behind :data:`GatewayPrincipal`, for the OpenAPI document."""


def require(*scopes: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency letting through the principals holding one of ``scopes``, within their
    rate limit (401, 429, then 403)."""
    return require_scope(*scopes, via=gateway_principal)


AdminPrincipal = Annotated[Principal, Depends(require("admin"))]

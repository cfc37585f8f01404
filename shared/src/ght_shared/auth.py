"""Verification of the gateway's tokens and the authorisation checks every service repeats.

Asymmetric algorithms only, from an allow-list; ``kid`` selects among the keys
of the configured JWKS (or one static public key), never a key named by the
token itself (RFC 8725). ``exp``, ``nbf``, ``iss`` and ``aud`` are checked, then
the gateway's revocation list (:class:`RevocationList`, ADR 0015): a token whose
subject, login session (``sid``) or id (``jti``) was revoked after it was issued
is refused, within seconds of the revocation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from jwt import PyJWK
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ARRAY, Boolean, ColumnElement, literal, true
from sqlalchemy.orm import QueryableAttribute

from ght_shared.errors import Forbidden, ServiceUnavailable, Unauthenticated
from ght_shared.settings import ServiceSettings

_log = logging.getLogger(__name__)

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token (`unauthenticated`)."},
    403: {
        "description": "The token lacks the scope, or does not act for the establishment"
        " concerned (`forbidden`)."
    },
}
"""The answers of every route behind a token, for a router's OpenAPI document
(``APIRouter(responses=AUTH_RESPONSES)``)."""

ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256"})
TERRITORY = "*"
VERIFIED_CACHE_SIZE = 10_000


class Role(StrEnum):
    """The roles of the platform's principals (docs/roles.md)."""

    ADMIN = "admin"
    COMMISSION = "commission"
    DIRECTION = "direction"
    POLE_MANAGER = "pole_manager"
    BED_MANAGER = "bed_manager"
    STAFFING_COORDINATOR = "staffing_coordinator"
    IT_SYSTEM = "it_system"


SERVICES = ("contracts", "activity", "beds", "staffing")
"""The services behind the gateway, by the name of their API prefix and scopes."""

READ_ALL = frozenset(f"{service}:read" for service in SERVICES) | {"territory:read"}

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.ADMIN: READ_ALL
    | {f"{service}:write" for service in SERVICES}
    | {"contracts:approve", "admin"},
    Role.COMMISSION: READ_ALL | {"contracts:approve"},
    Role.DIRECTION: READ_ALL | {"contracts:write"},
    Role.POLE_MANAGER: READ_ALL | {"contracts:write"},
    Role.BED_MANAGER: READ_ALL | {"beds:write"},
    Role.STAFFING_COORDINATOR: READ_ALL | {"staffing:write"},
    Role.IT_SYSTEM: READ_ALL | {"activity:write", "beds:write", "staffing:write"},
}
"""The scopes each role grants: the one table, which the gateway puts in its tokens,
``docs/roles.md`` shows (a test keeps them equal) and the services' tests mint from."""

TERRITORIAL_ROLES = frozenset({Role.ADMIN, Role.COMMISSION})
"""Roles that act for the whole territory (establishments ``*``)."""


def scopes_for(roles: Iterable[str]) -> frozenset[str]:
    """Every scope the roles grant together."""
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_SCOPES[Role(role)]
    return frozenset(granted)


class Principal(BaseModel):
    """Who is calling, from a verified token."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: str
    roles: tuple[str, ...] = ()
    establishments: tuple[str, ...] = ()
    scope: str = ""
    token_id: str | None = Field(default=None, alias="jti")
    session_id: str | None = Field(default=None, alias="sid")
    """The login (refresh-token family) a person's token was issued in."""
    issued_at: float | None = Field(default=None, alias="iat")
    name: str | None = None
    pole: str | None = None
    """The pôle of a ``pole_manager`` (chef de pôle, cadre de gestion)."""
    expires_at: int | None = Field(default=None, alias="exp")

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    @property
    def is_territorial(self) -> bool:
        return TERRITORY in self.establishments

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def may_act_for(self, establishment: str) -> bool:
        """True when the principal may act for this establishment (FINESS)."""
        return self.is_territorial or establishment in self.establishments

    def revocation_keys(self) -> tuple[str, ...]:
        """The keys under which this principal's token may be revoked."""
        keys = [revocation_key("sub", self.sub)]
        if self.session_id:
            keys.append(revocation_key("sid", self.session_id))
        if self.token_id:
            keys.append(revocation_key("jti", self.token_id))
        return tuple(keys)


def revocation_key(kind: str, value: str) -> str:
    """The published form of a revoked ``sub``, ``sid`` or ``jti``: a digest, so that the
    list names no account."""
    digest = hashlib.sha256(f"{kind}:{value}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


RevocationsLoader = Callable[[], Awaitable[dict[str, float]]]
"""Reads the revocation list: key → when it was revoked (seconds since the epoch)."""


class RevocationList:
    """The revoked keys, read again every ``refresh_s`` in the background.

    A token is refused when one of its keys was revoked at or after its ``iat``. The
    check itself never waits for the list: a refresh starts when the list is older than
    ``refresh_s`` and the request goes on with the list at hand. When the list cannot be
    read, the last one read stays (the issuer is down: it issues nothing either).
    """

    def __init__(self, loader: RevocationsLoader | None, refresh_s: float) -> None:
        self._loader = loader
        self._refresh_s = refresh_s
        self._revoked: dict[str, float] = {}
        self._added: dict[str, tuple[float, float]] = {}  # key -> (revoked at, added at)
        self._attempted_at = -math.inf
        self._refreshing: asyncio.Task[None] | None = None
        self._failing = False

    def refuses(self, principal: Principal, keys: tuple[str, ...]) -> bool:
        self._refresh_when_stale()
        issued_at = principal.issued_at if principal.issued_at is not None else -math.inf
        return any(self._revoked.get(key, -math.inf) >= issued_at for key in keys)

    def add(self, key: str, revoked_at: float) -> None:
        """Take a revocation this process has just made, before the next refresh."""
        self._revoked[key] = max(revoked_at, self._revoked.get(key, -math.inf))
        self._added[key] = (revoked_at, time.monotonic())

    async def refresh(self) -> None:
        """Read the list now (raises when it cannot be read)."""
        if self._loader is None:
            return
        started = time.monotonic()
        self._attempted_at = started
        loaded = await self._loader()
        # What this process added while the list was being read may not be in it yet.
        self._added = {k: v for k, v in self._added.items() if v[1] >= started}
        for key, (revoked_at, _) in self._added.items():
            loaded[key] = max(revoked_at, loaded.get(key, -math.inf))
        self._revoked = loaded

    def _refresh_when_stale(self) -> None:
        if self._loader is None or time.monotonic() - self._attempted_at < self._refresh_s:
            return
        if self._refreshing is None or self._refreshing.done():
            self._attempted_at = time.monotonic()
            self._refreshing = asyncio.create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # keep the last list; say so once per outage
            if not self._failing:
                _log.warning("revocation list not read, the last one stays: %r", exc)
            self._failing = True
        else:
            if self._failing:
                _log.info("revocation list read again")
            self._failing = False

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()


class TokenVerifier:
    """Verifies bearer tokens against a static key or a cached JWKS."""

    def __init__(
        self,
        settings: ServiceSettings,
        http: httpx.AsyncClient | None = None,
        jwks_loader: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        revocations_loader: RevocationsLoader | None = None,
    ) -> None:
        """``jwks_loader`` and ``revocations_loader`` replace the URLs: the issuer itself
        reads its own key set and revocations."""
        unknown = set(settings.jwt_algorithms) - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ValueError(f"only asymmetric JWT algorithms are allowed, not {sorted(unknown)}")
        self.algorithms = list(settings.jwt_algorithms)
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_s
        self.jwks_url = settings.jwt_jwks_url
        self.cache_ttl = settings.jwks_cache_ttl_s
        self._static_key = settings.jwt_public_key
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = 0.0
        self._attempted_at = 0.0
        self._refresh_lock = asyncio.Lock()
        self._http = http
        self._jwks_loader = jwks_loader
        self._verified: OrderedDict[str, tuple[Principal, tuple[str, ...]]] = OrderedDict()
        if revocations_loader is None and settings.jwt_revocations_url:
            revocations_loader = self._revocations_from(settings.jwt_revocations_url)
        self.revocations = RevocationList(revocations_loader, settings.revocations_refresh_s)

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid, unrevoked token; raise :class:`Unauthenticated`
        otherwise.

        A token verified once is remembered until its ``exp`` (a client sends the same
        token with each request; a signature check costs more than the rest of a hop);
        the revocation list is consulted every time.
        """
        cached = self._verified.get(token)
        if cached is not None and time.time() >= (cached[0].expires_at or 0):
            del self._verified[token]
            cached = None
        if cached is not None:
            self._verified.move_to_end(token)
        else:
            principal = await self._verify(token)
            cached = (principal, principal.revocation_keys())
            if principal.expires_at is not None:
                self._verified[token] = cached
                if len(self._verified) > VERIFIED_CACHE_SIZE:
                    self._verified.popitem(last=False)
        if self.revocations.refuses(*cached):
            raise Unauthenticated("Token revoked.")
        return cached[0]

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("Malformed token.") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthenticated(f"Token algorithm {alg!r} is not accepted.")
        key = await self._key_for(header.get("kid"), alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("Token expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("Token not yet valid.") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("Token audience is not accepted.") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("Token issuer is not accepted.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"Invalid token: {exc}.") from exc
        return Principal.model_validate(claims)

    async def _key_for(self, kid: str | None, alg: str) -> Any:
        if self._static_key is not None:
            try:
                return jwt.algorithms.get_default_algorithms()[alg].prepare_key(self._static_key)
            except jwt.PyJWTError as exc:  # e.g. an RS256 header against an Ed25519 key
                raise Unauthenticated("Token algorithm does not match its key.") from exc
        if not kid:
            raise Unauthenticated("Token has no key id (kid).")
        key = await self._jwk(kid)
        if key.algorithm_name != alg:
            raise Unauthenticated("Token algorithm does not match its key.")
        return key.key

    async def _jwk(self, kid: str) -> PyJWK:
        if kid not in self._keys or self._keys_age() > self.cache_ttl:
            async with self._refresh_lock:
                # An unknown kid may be a freshly rotated key, so refetch, but not more
                # than every few seconds: forged kids must not hammer the issuer, and
                # an issuer outage must not cost every request a failed fetch.
                stale = kid not in self._keys or self._keys_age() > self.cache_ttl
                since_attempt = time.monotonic() - self._attempted_at
                if stale and (not self._fetched_at or since_attempt > 5.0):
                    await self._fetch_jwks()
        if kid not in self._keys:
            raise Unauthenticated("Token signed by an unknown key.")
        return self._keys[kid]

    def _keys_age(self) -> float:
        return time.monotonic() - self._fetched_at if self._fetched_at else float("inf")

    async def _fetch_jwks(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            document = await self._load_jwks()
        except (httpx.HTTPError, ValueError, OSError) as exc:
            if self._keys:
                return  # keep serving with the keys we have
            raise ServiceUnavailable("The token issuer's keys cannot be fetched.") from exc
        keys: dict[str, PyJWK] = {}
        for jwk in document.get("keys", []):
            try:
                parsed = PyJWK(jwk)
            except jwt.PyJWTError:
                continue
            if jwk.get("kid") and parsed.algorithm_name in ASYMMETRIC_ALGORITHMS:
                keys[jwk["kid"]] = parsed
        self._keys = keys
        self._fetched_at = time.monotonic()

    def forget_keys(self) -> None:
        """Reload the key set, and verify every token again (after a key change)."""
        self._fetched_at = 0.0
        self._attempted_at = 0.0
        self._verified.clear()

    async def _load_jwks(self) -> dict[str, Any]:
        if self._jwks_loader is not None:
            return await self._jwks_loader()
        if not self.jwks_url:
            raise ServiceUnavailable("No JWKS URL or public key is configured.")
        return await self._get_json(self.jwks_url)

    def _revocations_from(self, url: str) -> RevocationsLoader:
        async def load() -> dict[str, float]:
            document = await self._get_json(url)
            return {entry["key"]: float(entry["at"]) for entry in document["revoked"]}

        return load

    async def _get_json(self, url: str) -> dict[str, Any]:
        client = self._http or httpx.AsyncClient(timeout=3.0)
        try:
            response = await client.get(url)
            response.raise_for_status()
            document: dict[str, Any] = response.json()
            return document
        finally:
            if self._http is None:
                await client.aclose()


def _verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier


async def current_principal(request: Request) -> Principal:
    """The caller, from the ``Authorization: Bearer`` header; 401 when absent or invalid."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("A bearer token is required.")
    principal = await _verifier(request).verify(token.strip())
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def ensure_scope(principal: Principal, *scopes: str, action: str = "This action") -> None:
    """Refuse (403) a principal holding none of ``scopes``; the problem names them."""
    if principal.scopes.isdisjoint(scopes):
        wanted = " or ".join(repr(scope) for scope in scopes)
        raise Forbidden(
            f"{action} needs the scope {wanted}.",
            required_scope=scopes[0] if len(scopes) == 1 else list(scopes),
        )


def require_scope(
    *scopes: str, via: Callable[..., Awaitable[Principal]] = current_principal
) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency letting through the principals holding one of ``scopes`` (403 otherwise).

    ``via`` is the dependency giving the principal (the gateway's adds its rate limit).
    The scopes are kept on the dependency (``required_scopes``) for tools that read them.
    """
    if not scopes:
        raise ValueError("require_scope needs at least one scope")

    # A default, not Annotated: the annotation would be a string naming a local.
    async def check(principal: Principal = Depends(via)) -> Principal:  # noqa: B008
        ensure_scope(principal, *scopes)
        return principal

    check.__name__ = "require_" + "_or_".join(s.replace(":", "_") for s in scopes)
    check.required_scopes = scopes  # type: ignore[attr-defined]
    return check


def readable_by(
    principal: Principal, column: ColumnElement[Any] | QueryableAttribute[Any]
) -> ColumnElement[bool]:
    """A row filter: the rows of the establishments ``principal`` acts for (all for a
    territorial principal). ``column`` holds a FINESS, or an array of them (any one)."""
    if principal.is_territorial:
        return true()
    finess = column.__clause_element__() if isinstance(column, QueryableAttribute) else column
    if isinstance(finess.type, ARRAY):
        wanted = literal(list(principal.establishments), type_=finess.type)
        return finess.op("&&", return_type=Boolean)(wanted)
    return finess.in_(principal.establishments)


def ensure_establishment(principal: Principal, establishment: str) -> None:
    """Refuse (403) an action on an establishment the principal does not act for."""
    if not principal.may_act_for(establishment):
        raise Forbidden(
            f"Not allowed to act for establishment {establishment}.",
            establishment=establishment,
        )


def service_principal(service: str) -> Principal:
    """The actor of a change a service makes on an event it consumed from ``service``.

    Territorial (the event's producer owns its data across the territory) and holding no
    scope: a use case called by a consumer applies its rules, but no route's scope check.
    The audit trail shows ``service`` as the one who made the change.
    """
    return Principal(sub=service, roles=("service",), establishments=(TERRITORY,))

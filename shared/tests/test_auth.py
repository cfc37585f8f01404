"""Bearer tokens and authorisation: real JWTs, a real JWKS endpoint, a real app.

What RFC 8725 and PITFALLS.md (Tokens) ask: an allow-list of asymmetric
algorithms, no ``none``, no HMAC keyed with the public key, ``iss``/``aud``/
``exp``/``nbf`` checked, ``kid`` choosing among known keys only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import (
    generate_private_key as generate_rsa_key,
)
from fastapi import APIRouter, Depends
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from pydantic_settings import SettingsConfigDict
from sqlalchemy import ARRAY
from sqlalchemy.dialects import postgresql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ght_shared import auth
from ght_shared.app import ServiceParts, create_service_app, declare_route_scopes
from ght_shared.auth import (
    READ_ALL,
    ROLE_SCOPES,
    Principal,
    TokenVerifier,
    ensure_establishment,
    readable_by,
    require_scope,
    scopes_for,
)
from ght_shared.errors import PROBLEM_JSON, ServiceUnavailable, Unauthenticated
from ght_shared.settings import ServiceSettings
from ght_shared.testing.plugin import TEST_AUDIENCE, TEST_ISSUER, running_app

JWKS_URL = "http://issuer/.well-known/jwks.json"


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TESTSVC_")
    service_name: str = "test-svc"


# --- token crafting -------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode())


def _claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the test issuer and audience; ``name=None`` drops a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": "dr-house",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "roles": ["physician"],
        "establishments": ["750000001"],
        "scope": "beds:read beds:write",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _sign(key: Any, kid: str, alg: str = "EdDSA", **overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def _static_settings(public_pem: str, **overrides: Any) -> _Settings:
    values: dict[str, Any] = {
        "jwt_public_key": public_pem,
        "jwt_jwks_url": None,
        "jwt_issuer": TEST_ISSUER,
        "jwt_audience": TEST_AUDIENCE,
    }
    values.update(overrides)
    return _Settings(**values)


@pytest.fixture
def verifier(signing_key) -> TokenVerifier:
    """A verifier holding the test key as its one static public key."""
    return TokenVerifier(_static_settings(signing_key.public_pem))


async def _refused(verifier: TokenVerifier, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401
    return refused.value


# --- static key: what is refused ------------------------------------------------------


class TestAStaticKeyVerifierRefuses:
    async def test_an_expired_token(self, verifier, make_token):
        error = await _refused(verifier, make_token(scope="beds:read", ttl_s=-120))
        assert "expired" in error.detail

    async def test_a_token_not_yet_valid_beyond_the_leeway(self, verifier, make_token):
        later = int(time.time()) + 120
        error = await _refused(verifier, make_token(nbf=later))
        assert "not yet valid" in error.detail

    async def test_a_token_for_another_audience(self, verifier, make_token):
        error = await _refused(verifier, make_token(aud="another-platform"))
        assert "audience" in error.detail

    async def test_a_token_from_another_issuer(self, verifier, make_token):
        error = await _refused(verifier, make_token(iss="someone-else"))
        assert "issuer" in error.detail

    async def test_an_unsigned_alg_none_token(self, verifier, signing_key):
        header = {"alg": "none", "typ": "JWT", "kid": signing_key.kid}
        token = f"{_segment(header)}.{_segment(_claims(establishments=['*']))}."
        error = await _refused(verifier, token)
        assert "'none'" in error.detail

    async def test_an_hs256_token_keyed_with_the_public_key_pem(self, verifier, signing_key):
        header = {"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}
        signing_input = f"{_segment(header)}.{_segment(_claims(establishments=['*']))}"
        mac = hmac.new(signing_key.public_pem.encode(), signing_input.encode(), hashlib.sha256)
        token = f"{signing_input}.{_b64url(mac.digest())}"
        error = await _refused(verifier, token)
        assert "HS256" in error.detail

    async def test_a_tampered_payload_with_the_original_signature(self, verifier, make_token):
        header, _, signature = make_token(establishments=["750000001"]).split(".")
        forged = _segment(_claims(establishments=["*"], scope="beds:write admin:all"))
        await _refused(verifier, f"{header}.{forged}.{signature}")

    async def test_a_token_signed_by_another_key_under_the_right_kid(self, verifier, signing_key):
        impostor = Ed25519PrivateKey.generate()
        await _refused(verifier, _sign(impostor, signing_key.kid))

    async def test_a_token_without_exp(self, verifier, signing_key):
        token = _sign(signing_key.private_pem, signing_key.kid, exp=None)
        error = await _refused(verifier, token)
        assert "exp" in error.detail

    @pytest.mark.parametrize(
        "token",
        ["not-a-jwt", "a.b.c", "", "....", "eyJhbGciOiJFZERTQSJ9.e30"],
        ids=["word", "three-garbage-segments", "empty", "dots", "two-segments"],
    )
    async def test_a_malformed_string(self, verifier, token):
        await _refused(verifier, token)

    @pytest.mark.parametrize("alg", ["RS256", "ES256"])
    async def test_another_allowed_algorithm_that_does_not_fit_the_key(self, verifier, alg):
        # The static key is Ed25519: an RS256/ES256 header must be a 401, not a crash (500).
        key = generate_rsa_key(65537, 2048) if alg == "RS256" else generate_private_key(SECP256R1())
        await _refused(verifier, _sign(key, "test-key-1", alg=alg))


class TestAStaticKeyVerifierAccepts:
    async def test_a_valid_eddsa_token_and_reads_its_principal(self, verifier, make_token):
        token = make_token(
            "dr-cuddy",
            roles=["cadre"],
            establishments=["750000001", "750000002"],
            scope="beds:read beds:write",
            jti="token-42",
        )
        principal = await verifier.verify(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        expires_at, issued_at = claims["exp"], claims["iat"]
        assert principal == Principal(
            iat=issued_at,
            sub="dr-cuddy",
            roles=("cadre",),
            establishments=("750000001", "750000002"),
            scope="beds:read beds:write",
            jti="token-42",
            exp=expires_at,
        )
        assert principal.token_id == "token-42"

    async def test_a_token_expired_within_the_leeway(self, verifier, make_token):
        assert (await verifier.verify(make_token(ttl_s=-5))).sub == "test-user"


def test_a_verifier_cannot_be_configured_with_a_symmetric_algorithm(signing_key):
    with pytest.raises(ValueError, match="HS256"):
        TokenVerifier(_static_settings(signing_key.public_pem, jwt_algorithms=("EdDSA", "HS256")))


# --- JWKS: a real issuer endpoint -----------------------------------------------------


class Issuer:
    """A token issuer publishing its JWKS over HTTP, counting the fetches it serves."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.down = False
        self.app = Starlette(routes=[Route("/.well-known/jwks.json", self._jwks)])

    async def _jwks(self, _: Request) -> Response:
        self.fetches += 1
        if self.down:
            return JSONResponse({"error": "down"}, status_code=503)
        return JSONResponse({"keys": self.keys})

    def publish(self, jwk: dict[str, Any]) -> None:
        self.keys.append(jwk)


def _okp_jwk(private: Ed25519PrivateKey, kid: str, *, alg: str | None = "EdDSA") -> dict[str, Any]:
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk


def _rsa_jwk(private: RSAPrivateKey, kid: str, *, alg: str | None = "RS256") -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk


class Clock:
    """The verifier's monotonic clock, moved by hand so rate limits need no sleeping."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


@pytest.fixture(scope="module")
def rsa_key() -> RSAPrivateKey:
    return generate_rsa_key(65537, 2048)


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
async def jwks_verifier(issuer: Issuer, clock: Clock) -> AsyncIterator[TokenVerifier]:
    settings = _Settings(
        jwt_public_key=None,
        jwt_jwks_url=JWKS_URL,
        jwt_issuer=TEST_ISSUER,
        jwt_audience=TEST_AUDIENCE,
        jwks_cache_ttl_s=60,
    )
    transport = httpx.ASGITransport(app=issuer.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://issuer") as client:
        yield TokenVerifier(settings, http=client)


class TestAJwksVerifier:
    async def test_accepts_a_valid_rs256_token_from_the_jwks(self, issuer, jwks_verifier, rsa_key):
        issuer.publish(_rsa_jwk(rsa_key, "rsa-1"))
        principal = await jwks_verifier.verify(
            _sign(rsa_key, "rsa-1", alg="RS256", sub="dr-wilson")
        )
        assert principal.sub == "dr-wilson"

    async def test_accepts_an_eddsa_token_from_the_jwks(self, issuer, jwks_verifier):
        key = Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(key, "ed-1"))
        assert (await jwks_verifier.verify(_sign(key, "ed-1"))).sub == "dr-house"

    async def test_infers_the_algorithm_of_a_jwk_published_without_alg(
        self, issuer, jwks_verifier, rsa_key
    ):
        # PyJWK infers EdDSA from crv Ed25519 and RS256 from kty RSA when "alg" is absent.
        ed_key = Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(ed_key, "ed-no-alg", alg=None))
        issuer.publish(_rsa_jwk(rsa_key, "rsa-no-alg", alg=None))
        assert "alg" not in issuer.keys[0]
        assert (await jwks_verifier.verify(_sign(ed_key, "ed-no-alg"))).sub == "dr-house"
        assert (await jwks_verifier.verify(_sign(rsa_key, "rsa-no-alg", alg="RS256"))).sub
        assert jwt.PyJWK(issuer.keys[0]).algorithm_name == "EdDSA"
        assert jwt.PyJWK(issuer.keys[1]).algorithm_name == "RS256"

    async def test_refuses_an_unknown_kid(self, issuer, jwks_verifier):
        issuer.publish(_okp_jwk(Ed25519PrivateKey.generate(), "known"))
        stranger = Ed25519PrivateKey.generate()
        error = await _refused(jwks_verifier, _sign(stranger, "not-in-the-jwks"))
        assert "unknown key" in error.detail

    async def test_refuses_a_token_without_kid(self, issuer, jwks_verifier):
        key = Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(key, "ed-1"))
        await _refused(jwks_verifier, jwt.encode(_claims(), key, algorithm="EdDSA"))

    async def test_refuses_another_key_under_a_published_kid(self, issuer, jwks_verifier):
        issuer.publish(_okp_jwk(Ed25519PrivateKey.generate(), "ed-1"))
        await _refused(jwks_verifier, _sign(Ed25519PrivateKey.generate(), "ed-1"))

    async def test_refuses_a_token_whose_alg_is_not_its_keys(self, issuer, jwks_verifier, rsa_key):
        issuer.publish(_rsa_jwk(rsa_key, "rsa-1"))
        ec_key = generate_private_key(SECP256R1())
        error = await _refused(jwks_verifier, _sign(ec_key, "rsa-1", alg="ES256"))
        assert "does not match" in error.detail

    async def test_refuses_an_hs256_token_keyed_with_a_published_jwk(
        self, issuer, jwks_verifier, rsa_key
    ):
        jwk = _rsa_jwk(rsa_key, "rsa-1")
        issuer.publish(jwk)
        signing_input = f"{_segment({'alg': 'HS256', 'kid': 'rsa-1'})}.{_segment(_claims())}"
        secret = json.dumps(jwk).encode()
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await _refused(jwks_verifier, f"{signing_input}.{_b64url(mac)}")
        assert issuer.fetches == 0  # refused on its header, before any key is looked up


class TestTheJwksCache:
    async def test_two_verifications_fetch_the_jwks_once(self, issuer, jwks_verifier):
        key = Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(key, "ed-1"))
        await jwks_verifier.verify(_sign(key, "ed-1"))
        await jwks_verifier.verify(_sign(key, "ed-1"))
        assert issuer.fetches == 1

    async def test_concurrent_first_verifications_fetch_the_jwks_once(self, issuer, jwks_verifier):
        key = Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(key, "ed-1"))
        principals = await asyncio.gather(
            *(jwks_verifier.verify(_sign(key, "ed-1")) for _ in range(10))
        )
        assert len(principals) == 10
        assert issuer.fetches == 1

    async def test_keys_are_fetched_again_once_the_cache_ttl_has_passed(
        self, issuer, jwks_verifier, clock
    ):
        key = Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(key, "ed-1"))
        await jwks_verifier.verify(_sign(key, "ed-1"))
        clock.advance(59)
        await jwks_verifier.verify(_sign(key, "ed-1"))
        assert issuer.fetches == 1
        clock.advance(2)
        await jwks_verifier.verify(_sign(key, "ed-1"))
        assert issuer.fetches == 2

    async def test_a_rotated_in_key_is_accepted_after_a_refetch(self, issuer, jwks_verifier, clock):
        old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(old, "2024-old"))
        await jwks_verifier.verify(_sign(old, "2024-old"))
        issuer.publish(_okp_jwk(new, "2025-new"))
        # Within 5 s of the last fetch the new kid is not looked for yet...
        await _refused(jwks_verifier, _sign(new, "2025-new"))
        assert issuer.fetches == 1
        clock.advance(6)
        # ...after that, the unknown kid triggers one refetch that finds it.
        assert (await jwks_verifier.verify(_sign(new, "2025-new"))).sub == "dr-house"
        assert issuer.fetches == 2
        assert (await jwks_verifier.verify(_sign(old, "2024-old"))).sub == "dr-house"
        assert issuer.fetches == 2

    async def test_forged_kids_refetch_at_most_once_in_5_seconds(
        self, issuer, jwks_verifier, clock
    ):
        issuer.publish(_okp_jwk(Ed25519PrivateKey.generate(), "ed-1"))
        forger = Ed25519PrivateKey.generate()
        for _ in range(20):
            await _refused(jwks_verifier, _sign(forger, uuid.uuid4().hex))
        assert issuer.fetches == 1
        clock.advance(4)
        for _ in range(20):
            await _refused(jwks_verifier, _sign(forger, uuid.uuid4().hex))
        assert issuer.fetches == 1
        clock.advance(2)
        for _ in range(20):
            await _refused(jwks_verifier, _sign(forger, uuid.uuid4().hex))
        assert issuer.fetches == 2

    async def test_an_unreachable_issuer_before_any_fetch_is_a_503_not_a_401(
        self, issuer, jwks_verifier
    ):
        issuer.down = True
        with pytest.raises(ServiceUnavailable) as unavailable:
            await jwks_verifier.verify(_sign(Ed25519PrivateKey.generate(), "ed-1"))
        assert unavailable.value.status == 503

    async def test_an_issuer_outage_keeps_the_cached_keys_and_is_retried_sparingly(
        self, issuer, jwks_verifier, clock
    ):
        key = Ed25519PrivateKey.generate()
        issuer.publish(_okp_jwk(key, "ed-1"))
        await jwks_verifier.verify(_sign(key, "ed-1"))
        issuer.down = True
        clock.advance(61)  # the cache is stale and the issuer answers 503
        for _ in range(10):
            assert (await jwks_verifier.verify(_sign(key, "ed-1"))).sub == "dr-house"
        assert issuer.fetches == 2  # one failed attempt, not one per request
        clock.advance(6)
        issuer.down = False
        await jwks_verifier.verify(_sign(key, "ed-1"))
        assert issuer.fetches == 3
        clock.advance(6)
        await jwks_verifier.verify(_sign(key, "ed-1"))
        assert issuer.fetches == 3  # fresh again: served from the cache


# --- Principal ------------------------------------------------------------------------


class TestVerifiedTokens:
    async def test_are_remembered_until_they_expire_and_then_refused(self, signing_key, make_token):
        verifier = TokenVerifier(_static_settings(signing_key.public_pem, jwt_leeway_s=0))
        token = make_token(ttl_s=1)

        first = await verifier.verify(token)
        assert await verifier.verify(token) is first  # no second signature check

        await asyncio.sleep(1.1)
        refused = await _refused(verifier, token)
        assert "expired" in refused.detail.lower()

    async def test_are_verified_again_after_a_key_change(self, signing_key, make_token):
        verifier = TokenVerifier(_static_settings(signing_key.public_pem))
        token = make_token()
        first = await verifier.verify(token)

        verifier.forget_keys()

        again = await verifier.verify(token)
        assert again == first and again is not first


class TestAPrincipal:
    def test_acts_for_its_own_establishments_only(self):
        principal = Principal(sub="u", establishments=("750000001", "750000002"))
        assert principal.may_act_for("750000002")
        assert not principal.may_act_for("690000001")
        assert not principal.is_territorial

    def test_with_the_territory_wildcard_acts_for_every_establishment(self):
        principal = Principal(sub="u", establishments=("*",))
        assert principal.is_territorial
        assert principal.may_act_for("690000001")
        assert principal.may_act_for("750000001")

    def test_without_establishments_acts_for_none(self):
        assert not Principal(sub="u").may_act_for("750000001")

    def test_holds_exactly_the_scopes_of_its_space_separated_scope_claim(self):
        principal = Principal(sub="u", scope="beds:read  beds:write")
        assert principal.scopes == {"beds:read", "beds:write"}
        assert principal.has_scope("beds:write")
        assert not principal.has_scope("beds")
        assert not principal.has_scope("beds:read beds:write")
        assert not Principal(sub="u").has_scope("")


# --- through an app -------------------------------------------------------------------

router = APIRouter()


@router.post("/establishments/{finess}/things", status_code=201)
async def create_thing(
    finess: str, principal: Annotated[Principal, Depends(require_scope("things:write"))]
) -> dict[str, str]:
    ensure_establishment(principal, finess)
    return {"finess": finess, "created_by": principal.sub}


OURS = "750000001"
THEIRS = "690000001"
THINGS = f"/establishments/{OURS}/things"


@pytest.fixture(scope="module")
async def client(make_settings) -> AsyncIterator[httpx.AsyncClient]:
    settings = await make_settings(_Settings)
    app = create_service_app(settings, ServiceParts(title="t", routers=[router]))
    async with running_app(app) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


class TestAWriteRoute:
    async def test_without_a_token_is_401_with_a_bearer_challenge(self, client):
        response = await client.post(THINGS)
        _assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize(
        "authorization",
        ["Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer"],
        ids=["garbage", "basic", "empty-bearer", "bare-scheme"],
    )
    async def test_with_a_bad_authorization_header_is_401(self, client, authorization):
        response = await client.post(THINGS, headers={"Authorization": authorization})
        _assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_with_an_expired_token_is_401(self, client, make_token):
        token = make_token(scope="things:write", establishments=[OURS], ttl_s=-120)
        _assert_problem(await client.post(THINGS, headers=_bearer(token)), 401, "unauthenticated")

    async def test_with_a_token_of_another_allowed_algorithm_is_401_not_500(self, client):
        token = _sign(generate_rsa_key(65537, 2048), "test-key-1", alg="RS256")
        _assert_problem(await client.post(THINGS, headers=_bearer(token)), 401, "unauthenticated")

    async def test_without_the_scope_is_403_naming_the_scope(self, client, make_token):
        token = make_token(scope="things:read", establishments=[OURS])
        body = _assert_problem(await client.post(THINGS, headers=_bearer(token)), 403, "forbidden")
        assert "things:write" in body["detail"]
        assert body["required_scope"] == "things:write"

    async def test_for_another_establishment_is_403(self, client, make_token):
        token = make_token(scope="things:write", establishments=[THEIRS])
        body = _assert_problem(await client.post(THINGS, headers=_bearer(token)), 403, "forbidden")
        assert body["establishment"] == OURS
        assert OURS in body["detail"]

    async def test_for_the_right_establishment_is_allowed(self, client, make_token):
        token = make_token("dr-house", scope="things:write", establishments=[THEIRS, OURS])
        response = await client.post(THINGS, headers=_bearer(token))
        assert response.status_code == 201, response.text
        assert response.json() == {"finess": OURS, "created_by": "dr-house"}

    async def test_for_a_territorial_principal_is_allowed_everywhere(self, client, make_token):
        token = make_token("ght-admin", scope="things:write", establishments=["*"])
        for finess in (OURS, THEIRS):
            response = await client.post(f"/establishments/{finess}/things", headers=_bearer(token))
            assert response.status_code == 201, response.text
            assert response.json()["finess"] == finess


@router.put("/establishments/{finess}/steering")
async def steer(
    finess: str,
    principal: Annotated[Principal, Depends(require_scope("things:write", "plans:write"))],
) -> dict[str, str]:
    return {"finess": finess, "by": principal.sub}


class TestARouteAcceptingSeveralScopes:
    @pytest.mark.parametrize("scope", ["things:write", "plans:write", "things:read plans:write"])
    async def test_any_one_of_them_lets_through(self, client, make_token, scope):
        token = make_token(scope=scope, establishments=[OURS])
        response = await client.put(f"/establishments/{OURS}/steering", headers=_bearer(token))
        assert response.status_code == 200, response.text

    async def test_none_of_them_is_403_naming_them_all(self, client, make_token):
        token = make_token(scope="things:read", establishments=[OURS])
        response = await client.put(f"/establishments/{OURS}/steering", headers=_bearer(token))
        body = _assert_problem(response, 403, "forbidden")
        assert body["required_scope"] == ["things:write", "plans:write"]
        assert "'things:write' or 'plans:write'" in body["detail"]

    def test_the_dependency_names_its_scopes_for_tools_that_read_them(self):
        check = require_scope("things:write", "plans:write")
        assert check.required_scopes == ("things:write", "plans:write")  # type: ignore[attr-defined]

    def test_a_dependency_asking_for_no_scope_cannot_be_built(self):
        with pytest.raises(ValueError, match="at least one scope"):
            require_scope()


class TestTheRowFilterOfAPrincipal:
    """``readable_by``: the rows of the establishments the principal acts for."""

    table = sa.table("thing", sa.column("finess", sa.Text), sa.column("parties", ARRAY(sa.Text)))

    def _sql(self, clause: Any) -> str:
        return str(
            clause.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )

    def test_a_territorial_principal_reads_every_row(self):
        principal = Principal(sub="c", establishments=("*",))
        assert self._sql(readable_by(principal, self.table.c.finess)) == "true"

    def test_an_establishments_principal_reads_its_rows_only(self):
        principal = Principal(sub="d", establishments=(OURS, THEIRS))
        assert self._sql(readable_by(principal, self.table.c.finess)) == (
            f"thing.finess IN ('{OURS}', '{THEIRS}')"
        )

    def test_on_an_array_of_establishments_any_one_of_them_is_enough(self):
        principal = Principal(sub="d", establishments=(OURS,))
        assert self._sql(readable_by(principal, self.table.c.parties)) == (
            f"thing.parties && ARRAY['{OURS}']"
        )

    def test_a_principal_acting_for_no_establishment_reads_nothing(self):
        principal = Principal(sub="nobody")
        assert "IN" in self._sql(readable_by(principal, self.table.c.finess))


class TestTheRoleTable:
    def test_every_role_reads_every_service_and_writes_only_what_it_owns(self):
        for role, scopes in ROLE_SCOPES.items():
            assert scopes >= READ_ALL, role
        assert scopes_for(["bed_manager", "staffing_coordinator"]) == READ_ALL | {
            "beds:write",
            "staffing:write",
        }

    def test_an_unknown_role_is_refused(self):
        with pytest.raises(ValueError):
            scopes_for(["janitor"])


class TestTheScopesOfARouteInItsOpenAPIDocument:
    async def test_each_route_declares_the_scopes_of_its_dependency(self, client):
        document = (await client.get("/openapi.json")).json()
        steering = document["paths"]["/establishments/{finess}/steering"]["put"]
        assert steering["x-required-scopes"] == ["things:write", "plans:write"]
        things = document["paths"]["/establishments/{finess}/things"]["post"]
        assert things["x-required-scopes"] == ["things:write"]
        assert "x-required-scopes" not in document["paths"]["/health/ready"]["get"]

    def test_a_route_with_two_scope_dependencies_is_refused_at_start(self):
        two = APIRouter()

        @two.get("/both")
        async def both(
            a: Annotated[Principal, Depends(require_scope("a:read"))],
            b: Annotated[Principal, Depends(require_scope("b:read"))],
        ) -> None:
            return None

        with pytest.raises(ValueError, match="one scope dependency per route"):
            declare_route_scopes(two)

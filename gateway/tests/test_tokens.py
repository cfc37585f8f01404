"""Identity and tokens: the OAuth2 grants, refresh rotation, keys, and the attacks refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from gateway_testing import DEMO_PASSWORD, bearer, client_token, password_token
from sqlalchemy import func, select

from ght_gateway.models import LoginAttempt
from ght_gateway.settings import RateLimit, Settings
from ght_shared.auth import Role, scopes_for
from ght_shared.db import Database


async def _token_claims(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """Verify ``token`` as a service would: with the gateway's published JWKS."""
    jwks = (await client.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == kid]
    key = jwt.PyJWK(jwk)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[jwk["alg"]], audience="ght-platform", issuer="ght-gateway"
    )
    return claims


# -- grants ---------------------------------------------------------------------------------


async def test_a_person_logs_in_with_a_password_and_gets_a_signed_short_lived_token(gateway):
    issued = await password_token(gateway, "direction.chu")

    assert issued["token_type"] == "Bearer"
    assert issued["expires_in"] == 900
    assert issued["refresh_token"]
    claims = await _token_claims(gateway, issued["access_token"])
    assert claims["sub"] == "direction.chu"
    assert claims["roles"] == ["direction"]
    assert claims["establishments"] == ["420784878"]
    assert claims["exp"] - int(claims["iat"]) == 900
    assert claims["jti"]
    assert set(claims["scope"].split()) == scopes_for([Role.DIRECTION])
    assert jwt.get_unverified_header(issued["access_token"])["alg"] == "EdDSA"


async def test_an_establishment_system_gets_a_token_with_client_credentials_and_no_refresh(
    gateway,
):
    issued = await client_token(gateway, "si-ch-nord")

    assert "refresh_token" not in issued
    claims = await _token_claims(gateway, issued["access_token"])
    assert claims["sub"] == "client:si-ch-nord"
    assert claims["roles"] == ["it_system"]
    assert claims["establishments"] == ["420000010"]


async def test_client_credentials_are_also_accepted_as_http_basic(gateway):
    basic = base64.b64encode(f"si-chu:{DEMO_PASSWORD}".encode()).decode()
    response = await gateway.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


async def test_a_wrong_password_or_unknown_user_is_a_401_problem(gateway):
    for username in ("direction.chu", "nobody"):
        response = await gateway.post(
            "/auth/token",
            data={"grant_type": "password", "username": username, "password": "wrong-password"},
        )
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_credentials"


async def test_a_token_request_missing_a_field_names_it(gateway):
    response = await gateway.post(
        "/auth/token", data={"grant_type": "password", "username": "admin"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert response.json()["field"] == "password"

    response = await gateway.post("/auth/token", data={"grant_type": "implicit"})
    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_grant_type"

    response = await gateway.post("/auth/token", data={})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"  # RFC 6749 §5.2
    assert response.json()["errors"][0]["field"] == "grant_type"


async def test_a_narrower_scope_may_be_asked_for_but_not_a_wider_one(gateway):
    narrow = await password_token(gateway, "lits.chu", scope="beds:read")
    assert narrow["scope"] == "beds:read"

    response = await gateway.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "lits.chu",
            "password": DEMO_PASSWORD,
            "scope": "beds:read staffing:write",
        },
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_scope"
    assert "staffing:write" in response.json()["detail"]


# -- refresh tokens -------------------------------------------------------------------------


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )


async def test_a_refresh_token_is_spent_on_use_and_replaced(gateway):
    first = await password_token(gateway, "cadre.chu")

    response = await _refresh(gateway, first["refresh_token"])

    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    claims = await _token_claims(gateway, second["access_token"])
    assert claims["sub"] == "cadre.chu"
    assert claims["pole"] == "CHU-IMG"


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(gateway):
    first = await password_token(gateway, "cadre.chu")
    second = (await _refresh(gateway, first["refresh_token"])).json()

    reuse = await _refresh(gateway, first["refresh_token"])

    assert reuse.status_code == 400
    assert reuse.json()["code"] == "invalid_grant"
    # The thief's copy and the owner's newest token are both dead now.
    assert (await _refresh(gateway, second["refresh_token"])).status_code == 400


async def test_logout_revokes_the_refresh_token(gateway):
    issued = await password_token(gateway, "lits.chu")

    response = await gateway.post(
        "/auth/logout", data={"refresh_token": issued["refresh_token"]}, headers=bearer(issued)
    )

    assert response.status_code == 204
    assert (await _refresh(gateway, issued["refresh_token"])).status_code == 400


async def test_nobody_can_log_out_someone_elses_session(gateway):
    victim = await password_token(gateway, "lits.chu")
    other = await password_token(gateway, "cadre.chu")

    response = await gateway.post(
        "/auth/logout", data={"refresh_token": victim["refresh_token"]}, headers=bearer(other)
    )

    assert response.status_code == 400
    assert (await _refresh(gateway, victim["refresh_token"])).status_code == 200


async def test_me_says_who_the_token_is_for(gateway):
    issued = await password_token(gateway, "effectifs.g4")

    me = (await gateway.get("/auth/me", headers=bearer(issued))).json()

    assert me["sub"] == "effectifs.g4"
    assert me["roles"] == ["staffing_coordinator"]
    assert me["establishments"] == ["*"]
    assert "staffing:write" in me["scope"]


# -- brute force and rate limits ------------------------------------------------------------


async def test_after_five_failures_an_account_must_wait_even_with_the_right_password(
    gateway, gateway_settings: Settings
):
    for _ in range(5):
        response = await gateway.post(
            "/auth/token",
            data={"grant_type": "password", "username": "commission", "password": "guess-1234"},
        )
        assert response.status_code == 401

    response = await gateway.post(
        "/auth/token",
        data={"grant_type": "password", "username": "commission", "password": DEMO_PASSWORD},
    )

    assert response.status_code == 429
    assert response.json()["code"] == "too_many_attempts"
    assert int(response.headers["retry-after"]) >= 1
    database = Database(gateway_settings)
    try:
        async with database.transaction() as session:
            failures = await session.scalar(
                select(func.count()).where(
                    LoginAttempt.username == "commission", LoginAttempt.success.is_(False)
                )
            )
        assert failures == 5  # the refused attempt did not even reach the password check
    finally:
        await database.dispose()
    # Another account is not affected.
    await password_token(gateway, "admin")


async def test_the_wait_after_too_many_failures_grows_and_then_lets_the_owner_in(
    gateway_with: Any,
):
    async with gateway_with(
        login_max_failures=2,
        login_backoff_base_s=0.5,
    ) as client:
        wrong = {"grant_type": "password", "username": "admin", "password": "not-the-one"}
        for _ in range(2):
            assert (await client.post("/auth/token", data=wrong)).status_code == 401
        assert (await client.post("/auth/token", data=wrong)).status_code == 429
        await asyncio.sleep(0.6)
        assert (await client.post("/auth/token", data=wrong)).status_code == 401  # 3rd failure
        await asyncio.sleep(0.6)  # now the wait is 1 s
        assert (await client.post("/auth/token", data=wrong)).status_code == 429
        await asyncio.sleep(0.5)
        await password_token(client, "admin")


async def test_the_token_endpoint_limits_requests_per_address(gateway_with: Any):
    async with gateway_with(
        token_ip_limit=RateLimit(rate=0.1, burst=3),
    ) as client:
        form = {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
        statuses = [(await client.post("/auth/token", data=form)).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        response = await client.post("/auth/token", data=form)
        assert response.json()["code"] == "too_many_requests"
        assert int(response.headers["retry-after"]) >= 1


async def test_requests_beyond_the_principals_rate_limit_get_429_with_ratelimit_headers(
    gateway_with: Any,
):
    async with gateway_with(
        rate_limits={"it_system": RateLimit(rate=0.5, burst=3)},
    ) as client:
        token = bearer(await client_token(client, "si-chu"))
        responses = [await client.get("/auth/me", headers=token) for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers["ratelimit-limit"] == "3"
    assert responses[0].headers["ratelimit-remaining"] == "2"
    assert responses[3].json()["code"] == "rate_limited"
    assert int(responses[3].headers["retry-after"]) >= 1


# -- attacks on tokens ----------------------------------------------------------------------


async def _forge(app: FastAPI, **changes: Any) -> str:
    """A token signed with the gateway's real signing key, with some claims changed."""
    signer = await app.state.gateway.keys.signer()
    now = int(time.time())
    claims = {
        "iss": "ght-gateway",
        "aud": "ght-platform",
        "sub": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "roles": ["admin"],
        "establishments": ["*"],
        "scope": "admin",
    }
    claims.update(changes)
    return jwt.encode(claims, signer.private_key, algorithm="EdDSA", headers={"kid": signer.kid})


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hs256(header: dict[str, Any], payload: str, secret: bytes) -> str:
    signed = f"{_b64(header)}.{payload}"
    return f"{signed}.{_b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())}"


async def test_a_well_formed_token_signed_by_the_gateway_is_accepted(gateway, gateway_app):
    response = await gateway.get("/auth/me", headers=bearer(await _forge(gateway_app)))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"aud": "another-platform"}, "audience"),
        ({"iss": "someone-else"}, "issuer"),
    ],
)
async def test_a_token_with_a_wrong_claim_is_refused(gateway, gateway_app, changes, reason):
    response = await gateway.get("/auth/me", headers=bearer(await _forge(gateway_app, **changes)))

    assert response.status_code == 401
    assert reason in response.json()["detail"].lower()
    assert response.headers["www-authenticate"] == "Bearer"


async def test_forged_tokens_are_refused(gateway, gateway_app):
    genuine = await _forge(gateway_app)
    header, payload, signature = genuine.split(".")
    kid = jwt.get_unverified_header(genuine)["kid"]
    claims = jwt.decode(genuine, options={"verify_signature": False})
    public_jwk = (await gateway.get("/.well-known/jwks.json")).json()["keys"][0]
    public_pem = (
        jwt.PyJWK(public_jwk)
        .key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )
    stranger = Ed25519PrivateKey.generate()
    forgeries = {
        "alg none": f"{_b64({'alg': 'none', 'kid': kid})}.{payload}.",
        "HS256 with the public key as secret": _hs256(
            {"alg": "HS256", "kid": kid, "typ": "JWT"}, payload, public_pem.encode()
        ),
        "unknown kid": jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "nope"}),
        "another key under the real kid": jwt.encode(
            claims, stranger, algorithm="EdDSA", headers={"kid": kid}
        ),
        "tampered payload": f"{header}.{_b64({**claims, 'roles': ['admin', 'x']})}.{signature}",
        "garbage": "not-a-token",
    }
    for name, token in forgeries.items():
        response = await gateway.get("/auth/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.json()["code"] == "unauthenticated", name


async def test_no_token_is_a_401_naming_the_bearer_scheme(gateway):
    response = await gateway.get("/auth/me")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# -- keys -----------------------------------------------------------------------------------


async def test_after_a_key_rotation_new_tokens_use_the_new_key_and_old_ones_still_verify(
    gateway,
):
    admin = await password_token(gateway, "admin")
    old_kid = jwt.get_unverified_header(admin["access_token"])["kid"]

    response = await gateway.post("/admin/keys/rotate", headers=bearer(admin))

    assert response.status_code == 200
    new_kid = response.json()["kid"]
    assert new_kid != old_kid
    assert response.json()["keys"] == [new_kid, old_kid]
    published = {key["kid"] for key in (await gateway.get("/.well-known/jwks.json")).json()["keys"]}
    assert published == {new_kid, old_kid}
    assert (await gateway.get("/auth/me", headers=bearer(admin))).status_code == 200
    fresh = await password_token(gateway, "admin")
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new_kid
    assert (await gateway.get("/auth/me", headers=bearer(fresh))).status_code == 200


async def test_only_an_admin_rotates_keys(gateway):
    director = await password_token(gateway, "direction.chu")

    response = await gateway.post("/admin/keys/rotate", headers=bearer(director))

    assert response.status_code == 403


async def test_private_keys_are_stored_encrypted(gateway, gateway_settings: Settings):
    await password_token(gateway, "admin")  # the first key exists by now
    database = Database(gateway_settings)
    try:
        async with database.transaction() as session:
            from ght_gateway.models import SigningKey

            (stored,) = list(await session.scalars(select(SigningKey)))
    finally:
        await database.dispose()
    assert b"PRIVATE" not in stored.private_key_encrypted
    assert stored.private_key_encrypted.startswith(b"gAAAAA")  # a Fernet token
    assert "d" not in stored.public_jwk

"""Administration: users, machine clients, the access log, the first admin of production."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from gateway_testing import DEMO_PASSWORD, bearer, client_token, password_token
from pydantic import ValidationError

from ght_gateway.main import create_app
from ght_gateway.settings import Settings
from ght_shared.testing.plugin import running_app
from ght_shared.urls import plain_url

NEW_USER = {
    "username": "cadre.nord",
    "display_name": "Cadre de gestion, pôle médecine (CH du Nord)",
    "password": "a-long-enough-password",
    "roles": ["pole_manager"],
    "establishments": ["420000010"],
    "pole": "MED",
}


@pytest.fixture
async def admin(gateway: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await password_token(gateway, "admin"))


async def test_an_admin_creates_a_user_who_can_then_log_in(gateway, admin):
    response = await gateway.post("/admin/users", json=NEW_USER, headers=admin)

    assert response.status_code == 201
    created = response.json()
    assert "password" not in created and "password_hash" not in created
    assert created["roles"] == ["pole_manager"]
    issued = await password_token(gateway, "cadre.nord", "a-long-enough-password")
    me = (await gateway.get("/auth/me", headers=bearer(issued))).json()
    assert me["establishments"] == ["420000010"]
    assert me["pole"] == "MED"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"establishments": ["420000011"]}, "establishments"),  # wrong Luhn key
        ({"establishments": ["*"]}, "establishments"),  # a pôle is in one establishment
        ({"pole": None}, "establishments"),
        ({"roles": ["it_system"]}, "roles"),
        ({"roles": ["surgeon"]}, "roles"),
        ({"password": "short"}, "password"),
        ({"username": "Not Valid"}, "username"),
        ({"nickname": "x"}, "nickname"),
    ],
)
async def test_a_user_that_breaks_a_rule_is_refused_naming_the_field(gateway, admin, change, field):
    body = {**NEW_USER, **change}

    response = await gateway.post("/admin/users", json=body, headers=admin)

    assert response.status_code == 422
    problem = response.json()
    named = {error["field"] for error in problem.get("errors", [])} | {problem.get("field")}
    assert any(name and name.split(".")[0] == field for name in named), problem
    assert (await gateway.get("/admin/users/cadre.nord", headers=admin)).status_code == 404


async def test_a_username_is_taken_once(gateway, admin):
    await gateway.post("/admin/users", json=NEW_USER, headers=admin)

    response = await gateway.post("/admin/users", json=NEW_USER, headers=admin)

    assert response.status_code == 409


async def test_a_disabled_user_can_no_longer_log_in_nor_refresh(gateway, admin):
    issued = await password_token(gateway, "lits.chu")

    response = await gateway.patch("/admin/users/lits.chu", json={"active": False}, headers=admin)

    assert response.status_code == 200
    assert response.json()["active"] is False
    login = await gateway.post(
        "/auth/token",
        data={"grant_type": "password", "username": "lits.chu", "password": DEMO_PASSWORD},
    )
    assert login.status_code == 401
    refresh = await gateway.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
    )
    assert refresh.status_code == 400


async def test_a_role_change_must_still_fit_the_establishments(gateway, admin):
    response = await gateway.patch(
        "/admin/users/lits.chu", json={"roles": ["commission"]}, headers=admin
    )
    assert response.status_code == 422

    response = await gateway.patch(
        "/admin/users/lits.chu",
        json={"roles": ["commission"], "establishments": ["*"]},
        headers=admin,
    )
    assert response.status_code == 200
    assert response.json()["establishments"] == ["*"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/admin/users/direction.chu", "establishments"),
        ("/admin/users/direction.chu", "roles"),
        ("/admin/users/direction.chu", "display_name"),
        ("/admin/users/direction.chu", "password"),
        ("/admin/users/direction.chu", "active"),
        ("/admin/clients/si-ch-lac", "name"),
        ("/admin/clients/si-ch-lac", "active"),
    ],
)
async def test_a_patch_setting_a_field_that_cannot_be_empty_to_null_is_a_422_naming_it(
    gateway, admin, path, field
):
    before = (await gateway.get("/admin/users/direction.chu", headers=admin)).json()

    response = await gateway.patch(path, json={field: None}, headers=admin)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert (error["field"], error["rule"]) == (field, "not_nullable")
    assert field in error["message"]
    assert (await gateway.get("/admin/users/direction.chu", headers=admin)).json() == before


async def test_a_patch_setting_the_pole_to_null_clears_it_where_the_roles_allow(gateway, admin):
    response = await gateway.patch("/admin/users/direction.chu", json={"pole": None}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["pole"] is None

    refused = await gateway.patch("/admin/users/cadre.chu", json={"pole": None}, headers=admin)
    assert refused.status_code == 422
    assert "pôle" in refused.json()["detail"]


def test_the_openapi_document_allows_null_only_for_the_pole() -> None:
    schemas = create_app(Settings()).openapi()["components"]["schemas"]

    nullable = {
        (model, name)
        for model in ("UserUpdate", "ClientUpdate")
        for name, field in schemas[model]["properties"].items()
        if {"type": "null"} in field.get("anyOf", [])
    }
    assert nullable == {("UserUpdate", "pole")}


async def test_a_client_secret_is_shown_once_and_works(gateway, admin):
    response = await gateway.post(
        "/admin/clients",
        json={
            "client_id": "rh-nord",
            "name": "Logiciel RH du CH du Nord",
            "establishment": "420000010",
        },
        headers=admin,
    )

    assert response.status_code == 201
    secret = response.json()["client_secret"]
    issued = await client_token(gateway, "rh-nord", secret)
    assert issued["access_token"]
    listed = (await gateway.get("/admin/clients", headers=admin)).json()
    assert all("client_secret" not in client and "secret_hash" not in client for client in listed)
    assert "rh-nord" in {client["client_id"] for client in listed}


async def test_a_new_client_secret_replaces_the_old_one(gateway, admin):
    response = await gateway.patch(
        "/admin/clients/si-chu", json={"rotate_secret": True}, headers=admin
    )

    assert response.status_code == 200
    new_secret = response.json()["client_secret"]
    await client_token(gateway, "si-chu", new_secret)
    old = await gateway.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "si-chu",
            "client_secret": DEMO_PASSWORD,
        },
    )
    assert old.status_code == 401


async def test_a_client_needs_a_valid_finess(gateway, admin):
    response = await gateway.post(
        "/admin/clients",
        json={"client_id": "rh-x", "name": "x", "establishment": "12345"},
        headers=admin,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "establishment"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("GET", "/admin/clients"),
        ("POST", "/admin/keys/rotate"),
        ("GET", "/admin/audit"),
    ],
)
async def test_admin_routes_need_the_admin_scope(gateway, method, path):
    assert (await gateway.request(method, path)).status_code == 401
    for username in ("commission", "direction.chu", "effectifs.g4"):
        token = bearer(await password_token(gateway, username))
        response = await gateway.request(method, path, headers=token, json={})
        assert response.status_code == 403, username
    machine = bearer(await client_token(gateway, "si-chu"))
    assert (await gateway.request(method, path, headers=machine, json={})).status_code == 403


async def test_every_request_is_in_the_access_log_which_pages_with_filters(gateway, admin):
    director = bearer(await password_token(gateway, "direction.chu"))
    for _ in range(3):
        await gateway.get("/auth/me", headers=director)
    await gateway.get("/auth/me")  # 401, no principal

    page = (
        await gateway.get(
            "/admin/audit", params={"principal": "direction.chu", "limit": 2}, headers=admin
        )
    ).json()

    assert len(page["items"]) == 2
    assert all(item["principal"] == "direction.chu" for item in page["items"])
    assert page["items"][0]["route"] == "/auth/me"
    assert page["items"][0]["status"] == 200
    assert page["items"][0]["request_id"]
    older = (
        await gateway.get(
            "/admin/audit",
            params={"principal": "direction.chu", "limit": 2, "cursor": page["next_cursor"]},
            headers=admin,
        )
    ).json()
    assert len(older["items"]) == 1
    assert older["next_cursor"] is None
    refused = (await gateway.get("/admin/audit", params={"status": 401}, headers=admin)).json()
    assert [item["principal"] for item in refused["items"]] == [None]


async def test_the_access_log_cannot_be_rewritten(gateway, admin, gateway_settings):
    await gateway.get("/auth/me", headers=admin)
    await gateway.get("/admin/audit", headers=admin)  # flushes the queue
    conn = await asyncpg.connect(plain_url(gateway_settings.database_url))
    try:
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("UPDATE access_log SET status = 200")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("DELETE FROM access_log")
    finally:
        await conn.close()


# -- production -----------------------------------------------------------------------------


def test_production_settings_refuse_demo_identities_and_need_a_key_encryption_key():
    with pytest.raises(ValidationError, match="demo"):
        Settings(environment="production", demo=True, key_encryption_key="x" * 44)
    with pytest.raises(ValidationError, match="KEY_ENCRYPTION_KEY"):
        Settings(environment="production")


async def test_the_first_admin_of_production_is_created_by_a_command(gateway_settings: Settings):
    def create_admin(username: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ght_gateway.cli", "create-admin", "--username", username],
            input=f"{password}\n",
            env={
                **os.environ,
                "GATEWAY_DATABASE_URL": gateway_settings.database_url,
                "GATEWAY_ENVIRONMENT": "test",
            },
            capture_output=True,
            text=True,
        )

    created = await asyncio.to_thread(create_admin, "root.g4", "the-first-admin-password")
    again = await asyncio.to_thread(create_admin, "root.g4", "the-first-admin-password")
    short = await asyncio.to_thread(create_admin, "other", "short")

    assert created.returncode == 0, created.stderr
    assert again.returncode == 1 and "exists already" in again.stderr
    assert short.returncode == 2 and "at least 12" in short.stderr
    async with running_app(create_app(gateway_settings)) as client:
        issued = await password_token(client, "root.g4", "the-first-admin-password")
        assert "admin" in issued["scope"].split()


async def test_a_refused_oversized_body_is_logged_with_its_413(gateway, admin):
    async def chunks():
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MiB in all, over the 1 MiB limit, no Content-Length

    response = await gateway.post(
        "/auth/token",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 413
    page = await gateway.get("/admin/audit", params={"path_prefix": "/auth/token"}, headers=admin)
    assert [item["status"] for item in page.json()["items"]][:1] == [413]


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("name", ["since", "until"])
async def test_an_edge_moment_in_the_audit_query_is_a_422_naming_it(gateway, moment, name):
    admin = bearer(await password_token(gateway, "admin"))

    response = await gateway.get("/admin/audit", params={name: moment}, headers=admin)

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == name


async def test_the_access_log_keys_a_request_by_the_gateways_id_and_keeps_the_callers_beside(
    gateway, admin
):
    chosen = f"portal-{uuid.uuid4().hex[:12]}.42"
    answered = await gateway.get("/auth/me", headers={**admin, "X-Request-ID": chosen})
    own = answered.headers["x-request-id"]
    unsafe = await gateway.get("/auth/me", headers={**admin, "X-Request-ID": "x y\t" * 10})

    assert own != chosen and len(own) == 32
    [entry] = (
        await gateway.get("/admin/audit", params={"client_request_id": chosen}, headers=admin)
    ).json()["items"]
    assert (entry["request_id"], entry["client_request_id"]) == (own, chosen)
    [dropped] = (
        await gateway.get(
            "/admin/audit", params={"request_id": unsafe.headers["x-request-id"]}, headers=admin
        )
    ).json()["items"]
    assert dropped["client_request_id"] is None  # not safe characters: not kept


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/clients/si-chu", {"rotate_secret": "yes"}),
        ("/admin/clients/si-chu", {"active": "false"}),
        ("/admin/users/cadre.chu", {"active": 0}),
    ],
)
async def test_a_flag_is_a_json_boolean_not_text_to_coerce(gateway, admin, path, body):
    # Found by the fuzzing run: "rotate_secret": "yes" rotated the secret.
    response = await gateway.patch(path, json=body, headers=admin)

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == next(iter(body))


@pytest.mark.parametrize("path", ["/admin/users/a%00b", "/admin/clients/a%1Bb"])
async def test_a_control_character_in_an_account_name_is_a_422_not_a_500(gateway, admin, path):
    method = "GET" if "users" in path else "PATCH"
    response = await gateway.request(method, path, headers=admin, json={"name": "x"})

    assert response.status_code == 422, response.text


async def test_a_control_character_in_a_path_is_logged_encoded_and_never_holds_the_log_back(
    gateway, admin
):
    # Found by the fuzzing run: a NUL in a path made every later batch fail, for good.
    odd = await gateway.get("/api/activity/org-units/a%00b%0A/history", headers=admin)
    after = await gateway.get("/auth/me", headers=admin)

    entries = {
        item["request_id"]: item
        for item in (await gateway.get("/admin/audit", headers=admin)).json()["items"]
    }
    assert (
        entries[odd.headers["x-request-id"]]["path"] == "/api/activity/org-units/a%00b%0A/history"
    )
    assert after.headers["x-request-id"] in entries


async def test_an_entry_the_database_refuses_is_dropped_and_counted_the_others_written(
    gateway_app, gateway, admin
):
    writer = gateway_app.state.access_log
    refused_before = writer.refused._value.get()
    template = {"at": datetime.now(UTC), "method": "GET", "route": "/x", "duration_ms": 1.0}
    writer.append({**template, "path": "/refused", "status": 2**40, "request_id": "refused"})
    writer.append({**template, "path": "/kept", "status": 200, "request_id": "kept"})

    audit = await gateway.get("/admin/audit", params={"path_prefix": "/kept"}, headers=admin)

    assert audit.status_code == 200
    assert [item["request_id"] for item in audit.json()["items"]] == ["kept"]
    assert writer.refused._value.get() == refused_before + 1


@pytest.mark.parametrize(
    "params",
    [
        {"principal": "a\x00b"},
        {"path_prefix": "/\x00"},
        {"request_id": "\x00"},
        {"client_request_id": "x\x1by"},
        {"since": "0.5"},
        {"until": "1700000000"},
    ],
)
async def test_audit_filters_refuse_control_characters_and_numbers_for_moments(
    gateway, admin, params
):
    response = await gateway.get("/admin/audit", params=params, headers=admin)

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == next(iter(params))


async def test_metrics_are_served_on_their_own_port_never_on_the_public_one(
    gateway_app, gateway, admin
):
    public = await gateway.get("/metrics", headers=admin)
    port = gateway_app.state.metrics_port
    async with httpx.AsyncClient(trust_env=False) as scraper:
        scraped = await scraper.get(f"http://127.0.0.1:{port}/metrics")

    assert public.status_code == 404
    assert public.headers["content-type"] == "application/problem+json"
    assert scraped.status_code == 200
    assert 'ght_service_info{service="gateway"} 1.0' in scraped.text

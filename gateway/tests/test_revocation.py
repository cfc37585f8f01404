"""Access tokens cut off before they expire: logout, a reused refresh token, a disabled or
changed account or client (ADR 0015)."""

from __future__ import annotations

import httpx
from gateway_testing import DEMO_PASSWORD, bearer, client_token, password_token

from ght_shared.auth import revocation_key


async def _me(client: httpx.AsyncClient, token: dict[str, str]) -> httpx.Response:
    return await client.get("/auth/me", headers=bearer(token))


async def test_logout_cuts_off_the_access_tokens_of_that_login_only(gateway):
    first = await password_token(gateway, "direction.chu")
    second = await password_token(gateway, "direction.chu")

    response = await gateway.post(
        "/auth/logout", data={"refresh_token": first["refresh_token"]}, headers=bearer(first)
    )

    assert response.status_code == 204
    refused = await _me(gateway, first)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Token revoked."
    assert (await _me(gateway, second)).status_code == 200


async def test_a_reused_refresh_token_cuts_off_the_access_tokens_of_its_login(gateway):
    login = await password_token(gateway, "cadre.chu")
    renewed = (
        await gateway.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]},
        )
    ).json()
    assert (await _me(gateway, renewed)).status_code == 200

    reused = await gateway.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
    )

    assert reused.status_code == 400
    assert (await _me(gateway, login)).status_code == 401
    assert (await _me(gateway, renewed)).status_code == 401


async def test_a_disabled_person_is_refused_at_once_and_may_come_back(gateway):
    admin = bearer(await password_token(gateway, "admin"))
    issued = await password_token(gateway, "lits.chu")

    await gateway.patch("/admin/users/lits.chu", json={"active": False}, headers=admin)

    assert (await _me(gateway, issued)).status_code == 401
    refresh = await gateway.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
    )
    assert refresh.status_code == 400
    await gateway.patch("/admin/users/lits.chu", json={"active": True}, headers=admin)
    assert (await _me(gateway, await password_token(gateway, "lits.chu"))).status_code == 200


async def test_new_rights_cut_off_the_old_tokens_and_a_refresh_carries_them(gateway):
    admin = bearer(await password_token(gateway, "admin"))
    issued = await password_token(gateway, "lits.chu")

    await gateway.patch(
        "/admin/users/lits.chu",
        json={"roles": ["commission"], "establishments": ["*"]},
        headers=admin,
    )

    assert (await _me(gateway, issued)).status_code == 401
    renewed = await gateway.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
    )
    me = await _me(gateway, renewed.json())
    assert me.status_code == 200
    assert me.json()["roles"] == ["commission"]


async def test_a_disabled_or_rekeyed_client_is_refused_at_once(gateway):
    admin = bearer(await password_token(gateway, "admin"))
    issued = await client_token(gateway, "si-ch-nord")

    rotated = await gateway.patch(
        "/admin/clients/si-ch-nord", json={"rotate_secret": True}, headers=admin
    )

    assert (await _me(gateway, issued)).status_code == 401
    fresh = await client_token(gateway, "si-ch-nord", rotated.json()["client_secret"])
    assert (await _me(gateway, fresh)).status_code == 200

    await gateway.patch("/admin/clients/si-ch-nord", json={"active": False}, headers=admin)

    assert (await _me(gateway, fresh)).status_code == 401
    response = await gateway.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "si-ch-nord",
            "client_secret": rotated.json()["client_secret"],
        },
    )
    assert response.status_code == 401


async def test_the_services_read_revocations_as_digests_naming_no_account(gateway):
    admin = bearer(await password_token(gateway, "admin"))
    await gateway.patch("/admin/users/effectifs.g4", json={"active": False}, headers=admin)

    response = await gateway.get("/auth/revocations")

    assert response.status_code == 200
    revoked = {entry["key"]: entry["at"] for entry in response.json()["revoked"]}
    assert revocation_key("sub", "effectifs.g4") in revoked
    assert "effectifs.g4" not in response.text
    assert DEMO_PASSWORD not in response.text

"""The revocation list every service checks tokens against (ADR 0015)."""

from __future__ import annotations

import asyncio
import time

from ght_shared.auth import Principal, RevocationList, revocation_key


def _principal(issued_at: float, **claims: str) -> Principal:
    return Principal.model_validate({"sub": "si-chu", "iat": issued_at, **claims})


def _refused(revocations: RevocationList, principal: Principal) -> bool:
    return revocations.refuses(principal, principal.revocation_keys())


async def test_a_revocation_refuses_the_tokens_issued_until_it_and_no_later():
    published: dict[str, float] = {}

    async def load() -> dict[str, float]:
        return dict(published)

    revocations = RevocationList(load, refresh_s=0.05)
    await revocations.refresh()
    before = _principal(time.time() - 1, sid="login-1", jti="t-1")
    assert not _refused(revocations, before)

    published[revocation_key("sub", "si-chu")] = time.time()
    await asyncio.sleep(0.06)
    _refused(revocations, before)  # a stale list starts a refresh, without waiting for it
    await asyncio.sleep(0.02)

    assert _refused(revocations, before)
    assert not _refused(revocations, _principal(time.time() + 0.001))


async def test_a_session_or_a_token_is_revoked_alone():
    now = time.time()
    revocations = RevocationList(None, refresh_s=1)
    revocations.add(revocation_key("sid", "login-1"), now)
    revocations.add(revocation_key("jti", "t-9"), now)

    assert _refused(revocations, _principal(now - 1, sid="login-1", jti="t-1"))
    assert _refused(revocations, _principal(now - 1, sid="login-2", jti="t-9"))
    assert not _refused(revocations, _principal(now - 1, sid="login-2", jti="t-2"))


async def test_the_last_list_stays_when_the_issuer_cannot_be_read():
    calls = 0

    async def load() -> dict[str, float]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("gateway down")
        return {revocation_key("sub", "si-chu"): time.time()}

    revocations = RevocationList(load, refresh_s=0.01)
    await revocations.refresh()
    stale = _principal(time.time() - 10)
    for _ in range(3):
        assert _refused(revocations, stale)
        await asyncio.sleep(0.02)
    assert calls > 1
    await revocations.close()

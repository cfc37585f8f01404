"""The gateway's token-signing keys: stored encrypted, rotated, published as a JWKS.

One key signs at a time (the newest). After a rotation the previous key still
verifies until the last token it signed has expired (``verify_until``), so a
rotation never logs anybody out. Private keys are stored encrypted with the
Fernet key of the settings; several gateway replicas read the same table.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ght_gateway.models import SigningKey
from ght_shared.db import Database

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

# Other replicas learn of a rotation within this time (new keys also verify at once:
# the verifier reloads the key set when it meets an unknown kid).
RELOAD_INTERVAL_S = 30.0

# Replicas creating or rotating keys at once must not leave two signing keys.
_SERIALISE = text("SELECT pg_advisory_xact_lock(hashtext('ght_gateway_signing_key'))")


@dataclass(frozen=True)
class Signer:
    kid: str
    algorithm: str
    private_key: PrivateKey


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported signing algorithm {algorithm!r} (EdDSA or RS256)")


def public_jwk(kid: str, algorithm: str, private_key: PrivateKey) -> dict[str, Any]:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        jwk = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


class KeyStore:
    """Reads, creates and rotates the signing keys of the ``signing_key`` table."""

    def __init__(
        self, database: Database, encryption_key: str, algorithm: str, token_ttl_s: int
    ) -> None:
        self.database = database
        self._fernet = Fernet(encryption_key.encode())
        self.algorithm = algorithm
        self.token_ttl_s = token_ttl_s
        self._signer: Signer | None = None
        self._jwks: dict[str, Any] = {"keys": []}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def signer(self) -> Signer:
        """The key that signs now (created on first use when the table is empty)."""
        await self._reload_if_stale()
        assert self._signer is not None
        return self._signer

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify tokens now (the signing one and those still valid)."""
        await self._reload_if_stale()
        return self._jwks

    async def rotate(self) -> str:
        """Make a new key the signing one; the previous keys verify until their tokens expire."""
        async with self.database.transaction() as session:
            await session.execute(_SERIALISE)
            now = datetime.now(UTC)
            # Tokens signed just before now live up to the access-token lifetime, plus a margin.
            verify_until = now + timedelta(seconds=self.token_ttl_s + 60)
            await session.execute(
                update(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .values(retired_at=now, verify_until=verify_until)
            )
            kid = await self._create(session)
        await self.reload()
        return kid

    async def reload(self) -> None:
        async with self._lock:
            await self._load()

    async def _reload_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at < RELOAD_INTERVAL_S and self._signer is not None:
            return
        async with self._lock:
            if time.monotonic() - self._loaded_at >= RELOAD_INTERVAL_S or self._signer is None:
                await self._load()

    async def _load(self) -> None:
        async with self.database.transaction() as session:
            # One replica creates the first key; the others wait for it and read it.
            await session.execute(_SERIALISE)
            keys = await self._usable(session)
            if not any(key.retired_at is None for key in keys):
                await self._create(session)
                keys = await self._usable(session)
        current = next(key for key in keys if key.retired_at is None)
        private = serialization.load_der_private_key(
            self._fernet.decrypt(current.private_key_encrypted), password=None
        )
        assert isinstance(private, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey)
        self._signer = Signer(current.kid, current.algorithm, private)
        self._jwks = {"keys": [key.public_jwk for key in keys]}
        self._loaded_at = time.monotonic()

    async def _usable(self, session: AsyncSession) -> list[SigningKey]:
        now = datetime.now(UTC)
        rows = await session.scalars(
            select(SigningKey)
            .where(or_(SigningKey.verify_until.is_(None), SigningKey.verify_until > now))
            .order_by(SigningKey.created_at.desc())
        )
        return list(rows)

    async def _create(self, session: AsyncSession) -> str:
        kid = f"{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:12]}"
        private = generate_private_key(self.algorithm)
        der = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        session.add(
            SigningKey(
                kid=kid,
                algorithm=self.algorithm,
                public_jwk=public_jwk(kid, self.algorithm, private),
                private_key_encrypted=self._fernet.encrypt(der),
                created_at=datetime.now(UTC),
            )
        )
        await session.flush()
        return kid

"""Database URL forms: operators write ``postgresql://``, SQLAlchemy wants the asyncpg driver."""

from __future__ import annotations


def asyncpg_url(url: str) -> str:
    """Accept ``postgresql://`` URLs from operators and use the asyncpg driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def plain_url(url: str) -> str:
    """The libpq form of a SQLAlchemy URL, for asyncpg.connect and psql."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)

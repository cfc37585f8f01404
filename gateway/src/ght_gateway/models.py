"""Tables of the gateway (users, clients, keys and access log arrive with the gateway issue)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass

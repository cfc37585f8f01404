"""Tables of staffing-svc (its domain tables arrive with its domain issue)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass

"""Column types the services' mapped tables share."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import Dialect, Text
from sqlalchemy.types import TypeDecorator

E = TypeVar("E", bound=StrEnum)


class EnumText(TypeDecorator[E], Generic[E]):
    """A :class:`~enum.StrEnum` stored as its value in a ``text`` column.

    Rows read give the enum (``unit.kind is OrgUnitKind.UNIT``); a value written or
    compared may be the enum or its string, and must be one of the enum's (a wrong one
    raises before reaching the database). The column keeps its ``CHECK`` constraint in
    the migration: the database refuses what another writer would put there.
    """

    impl = Text
    cache_ok = True

    def __init__(self, enum: type[E]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)

    @property
    def python_type(self) -> type[E]:
        return self.enum

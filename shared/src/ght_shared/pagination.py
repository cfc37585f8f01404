"""Keyset pagination: one page model, one cursor codec, the same query parameters everywhere.

A list answers ``{"items": [...], "next_cursor": "..."}``; the client passes
``next_cursor`` back as ``cursor`` to read the next page, and gets null on the last one.
The cursor is the sort key of the page's last item, opaque to the client (base64url of
a JSON array): :func:`encode_cursor` writes it, :func:`decode_cursor` reads it back with
the types the list sorts on, and refuses anything else with one 422 naming ``cursor``.

A route reads ``limit + 1`` rows in key order after the cursor's key and answers
:meth:`Page.of` them::

    rows = (await session.scalars(query.where(key > after).limit(limit + 1))).all()
    return Page.of(rows, limit, key=lambda r: (r.created_at, r.id), read=ThingRead.model_validate)
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from ght_shared.errors import InvalidInput
from ght_shared.schemas import EARLIEST_YEAR, LATEST_YEAR

T = TypeVar("T")
R = TypeVar("R")

MAX_CURSOR_LENGTH = 2000
"""Enough for the longest sort key of a list (three 64-character texts, JSON-escaped)."""

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page (1-1000).")]
"""The ``limit`` query parameter of a list (100 unless the route says otherwise)."""
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="`next_cursor` of the previous page, passed as it came.",
    ),
]
"""The ``cursor`` query parameter of a list."""


class Page(BaseModel, Generic[T]):
    """One page of a list, in the list's order."""

    items: list[T]
    next_cursor: str | None = Field(
        description="Pass it as `cursor` to read the next page; null on the last page."
    )

    @classmethod
    def of(
        cls,
        rows: Sequence[R],
        limit: int,
        *,
        key: Callable[[R], Sequence[Any]],
        read: Callable[[R], T],
    ) -> Page[T]:
        """The page of ``rows`` (read with ``limit + 1``): its first ``limit``, read, and
        the cursor of the last of them when there are more."""
        shown = rows[:limit]
        more = len(rows) > limit
        return cls(
            items=[read(row) for row in shown],
            next_cursor=encode_cursor(*key(shown[-1])) if more and shown else None,
        )


def encode_cursor(*key: Any) -> str:
    """The cursor of a sort key: strings (a ``StrEnum`` too), integers, UUIDs, dates and
    date-times."""
    parts = [
        str(part)
        if isinstance(part, uuid.UUID)
        else part.isoformat()
        if isinstance(part, date)  # datetime is a date too
        else part
        for part in key
    ]
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type[Any]) -> tuple[Any, ...]:
    """The sort key of ``cursor``, one value of each of ``types`` (``str``, ``int``,
    ``uuid.UUID``, ``date``, ``datetime``: aware, UTC when written without offset, or a
    ``StrEnum``: one of its members).

    Raises :class:`InvalidInput` (422, field ``cursor``, rule ``cursor``) for anything
    that is not a cursor this codec wrote with these types.
    """
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as exc:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        raise invalid_cursor() from exc
    if not isinstance(key, list) or len(key) != len(types):
        raise invalid_cursor()
    return tuple(_typed(value, wanted) for value, wanted in zip(key, types, strict=True))


def invalid_cursor() -> InvalidInput:
    return InvalidInput(
        "The cursor is not one this list gave: pass next_cursor as it came.",
        field="cursor",
        rule="cursor",
    )


def _typed(value: Any, wanted: type[Any]) -> Any:
    if wanted is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise invalid_cursor()
    if not isinstance(value, str):
        raise invalid_cursor()
    try:
        if wanted is str:
            # PostgreSQL text holds neither NUL nor lone surrogates.
            if "\x00" in value:
                raise ValueError("NUL")
            value.encode()
            return value
        if wanted is uuid.UUID:
            return uuid.UUID(value)
        if wanted is datetime:
            moment = datetime.fromisoformat(value)
            if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
                raise ValueError("out of range")  # its conversion to UTC could overflow
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if wanted is date:
            return date.fromisoformat(value)
        if isinstance(wanted, type) and issubclass(wanted, StrEnum):
            return wanted(value)  # one of its members, or a ValueError
    except (ValueError, UnicodeEncodeError) as exc:
        raise invalid_cursor() from exc
    raise TypeError(f"a cursor holds no {wanted.__name__}")

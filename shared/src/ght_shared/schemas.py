"""Base request/response models and the strict, bounded types of their fields.

Unknown fields are rejected, not silently dropped. In JSON bodies a date or a moment is
ISO 8601 text (not a number of seconds) and a boolean is ``true``/``false`` (not
``"off"``); a moment lies between 1900 and 2199, where its conversion to UTC and
PostgreSQL's range are safe; an identifier holds no control or format character.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, ClassVar

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

EARLIEST_YEAR, LATEST_YEAR = 1900, 2199
MAX_KEY = 100
"""Longest code or name a path or query parameter names (an org unit, an indicator...)."""


_ISO_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_text(value: Any) -> Any:
    # A date-time is a date; text must start as one (pydantic alone would read "0.5" as
    # a number of seconds since 1970, and a query parameter is always text).
    if isinstance(value, dt.date) or (isinstance(value, str) and _ISO_START.match(value)):
        return value
    raise PydanticCustomError("iso_8601", "must be an ISO 8601 text (e.g. 2026-01-31)")


def _in_range(value: dt.date) -> dt.date:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise PydanticCustomError(
            "year_range",
            "must lie between the years {earliest} and {latest}",
            {"earliest": EARLIEST_YEAR, "latest": LATEST_YEAR},
        )
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    _in_range(value)
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC)


IsoDate = Annotated[dt.date, BeforeValidator(_iso_text), AfterValidator(_in_range)]
"""A date given as ISO 8601 text, within the years 1900-2199."""

LocalMoment = Annotated[dt.datetime, BeforeValidator(_iso_text), AfterValidator(_in_range)]
"""A date-time as ISO 8601 text, with or without offset (kept as given), in 1900-2199."""

Moment = Annotated[dt.datetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
"""A date-time in UTC (without offset: taken as UTC), within 1900-2199: the type of
every ``since``/``until`` query parameter."""

Flag = StrictBool
"""A JSON boolean, ``true`` or ``false`` only."""


# The control (Cc), format (Cf) and surrogate (Cs) characters of Unicode 14 (Python
# 3.11's): CR, LF, ESC, NUL, bidi overrides such as U+202E, zero-width characters, BOM.
# Written out (computing them takes seconds) and checked against ``unicodedata`` by a test.
UNPRINTABLE_RANGES = (
    (0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C),
    (0x6DD, 0x6DD), (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0xD800, 0xDFFF), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def character_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """A bracket expression of ``ranges`` with ``\\u``/``\\U`` escapes: the same text is
    a Python and a PostgreSQL (ARE) regular expression."""
    return "[" + "".join(f"{_escape(a)}-{_escape(b)}" for a, b in ranges) + "]"


UNPRINTABLE_SQL = character_class(
    tuple((max(a, 1), b) for a, b in UNPRINTABLE_RANGES if a < 0xD800 or a > 0xDFFF)
)
"""The unprintable characters as a PostgreSQL regular expression (its text holds neither
NUL nor surrogates): ``WHEN value ~ '<UNPRINTABLE_SQL>' THEN ...``."""

_UNPRINTABLE = re.compile(character_class(UNPRINTABLE_RANGES))


def printable(value: str) -> str:
    """``value`` when it holds no control or format character (CR, LF, ESC, NUL, bidi
    overrides such as U+202E, zero-width characters); a 422 otherwise."""
    found = _UNPRINTABLE.search(value)
    if found:
        raise PydanticCustomError(
            "control_character",
            "must not contain control or format characters (U+{code:04X} at {position})",
            {"code": ord(found.group()), "position": found.start()},
        )
    return value


Printable = Annotated[str, AfterValidator(printable)]
"""Text shown, logged and exported as it is: no control or format character."""


def printable_lines(value: str) -> str:
    """``value`` with its line breaks as LF (CRLF and CR read as one), each line as
    :func:`printable` wants it; a 422 otherwise."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in lines:
        printable(line)
    return "\n".join(lines)


PrintableLines = Annotated[str, AfterValidator(printable_lines)]
"""A text of several lines (a comment): no control or format character but LF."""

PathKey = Annotated[Printable, Path(min_length=1, max_length=MAX_KEY)]
"""A code or name in a path: bounded, printable (PostgreSQL text never holds a NUL)."""


class StrictModel(BaseModel):
    """Base of request bodies: an unknown field is a 422 naming it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PatchModel(StrictModel):
    """Base of PATCH bodies: a field left out keeps its value; ``null`` clears a field only
    where the model lists it in :attr:`NULLABLE`, and is a 422 naming the field (rule
    ``not_nullable``) anywhere else.

    Declare the other optional fields ``X | SkipJsonSchema[None] = None``: absent is
    allowed, null is not, and the OpenAPI document says so.
    """

    NULLABLE: ClassVar[frozenset[str]] = frozenset()
    """The fields a ``null`` clears."""

    # Field validators do not run on defaults: this sees only the values the client sent.
    @field_validator("*", mode="after")
    @classmethod
    def _null_only_where_nullable(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.NULLABLE:
            raise PydanticCustomError(
                "not_nullable",
                "{field} may not be null: leave it out to keep its value",
                {"field": info.field_name},
            )
        return value


class ReadModel(BaseModel):
    """Base of responses, built from ORM objects."""

    model_config = ConfigDict(from_attributes=True)

"""Base request/response models and the strict, bounded types of their fields.

Unknown fields are rejected, not silently dropped. In JSON bodies a date or a moment is
ISO 8601 text (not a number of seconds) and a boolean is ``true``/``false`` (not
``"off"``); a moment lies between 1900 and 2199, where its conversion to UTC and
PostgreSQL's range are safe; an identifier holds no control or format character.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
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

PathKey = Annotated[str, Path(min_length=1, max_length=MAX_KEY)]


def _iso_text(value: Any) -> Any:
    if isinstance(value, str | dt.date):  # a datetime is a date
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


def printable(value: str) -> str:
    """``value`` when it holds no control or format character (CR, LF, ESC, NUL, bidi
    overrides such as U+202E, zero-width characters); a 422 otherwise."""
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            raise PydanticCustomError(
                "control_character",
                "must not contain control or format characters (U+{code:04X} at {position})",
                {"code": ord(char), "position": position},
            )
    return value


Printable = Annotated[str, AfterValidator(printable)]
"""Text shown, logged and exported as it is: no control or format character."""


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

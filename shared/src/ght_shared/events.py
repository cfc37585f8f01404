"""The CloudEvents 1.0 envelope of EVENTS.md.

An event is built with :func:`new_event`; its ``sequence`` is assigned by the
outbox from the owning database when it is stored, so it is per aggregate and
gap-free in commit order of that aggregate.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ght_shared.context import traceparent_var

_TYPE = re.compile(r"^ght\.[a-z_]+(\.[a-z0-9_]+)+\.v[0-9]+$")


class Event(BaseModel):
    """One event, serialised as a structured-mode CloudEvent."""

    # Consumers must ignore fields they do not know (EVENTS.md).
    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: str = "1.0"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str
    type: str
    subject: str = Field(description="The aggregate, e.g. 'bed/4211'.")
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: str = "application/json"
    sequence: int = 0
    establishment: str | None = None
    traceparent: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _versioned_type(cls, value: str) -> str:
        if not _TYPE.match(value):
            raise ValueError("event type must look like 'ght.<owner>.<entity>.<verb>.v<N>'")
        return value

    @property
    def nats_subject(self) -> str:
        """The NATS subject: the type without its version suffix."""
        return nats_subject_of(self.type)

    def to_bytes(self) -> bytes:
        """The event as JSON without its null attributes, as ``model_dump(mode="json")`` has it."""
        attributes = {**self.__dict__, **(self.__pydantic_extra__ or {})}
        try:
            # orjson writes datetimes and UUIDs as pydantic does (UTC as "Z"), in a
            # fraction of the time pydantic takes to convert them first.
            return orjson.dumps(
                {name: value for name, value in attributes.items() if value is not None},
                option=orjson.OPT_UTC_Z,
            )
        except orjson.JSONEncodeError:
            # ``data`` holds what orjson does not write (a Decimal, a set, a non-str key...).
            return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Event:
        return cls.model_validate(orjson.loads(raw))


def nats_subject_of(event_type: str) -> str:
    """``ght.beds.bed.status_changed.v1`` → ``ght.beds.bed.status_changed``."""
    head, _, version = event_type.rpartition(".")
    return head if version.startswith("v") and version[1:].isdigit() else event_type


def new_event(
    *,
    source: str,
    type: str,
    subject: str,
    data: dict[str, Any],
    establishment: str | None = None,
) -> Event:
    """An event caused by the current request or message (its trace is carried on)."""
    return Event(
        source=source,
        type=type,
        subject=subject,
        data=data,
        establishment=establishment,
        traceparent=traceparent_var.get(),
    )

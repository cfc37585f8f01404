"""The base of every payload model, its field types and the error of a payload that does
not fit."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from ght_shared.events import Event, new_event
from ght_shared.identifiers import Finess


class UnreadablePayload(ValueError):
    """An event whose data does not satisfy its type's payload model: it will never be
    applied, however often it is delivered (the consumer dead-letters it at once)."""


_CONFIG = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

# Numbers and flags are JSON numbers and booleans: "30" or true for a count is refused
# rather than coerced, so that a consumer may rely on the type it reads.
Count = Annotated[int, Field(strict=True, ge=0)]
"""A number of things: a JSON integer, at least 0."""
Number = Annotated[float, Field(strict=True)]
"""A JSON number (an integer is accepted and read as a float)."""
Flag = Annotated[bool, Field(strict=True)]
"""A JSON boolean."""
Month = Annotated[str, Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
"""A calendar month, ``YYYY-MM``."""
FinessNumber = Annotated[Finess, WithJsonSchema({"type": "string", "format": "finess"})]
"""An establishment's FINESS number, checked (format and Luhn key)."""


class Visibility(StrEnum):
    """Who sees an event type on the gateway's live feed (``docs/roles.md``)."""

    PUBLIC = "public"
    """Every principal of the feed: facts of the territory every establishment shares."""
    ESTABLISHMENT = "establishment"
    """Territorial principals, and those acting for an establishment the event concerns;
    an event that names no establishment is for territorial principals only."""
    TERRITORIAL = "territorial"
    """Territorial principals only (``establishments: ["*"]``)."""


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may see one event: its visibility and the establishments it concerns."""

    visibility: Visibility
    establishments: frozenset[str] = frozenset()


class PayloadPart(BaseModel):
    """A model nested in a payload (a period, an objective): frozen, unknown fields kept."""

    model_config = _CONFIG


class Payload(BaseModel):
    """The ``data`` of one event type."""

    model_config = _CONFIG

    EVENT_TYPE: ClassVar[str]
    """The versioned event type, e.g. ``ght.beds.capacity.changed.v1``."""
    SUBJECT: ClassVar[str]
    """The aggregate: a :meth:`str.format` template over the fields, e.g. ``unit/{unit}``."""
    CONSUMED_BY: ClassVar[tuple[str, ...]] = ()
    """The services whose code reads this event today."""
    PUBLISHED: ClassVar[bool] = False
    """True when a service publishes it today; the others are planned."""
    VISIBILITY: ClassVar[Visibility]
    """Who sees it on the live feed. Every event type declares it (a test checks); the
    feed forwards no event of a type without a model."""
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ()
    """The fields of ``data`` naming (by FINESS) establishments the event concerns, besides
    the envelope's ``establishment``: its parties (a transfer's two ends)."""

    def subject(self) -> str:
        """The event's subject: :attr:`SUBJECT` filled with the field values."""
        return self.SUBJECT.format_map(self.__dict__)

    def data(self) -> dict[str, Any]:
        """The event's ``data``, ready for JSON: the fields by their JSON names, without
        those left at their default (a None given explicitly is kept)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def event(self, *, source: str, establishment: str | None = None) -> Event:
        """The event carrying this payload, to store with ``add_event``."""
        return new_event(
            source=source,
            type=self._event_type(source),
            subject=self.subject(),
            data=self.data(),
            establishment=establishment,
        )

    def _event_type(self, source: str) -> str:
        return self.EVENT_TYPE

    @classmethod
    def audience(cls, event: Event) -> Audience:
        """Who may see ``event`` on the live feed: :attr:`VISIBILITY`, and the envelope's
        establishment with those of :attr:`ESTABLISHMENT_FIELDS`.

        Reads ``data`` as it is, without validating it: the feed decides for every event
        it forwards (tens of thousands after a large import). A value that is not a string
        names no establishment, which narrows the audience, never widens it.
        """
        named = [event.establishment, *(event.data.get(name) for name in cls.ESTABLISHMENT_FIELDS)]
        return Audience(cls.VISIBILITY, frozenset(v for v in named if isinstance(v, str) and v))

    @classmethod
    def of(cls, event: Event) -> Self:
        """The payload of ``event``; :class:`UnreadablePayload` when its data does not fit."""
        try:
            return cls.model_validate(event.data)
        except ValidationError as exc:
            raise UnreadablePayload(f"{event.type} {event.id}: {_summary(exc)}") from exc


def _summary(exc: ValidationError, most: int = 3) -> str:
    """``installed: Input should be a valid integer; unit: Field required``."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [
        f"{'.'.join(str(step) for step in error['loc']) or 'data'}: {error['msg']}"
        for error in errors[:most]
    ]
    if len(errors) > most:
        parts.append(f"and {len(errors) - most} more")
    return "; ".join(parts)

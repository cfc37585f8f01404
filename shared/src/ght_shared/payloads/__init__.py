"""The ``data`` of every event of the platform, as frozen pydantic models.

A producer builds the model and turns it into an event; a consumer reads the event's
``data`` back into the model of its type::

    event = CapacityChanged(unit="CHU-2101", installed=30).event(source="beds-svc")
    capacity = CapacityChanged.of(event)  # UnreadablePayload if data does not fit

The models keep the fields they do not know (``extra="allow"``): an event of a newer
producer is read by an older consumer, which ignores what it added (EVENTS.md). One module
per owner (:mod:`.referential`, :mod:`.activity`, :mod:`.beds`, :mod:`.contracts`,
:mod:`.staffing`, and :mod:`.common` for dead letters); :data:`PAYLOADS` lists them all,
in the order of the catalogue of ``docs/events.md`` (``make events-doc``).
"""

from __future__ import annotations

from ght_shared.events import nats_subject_of
from ght_shared.payloads import activity, beds, common, contracts, referential, staffing
from ght_shared.payloads.base import (
    Audience,
    Count,
    FinessNumber,
    Flag,
    Month,
    Number,
    Payload,
    PayloadPart,
    UnreadablePayload,
    Visibility,
)

PAYLOADS: tuple[type[Payload], ...] = (
    *referential.PAYLOADS,
    *activity.PAYLOADS,
    *beds.PAYLOADS,
    *contracts.PAYLOADS,
    *staffing.PAYLOADS,
    *common.PAYLOADS,
)
"""Every payload model, in the order of the catalogue."""


def _unversioned(event_type: str) -> str:
    """The type without its version, with ``<owner>`` for a dead letter of any owner."""
    parts = nats_subject_of(event_type).split(".")
    if len(parts) == 4 and parts[2:] == ["dead_letter", "recorded"]:
        parts[1] = "<owner>"
    return ".".join(parts)


def _version(event_type: str) -> int:
    return int(event_type.rpartition(".v")[2])


_BY_TYPE: dict[str, type[Payload]] = {model.EVENT_TYPE: model for model in PAYLOADS}
_LATEST: dict[str, type[Payload]] = {
    _unversioned(model.EVENT_TYPE): model
    for model in sorted(PAYLOADS, key=lambda model: _version(model.EVENT_TYPE))
}


def payload_for(event_type: str) -> type[Payload] | None:
    """The model of ``event_type``, given with its version (``...changed.v1``) or without
    (the latest version); None for a type of no model."""
    head = _unversioned(event_type)
    if nats_subject_of(event_type) == event_type:
        return _LATEST.get(head)
    return _BY_TYPE.get(f"{head}.{event_type.rpartition('.')[2]}")


__all__ = [
    "PAYLOADS",
    "Audience",
    "Count",
    "FinessNumber",
    "Flag",
    "Month",
    "Number",
    "Payload",
    "PayloadPart",
    "UnreadablePayload",
    "Visibility",
    "payload_for",
]

"""Events of the platform's own mechanics: the dead letters of every service's consumers.

A service's consumer publishes them in its own stream (``ght_shared.consumer``), so their
type names the owner: ``ght.activity.dead_letter.recorded.v1`` for activity-svc.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ght_shared.payloads.base import Count, Payload, Visibility

DEAD_LETTER_RECORDED = "ght.<owner>.dead_letter.recorded.v1"
"""The type's template; :func:`dead_letter_type` gives one owner's type."""


def dead_letter_type(owner: str) -> str:
    """``activity`` → ``ght.activity.dead_letter.recorded.v1``."""
    return DEAD_LETTER_RECORDED.replace("<owner>", owner)


def owner_of(service: str) -> str:
    """The owner named in a service's event types: ``beds-svc`` → ``beds``."""
    return service.split("-", 1)[0]


class DeadLetterRecorded(Payload):
    """Published by a service's consumer when it gives up on a message (still failing at
    its last delivery, or not a readable event) and records it as a dead letter."""

    EVENT_TYPE: ClassVar[str] = DEAD_LETTER_RECORDED
    SUBJECT: ClassVar[str] = "dead_letter/{consumer}"
    PUBLISHED: ClassVar[bool] = True
    # The platform's operation; its error may quote any establishment's data.
    VISIBILITY: ClassVar[Visibility] = Visibility.TERRITORIAL

    consumer: str = Field(description="The durable consumer's name, e.g. `activity__beds`.")
    event_id: str | None = Field(description="The event's id; null when it was unreadable.")
    event_type: str | None = Field(description="The event's type; null when it was unreadable.")
    # `subject` on the wire; the name is taken by Payload.subject().
    nats_subject: str = Field(alias="subject", description="The NATS subject of the message.")
    error: str = Field(max_length=500, description="The last error, cut to 500 characters.")
    deliveries: Count = Field(description="How many times the message was delivered.")

    def _event_type(self, source: str) -> str:
        return dead_letter_type(owner_of(source))


PAYLOADS: tuple[type[Payload], ...] = (DeadLetterRecorded,)

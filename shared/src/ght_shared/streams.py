"""JetStream streams of EVENTS.md and their idempotent provisioning."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]


# One stream per owning service (EVENTS.md).
STREAMS: dict[str, StreamSpec] = {
    spec.name: spec
    for spec in (
        StreamSpec("CONTRACTS", ("ght.contracts.>",)),
        StreamSpec("ACTIVITY", ("ght.activity.>", "ght.referential.>")),
        StreamSpec("BEDS", ("ght.beds.>",)),
        StreamSpec("STAFFING", ("ght.staffing.>",)),
    )
}


def stream_for_subject(subject: str) -> StreamSpec:
    """The stream that stores ``subject``."""
    for spec in STREAMS.values():
        for pattern in spec.subjects:
            if subject.startswith(pattern.removesuffix(">")):
                return spec
    raise LookupError(f"no stream stores subject {subject!r}")


def stream_config(spec: StreamSpec, *, replicas: int, duplicate_window_s: float) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        duplicate_window=duplicate_window_s,
        max_age=90 * 24 * 3600.0,
    )


async def ensure_stream(
    js: JetStreamContext, spec: StreamSpec, *, replicas: int = 1, duplicate_window_s: float = 300.0
) -> None:
    """Create the stream, or bring an existing one to the expected settings."""
    config = stream_config(spec, replicas=replicas, duplicate_window_s=duplicate_window_s)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(config)
        _log.info("stream created", extra={"stream": spec.name})
        return
    current = info.config
    if (
        sorted(current.subjects or []) != sorted(spec.subjects)
        or current.duplicate_window != config.duplicate_window
        or current.max_age != config.max_age
        or current.num_replicas != replicas
    ):
        await js.update_stream(config)
        _log.info("stream updated", extra={"stream": spec.name})

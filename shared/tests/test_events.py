from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from ght_shared.context import traceparent_var
from ght_shared.events import Event, nats_subject_of, new_event


def test_an_event_is_a_structured_cloudevent_with_the_fields_of_events_md():
    event = new_event(
        source="beds-svc",
        type="ght.beds.bed.status_changed.v1",
        subject="bed/4211",
        data={"from": "U", "to": "O"},
        establishment="420784878",
    )
    body = orjson.loads(event.to_bytes())
    assert body["specversion"] == "1.0"
    assert uuid.UUID(body["id"])
    assert body["source"] == "beds-svc"
    assert body["subject"] == "bed/4211"
    assert body["datacontenttype"] == "application/json"
    assert body["establishment"] == "420784878"
    assert body["data"] == {"from": "U", "to": "O"}
    assert body["time"].endswith("Z") or body["time"].endswith("+00:00")


def test_the_nats_subject_is_the_type_without_its_version():
    assert nats_subject_of("ght.beds.bed.status_changed.v1") == "ght.beds.bed.status_changed"
    event = new_event(source="s", type="ght.activity.alert.raised.v2", subject="x/1", data={})
    assert event.nats_subject == "ght.activity.alert.raised"


def test_an_unversioned_or_foreign_type_is_refused():
    for bad in ("ght.beds.bed.status_changed", "beds.bed.changed.v1", "ght.Beds.x.v1"):
        with pytest.raises(ValidationError):
            new_event(source="s", type=bad, subject="x/1", data={})


def test_the_event_carries_the_trace_of_the_request_that_caused_it():
    token = traceparent_var.set("00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    try:
        event = new_event(source="s", type="ght.beds.bed.freed.v1", subject="bed/1", data={})
    finally:
        traceparent_var.reset(token)
    assert event.traceparent == "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def test_a_consumer_keeps_fields_it_does_not_know():
    raw = orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "beds-svc",
            "type": "ght.beds.bed.freed.v1",
            "subject": "bed/1",
            "time": "2026-11-22T09:14:03.512Z",
            "sequence": 3,
            "newfield": {"x": 1},
            "data": {"bed": "1"},
        }
    )
    event = Event.from_bytes(raw)
    assert event.sequence == 3
    assert event.data == {"bed": "1"}


class _Ward(enum.Enum):
    ICU = "icu"


@pytest.mark.parametrize(
    "data",
    [
        {"value": 123.0, "ratio": 0.1 + 0.2, "big": 1e16, "tiny": 5e-324, "count": -(2**63)},
        {"absent": None, "nested": {"absent": None, "list": [None, 1, "é ☃ \u2028"]}},
        {"at": datetime(2026, 1, 1, tzinfo=UTC), "micro": datetime(2026, 1, 1, 1, 2, 3, 4000)},
        {"zone": datetime(2026, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))},
        {"zero_offset": datetime(2026, 1, 1, tzinfo=timezone(timedelta(0)))},
        {"day": date(2026, 3, 1), "id": uuid.UUID(int=7), "ward": _Ward.ICU, "pair": (1, 2)},
        # What orjson does not write itself goes through pydantic's JSON conversion.
        {"amount": Decimal("1.50"), "tags": {"a"}, "raw": b"x", "by_int": {1: "one"}},
    ],
)
def test_the_bytes_are_the_json_of_the_event_without_its_null_attributes(data):
    token = traceparent_var.set(None)
    try:
        event = new_event(source="s", type="ght.beds.bed.freed.v1", subject="bed/1", data=data)
    finally:
        traceparent_var.reset(token)
    assert event.to_bytes() == orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def test_an_event_read_back_from_its_bytes_is_equal_to_it():
    event = new_event(
        source="activity-svc",
        type="ght.activity.indicator.updated.v1",
        subject="indicator/stays_full/CHU-IMG",
        data={"value": 123.0, "period": "2025-03", "variation_pct": None},
        establishment="420784878",
    ).model_copy(update={"sequence": 12})
    assert Event.from_bytes(event.to_bytes()) == event


def test_fields_a_consumer_does_not_know_are_written_back_unless_null():
    raw = orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "beds-svc",
            "type": "ght.beds.bed.freed.v1",
            "subject": "bed/1",
            "time": "2026-11-22T09:14:03.512+01:00",
            "newfield": {"x": 1},
            "nothing": None,
            "data": {"bed": "1"},
        }
    )
    event = Event.from_bytes(raw)
    written = event.to_bytes()
    assert written == orjson.dumps(event.model_dump(mode="json", exclude_none=True))
    assert orjson.loads(written)["newfield"] == {"x": 1}
    assert "nothing" not in orjson.loads(written)

from __future__ import annotations

import string
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ght_shared.events import Event, new_event
from ght_shared.payloads import (
    PAYLOADS,
    Audience,
    Payload,
    UnreadablePayload,
    Visibility,
    catalogue,
    payload_for,
)
from ght_shared.payloads.activity import BatchIngested, IndicatorUpdated
from ght_shared.payloads.beds import BedStatusChanged, CapacityChanged, TransferAccepted
from ght_shared.payloads.common import DeadLetterRecorded, dead_letter_type
from ght_shared.payloads.contracts import ContractObjective, ContractSigned
from ght_shared.payloads.referential import OrgUnitUpserted
from ght_shared.payloads.staffing import AssignmentConfirmed

EVENTS_MD = Path(__file__).resolve().parents[2] / "docs" / "events.md"
CHU = "420784878"
CH_NORD = "420000010"
AT = "2026-11-22T09:14:03.512000Z"
LATER = "2026-11-22T21:14:03.512000Z"

_TRANSFER = {
    "request": "TR-1",
    "from": CHU,
    "to": CH_NORD,
    "specialty": "cardiologie",
    "level_of_care": "icu",
    "urgency": "urgent",
    "bed": "4211",
    "at": AT,
}
_CONTRACT = {
    "contract": "COM-2026-MED",
    "kind": "pole_contract",
    "parties": ["CHU-MED", {"org_unit": CHU, "role": "direction"}],
    "period": {"start": "2026-01-01", "end": "2026-12-31"},
    "objectives": [
        {
            "objective": "OBJ-1",
            "indicator": "stays_full",
            "org_unit": "CHU-MED",
            "target": 4200.0,
            "floor": 4000.0,
            "stretch": None,
            "direction": "higher_is_better",
            "weight": 0.25,
            "monthly_profile": [1 / 12] * 12,
        }
    ],
}
_NEED = {
    "need": "N-1",
    "establishment": CH_NORD,
    "site": "NORD-SITE1",
    "specialty": "anesthesie",
    "kind": "garde",
    "start": AT,
    "end": LATER,
}
_ASSIGNMENT = {
    "assignment": "A-1",
    "practitioner": "10101234567",
    "home_establishment": CHU,
    "host_establishment": CH_NORD,
    "host_site": "NORD-SITE1",
    "specialty": "anesthesie",
    "kind": "garde",
    "start": AT,
    "end": LATER,
    "cross_site": True,
}

# One valid `data` of every type, as it is on the wire.
SAMPLES: dict[str, dict[str, Any]] = {
    "ght.referential.orgunit.upserted.v1": {
        "code": "CHU-2101",
        "kind": "unit",
        "name": "Cardiologie A",
        "parent": "CHU-CAR",
        "finess": CHU,
        "uf": "2101",
        "specialty": "cardiologie",
        "active": True,
        "valid_from": "2025-01-01",
        "installed_beds": 30,
    },
    "ght.activity.batch.ingested.v1": {
        "batch": str(uuid.UUID(int=1)),
        "source": "pmsi",
        "sources": ["pmsi"],
        "establishment": CHU,
        "period": {"from": "2025-01", "to": "2025-03"},
        "accepted": 120,
        "rejected": 2,
        "format": "csv",
    },
    "ght.activity.indicator.updated.v1": {
        "indicator": "stays_full",
        "org_unit": "CHU-IMG",
        "period": "2025-03",
        "value": 123.0,
        "same_period_last_year": 110.0,
        "variation_pct": 11.8,
        "year_to_date": 360.0,
        "year_to_date_last_year": 330.0,
        "year_to_date_variation_pct": 9.1,
        "projection": 1450.0,
        "target": None,
        "target_year": 1400.0,
        "import_id": str(uuid.UUID(int=1)),
    },
    "ght.activity.alert.raised.v1": {
        "alert": str(uuid.UUID(int=2)),
        "rule": str(uuid.UUID(int=3)),
        "indicator": "stays_full",
        "org_unit": "CHU-IMG",
        "period": "2025-03",
        "value": 123.0,
        "reference": 150.0,
        "deviation": -18.0,
        "threshold": 10.0,
        "basis": "last_year",
        "direction": "below",
        "message": "CHU-IMG: Full stays in 2025-03 18.0 % below the same month last year",
    },
    "ght.activity.alert.closed.v1": {
        "alert": str(uuid.UUID(int=2)),
        "rule": str(uuid.UUID(int=3)),
        "indicator": "stays_full",
        "org_unit": "CHU-IMG",
        "period": "2025-04",
        "reason": "within_threshold",
    },
    "ght.beds.bed.status_changed.v1": {
        "bed": "4211",
        "unit": "CHU-2101",
        "establishment": CHU,
        "specialty": "cardiologie",
        "from": "U",
        "to": "O",
        "at": AT,
    },
    "ght.beds.capacity.changed.v1": {
        "unit": "CHU-2101",
        "establishment": CHU,
        "specialty": "cardiologie",
        "installed": 30,
        "open": 28,
        "occupied": 29,
        "available": 0,
        "reserved": 1,
        "occupancy": 29 / 28,
        "level": "standard",
    },
    "ght.beds.transfer.requested.v1": {**_TRANSFER, "to": None, "bed": None},
    "ght.beds.transfer.accepted.v1": {**_TRANSFER, "expires_at": LATER},
    "ght.beds.transfer.declined.v1": {**_TRANSFER, "bed": None, "reason": "no bed"},
    "ght.beds.transfer.cancelled.v1": {**_TRANSFER, "reason": None},
    "ght.beds.transfer.completed.v1": _TRANSFER,
    "ght.beds.transfer.expired.v1": _TRANSFER,
    "ght.beds.strain.changed.v1": {
        "scope": "territory",
        "key": "GHT-LOIRE",
        "level": "tension",
        "previous_level": "normal",
        "occupancy": 0.93,
        "available": 12,
    },
    "ght.contracts.contract.signed.v1": _CONTRACT,
    "ght.contracts.contract.amended.v1": {**_CONTRACT, "objectives": []},
    "ght.contracts.contract.closed.v1": {
        "contract": "COM-2026-MED",
        "kind": "pole_contract",
        "closed_on": "2026-12-31",
    },
    "ght.contracts.objective.status_changed.v1": {
        "objective": "OBJ-1",
        "contract": "COM-2026-MED",
        "indicator": "stays_full",
        "org_unit": "CHU-MED",
        "year": 2026,
        "target": 4200.0,
        "achieved": 3900.0,
        "status": "at_risk",
        "previous_status": "on_track",
    },
    "ght.staffing.need.opened.v1": _NEED,
    "ght.staffing.need.filled.v1": {**_NEED, "assignment": "A-1"},
    "ght.staffing.need.uncovered.v1": _NEED,
    "ght.staffing.assignment.confirmed.v1": _ASSIGNMENT,
    "ght.staffing.assignment.cancelled.v1": {**_ASSIGNMENT, "reason": "sick leave"},
    "ght.<owner>.dead_letter.recorded.v1": {
        "consumer": "activity__beds",
        "event_id": str(uuid.UUID(int=4)),
        "event_type": "ght.beds.capacity.changed.v1",
        "subject": "ght.beds.capacity.changed",
        "error": "boom",
        "deliveries": 5,
    },
}


def _event(model: type[Payload], data: dict[str, Any]) -> Event:
    event_type = model.EVENT_TYPE.replace("<owner>", "activity")
    return new_event(source="tests", type=event_type, subject="x/1", data=data)


def _unreadable(model: type[Payload], data: dict[str, Any]) -> str:
    with pytest.raises(UnreadablePayload) as caught:
        model.of(_event(model, data))
    return str(caught.value)


# --- the registry ---------------------------------------------------------------------------


def test_every_type_is_a_valid_versioned_event_type_and_belongs_to_one_model() -> None:
    types = [model.EVENT_TYPE for model in PAYLOADS]
    assert len(set(types)) == len(types)
    for model in PAYLOADS:
        event_type = model.EVENT_TYPE.replace("<owner>", "beds")
        assert Event(source="s", type=event_type, subject="x/1").type == event_type


def test_every_model_has_a_sample_here() -> None:
    assert [model.EVENT_TYPE for model in PAYLOADS] == list(SAMPLES)


def test_a_model_is_found_by_its_type_with_or_without_its_version() -> None:
    assert payload_for("ght.beds.capacity.changed.v1") is CapacityChanged
    assert payload_for("ght.beds.capacity.changed") is CapacityChanged
    assert payload_for("ght.activity.indicator.updated") is IndicatorUpdated
    assert payload_for("ght.beds.capacity.changed.v2") is None
    assert payload_for("ght.beds.bed.freed.v1") is None
    assert payload_for("ght.activity.dead_letter.recorded.v1") is DeadLetterRecorded
    assert payload_for("ght.staffing.dead_letter.recorded") is DeadLetterRecorded


def test_every_model_says_when_it_is_published_and_describes_every_field() -> None:
    for model in PAYLOADS:
        assert "__doc__" in vars(model) and model.__doc__, model.__name__
        assert not model.__name__.endswith("V1")
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_every_subject_template_names_fields_of_its_model() -> None:
    for model in PAYLOADS:
        names = {name for _, name, _, _ in string.Formatter().parse(model.SUBJECT) if name}
        assert names and names <= set(model.model_fields), model.__name__


def test_no_beds_event_carries_a_patient_or_encounter_reference() -> None:
    for model in PAYLOADS:
        for name in model.model_fields:
            assert "patient" not in name and "encounter" not in name, model.__name__


# --- producing and consuming ----------------------------------------------------------------


def test_an_event_built_from_a_payload_has_its_type_subject_data_and_establishment() -> None:
    capacity = CapacityChanged(unit="CHU-2101", establishment=CHU, installed=30, occupied=12)
    event = capacity.event(source="beds-svc", establishment=CHU)
    assert event.source == "beds-svc"
    assert event.type == "ght.beds.capacity.changed.v1"
    assert event.subject == "unit/CHU-2101"
    assert event.establishment == CHU
    assert event.data == {"unit": "CHU-2101", "establishment": CHU, "installed": 30, "occupied": 12}


@pytest.mark.parametrize("model", PAYLOADS, ids=lambda model: model.__name__)
def test_every_payload_read_back_from_the_bytes_of_its_event_is_equal_to_it(
    model: type[Payload],
) -> None:
    payload = model.model_validate(SAMPLES[model.EVENT_TYPE])
    event = payload.event(source="activity-svc", establishment=CHU)
    assert event.data == SAMPLES[model.EVENT_TYPE]
    assert model.of(Event.from_bytes(event.to_bytes())) == payload


def test_a_dead_letter_is_typed_after_the_owner_of_the_service_that_records_it() -> None:
    letter = DeadLetterRecorded.model_validate(SAMPLES["ght.<owner>.dead_letter.recorded.v1"])
    event = letter.event(source="beds-svc")
    assert event.type == dead_letter_type("beds") == "ght.beds.dead_letter.recorded.v1"
    assert event.subject == "dead_letter/activity__beds"
    assert event.data["subject"] == "ght.beds.capacity.changed"


def test_fields_a_consumer_does_not_know_are_kept_and_ignored() -> None:
    data = {**SAMPLES["ght.beds.capacity.changed.v1"], "newfield": {"x": 1}}
    capacity = CapacityChanged.of(_event(CapacityChanged, data))
    assert capacity.installed == 30
    assert capacity.model_extra == {"newfield": {"x": 1}}
    assert capacity.data() == data


def test_the_json_name_from_is_read_and_written_and_the_python_name_is_from_() -> None:
    by_name = BedStatusChanged(
        bed="1", unit="CHU-2101", establishment=CHU, specialty=None, from_=None, to="U", at=AT
    )
    by_alias = BedStatusChanged.model_validate(
        {"bed": "1", "unit": "CHU-2101", "establishment": CHU, "specialty": None}
        | {"from": None, "to": "U", "at": AT}
    )
    assert by_name == by_alias
    assert by_name.data()["from"] is None and "from_" not in by_name.data()
    accepted = TransferAccepted.model_validate(SAMPLES["ght.beds.transfer.accepted.v1"])
    assert accepted.from_ == CHU
    assert accepted.subject() == "transfer/TR-1"


def test_fields_left_at_their_default_are_absent_but_a_none_given_is_kept() -> None:
    figures = {**SAMPLES["ght.activity.indicator.updated.v1"]}
    del figures["import_id"]
    assert "import_id" not in IndicatorUpdated.model_validate(figures).data()
    given = IndicatorUpdated.model_validate(figures | {"import_id": None}).data()
    assert given["import_id"] is None
    assert given["target"] is None


def test_the_payloads_activity_svc_publishes_today_are_read_as_they_are() -> None:
    batch = {**SAMPLES["ght.activity.batch.ingested.v1"], "source": None, "period": None}
    assert BatchIngested.of(_event(BatchIngested, batch)).period is None
    period = BatchIngested.model_validate(SAMPLES["ght.activity.batch.ingested.v1"]).period
    assert period is not None and (period.from_, period.to) == ("2025-01", "2025-03")
    unit = OrgUnitUpserted.model_validate(SAMPLES["ght.referential.orgunit.upserted.v1"])
    assert unit.valid_from == date(2025, 1, 1)
    assert unit.subject() == "orgunit/CHU-2101"


# --- what is refused ------------------------------------------------------------------------


def _capacity(**change: Any) -> dict[str, Any]:
    data = {"unit": "CHU-2101", "establishment": CHU, "installed": 30} | change
    return {name: value for name, value in data.items() if value is not ...}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_capacity(installed="30"), "installed"),
        (_capacity(installed=True), "installed"),
        (_capacity(installed=-3), "installed"),
        (_capacity(installed=100_001), "installed"),
        (_capacity(installed=30.0), "installed"),
        (_capacity(installed=...), "installed"),
        (_capacity(unit=...), "unit"),
        (_capacity(unit="CHU\x00"), "unit"),
        (_capacity(unit=None), "unit"),
        (_capacity(occupied="12"), "occupied"),
        (_capacity(occupancy="0.5"), "occupancy"),
        (_capacity(establishment="420784879"), "establishment"),
        (_capacity(level="réa"), "level"),
    ],
    ids=[
        "installed-as-text",
        "installed-as-a-boolean",
        "negative-installed",
        "installed-over-100000",
        "installed-as-a-float",
        "no-installed",
        "no-unit",
        "unit-with-a-nul",
        "null-unit",
        "occupied-as-text",
        "occupancy-as-text",
        "finess-with-a-wrong-key",
        "unknown-level",
    ],
)
def test_a_capacity_event_whose_data_does_not_fit_is_unreadable_and_names_the_field(
    data: dict[str, Any], field: str
) -> None:
    event = _event(CapacityChanged, data)
    with pytest.raises(UnreadablePayload) as caught:
        CapacityChanged.of(event)
    message = str(caught.value)
    assert message.startswith(f"ght.beds.capacity.changed.v1 {event.id}: {field}")
    assert isinstance(caught.value, ValueError)


def test_an_occupancy_above_one_is_allowed_for_surge_beds() -> None:
    capacity = CapacityChanged.of(_event(CapacityChanged, _capacity(open=20, occupied=22)))
    assert CapacityChanged.of(_event(CapacityChanged, _capacity(occupancy=1.1))).occupancy == 1.1
    assert capacity.occupancy is None


@pytest.mark.parametrize("model", PAYLOADS, ids=lambda model: model.__name__)
def test_no_number_count_or_flag_of_any_event_is_read_from_a_string(
    model: type[Payload],
) -> None:
    sample = SAMPLES[model.EVENT_TYPE]
    for name, value in sample.items():
        if isinstance(value, bool | int | float):
            assert name in _unreadable(model, sample | {name: str(value)})


def test_a_count_is_not_read_from_a_boolean() -> None:
    letter = SAMPLES["ght.<owner>.dead_letter.recorded.v1"]
    assert "deliveries" in _unreadable(DeadLetterRecorded, letter | {"deliveries": True})
    assignment = SAMPLES["ght.staffing.assignment.confirmed.v1"]
    assert "cross_site" in _unreadable(AssignmentConfirmed, assignment | {"cross_site": 1})


def test_a_contract_period_ending_before_it_starts_is_refused() -> None:
    ended = {"start": "2026-12-31", "end": "2026-01-01"}
    message = _unreadable(ContractSigned, _CONTRACT | {"period": ended})
    assert "period" in message and "before it starts" in message


@pytest.mark.parametrize("contract", ["", "   ", "COM\x00", "COM\n2026", "C" * 101, 12])
def test_a_contract_id_must_be_a_printable_non_blank_string_of_at_most_100(
    contract: object,
) -> None:
    assert "contract" in _unreadable(ContractSigned, _CONTRACT | {"contract": contract})


def test_a_contract_event_with_only_its_id_period_and_objectives_is_read() -> None:
    data = {
        "contract": "COM-2025-MED",
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
        "objectives": [{"indicator": "stays_full", "org_unit": "CHU-CAR", "target": 2400}],
    }
    contract = ContractSigned.of(_event(ContractSigned, data))
    assert contract.kind is None and contract.parties == []
    assert contract.objectives[0].target == 2400.0
    assert contract.data() == data


def test_an_objective_target_is_a_finite_number_and_its_profile_is_not_checked_here() -> None:
    objective = {"indicator": "stays_full", "org_unit": "CHU-CAR"}
    for bad in (float("inf"), float("nan"), "2400", None):
        with pytest.raises(ValidationError):
            ContractObjective.model_validate(objective | {"target": bad})
    three_weights = ContractObjective.model_validate(
        objective | {"target": 1.0, "monthly_profile": [0.5, 0.25, 0.25]}
    )
    assert three_weights.monthly_profile == [0.5, 0.25, 0.25]


def test_a_practitioner_is_named_by_an_rpps_number_of_11_digits() -> None:
    for rpps in ("1010123456", "101012345678", "1010123456A"):
        message = _unreadable(AssignmentConfirmed, _ASSIGNMENT | {"practitioner": rpps})
        assert "practitioner" in message


def test_an_unreadable_payload_names_at_most_three_errors() -> None:
    message = _unreadable(AssignmentConfirmed, {})
    assert message.endswith("and 7 more")
    assert message.count("Field required") == 3


def test_a_payload_is_frozen() -> None:
    capacity = CapacityChanged(unit="CHU-2101", installed=30)
    with pytest.raises(ValidationError):
        capacity.installed = 31  # type: ignore[misc]


# --- the catalogue --------------------------------------------------------------------------


def test_the_catalogue_of_docs_events_md_is_the_one_of_the_models() -> None:
    text = EVENTS_MD.read_text(encoding="utf-8")
    assert catalogue.replaced(text, catalogue.render()) == text, "run make events-doc"


def test_the_catalogue_lists_every_type_once_in_the_order_of_the_registry() -> None:
    rendered = catalogue.render()
    headings = [line[6:-1] for line in rendered.splitlines() if line.startswith("#### `")]
    assert headings == [model.EVENT_TYPE for model in PAYLOADS]
    sections = [model for section in catalogue.SECTIONS for model in section.models]
    assert sections == list(PAYLOADS)
    assert catalogue.render() == rendered


def test_the_catalogue_shows_json_names_literals_nested_models_and_who_reads_what() -> None:
    rendered = catalogue.render()
    assert '| `from` | "U" \\| "O" \\| "H" \\| "C" \\| "I" \\| "K" or null | yes |' in rendered
    assert "| `installed` | integer, 0 to 100000 | yes |" in rendered
    assert "| `period` | ImportPeriod or null | yes |" in rendered
    assert "`ContractObjective`: as in `ght.contracts.contract.signed.v1`." in rendered
    flat = " ".join(rendered.split())
    assert "planned (beds-svc); consumed today by: activity-svc; live feed: `establishment`" in flat
    assert "published by activity-svc today; no consumer yet; live feed: `public`." in flat
    assert (
        "Subject `bed/{bed}`; planned (beds-svc); no consumer yet; live feed: `establishment`"
        " (and `establishment`)." in flat
    )
    assert "live feed: `establishment` (and `from`, `to`)." in flat
    assert "live feed: `territorial`." in flat


def test_the_command_checks_and_rewrites_the_part_between_the_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "events.md"
    doc.write_text(
        f"# Events\n\n{catalogue.BEGIN}\nSTALE LINE\n{catalogue.END}\n\nafter\n", encoding="utf-8"
    )
    assert catalogue.main(["--check", str(doc)]) == 1
    assert "run make events-doc" in capsys.readouterr().err
    assert catalogue.main(["--write", str(doc)]) == 0
    assert catalogue.main(["--check", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Events\n\n") and text.endswith(f"{catalogue.END}\n\nafter\n")
    assert "STALE LINE" not in text
    capsys.readouterr()
    assert catalogue.main([]) == 0
    assert capsys.readouterr().out == catalogue.render()


def test_a_file_without_the_markers_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "events.md"
    doc.write_text("# Events\n", encoding="utf-8")
    assert catalogue.main(["--write", str(doc)]) == 2
    assert doc.read_text(encoding="utf-8") == "# Events\n"


# --- who sees an event on the live feed -------------------------------------------------------


@pytest.mark.parametrize("model", PAYLOADS, ids=lambda model: model.EVENT_TYPE)
def test_every_event_type_declares_who_sees_it_on_the_live_feed(model: type[Payload]) -> None:
    # Declared on the model or a base of its own module, never inherited from Payload.
    assert isinstance(getattr(model, "VISIBILITY", None), Visibility), model.EVENT_TYPE
    fields = model.model_json_schema(by_alias=True)["properties"]
    assert set(model.ESTABLISHMENT_FIELDS) <= set(fields)


def test_the_audience_of_an_event_is_its_envelopes_establishment_and_its_named_fields() -> None:
    transfer = TransferAccepted.model_validate({**_TRANSFER, "expires_at": LATER})

    audience = TransferAccepted.audience(transfer.event(source="beds-svc", establishment=CHU))

    assert audience == Audience(Visibility.ESTABLISHMENT, frozenset({CHU, CH_NORD}))


def test_a_field_that_is_not_a_finess_string_names_no_establishment() -> None:
    event = new_event(
        source="beds-svc",
        type=BedStatusChanged.EVENT_TYPE,
        subject="bed/1",
        data={"establishment": [CHU]},
    )

    assert BedStatusChanged.audience(event) == Audience(Visibility.ESTABLISHMENT)

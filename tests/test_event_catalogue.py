"""The event catalogue (``ght_shared.payloads``, ``docs/events.md``) says who consumes what
today: each service's consumers handle exactly the types whose models name it."""

from __future__ import annotations

import pytest

from activity_svc.consumers import CONSUMERS as ACTIVITY
from beds_svc.consumers import CONSUMERS as BEDS
from contracts_svc.consumers import CONSUMERS as CONTRACTS
from ght_shared.consumer import ConsumerSpec
from ght_shared.events import nats_subject_of
from ght_shared.payloads import PAYLOADS
from ght_shared.streams import STREAMS
from staffing_svc.consumers import CONSUMERS as STAFFING

SERVICES: dict[str, tuple[ConsumerSpec, ...]] = {
    "activity-svc": ACTIVITY,
    "beds-svc": BEDS,
    "contracts-svc": CONTRACTS,
    "staffing-svc": STAFFING,
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_consumes_the_types_the_catalogue_says_it_does(service: str) -> None:
    handled = {subject for spec in SERVICES[service] for subject in spec.handlers}
    catalogued = {
        nats_subject_of(model.EVENT_TYPE) for model in PAYLOADS if service in model.CONSUMED_BY
    }
    assert handled == catalogued


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_consumer_reads_its_subjects_from_the_stream_that_holds_them(service: str) -> None:
    for spec in SERVICES[service]:
        patterns = STREAMS[spec.stream].subjects
        for subject in spec.handlers:
            owner = subject.split(".")[1]
            assert any(p.split(".")[1] == owner for p in patterns), (spec.stream, subject)

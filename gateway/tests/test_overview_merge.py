"""How the territorial overview merges the services' parts (rules, without HTTP)."""

from __future__ import annotations

from ght_gateway.overview import Part, PartStatus, merge
from ght_shared.auth import Principal

CHU, NORD = "420784878", "420000010"

BEDS = {
    "establishments": {
        CHU: {"available_by_specialty": {"cardiology": 3}, "strain_level": "tension"},
        NORD: {"available_by_specialty": {"cardiology": 0}, "strain_level": "crisis"},
    },
    "territory": {"strain_level": "tension"},
}
STAFFING = {"establishments": {NORD: {"gaps_next_7_days": 4}}}


def _answers(**documents: dict) -> dict[str, tuple[Part, dict]]:
    answers: dict[str, tuple[Part, dict]] = {
        "contracts": (Part(status=PartStatus.NOT_AVAILABLE_YET), {}),
        "activity": (Part(status=PartStatus.UNAVAILABLE, detail="down"), {}),
        "beds": (Part(status=PartStatus.NOT_AVAILABLE_YET), {}),
        "staffing": (Part(status=PartStatus.NOT_AVAILABLE_YET), {}),
    }
    for service, document in documents.items():
        answers[service] = (Part(status=PartStatus.OK), document)
    return answers


def test_a_territorial_principal_sees_every_establishment_with_each_part():
    commission = Principal(sub="commission", establishments=("*",))

    overview = merge(commission, _answers(beds=BEDS, staffing=STAFFING))

    assert [e.finess for e in overview.establishments] == [NORD, CHU]
    nord = overview.establishments[0].parts
    assert nord["beds"]["strain_level"] == "crisis"
    assert nord["staffing"] == {"gaps_next_7_days": 4}
    assert nord["activity"] is None  # unavailable: null, with the reason in parts
    assert overview.establishments[1].parts["staffing"] is None
    assert overview.territory == {"beds": {"strain_level": "tension"}}


def test_an_establishment_sees_only_its_own_figures_even_if_a_service_sent_more():
    direction = Principal(sub="direction.chu", establishments=(CHU,))

    overview = merge(direction, _answers(beds=BEDS, staffing=STAFFING))

    assert [e.finess for e in overview.establishments] == [CHU]
    assert overview.establishments[0].parts["beds"]["strain_level"] == "tension"


def test_an_establishment_is_listed_even_when_no_service_has_figures_yet():
    system = Principal(sub="client:si-ch-nord", establishments=(NORD,))

    overview = merge(system, _answers())

    assert [e.finess for e in overview.establishments] == [NORD]
    assert set(overview.establishments[0].parts.values()) == {None}


def test_each_part_says_whether_it_could_be_had():
    overview = merge(Principal(sub="admin", establishments=("*",)), _answers(beds=BEDS))

    assert {service: part.status for service, part in overview.parts.items()} == {
        "contracts": PartStatus.NOT_AVAILABLE_YET,
        "activity": PartStatus.UNAVAILABLE,
        "beds": PartStatus.OK,
        "staffing": PartStatus.NOT_AVAILABLE_YET,
    }
    assert overview.parts["activity"].detail == "down"

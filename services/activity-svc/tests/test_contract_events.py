"""Targets from contracts: the handler's rules, and real events through NATS JetStream."""

from __future__ import annotations

from typing import Any

import pytest
from activity_testing import ALEMBIC_INI, CHU
from sqlalchemy import func, select

from activity_svc.consumers import on_contract_signed
from activity_svc.events import CONTRACT_AMENDED, CONTRACT_SIGNED
from activity_svc.main import create_app
from activity_svc.models import Target
from activity_svc.settings import Settings
from activity_svc.steering.contracts import UnreadableContract
from activity_svc.steering.targets import TargetChange, set_target
from ght_shared import tables
from ght_shared.auth import Principal
from ght_shared.db import Database
from ght_shared.events import Event, new_event
from ght_shared.payloads import UnreadablePayload
from ght_shared.testing.plugin import running_app, wait_for
from ght_shared.testing.streams import publish_event

# Not module-wide: the dead-letter test runs an app of its own, and two apps must not
# share the durable consumer at once.
with_territory = pytest.mark.usefixtures("territory")

CADRE = Principal(sub="cadre", roles=("direction",), establishments=(CHU,))
STAYS = "stays_full"
RATE = "outpatient_surgery_rate"
FLAT = [1 / 12] * 12


def _objective(indicator: str, org_unit: str, target: Any, **extra: Any) -> dict[str, Any]:
    return {
        "objective": f"OBJ-{indicator}-{org_unit}",
        "indicator": indicator,
        "org_unit": org_unit,
        "target": target,
        "floor": None,
        "stretch": None,
        "direction": "higher_is_better",
        "weight": 0.25,
        **extra,
    }


def _contract_event(
    contract: str = "COM-2026-MED",
    objectives: list[Any] | None = None,
    *,
    amended: bool = False,
    **data: Any,
) -> Event:
    payload: dict[str, Any] = {
        "contract": contract,
        "kind": "pole_contract",
        "parties": [
            {"org_unit": "CHU-MED", "role": "pole"},
            {"org_unit": CHU, "role": "direction"},
        ],
        "period": {"start": "2026-01-01", "end": "2026-12-31"},
        "objectives": objectives
        if objectives is not None
        else [_objective(STAYS, "CHU-MED", 4200.0, monthly_profile=FLAT)],
        **data,
    }
    return new_event(
        source="contracts-svc",
        type=(CONTRACT_AMENDED if amended else CONTRACT_SIGNED) + ".v1",
        subject=f"contract/{contract}",
        data=payload,
        establishment=CHU,
    )


async def _targets(database: Database) -> dict[tuple[str, str, int], Target]:
    async with database.transaction() as session:
        rows = await session.scalars(select(Target))
        return {(t.indicator, t.org_unit, t.year): t for t in rows}


async def _apply(database: Database, event: Event) -> None:
    async with database.transaction() as session:
        await on_contract_signed(session, event)


# --- the handler, without NATS ---------------------------------------------------------


@with_territory
async def test_each_objective_becomes_a_contract_target_for_every_year_of_the_period(
    database: Database,
) -> None:
    await _apply(
        database,
        _contract_event(
            objectives=[
                _objective(STAYS, "CHU-MED", 4200, monthly_profile=FLAT),
                _objective(RATE, "CHU-CAR", 45.5),
            ],
            period={"start": "2026-07-01", "end": "2027-06-30"},
        ),
    )
    targets = await _targets(database)
    assert set(targets) == {
        (STAYS, "CHU-MED", 2026),
        (STAYS, "CHU-MED", 2027),
        (RATE, "CHU-CAR", 2026),
        (RATE, "CHU-CAR", 2027),
    }
    stays = targets[STAYS, "CHU-MED", 2027]
    assert (stays.value, stays.source, stays.contract, stays.updated_by) == (
        4200.0,
        "contract",
        "COM-2026-MED",
        "contracts-svc",
    )
    assert stays.monthly_profile == pytest.approx(FLAT)
    assert targets[RATE, "CHU-CAR", 2026].value == 45.5


@with_territory
async def test_objectives_that_cannot_be_applied_are_skipped_and_the_others_applied(
    database: Database,
) -> None:
    await _apply(
        database,
        _contract_event(
            objectives=[
                _objective("beds_made", "CHU-MED", 10),
                _objective(STAYS, "CHU-NOPE", 10),
                _objective(RATE, "CHU-MED", 140),
                _objective(RATE, "CHU-MED", 40, monthly_profile=FLAT),
                _objective(STAYS, "CHU-CAR", 10, monthly_profile=[0.5, 0.5]),
                _objective(STAYS, "CHU-MED", 4200),
            ]
        ),
    )
    assert set(await _targets(database)) == {(STAYS, "CHU-MED", 2026)}


@pytest.mark.parametrize(
    "data",
    [
        {"contract": None},
        {"contract": "  "},
        {"contract": "COM\x001"},
        {"period": None},
        {"period": {"start": "2026-01-01"}},
        {"period": {"start": "2026-12-31", "end": "2026-01-01"}},
        {"period": {"start": "someday", "end": "2026-01-01"}},
        {"period": {"start": "1990-01-01", "end": "1990-12-31"}},
        {"objectives": {"stays_full": 10}},
        # The old spellings are gone: the contract's id is `contract`, its years `period`.
        {"contract": None, "id": "C-9"},
        {"period": None, "year": 2027},
        # An objective of the wrong shape: the producer's model cannot have sent it.
        {"objectives": [_objective(STAYS, "CHU-CAR", "many")]},
        {"objectives": [_objective(STAYS, "CHU-CAR", True)]},
        {"objectives": [{"objective": "no indicator", "target": 5}]},
        {"objectives": ["not an objective"]},
        {"objectives": [{"indicator": STAYS, "org_unit": "CHU-MED", "value": 10}]},
    ],
)
@with_territory
async def test_an_event_without_a_readable_contract_period_or_objectives_raises(
    database: Database, data: dict[str, Any]
) -> None:
    event = _contract_event(**data)
    with pytest.raises(UnreadablePayload):
        await _apply(database, event)
    assert await _targets(database) == {}


@with_territory
async def test_a_period_outside_the_years_of_targets_is_an_unreadable_contract(
    database: Database,
) -> None:
    event = _contract_event(period={"start": "1990-01-01", "end": "1990-12-31"})
    with pytest.raises(UnreadableContract, match="1990"):
        await _apply(database, event)


@with_territory
async def test_an_amendment_replaces_the_contracts_targets(database: Database) -> None:
    await _apply(
        database,
        _contract_event(
            objectives=[
                _objective(STAYS, "CHU-MED", 4200),
                _objective(RATE, "CHU-CAR", 45),
                _objective("consultations", "CHU-CAR", 900),
            ]
        ),
    )
    async with database.transaction() as session:
        await set_target(session, CADRE, TargetChange("consultations", "CHU-CAR", 2026, 950))

    await _apply(
        database,
        _contract_event(
            objectives=[_objective(STAYS, "CHU-MED", 4400)],
            period={"start": "2026-01-01", "end": "2027-12-31"},
            amended=True,
        ),
    )
    targets = await _targets(database)
    assert {key: (t.value, t.source) for key, t in targets.items()} == {
        (STAYS, "CHU-MED", 2026): (4400, "contract"),
        (STAYS, "CHU-MED", 2027): (4400, "contract"),
        # Set by hand since: not the contract's any more.
        ("consultations", "CHU-CAR", 2026): (950, "manual"),
    }


# --- real events through JetStream -----------------------------------------------------


async def _publish(nats_url: str, event: Event, msg_id: str | None = None) -> bool:
    """Publish as contracts-svc's relay would; True when JetStream kept it as a duplicate."""
    (duplicate,) = await publish_event(nats_url, event, msg_id=msg_id)
    return duplicate


async def _wait_for_target(database: Database, key: tuple[str, str, int], value: float) -> Target:
    async def applied() -> Target | None:
        target = (await _targets(database)).get(key)
        return target if target is not None and target.value == value else None

    found: Target = await wait_for(applied)
    return found


@with_territory
async def test_a_signed_contract_event_sets_its_targets(
    activity: Any, nats_url: str, database: Database
) -> None:
    event = _contract_event(
        "COM-NATS-1",
        [_objective(STAYS, "CHU-MED", 4200), _objective("beds_made", "CHU-MED", 1)],
    )
    await _publish(nats_url, event)
    target = await _wait_for_target(database, (STAYS, "CHU-MED", 2026), 4200)
    assert (target.source, target.contract) == ("contract", "COM-NATS-1")

    amended = _contract_event("COM-NATS-1", [_objective(STAYS, "CHU-MED", 4300)], amended=True)
    await _publish(nats_url, amended)
    await _wait_for_target(database, (STAYS, "CHU-MED", 2026), 4300)


@with_territory
async def test_the_same_contract_event_published_twice_applies_once(
    activity: Any, nats_url: str, database: Database
) -> None:
    event = _contract_event("COM-NATS-2", [_objective(STAYS, "CHU-IMG", 700)])
    assert not await _publish(nats_url, event)
    assert await _publish(nats_url, event)  # within the duplicate window: dropped by NATS
    await _wait_for_target(database, (STAYS, "CHU-IMG", 2026), 700)
    async with database.transaction() as session:
        await set_target(session, CADRE, TargetChange(STAYS, "CHU-IMG", 2026, 650))

    # The same event again past NATS's deduplication (a redelivery, a relay retry after
    # the window): the consumer's inbox knows it. A later event shows it was consumed.
    assert not await _publish(nats_url, event, msg_id=f"{event.id}-again")
    later = _contract_event("COM-NATS-3", [_objective(STAYS, "CHU-MED", 1)])
    await _publish(nats_url, later)
    await _wait_for_target(database, (STAYS, "CHU-MED", 2026), 1)

    targets = await _targets(database)
    assert (targets[STAYS, "CHU-IMG", 2026].value, targets[STAYS, "CHU-IMG", 2026].source) == (
        650,
        "manual",
    )
    async with database.transaction() as session:
        seen = await session.scalar(
            select(func.count())
            .select_from(tables.inbox)
            .where(tables.inbox.c.event_id == event.id)
        )
    assert seen == 1


async def test_an_unreadable_contract_event_is_dead_lettered_at_once(
    make_settings: Any, nats_url: str
) -> None:
    settings: Settings = await make_settings(
        Settings, ALEMBIC_INI, consumer_max_deliver=2, consumer_backoff_s=(0.1,)
    )
    app = create_app(settings)
    async with running_app(app):
        database: Database = app.state.database
        event = _contract_event("COM-NATS-4", period={"start": "whenever"})
        await _publish(nats_url, event)

        async def dead_lettered() -> Any:
            async with database.transaction() as session:
                return (
                    await session.execute(
                        select(tables.dead_letter.c.deliveries, tables.dead_letter.c.error).where(
                            tables.dead_letter.c.event_id == event.id
                        )
                    )
                ).one_or_none()

        deliveries, error = await wait_for(dead_lettered)
    assert deliveries == 1  # its data will never fit: no retry
    assert "UnreadablePayload" in error and "period" in error

"""The role table: what each role may do, and the one place it is written for readers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ght_gateway.roles import establishment_rule_violation, route_scopes
from ght_shared.auth import ROLE_SCOPES, Role

ROLES_DOC = Path(__file__).parents[2] / "docs/roles.md"


def test_the_documented_role_table_is_the_one_in_code():
    documented: dict[str, set[str]] = {}
    for line in ROLES_DOC.read_text().splitlines():
        match = re.match(r"^\| `(\w+)` \|[^|]*\|[^|]*\| (.*) \|$", line)
        if match:
            documented[match[1]] = set(re.findall(r"`([\w:]+)`", match[2]))
    assert documented == {role.value: set(scopes) for role, scopes in ROLE_SCOPES.items()}


def test_only_it_systems_and_admins_write_activity_data():
    writers = {role for role, scopes in ROLE_SCOPES.items() if "activity:write" in scopes}
    assert writers == {Role.ADMIN, Role.IT_SYSTEM}


def test_only_the_commission_and_admins_approve_contracts():
    approvers = {role for role, scopes in ROLE_SCOPES.items() if "contracts:approve" in scopes}
    assert approvers == {Role.ADMIN, Role.COMMISSION}


@pytest.mark.parametrize(
    ("roles", "establishments", "pole", "allowed"),
    [
        (["commission"], ["*"], None, True),
        (["commission"], ["420784878"], None, False),
        (["direction"], ["420784878"], None, True),
        (["direction"], ["*"], None, False),
        (["direction"], ["420784878", "420000010"], None, False),
        (["pole_manager"], ["420784878"], "IMG", True),
        (["pole_manager"], ["420784878"], None, False),
        (["staffing_coordinator"], ["*"], None, True),
        (["staffing_coordinator"], ["420000010"], None, True),
        (["bed_manager"], ["*", "420000010"], None, False),
        (["admin", "direction"], ["*"], None, False),
    ],
)
def test_roles_go_with_the_establishments_they_act_for(roles, establishments, pole, allowed):
    assert (establishment_rule_violation(roles, establishments, pole) is None) is allowed


def test_the_gateway_asks_read_for_safe_methods_and_write_for_the_others():
    assert route_scopes("beds", "GET") == ("beds:read",)
    assert route_scopes("beds", "HEAD") == ("beds:read",)
    assert route_scopes("beds", "POST") == ("beds:write",)
    assert route_scopes("staffing", "DELETE") == ("staffing:write",)


def test_targets_and_alert_rules_are_steering_writes_open_to_contract_writers() -> None:
    assert route_scopes("activity", "PUT", "/targets/stays_full/CHU-IMG/2026") == (
        "activity:write",
        "contracts:write",
    )
    assert route_scopes("activity", "POST", "/alerts/1/acknowledge") == (
        "activity:write",
        "contracts:write",
    )
    assert route_scopes("activity", "POST", "/records") == ("activity:write",)

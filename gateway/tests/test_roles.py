"""The role table: what each role may do, and the one place it is written for readers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ght_gateway.openapi import ServiceDocuments
from ght_gateway.roles import establishment_rule_violation
from ght_gateway.scopes import RouteScopes, ScopeTable, default_scopes
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
    assert default_scopes("beds", "GET") == ("beds:read",)
    assert default_scopes("beds", "HEAD") == ("beds:read",)
    assert default_scopes("beds", "POST") == ("beds:write",)
    assert default_scopes("staffing", "DELETE") == ("staffing:write",)


STEER = ["activity:write", "contracts:write"]
DOCUMENT = {
    "paths": {
        "/targets": {"get": {"x-required-scopes": ["activity:read"]}},
        "/targets/{indicator}/{org_unit}/{year}": {
            "put": {"x-required-scopes": STEER},
            "delete": {"x-required-scopes": STEER},
            "get": {"x-required-scopes": ["activity:read"]},
        },
        "/alerts/{alert_id}/acknowledge": {"post": {"x-required-scopes": STEER}},
        "/imports/latest": {"get": {"x-required-scopes": ["territory:read"]}},
        "/imports/{import_id}": {"get": {"x-required-scopes": ["activity:read"]}},
        "/exports/{export_id}": {"get": {"x-required-scopes": ["activity:read"]}},
        "/exports/latest": {"get": {"x-required-scopes": ["territory:read"]}},
        "/{code}/notes": {"post": {"x-required-scopes": ["notes:write"]}},
        "/records": {"post": {"x-required-scopes": ["activity:write"]}},
        "/health/ready": {"get": {}},
        "/broken": {
            "post": {"x-required-scopes": "activity:write"},
            "put": {"x-required-scopes": []},
        },
    }
}


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [
        ("PUT", "/targets/stays_full/CHU-IMG/2026", tuple(STEER)),
        ("put", "/targets/stays_full/CHU-IMG/2026", tuple(STEER)),
        ("DELETE", "/targets/stays_full/CHU-IMG/2026", tuple(STEER)),
        ("GET", "/targets/stays_full/CHU-IMG/2026", ("activity:read",)),
        ("POST", "/alerts/6f1c/acknowledge", tuple(STEER)),
        ("POST", "/records", ("activity:write",)),
        ("GET", "/imports/latest", ("territory:read",)),
        ("GET", "/imports/0193f6c2", ("activity:read",)),
        # The first route declared wins, as in the service's own routing.
        ("GET", "/exports/latest", ("activity:read",)),
        ("POST", "/CHU-IMG/notes", ("notes:write",)),  # a parameter first
        ("PUT", "/targets/stays_full/CHU-IMG", None),  # a segment short
        ("PUT", "/targets/stays_full/CHU-IMG/2026/extra", None),
        ("POST", "/targets/stays_full/CHU-IMG/2026", None),  # not that method
        ("GET", "/health/ready", None),  # nothing declared
        ("POST", "/broken", None),  # not a list: ignored
        ("PUT", "/broken", None),  # empty: ignored
    ],
)
def test_a_service_document_declares_the_scopes_of_its_routes(method, path, scopes):
    assert ScopeTable(DOCUMENT).scopes(method, path) == scopes


def test_a_failed_refresh_keeps_the_scopes_of_the_last_document_read() -> None:
    documents = ServiceDocuments(30.0, services=("beds",))
    route_scopes = RouteScopes(documents)
    steering = ("PUT", "/steering/1")
    assert route_scopes.required("beds", *steering) == ("beds:write",)  # nothing read yet
    declared = {"/steering/{item}": {"put": {"x-required-scopes": ["beds:write", "plans:write"]}}}
    documents._documents["beds"] = {"paths": declared}
    assert route_scopes.required("beds", *steering) == ("beds:write", "plans:write")
    documents._documents["beds"] = None  # the next fetch failed: the service was busy
    assert route_scopes.required("beds", *steering) == ("beds:write", "plans:write")
    documents._documents["beds"] = {"paths": {}}  # a new version of the service
    assert route_scopes.required("beds", *steering) == ("beds:write",)

"""Every input of every deployable is bounded before it is processed: each list of a
request has ``maxItems``, each string ``maxLength`` (or a format, enum or anchored
pattern that bounds it), read from the OpenAPI documents the apps publish."""

from __future__ import annotations

from typing import Any

import pytest

from activity_svc.main import create_app as activity_app
from activity_svc.settings import Settings as ActivitySettings
from beds_svc.main import create_app as beds_app
from beds_svc.settings import Settings as BedsSettings
from contracts_svc.main import create_app as contracts_app
from contracts_svc.settings import Settings as ContractsSettings
from ght_gateway.main import create_app as gateway_app
from ght_gateway.settings import Settings as GatewaySettings
from staffing_svc.main import create_app as staffing_app
from staffing_svc.settings import Settings as StaffingSettings

APPS = {
    "gateway": (gateway_app, GatewaySettings),
    "activity": (activity_app, ActivitySettings),
    "beds": (beds_app, BedsSettings),
    "contracts": (contracts_app, ContractsSettings),
    "staffing": (staffing_app, StaffingSettings),
}
BOUNDING_KEYWORDS = ("maxLength", "enum", "const", "format")


def _unbounded(
    schema: dict[str, Any], components: dict[str, Any], where: str, seen: frozenset[str]
) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return (
            [] if name in seen else _unbounded(components[name], components, where, seen | {name})
        )
    found = [
        problem
        for key in ("anyOf", "oneOf", "allOf")
        for sub in schema.get(key, [])
        if not _is_decimal_text(sub, schema.get(key, []))
        for problem in _unbounded(sub, components, where, seen)
    ]
    kind = schema.get("type")
    if kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: a list without maxItems")
        found += _unbounded(schema.get("items", {}), components, f"{where}[]", seen)
    elif kind == "string":
        pattern = schema.get("pattern", "")
        anchored = pattern.startswith("^") and pattern.endswith("$") and "*" not in pattern
        if not anchored and not any(key in schema for key in BOUNDING_KEYWORDS):
            found.append(f"{where}: a string without maxLength")
    elif kind == "object" or "properties" in schema:
        for name, sub in schema.get("properties", {}).items():
            found += _unbounded(sub, components, f"{where}.{name}", seen)
        if isinstance(schema.get("additionalProperties"), dict) and "maxProperties" not in schema:
            found.append(f"{where}: an object with any number of keys")
    return found


def _is_decimal_text(schema: dict[str, Any], alternatives: list[dict[str, Any]]) -> bool:
    """A decimal's text form beside its number form: its digits are bounded (max_digits)
    as it is read, and the body limit bounds the text."""
    return schema.get("type") == "string" and {"type": "number"} in alternatives


@pytest.mark.parametrize("name", APPS)
def test_every_request_input_is_bounded(name: str) -> None:
    create_app, settings = APPS[name]
    document = create_app(settings()).openapi()
    components = document.get("components", {}).get("schemas", {})
    problems = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
                problems += _unbounded(parameter.get("schema", {}), components, where, frozenset())
            for media in operation.get("requestBody", {}).get("content", {}).values():
                where = f"{method.upper()} {path} body"
                problems += _unbounded(media.get("schema", {}), components, where, frozenset())
    assert problems == [], "\n".join(sorted(set(problems)))

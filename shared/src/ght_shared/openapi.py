"""The OpenAPI document says what the API really answers: errors are problem+json.

FastAPI documents its 422 as ``application/json`` with its own schema, and a route's
declared error responses (``responses={403: {"description": ...}}``) without content.
Every error of the platform is RFC 9457 ``application/problem+json`` (``errors.py``):
the document is rewritten once, when first generated, to say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from ght_shared.errors import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `code` is the stable machine-readable reason.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "For `validation_failed`: each invalid field and the rule it breaks.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "in": {"type": "string"},
                    "rule": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def problem_document(document: dict[str, Any]) -> dict[str, Any]:
    """Document every 4xx/5xx answer of ``document`` as problem+json (in place; returned)."""
    document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] in ("4", "5") and "$ref" not in response:
                    response["content"] = dict(_PROBLEM_CONTENT)
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)
    return document


def install_problem_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` document the errors as problem+json."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    rewritten: list[bool] = []

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI caches it in app.openapi_schema
        if not rewritten:
            problem_document(document)
            rewritten.append(True)
        return document

    app.openapi = openapi  # type: ignore[method-assign]

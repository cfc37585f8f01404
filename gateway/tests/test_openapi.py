"""The gateway's merged OpenAPI document: the merge as plain code, then against the real
services (processes started by ``routing_servers.py``)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from routing_servers import GatewayServer, ServiceStack, dead_url

from ght_gateway.openapi import GATEWAY_BEARER, merge_documents
from ght_gateway.settings import Upstreams
from ght_shared.auth import SERVICES

pytestmark = pytest.mark.xdist_group("gateway-routing")

GATEWAY = {
    "openapi": "3.1.0",
    "info": {"title": "gateway", "version": "0.1.0", "description": "The gateway."},
    "paths": {
        "/auth/me": {
            "get": {
                "operationId": "me_auth_me_get",
                "tags": ["auth"],
                "responses": {
                    "200": {"description": "Who is calling."},
                    "422": {
                        "description": "Invalid",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                            }
                        },
                    },
                },
            }
        }
    },
    "components": {"schemas": {"HTTPValidationError": {"type": "object", "title": "gateway's"}}},
}

BEDS = {
    "openapi": "3.1.0",
    "info": {"title": "beds-svc", "version": "0.1.0"},
    "servers": [{"url": "http://beds.internal:8003"}],
    "tags": [{"name": "beds", "description": "Beds and their status."}],
    "paths": {
        "/beds/{bed_id}": {
            "parameters": [{"$ref": "#/components/parameters/BedId"}],
            "get": {
                "operationId": "read_bed",
                "tags": ["beds"],
                "security": [{"HTTPBearer": []}],
                "responses": {
                    "200": {
                        "description": "The bed.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Bed"}}
                        },
                    },
                    "401": {"description": "The service's own words for a missing token."},
                    "404": {"$ref": "#/components/responses/NotFound"},
                },
            },
        },
        "/health/ready": {
            "get": {"operationId": "ready", "responses": {"200": {"description": "Ready."}}}
        },
    },
    "components": {
        "schemas": {
            "Bed": {
                "type": "object",
                "properties": {
                    "status": {"$ref": "#/components/schemas/Status"},
                    "unit": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/Ward"},
                            {"$ref": "#/components/schemas/Room"},
                        ],
                        "discriminator": {
                            "propertyName": "kind",
                            "mapping": {
                                "ward": "#/components/schemas/Ward",
                                "room": "#/components/schemas/Room",
                            },
                        },
                    },
                },
            },
            "Status": {"type": "string", "enum": ["free", "held"]},
            "Ward": {"type": "object", "properties": {"kind": {"const": "ward"}}},
            "Room": {"type": "object", "properties": {"kind": {"const": "room"}}},
            "HTTPValidationError": {"type": "object", "title": "beds'"},
        },
        "parameters": {
            "BedId": {
                "name": "bed_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            }
        },
        "responses": {"NotFound": {"description": "No such bed."}},
        "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
    },
}

STAFFING = {
    "openapi": "3.1.0",
    "info": {"title": "staffing-svc", "version": "0.1.0"},
    "paths": {
        "/needs": {
            "post": {
                "operationId": "create_need",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Need"}}
                    },
                },
                "responses": {
                    "201": {"description": "Created."},
                    "422": {
                        "description": "Invalid",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                            }
                        },
                    },
                },
            }
        },
        "/besoins": {"$ref": "#/paths/~1needs"},
    },
    "components": {
        "schemas": {
            "Need": {"type": "object", "properties": {"fte": {"type": "number"}}},
            "HTTPValidationError": {"type": "object", "title": "staffing's"},
        }
    },
}


def merged() -> dict[str, Any]:
    return merge_documents(GATEWAY, {"beds": BEDS, "staffing": STAFFING, "activity": None})


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            elif key == "mapping" and isinstance(value, dict):
                yield from (target for target in value.values() if isinstance(target, str))
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for segment in ref[2:].split("/"):
        node = node[segment.replace("~1", "/").replace("~0", "~")]
    return node


def assert_valid(document: dict[str, Any]) -> None:
    """Valid OpenAPI 3.1 and every local reference lands somewhere."""
    schemathesis.openapi.from_dict(copy.deepcopy(document)).validate()
    for ref in references(document):
        resolve(document, ref)


# -- the merge ---------------------------------------------------------------------------------


def test_service_paths_are_served_under_their_api_prefix_beside_the_gateways_own() -> None:
    paths = merged()["paths"]
    assert set(paths) == {
        "/auth/me",
        "/api/beds/beds/{bed_id}",
        "/api/beds/health/ready",
        "/api/staffing/needs",
        "/api/staffing/besoins",
    }


def test_component_names_get_the_service_prefix_and_every_reference_follows() -> None:
    document = merged()
    schemas = document["components"]["schemas"]
    # Three schemas of the same name side by side, each still the one of its owner.
    assert schemas["HTTPValidationError"]["title"] == "gateway's"
    assert schemas["beds.HTTPValidationError"]["title"] == "beds'"
    assert schemas["staffing.HTTPValidationError"]["title"] == "staffing's"
    bed = schemas["beds.Bed"]
    assert bed["properties"]["status"] == {"$ref": "#/components/schemas/beds.Status"}
    assert bed["properties"]["unit"]["discriminator"]["mapping"] == {
        "ward": "#/components/schemas/beds.Ward",
        "room": "#/components/schemas/beds.Room",
    }
    ready = document["paths"]["/api/beds/beds/{bed_id}"]
    assert ready["parameters"] == [{"$ref": "#/components/parameters/beds.BedId"}]
    assert ready["get"]["responses"]["404"] == {"$ref": "#/components/responses/beds.NotFound"}
    assert document["paths"]["/api/staffing/besoins"] == {"$ref": "#/paths/~1api~1staffing~1needs"}
    assert_valid(document)


def test_operations_get_prefixed_ids_and_tags_and_the_gateways_security_and_errors() -> None:
    document = merged()
    read_bed = document["paths"]["/api/beds/beds/{bed_id}"]["get"]
    assert read_bed["operationId"] == "beds__read_bed"
    assert read_bed["tags"] == ["beds: beds"]
    assert read_bed["security"] == [{GATEWAY_BEARER: []}]
    assert read_bed["responses"]["401"] == {
        "description": "The service's own words for a missing token."
    }
    for status in ("403", "429", "502", "503", "504"):
        assert "application/problem+json" in read_bed["responses"][status]["content"]
    assert document["paths"]["/api/beds/health/ready"]["get"]["tags"] == ["beds"]
    assert {"name": "beds: beds", "description": "Beds and their status."} in document["tags"]
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {GATEWAY_BEARER}  # the services' schemes are not merged
    assert "servers" not in document  # the gateway is the server


def test_a_service_that_could_not_be_fetched_is_named_as_left_out() -> None:
    document = merged()
    assert document["x-unavailable"] == ["activity"]
    assert "activity" in document["info"]["description"].split("right now")[1]
    assert not any(path.startswith("/api/activity/") for path in document["paths"])


def test_the_documents_given_are_not_changed_by_the_merge() -> None:
    before = copy.deepcopy((GATEWAY, BEDS, STAFFING))
    merged()
    merged()
    assert before == (GATEWAY, BEDS, STAFFING)


# -- against the real services -----------------------------------------------------------------


@pytest.fixture
async def gateway(
    make_gateway_settings: Any, services: ServiceStack
) -> AsyncIterator[tuple[GatewayServer, httpx.AsyncClient]]:
    """The gateway with contracts, activity and beds running, staffing down."""
    urls = {service: services.url(service) for service in SERVICES if service != "staffing"}
    settings = await make_gateway_settings(upstreams=Upstreams(**urls, staffing=dead_url()))
    async with GatewayServer(settings) as server, server.client() as client:
        yield server, client


async def test_the_gateway_document_merges_the_running_services_and_leaves_a_down_one_out(
    gateway: tuple[GatewayServer, httpx.AsyncClient],
) -> None:
    _, client = gateway
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    for service in ("contracts", "activity", "beds"):
        assert f"/api/{service}/health/ready" in paths, service
        assert f"/api/{service}/health/live" in paths, service
    assert not any(path.startswith("/api/staffing/") for path in paths)
    assert document["x-unavailable"] == ["staffing"]
    assert "staffing" in document["info"]["description"]
    assert "/auth/token" in paths  # the gateway's own routes, as FastAPI describes them
    assert "/.well-known/jwks.json" in paths
    assert not any("{service}" in path for path in paths)  # the router itself is not shown
    assert_valid(document)


async def test_the_service_documents_are_reused_for_the_cache_time(
    gateway: tuple[GatewayServer, httpx.AsyncClient],
) -> None:
    server, client = gateway
    registry = server.app.state.metrics.registry

    def fetched() -> float | None:
        labels = {"upstream": "beds", "method": "GET", "outcome": "200"}
        return registry.get_sample_value("ght_upstream_requests_total", labels)

    first = (await client.get("/openapi.json")).json()
    assert fetched() == 1
    again = (await client.get("/openapi.json")).json()
    assert fetched() == 1
    assert again == first
    assert server.app.openapi() == first  # what FastAPI's own callers get too


async def test_the_swagger_page_shows_the_merged_document(
    gateway: tuple[GatewayServer, httpx.AsyncClient],
) -> None:
    _, client = gateway
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assert "/openapi.json" in page.text

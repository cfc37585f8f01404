"""A test-only upstream for the routing tests, run as a real uvicorn process.

``uvicorn echo_upstream:app --app-dir gateway/tests --port ...``. It has what the
services do not have yet: an echo of the request (headers, body digest), a streamed
body held at a gate, an upload whose progress can be watched, a slow answer, an answer
carrying hop-by-hop headers, a request counter, and a part of the territorial overview.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK = 64 * 1024

_gates: dict[str, asyncio.Event] = {}
_progress: dict[str, int] = {}
_counter = {"requests": 0}


def _gate(name: str) -> asyncio.Event:
    return _gates.setdefault(name, asyncio.Event())


async def echo(request: Request) -> JSONResponse:
    """The request as received: method, path, query, headers, body size and SHA-256."""
    _counter["requests"] += 1
    digest = hashlib.sha256()
    size = 0
    progress = request.query_params.get("progress")
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        if progress:
            _progress[progress] = size
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
        }
    )


async def progress(request: Request) -> JSONResponse:
    """How many bytes the upload named ``name`` has delivered so far."""
    return JSONResponse({"received": _progress.get(request.path_params["name"], 0)})


async def stream(request: Request) -> StreamingResponse:
    """``size`` bytes in chunks; with ``gate``, everything after the first chunk waits for it."""
    _counter["requests"] += 1
    size = int(request.query_params["size"])
    gate = request.query_params.get("gate")

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            chunk = b"x" * min(CHUNK, size - sent)
            yield chunk
            sent += len(chunk)
            if gate and sent == len(chunk):
                await _gate(gate).wait()

    return StreamingResponse(body(), media_type="application/octet-stream")


async def open_gate(request: Request) -> JSONResponse:
    _gate(request.path_params["name"]).set()
    return JSONResponse({"opened": request.path_params["name"]})


async def slow(request: Request) -> JSONResponse:
    _counter["requests"] += 1
    await asyncio.sleep(float(request.query_params["seconds"]))
    return JSONResponse({"slept": float(request.query_params["seconds"])})


async def hop(request: Request) -> Response:
    """An answer carrying hop-by-hop headers, one of them only named by ``Connection``."""
    _counter["requests"] += 1
    return Response(
        b"hop",
        headers={
            "Connection": "x-upstream-hop",
            "X-Upstream-Hop": "must not cross the gateway",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": "Basic",
            "Trailer": "X-Checksum",
            "X-Kept": "yes",
        },
    )


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(_counter)


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def overview(request: Request) -> JSONResponse:
    """A service's part of the territorial overview, as ``docs/overview.md`` says it.

    It figures for two establishments whatever is asked, so that the gateway's own
    filtering shows; it echoes what it was asked and whether a token came with it.
    """
    return JSONResponse(
        {
            "establishments": {
                "420784878": {
                    "available_by_specialty": {"cardiology": 3},
                    "strain_level": "normal",
                },
                "420000010": {
                    "available_by_specialty": {"cardiology": 0},
                    "strain_level": "crisis",
                },
            },
            "territory": {
                "strain_level": "tension",
                "asked_for": request.query_params.getlist("establishment"),
                "with_token": request.headers.get("authorization", "").startswith("Bearer "),
            },
        }
    )


STEERING_SCOPES = ["beds:write", "contracts:write"]


async def openapi(request: Request) -> JSONResponse:
    """An OpenAPI document as a service's is, declaring the scopes of one route
    (``x-required-scopes``, which the gateway reads); not counted among the requests."""
    return JSONResponse(
        {
            "openapi": "3.1.0",
            "info": {"title": "echo", "version": "1"},
            "paths": {
                "/steering/{item}": {"put": {"x-required-scopes": STEERING_SCOPES, "responses": {}}}
            },
        }
    )


app = Starlette(
    routes=[
        Route("/health/live", live),
        Route("/stats", stats),
        Route("/stream", stream),
        Route("/gate/{name}", open_gate, methods=["POST"]),
        Route("/progress/{name}", progress),
        Route("/slow", slow),
        Route("/imports/slow", slow),
        Route("/hop", hop),
        Route("/overview", overview),
        Route("/openapi.json", openapi),
        Route("/{path:path}", echo, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
    ]
)

"""Prometheus metrics of one process, in a registry of its own.

Several apps share one test process, so nothing goes to the global registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from starlette.types import Scope


class ServiceMetrics:
    """The metrics every service exposes on ``/metrics``."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"service": service}
        self.requests = Counter(
            "ght_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ght_http_request_duration_seconds",
            "HTTP request duration.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.outbox_backlog = Gauge(
            "ght_outbox_backlog", "Events not yet published.", registry=self.registry
        )
        self.outbox_oldest_age = Gauge(
            "ght_outbox_oldest_age_seconds",
            "Age of the oldest unpublished event.",
            registry=self.registry,
        )
        self.outbox_published = Counter(
            "ght_outbox_published", "Events published to JetStream.", registry=self.registry
        )
        self.outbox_publish_failures = Counter(
            "ght_outbox_publish_failures", "Failed publish attempts.", registry=self.registry
        )
        self.consumer_lag = Gauge(
            "ght_consumer_lag",
            "Messages pending for a durable consumer.",
            ["consumer"],
            registry=self.registry,
        )
        self.consumed = Counter(
            "ght_consumer_messages",
            "Messages handled by a consumer, by outcome.",
            ["consumer", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "ght_dead_letters", "Messages dead-lettered.", ["consumer"], registry=self.registry
        )
        self.info = Gauge(
            "ght_service_info", "Service identity.", ["service"], registry=self.registry
        )
        self.info.labels(**labels).set(1)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def route_label(scope: Scope) -> str:
    """The matched route template (never the raw path: unbounded cardinality)."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


@contextmanager
def metrics_listener(registry: CollectorRegistry, host: str, port: int) -> Iterator[int]:
    """Serve ``registry`` on a port of its own (``http://host:port/metrics``) while inside.

    For a process whose main port is public (the gateway): Prometheus scrapes a port the
    outside never reaches. A thread of prometheus_client's; ``port`` 0 takes a free one.
    Yields the port it listens on.
    """
    server, thread = start_http_server(port, host, registry)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def install_metrics(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Serve ``/metrics`` (requests are counted by the request-context middleware)."""

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        return metrics.render()

"""One settings → app → client chain of fixtures, for the gateway and every service.

In a service's ``tests/conftest.py``::

    beds_settings, beds_app, beds = app_fixtures("beds", create_app, Settings, ALEMBIC_INI)

gives three fixtures: ``beds_settings`` (settings on a fresh migrated database of the
session's PostgreSQL and NATS, ``make_settings``), ``beds_app`` (the app built from them)
and ``beds`` (an ``httpx`` client bound to the running app: lifespan entered, so the
outbox relay and the consumers run). A test asks for the one it needs; overriding
``beds_settings`` in a test module changes the other two.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI

from ght_shared.settings import ServiceSettings
from ght_shared.testing.plugin import running_app

S = TypeVar("S", bound=ServiceSettings)


def app_fixtures(
    name: str,
    create_app: Callable[[S], FastAPI],
    settings_cls: type[S],
    alembic_ini: Path | None,
    **overrides: Any,
) -> tuple[Any, Any, Any]:
    """The fixtures ``<name>_settings``, ``<name>_app`` and ``<name>`` (the client)."""
    settings_name, app_name = f"{name}_settings", f"{name}_app"

    async def settings(make_settings: Any) -> S:
        built: S = await make_settings(settings_cls, alembic_ini, **overrides)
        return built

    def app(**given: Any) -> FastAPI:
        return create_app(given[settings_name])

    async def client(**given: Any) -> AsyncIterator[httpx.AsyncClient]:
        async with running_app(given[app_name]) as bound:
            yield bound

    # pytest finds a fixture's own fixtures by the names of its parameters.
    _takes(app, settings_name)
    _takes(client, app_name)
    return (
        pytest.fixture(name=settings_name)(settings),
        pytest.fixture(name=app_name)(app),
        pytest.fixture(name=name)(client),
    )


def _takes(function: Callable[..., Any], parameter: str) -> None:
    function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(parameter, inspect.Parameter.KEYWORD_ONLY)]
    )

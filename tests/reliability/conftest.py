from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from ght_shared.settings import ServiceSettings
from ght_shared.testing.effects import create_effect_table, random_word


class ReliabilitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RELIABILITY_")
    service_name: str = "beds-reliability"


@pytest.fixture
def make_reliability_settings(make_settings):
    """Settings on a fresh database with the effect table, against the given NATS URL."""

    async def build(nats_url: str, **overrides) -> ReliabilitySettings:
        settings = await make_settings(
            ReliabilitySettings,
            service_name=f"beds-{random_word(6)}",
            nats_url=nats_url,
            consumer_backoff_s=(0.1, 0.2, 0.5),
            outbox_publish_timeout_s=1.0,
            outbox_max_backoff_s=1.0,
            **overrides,
        )
        await create_effect_table(settings.database_url)
        return settings

    return build


def pytest_collection_modifyitems(items):
    for item in items:
        if "reliability" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
            # Each test kills its own servers: keep them on one xdist worker at a time.
            item.add_marker(pytest.mark.xdist_group("reliability"))

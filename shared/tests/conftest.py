from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from ght_shared.settings import ServiceSettings
from ght_shared.testing.effects import create_effect_table, random_word


class ProbeSettings(ServiceSettings):
    """A service of the tests' own; named ``beds-<word>`` so its dead letters go to BEDS."""

    model_config = SettingsConfigDict(env_prefix="PROBE_")
    service_name: str = "probe-svc"


@pytest.fixture
async def probe_settings(make_settings) -> ProbeSettings:
    settings = await make_settings(
        ProbeSettings,
        service_name=f"beds-{random_word(6)}",
        consumer_backoff_s=(0.05, 0.1, 0.2),
        consumer_max_deliver=3,
        outbox_poll_interval_s=0.2,
    )
    await create_effect_table(settings.database_url)
    return settings

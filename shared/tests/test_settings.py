"""Service settings: prefixed environment variables, safe defaults, production guards."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsConfigDict

from ght_shared.settings import ServiceSettings


class _Limits(BaseModel):
    max_beds: int = 10
    max_units: int = 3


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TESTSVC_")
    service_name: str = "test-svc"
    limits: _Limits = _Limits()


class TestEnvironmentVariables:
    def test_are_read_with_the_service_prefix(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("TESTSVC_NATS_URL", "nats://10.0.0.7:4223")
        monkeypatch.setenv("TESTSVC_DB_POOL_SIZE", "8")
        settings = _Settings()
        assert settings.nats_url == "nats://10.0.0.7:4223"
        assert settings.db_pool_size == 8

    def test_without_the_prefix_are_ignored(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("NATS_URL", "nats://elsewhere:4222")
        monkeypatch.setenv("OTHERSVC_NATS_URL", "nats://elsewhere:4222")
        assert _Settings().nats_url == "nats://127.0.0.1:4222"

    def test_fill_a_nested_model_field_through_the_double_underscore(
        self, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setenv("TESTSVC_LIMITS__MAX_BEDS", "40")
        settings = _Settings()
        assert settings.limits == _Limits(max_beds=40, max_units=3)

    def test_of_the_wrong_type_are_refused(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("TESTSVC_DB_POOL_SIZE", "lots")
        with pytest.raises(ValidationError, match="db_pool_size"):
            _Settings()

    def test_out_of_bounds_are_refused(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("TESTSVC_DB_POOL_SIZE", "500")
        with pytest.raises(ValidationError, match="db_pool_size"):
            _Settings()


class TestTheDatabaseUrl:
    @pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
    def test_written_for_libpq_is_given_the_asyncpg_driver(self, scheme: str):
        settings = _Settings(database_url=f"{scheme}://beds@db.ght.local:5432/beds")
        assert settings.database_url == "postgresql+asyncpg://beds@db.ght.local:5432/beds"

    def test_from_the_environment_is_given_the_asyncpg_driver(
        self, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setenv("TESTSVC_DATABASE_URL", "postgresql://u@h:5432/d")
        assert _Settings().database_url == "postgresql+asyncpg://u@h:5432/d"

    def test_already_naming_asyncpg_is_kept(self):
        url = "postgresql+asyncpg://u@h:5432/d"
        assert _Settings(database_url=url).database_url == url

    def test_defaults_to_the_local_server_with_asyncpg(self):
        assert _Settings().database_url.startswith("postgresql+asyncpg://")


class TestProduction:
    def test_refuses_a_duplicate_window_below_two_minutes(self):
        with pytest.raises(ValidationError, match="at least 120 s in production"):
            _Settings(environment="production", stream_duplicate_window_s=119)

    def test_refuses_it_when_it_comes_from_the_environment(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("TESTSVC_ENVIRONMENT", "production")
        monkeypatch.setenv("TESTSVC_STREAM_DUPLICATE_WINDOW_S", "30")
        with pytest.raises(ValidationError, match="stream_duplicate_window_s"):
            _Settings()

    def test_accepts_a_window_of_two_minutes_or_more(self):
        settings = _Settings(environment="production", stream_duplicate_window_s=120)
        assert settings.stream_duplicate_window_s == 120

    def test_does_not_constrain_tests_that_shorten_the_window(self):
        assert _Settings(environment="test", stream_duplicate_window_s=1).environment == "test"

    def test_is_one_of_the_known_environments_only(self):
        with pytest.raises(ValidationError, match="environment"):
            _Settings(environment="prod")


class TestDefaults:
    def test_are_safe_for_a_developers_machine(self):
        settings = _Settings()
        assert settings.environment == "local"
        assert "127.0.0.1" in settings.nats_url
        assert "127.0.0.1" in settings.database_url
        assert settings.jwt_public_key is None
        assert settings.stream_duplicate_window_s >= 120

    def test_are_frozen(self):
        settings = _Settings()
        with pytest.raises(ValidationError):
            settings.nats_url = "nats://elsewhere:4222"  # type: ignore[misc]

"""Settings of the gateway, read from ``GATEWAY_*`` environment variables."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, model_validator
from pydantic_settings import SettingsConfigDict

from ght_shared.settings import ServiceSettings

# Fernet key used only when none is configured outside production (make run, tests).
LOCAL_KEY_ENCRYPTION_KEY = "bG9jYWwtb25seS1rZXktZW5jcnlwdGlvbi1rZXk9PT0="


class Upstreams(BaseModel):
    """Base URLs of the services (``GATEWAY_UPSTREAMS__BEDS=http://...``)."""

    contracts: str = "http://127.0.0.1:8001"
    activity: str = "http://127.0.0.1:8002"
    beds: str = "http://127.0.0.1:8003"
    staffing: str = "http://127.0.0.1:8004"


class RateLimit(BaseModel):
    """A token bucket: ``rate`` requests per second sustained, bursts up to ``burst``."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


def _default_rate_limits() -> dict[str, RateLimit]:
    return {
        "admin": RateLimit(rate=50, burst=200),
        "commission": RateLimit(rate=20, burst=100),
        "direction": RateLimit(rate=20, burst=100),
        "pole_manager": RateLimit(rate=20, burst=100),
        "bed_manager": RateLimit(rate=30, burst=150),
        "staffing_coordinator": RateLimit(rate=20, burst=100),
        "it_system": RateLimit(rate=200, burst=1000),
    }


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", populate_by_name=True)

    service_name: str = "gateway"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/gateway"
    upstreams: Upstreams = Upstreams()
    trust_request_id: bool = Field(
        default=False,
        description="The public door: a caller's X-Request-ID is its correlation id, kept"
        " beside the gateway's own request id, never in its place.",
    )

    # Metrics: never on the public port (docs/adr/0013-gateway-metrics-port.md).
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address of the metrics listener; 0.0.0.0 in a container.",
    )
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of /metrics (0: any free port)."
    )

    # Identity and tokens.
    public_url: str = "http://127.0.0.1:8000"
    access_token_ttl_s: int = Field(default=900, ge=60, le=3600)
    refresh_token_ttl_s: int = Field(default=8 * 3600, ge=300)
    signing_algorithm: str = "EdDSA"
    key_encryption_key: str | None = Field(
        default=None, description="Fernet key encrypting the signing keys at rest."
    )
    demo: bool = Field(
        default=False, description="Create the demo identities (never in production)."
    )
    demo_password: str = Field(
        default="demo", validation_alias=AliasChoices("GHT_DEMO_PASSWORD", "GATEWAY_DEMO_PASSWORD")
    )

    # Brute force and rate limits.
    login_max_failures: int = Field(
        default=5, ge=1, description="Failed passwords of one account from one address."
    )
    login_account_max_failures: int = Field(
        default=20,
        ge=1,
        description="Failed passwords of one account from anywhere, past which the addresses"
        " it has not logged in from recently must wait too.",
    )
    login_familiar_days: int = Field(
        default=30, ge=1, description="How long an address stays familiar after a login."
    )
    login_window_s: int = Field(default=900, ge=60)
    login_backoff_base_s: float = Field(default=2.0, gt=0)
    token_ip_limit: RateLimit = RateLimit(rate=1.0, burst=30)
    rate_limits: dict[str, RateLimit] = Field(default_factory=_default_rate_limits)

    # Routing.
    cors_origins: tuple[str, ...] = ("http://127.0.0.1:8000", "http://localhost:8000")
    upstream_timeout_s: float = Field(default=10.0, gt=0)
    upstream_import_timeout_s: float = Field(default=300.0, gt=0)
    upstream_retries: int = Field(default=2, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    upstream_import_prefixes: tuple[str, ...] = Field(
        default=(
            "/api/activity/imports",
            "/api/activity/records",
            "/api/activity/withdrawals",
            "/api/beds/imports",
            "/api/staffing/imports",
        ),
        description="Gateway path prefixes of file imports and large batches: import timeout"
        " and upload body limit (each service applies its own limit too).",
    )
    upstream_connect_timeout_s: float = Field(
        default=2.0, gt=0, description="TCP connect (and pool wait) timeout towards a service."
    )
    upstream_max_connections: int = Field(default=100, ge=1, description="Per service.")
    upstream_keepalive_expiry_s: float = Field(
        default=4.0,
        gt=0,
        description="Idle connections are dropped after this: keep it under the services' "
        "uvicorn timeout_keep_alive (5 s), or a request may meet a connection the service "
        "has just closed.",
    )
    openapi_cache_s: float = Field(
        default=30.0, ge=0, description="How long a service's fetched OpenAPI document is reused."
    )

    # Live feed.
    feed_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Idle seconds before an SSE stream gets a comment line."
    )
    feed_ring_size: int = Field(
        default=10_000, ge=1, description="Recent events kept in memory to resume a stream."
    )
    feed_client_queue: int = Field(
        default=1_000, ge=1, description="Events waiting for one SSE client before it is dropped."
    )
    feed_max_clients: int = Field(
        default=2_000, ge=1, description="SSE streams one gateway process serves at once."
    )
    feed_max_streams_per_principal: int = Field(
        default=10,
        ge=1,
        description="SSE streams one principal (token subject) may hold open on one process.",
    )
    feed_retry_ms: int = Field(
        default=3_000, ge=0, description="Reconnection delay suggested to SSE clients."
    )

    # Territorial overview.
    overview_timeout_s: float = Field(
        default=3.0, gt=0, description="How long the overview waits for each service's part."
    )

    @property
    def encryption_key(self) -> str:
        return self.key_encryption_key or LOCAL_KEY_ENCRYPTION_KEY

    @model_validator(mode="after")
    def _production_has_no_demo_and_a_real_key(self) -> Settings:
        if self.environment == "production":
            if self.demo:
                raise ValueError("demo identities are never allowed in production")
            if not self.key_encryption_key:
                raise ValueError("GATEWAY_KEY_ENCRYPTION_KEY is required in production")
        return self

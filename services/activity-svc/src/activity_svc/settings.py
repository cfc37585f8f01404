"""Settings of activity-svc, read from ``ACTIVITY_*`` environment variables."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from ght_shared.settings import ServiceSettings

MAX_BATCH_RECORDS = 10_000
"""The most records a ``POST /records`` batch may hold, checked before any is validated."""


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ACTIVITY_")

    service_name: str = "activity-svc"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/activity"

    max_batch_records: int = Field(
        default=MAX_BATCH_RECORDS,
        ge=1,
        le=MAX_BATCH_RECORDS,
        description="Most records in one POST /records batch.",
    )
    records_body_bytes: int = Field(
        default=32 * 1_048_576, ge=1024, description="Body limit of POST /records."
    )
    records_json_values: int = Field(
        default=400_000,
        ge=100,
        description="Most JSON values of a POST /records body: 10 000 records of some twenty"
        " fields each, with room for commas in text (parsing 400 000 values costs tens of MB).",
    )
    import_statement_timeout_s: float = Field(
        default=1800.0, gt=0, description="How long the merge of one import may take."
    )
    import_work_mem: str = Field(
        default="256MB",
        pattern=r"^[0-9]+(kB|MB|GB)$",
        description="PostgreSQL work_mem of an import's merge (its sort of the file's rows).",
    )
    import_parts: int = Field(
        default=2,
        ge=1,
        le=16,
        description=(
            "Connections a large file import is merged on at once (two-phase commit keeps"
            " it all-or-nothing; PostgreSQL needs max_prepared_transactions). About the"
            " cores PostgreSQL can give one import; 1 merges on one connection."
        ),
    )
    import_parallel_min_rows: int = Field(
        default=50_000,
        ge=1,
        description="Smallest import merged in parts; a smaller one is merged on one connection.",
    )
    import_max_bytes: int = Field(
        default=2 * 1024**3,
        ge=1024,
        description=(
            "Most bytes one file import may hold once decompressed (413 beyond): five"
            " million NDJSON records of about 400 bytes."
        ),
    )
    import_max_rows: int = Field(
        default=5_000_000,
        ge=1,
        description=(
            "Most rows (lines, a CSV header aside) one file import may hold (413 beyond):"
            " an establishment's monthly file is up to a few million."
        ),
    )
    import_max_line_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Longest line of an imported file (413 beyond): a record is a few hundred.",
    )
    local_timezone: str = Field(
        default="Europe/Paris",
        description="Time zone of date-times sent without an offset, and of a stay's dates.",
    )

    @model_validator(mode="after")
    def _room_for_the_parts(self) -> Self:
        # An import holds its own connection and one per part, plus one while staging.
        room = self.db_pool_size + self.db_max_overflow - 2
        if self.import_parts > room:
            raise ValueError(
                f"import_parts ({self.import_parts}) needs more connections than the pool"
                f" leaves (db_pool_size + db_max_overflow - 2 = {room})"
            )
        return self

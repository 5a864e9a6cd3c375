"""Every setting of every process, in one place: environment variables with the MPX_ prefix
(and a `.env` file). Secrets are SecretStr so they never reach a log line."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MPX_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "production"] = "development"
    log_level: str = "INFO"

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = Field(
        default="",
        description="Prepended to every catalog topic name (isolates test runs and tenants).",
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent schema registry; without one, ids come from the catalog.",
    )

    # Warehouse: chdb:///path (embedded, default) or http(s)://user:pass@host:8123
    warehouse_url: str = "chdb://var/warehouse"
    warehouse_database: str = "marketpulse"

    # Sink batching
    sink_group: str = "mpx-sink"
    sink_batch_rows: int = 5000
    sink_batch_ms: int = 500
    sink_max_buffered_rows: int = Field(
        default=100_000, description="Rows held in memory before the sink pauses its partitions."
    )

    # Worker
    worker_id: str = "mpx-worker"
    worker_data_dir: Path = Path("var/worker")
    worker_web_port: int = 6066
    rules_file: Path | None = Field(
        default=None, description="YAML rule definitions; default: marketpulse/rules/defaults.yaml."
    )

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_key: SecretStr = SecretStr("change-me")

    # Metrics endpoint of processes that are not the API (0 = off)
    metrics_port: int = 0

    # Mock venue
    mock_seed: int = 7

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env != "development" and self.api_key.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "MPX_API_KEY is a placeholder; set a real key outside development (MPX_ENV)."
            )
        return self

    def topic(self, logical_id: str) -> str:
        """Kafka name of a catalog topic, with this deployment's prefix."""
        from marketpulse.catalog import CATALOG

        return self.topic_prefix + CATALOG.topic(logical_id).name


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

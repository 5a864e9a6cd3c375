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
    sink_batch_rows: int = Field(
        default=20_000,
        description="Rows per insert (per partition) under load; ClickHouse wants few, large "
        "inserts: at 5,000 the per-insert cost halved the sink's rows/s (measured).",
    )
    sink_batch_ms: int = 500
    sink_max_buffered_rows: int = Field(
        default=200_000, description="Rows held in memory before the sink pauses its partitions."
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
    api_ready_max_lag: int = Field(
        default=100_000,
        description="/readyz answers 503 when the sink group is more messages behind than this.",
    )
    api_stream_max_clients: int = Field(
        default=100, description="Concurrent live signal streams (SSE); more get 503."
    )

    # Alerts (marketpulse alerts): routes and channels in YAML, webhook URLs here (secrets)
    alerts_group: str = "mpx-alerts"
    alerts_routes_file: Path | None = Field(
        default=None,
        description="YAML channels and routes; default: marketpulse/alerts/routes.yaml.",
    )
    alerts_webhooks: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Webhook URL per channel name, JSON: {"slack": "https://hooks.slack.com/…"}. '
        "A channel without a URL is a dry run that logs what it would send.",
    )
    alerts_offset_reset: Literal["earliest", "latest"] = Field(
        default="latest", description="Where a new alerts group starts: never page on history."
    )
    alerts_timeout_s: float = 5.0
    alerts_backoff_s: float = Field(default=0.5, description="First retry delay (doubles).")
    alerts_backoff_max_s: float = 30.0
    alerts_give_up_s: float = Field(
        default=600.0, description="Retry one delivery this long, then dead-letter it."
    )
    grafana_url: str = Field(
        default="http://127.0.0.1:3000", description="Base URL of Grafana, for alert links."
    )

    # Execution stage (marketpulse execute): paper order intents from signals
    execution_file: Path | None = Field(
        default=None,
        description="YAML sizing, limits and modes; default: marketpulse/execution/defaults.yaml.",
    )
    execution_approval: Literal["semi_auto", "auto"] | None = Field(
        default=None, description="Overrides the file's approval mode (semi_auto | auto)."
    )
    execution_levels: list[str] | None = Field(
        default=None, description='Overrides the file\'s signal levels, JSON: ["P1", "P2"].'
    )
    execution_group: str = Field(
        default="mpx-execute", description="Consumer group of the signals the stage reads."
    )
    execution_offset_reset: Literal["earliest", "latest"] = Field(
        default="latest", description="Where a new execution group starts: never trade history."
    )

    # Metrics endpoint of processes that are not the API (0 = off)
    metrics_port: int = 0

    # Mock venue
    mock_seed: int = 7

    # Venue collectors (shared)
    collector_book_depth: int = Field(default=10, description="Levels a side in each book record.")
    collector_state_dir: Path = Field(
        default=Path("var/collector"),
        description="Durable collector state (e.g. the trades complete-through boundary).",
    )
    collector_quiet_s: float = Field(
        default=60.0, description="A connection silent this long is reported as quiet."
    )

    # Polymarket (base URLs are settings so tests point them at 127.0.0.1)
    polymarket_gamma_url: str = "https://gamma-api.polymarket.com"
    polymarket_clob_url: str = "https://clob.polymarket.com"
    polymarket_data_url: str = "https://data-api.polymarket.com"
    polymarket_ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    polymarket_ws_shard_size: int = Field(default=500, description="Asset ids per connection.")
    polymarket_ws_max_assets: int = Field(
        default=0,
        description="Cap on streamed asset ids, closest to close first (0 = all); the rest are "
        "snapshotted over REST by tier.",
    )
    polymarket_ws_ping_s: float = 10.0
    polymarket_ws_stagger_s: float = Field(
        default=0.5, description="Delay between opening two shards (many at once draw 429s)."
    )
    polymarket_reconcile_s: float = Field(
        default=300.0, description="Gamma re-discovery period (new, changed, closed markets)."
    )
    polymarket_trades_poll_s: float = 5.0
    polymarket_trades_page: int = Field(default=1000, description="Data API /trades page size.")

    # Kalshi (URLs are settings so tests point them at 127.0.0.1). The WebSocket is always signed.
    kalshi_rest_url: str = "https://api.elections.kalshi.com/trade-api/v2"
    kalshi_ws_url: str = "wss://api.elections.kalshi.com/trade-api/ws/v2"
    kalshi_key_id: SecretStr | None = Field(default=None, description="Kalshi API key id.")
    kalshi_private_key: SecretStr | None = Field(
        default=None, description="PEM RSA private key of the API key (or use the _path setting)."
    )
    kalshi_private_key_path: Path | None = Field(
        default=None, description="File holding the PEM RSA private key of the API key."
    )
    kalshi_series: list[str] = Field(
        default_factory=list,
        description="Series tickers to follow (e.g. KXBTCD); empty: every open event.",
    )
    kalshi_max_markets: int = Field(
        default=0, description="Cap on markets subscribed over the WebSocket (0: no cap)."
    )
    kalshi_reads_per_s: float = Field(
        default=20.0, description="REST read budget (Basic tier: 20 reads/s)."
    )
    kalshi_reconcile_s: float = Field(
        default=300.0,
        description="Re-discovery period: publishes changed markets, streams new ones (0: never).",
    )
    kalshi_fallback_after_s: float = Field(
        default=10.0,
        description="WebSocket down this long: poll order books over REST until it is back.",
    )

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

"""The ClickHouse side: `client` (connection, versioned `migrations/`), `sink` (Kafka →
ClickHouse, idempotent), `bench` (sink and query benchmarks)."""

from marketpulse.warehouse.client import (
    Migration,
    MigrationError,
    Warehouse,
    connect,
    load_migrations,
    parse_url,
    server_options,
)

__all__ = [
    "Migration",
    "MigrationError",
    "Warehouse",
    "connect",
    "load_migrations",
    "parse_url",
    "server_options",
]

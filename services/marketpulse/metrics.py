"""Every Prometheus metric of every process, declared once. Processes import the objects
from here; dashboards and alerts rely on these names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Collector
EVENTS_PRODUCED = Counter(
    "mpx_collector_events_total", "Normalized events produced to Kafka", ["venue", "topic"]
)
COLLECTOR_REJECTS = Counter(
    "mpx_collector_rejected_total", "Venue payloads rejected, by reason", ["venue", "reason"]
)
COLLECTOR_LAG = Histogram(
    "mpx_collector_lag_seconds",
    "Venue timestamp to produce",
    ["venue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Worker
WORKER_MESSAGES = Counter("mpx_worker_messages_total", "Messages evaluated by rules", ["topic"])
WORKER_BOOKS_HELD = Counter(
    "mpx_worker_books_held_total",
    "Books that arrived before their event's metadata was complete (held, or overflow)",
    ["outcome"],
)
SIGNALS_EMITTED = Counter("mpx_worker_signals_total", "Signals emitted", ["rule", "level"])
TICK_TO_SIGNAL = Histogram(
    "mpx_worker_tick_to_signal_seconds",
    "Collector receive time of the triggering input to signal emission",
    ["rule"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# Sink
SINK_ROWS = Counter("mpx_sink_rows_total", "Rows inserted into the warehouse", ["table"])
SINK_BATCH_ROWS = Histogram(
    "mpx_sink_batch_rows",
    "Rows per insert batch",
    ["table"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
)
SINK_BATCH_SECONDS = Histogram(
    "mpx_sink_insert_seconds",
    "Time of one insert",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SINK_INSERT_ERRORS = Counter("mpx_sink_insert_errors_total", "Failed inserts (retried)", ["table"])
SINK_DROPPED = Counter(
    "mpx_sink_dropped_total",
    "Undecodable dead letters skipped (a dead letter is never dead-lettered again)",
    ["topic", "reason"],
)

# Everywhere bad input can arrive
DEAD_LETTERS = Counter(
    "mpx_dead_letters_total", "Messages sent to the dead-letter topic", ["stage", "reason"]
)

# API
API_REQUESTS = Histogram(
    "mpx_api_request_seconds",
    "API request latency",
    ["route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
READY = Gauge("mpx_ready", "1 when a dependency answers", ["dependency"])

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
# Per venue and connection ("shard": a WebSocket connection id, or a REST/poll channel)
COLLECTOR_MESSAGES = Counter(
    "mpx_collector_messages_total",
    "Venue messages received, by message type (unknown types keep their own name)",
    ["venue", "shard", "type"],
)
COLLECTOR_RECONNECTS = Counter(
    "mpx_collector_reconnects_total", "Venue connections re-opened", ["venue", "shard"]
)
COLLECTOR_GAPS = Counter(
    "mpx_collector_gaps_total",
    "Stream gaps: reconnects without replay, sequence jumps, deltas without a snapshot",
    ["venue", "shard", "kind"],
)
COLLECTOR_BOOK_MISMATCHES = Counter(
    "mpx_collector_book_mismatches_total",
    "Maintained books that disagreed with the venue's own best bid/ask (a resnapshot follows)",
    ["venue"],
)
COLLECTOR_RESNAPSHOTS = Counter(
    "mpx_collector_resnapshots_total", "Books re-fetched over REST, by cause", ["venue", "cause"]
)
COLLECTOR_LAST_MESSAGE = Gauge(
    "mpx_collector_last_message_seconds",
    "Wall-clock time of the last frame received (epoch seconds)",
    ["venue", "shard"],
)
COLLECTOR_HTTP = Counter(
    "mpx_collector_http_requests_total",
    "Venue HTTP requests by endpoint and outcome (ok, 429, 5xx, error, retry)",
    ["venue", "endpoint", "outcome"],
)
COLLECTOR_POSSIBLE_LOSS = Counter(
    "mpx_collector_possible_data_loss_total",
    "Polling windows that overflowed what the venue can page through (rows may be missing)",
    ["venue", "channel"],
)

# Worker
WORKER_MESSAGES = Counter("mpx_worker_messages_total", "Messages evaluated by rules", ["topic"])
WORKER_BOOKS_HELD = Counter(
    "mpx_worker_books_held_total",
    "Books that arrived before their event's metadata was complete (held, or overflow)",
    ["outcome"],
)
SIGNALS_EMITTED = Counter("mpx_worker_signals_total", "Signals emitted", ["rule", "level"])
RULE_UPDATES = Counter(
    "mpx_worker_rule_updates_total",
    "Rule definitions read from the rules topic, accepted or rejected (invalid, stale)",
    ["outcome"],
)
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
SINK_AVRO_FALLBACKS = Counter(
    "mpx_sink_avro_fallbacks_total",
    "Batches ClickHouse refused as Avro (a bad message or an error), mapped in Python instead",
    ["table"],
)
SINK_DROPPED = Counter(
    "mpx_sink_dropped_total",
    "Undecodable dead letters skipped (a dead letter is never dead-lettered again)",
    ["topic", "reason"],
)

# Alerts
ALERTS_SENT = Counter("mpx_alerts_sent_total", "Alerts delivered", ["channel", "rule", "level"])
ALERTS_RETRIED = Counter(
    "mpx_alerts_retried_total", "Delivery attempts retried, by reason", ["channel", "reason"]
)
ALERTS_FAILED = Counter(
    "mpx_alerts_failed_total",
    "Alerts given up on (dead-lettered), by reason",
    ["channel", "reason"],
)
ALERTS_DEDUPLICATED = Counter(
    "mpx_alerts_deduplicated_total",
    "Signals not alerted: already sent (seen) or within the cooldown of their rule and subject",
    ["channel", "reason"],
)
ALERT_LATENCY = Histogram(
    "mpx_alerts_latency_seconds",
    "Collector receive time of the signal's trigger to delivery acknowledged",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

SINK_LAG = Gauge(
    "mpx_consumer_lag_messages",
    "Messages behind the partition's end, as the consumer last saw it",
    ["group", "topic", "partition"],
)

# Execution stage (marketpulse execute): paper order intents
EXEC_INTENT_EVENTS = Counter(
    "mpx_execution_intent_events_total",
    "Intent lifecycle events produced, by status (suggested, approved, rejected, filled...)",
    ["status", "rule"],
)
EXEC_CHECKS_FAILED = Counter(
    "mpx_execution_checks_failed_total", "Risk checks that failed, by check", ["check"]
)
EXEC_INPUTS_IGNORED = Counter(
    "mpx_execution_inputs_ignored_total",
    "Signals and commands that produced nothing, by reason (filtered, duplicate, stale: older "
    "than orders.forget_closed_ms; a command's first word of why)",
    ["input", "reason"],
)
EXEC_SIGNAL_TO_INTENT = Histogram(
    "mpx_execution_signal_to_intent_seconds",
    "Signal produced (Kafka timestamp) to its first intent event acknowledged",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EXEC_BOOK_WAITS = Counter(
    "mpx_execution_book_waits_total",
    "Signals that waited for the books consumer to reach their time, by outcome",
    ["outcome"],
)
EXEC_WATCHED_EVENTS = Gauge(
    "mpx_execution_watched_events", "Events whose books the stage decodes (open intents/positions)"
)
EXEC_KILL_SWITCH = Gauge("mpx_execution_kill_switch", "1 while the global kill switch is on")

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
API_STREAM_CLIENTS = Gauge("mpx_api_stream_clients", "Open live signal streams (SSE)")

-- 0003: order intents v2 (risk checks, fills, lifecycle seq), paper positions and the views
-- the execution API and dashboard read. Never edit this file once applied anywhere: add 0004_….sql.
--
-- Exact under redelivery (see 0001/0002): intents stay a ReplacingMergeTree whose sorting key
-- now ends in seq, so two lifecycle events of one intent never collapse while a redelivered event
-- does; positions keep the latest ts per position_id. Readers use FINAL or argMax on the natural
-- key, never plain counts.
--
-- Checks and fills are parallel arrays (one array per field, the same length within a row) rather
-- than JSON: dashboard SQL filters and ARRAY JOINs them without parsing.

-- A new column may join the sorting key only in the statement that adds it, and only without a
-- default expression (it takes the type's default, 0). Re-running the statement is a no-op.
ALTER TABLE intents
    ADD COLUMN IF NOT EXISTS seq UInt32,
    MODIFY ORDER BY (intent_id, ts, status, seq);

ALTER TABLE intents
    ADD COLUMN IF NOT EXISTS approval LowCardinality(String) DEFAULT 'semi_auto',
    ADD COLUMN IF NOT EXISTS rule_id LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS level LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS subject String DEFAULT '',
    ADD COLUMN IF NOT EXISTS event_key String DEFAULT '',
    ADD COLUMN IF NOT EXISTS venue LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS market_ids Array(String),
    ADD COLUMN IF NOT EXISTS sizing LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS edge_bps Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS check_names Array(String),
    ADD COLUMN IF NOT EXISTS check_passed Array(Bool),
    ADD COLUMN IF NOT EXISTS check_values Array(Float64),
    ADD COLUMN IF NOT EXISTS check_limits Array(Float64),
    ADD COLUMN IF NOT EXISTS check_details Array(String),
    ADD COLUMN IF NOT EXISTS fill_market_ids Array(String),
    ADD COLUMN IF NOT EXISTS fill_token_ids Array(String),
    ADD COLUMN IF NOT EXISTS fill_sides Array(String),
    ADD COLUMN IF NOT EXISTS fill_prices Array(Float64),
    ADD COLUMN IF NOT EXISTS fill_sizes Array(Float64),
    ADD COLUMN IF NOT EXISTS fill_fees Array(Float64),
    ADD COLUMN IF NOT EXISTS fill_levels Array(UInt32),
    ADD COLUMN IF NOT EXISTS fill_book_ts Array(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS filled_size Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS fee Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS expires Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS actor String DEFAULT '';

ALTER TABLE intents ADD INDEX IF NOT EXISTS idx_signal_id signal_id TYPE bloom_filter GRANULARITY 4;

-- The current state of each intent: its highest-seq event, plus when it was suggested. A plain
-- view over the deduplicated events, so it is exact at any moment (no rollup to drift). s and t
-- name seq and ts inside: the outer aliases reuse those names, and ClickHouse would resolve
-- argMax(x, seq) to the alias max(seq).
CREATE VIEW IF NOT EXISTS intent_state AS
SELECT intent_id,
       argMax(signal_id, s) AS signal_id,
       max(s) AS seq,
       argMax(status, s) AS status,
       min(t) AS created,
       argMax(t, s) AS ts,
       argMax(reason, s) AS reason,
       argMax(actor, s) AS actor,
       argMax(rule_id, s) AS rule_id,
       argMax(level, s) AS level,
       argMax(subject, s) AS subject,
       argMax(event_key, s) AS event_key,
       argMax(venue, s) AS venue,
       argMax(market_ids, s) AS market_ids,
       argMax(approval, s) AS approval,
       argMax(mode, s) AS mode,
       argMax(sizing, s) AS sizing,
       argMax(edge_bps, s) AS edge_bps,
       argMax(notional, s) AS notional,
       argMax(filled_size, s) AS filled_size,
       argMax(fee, s) AS fee,
       argMax(expires, s) AS expires,
       arrayDistinct(arrayFlatten(groupArray(
           arrayFilter((n, ok) -> NOT ok, check_names, check_passed)))) AS failed_checks
FROM (SELECT *, seq AS s, ts AS t FROM intents FINAL)
GROUP BY intent_id;

-- One row per fill, for fill panels: fills are carried on the filled/partially_filled events.
CREATE VIEW IF NOT EXISTS intent_fills AS
SELECT intent_id, signal_id, seq, status, ts, rule_id, venue,
       f.1 AS market_id, f.2 AS token_id, f.3 AS side, f.4 AS price, f.5 AS size, f.6 AS fee,
       f.7 AS levels, f.8 AS book_ts
FROM intents FINAL
ARRAY JOIN arrayZip(fill_market_ids, fill_token_ids, fill_sides, fill_prices, fill_sizes,
                    fill_fees, fill_levels, fill_book_ts) AS f;

-- Paper positions: the latest version per position_id (rule_id|token_id) wins.
CREATE TABLE IF NOT EXISTS positions
(
    position_id String,
    rule_id LowCardinality(String),
    venue LowCardinality(String),
    event_key String,
    market_id String,
    token_id String,
    size Float64,
    avg_price Float64,
    cost Float64,
    fees Float64,
    realised_pnl Float64,
    unrealised_pnl Float64,
    mark_price Nullable(Float64),
    status LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY position_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Every version of every position (after each fill, mark, settlement), for PnL over time. Fed by
-- a view on `positions` (the topic is compacted, so this keeps what compaction later drops).
CREATE TABLE IF NOT EXISTS positions_history
(
    position_id String,
    rule_id LowCardinality(String),
    market_id String,
    token_id String,
    size Float64,
    cost Float64,
    fees Float64,
    realised_pnl Float64,
    unrealised_pnl Float64,
    status LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (position_id, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS positions_history_mv TO positions_history AS
SELECT position_id, rule_id, market_id, token_id, size, cost, fees, realised_pnl,
       unrealised_pnl, status, ts
FROM positions

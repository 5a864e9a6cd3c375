-- 0001: one table per topic. Never edit this file once applied anywhere: add 0002_….sql.
--
-- Conventions (DESIGN.md, Determinism):
-- * ORDER BY is the natural key, so ReplacingMergeTree + FINAL counts exactly even when a
--   redelivery was inserted with different batch boundaries than the first time.
-- * non_replicated_deduplication_window lets the sink's insert_deduplication_token drop a
--   repeated batch outright (it defaults to 0 on a single node, i.e. no dedup).
-- * Event time is `ts` (DateTime64(3, 'UTC')) so Grafana's $__timeFilter(ts) works.
-- * _partition/_offset say which Kafka message a row came from; _inserted when it landed.
-- * Tables are unqualified: they go to the client's database (settings.warehouse_database).
-- * Statements are re-runnable (IF NOT EXISTS): ClickHouse DDL is not transactional.
-- * books/ticks expire 30 days after they were *loaded*, not after their event time: a
--   replayed recording from last year would otherwise be dropped by the next merge.

CREATE TABLE IF NOT EXISTS markets
(
    market_id String,
    event_id String,
    venue LowCardinality(String),
    question String,
    event_title String,
    slug Nullable(String),
    outcome_names Array(String),
    token_ids Array(String),
    status LowCardinality(String),
    end_time Nullable(DateTime64(3, 'UTC')),
    neg_risk Bool,
    neg_risk_augmented Bool,
    exclusive Bool,
    event_market_count UInt32,
    tick_size Float64,
    min_size Float64,
    fee_model LowCardinality(String),
    fee_rate Float64,
    fee_exponent Float64,
    rules_text Nullable(String),
    strike_type Nullable(String),
    floor_strike Nullable(Float64),
    cap_strike Nullable(Float64),
    winning_token_id Nullable(String),
    updated DateTime64(3, 'UTC'),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated)
ORDER BY market_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS books
(
    event_key String,
    market_id String,
    token_id String,
    venue LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    recv DateTime64(3, 'UTC'),
    seq UInt64,
    bid_prices Array(Float64),
    bid_sizes Array(Float64),
    ask_prices Array(Float64),
    ask_sizes Array(Float64),
    hash Nullable(String),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (token_id, ts, seq)
TTL toDateTime(_inserted) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS ticks
(
    event_key String,
    market_id String,
    token_id String,
    venue LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    recv DateTime64(3, 'UTC'),
    seq UInt64,
    best_bid Nullable(Float64),
    best_ask Nullable(Float64),
    bid_size Nullable(Float64),
    ask_size Nullable(Float64),
    last_price Nullable(Float64),
    mid Nullable(Float64),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (token_id, ts, seq)
TTL toDateTime(_inserted) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS trades
(
    event_key String,
    market_id String,
    token_id String,
    venue LowCardinality(String),
    trade_id String,
    ts DateTime64(3, 'UTC'),
    recv DateTime64(3, 'UTC'),
    price Float64,
    size Float64,
    side LowCardinality(String),
    wallet Nullable(String),
    tx_hash Nullable(String),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (token_id, ts, trade_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS signals
(
    signal_id String,
    rule_id LowCardinality(String),
    rule_version UInt32,
    level LowCardinality(String),
    subject String,
    event_key String,
    market_ids Array(String),
    ts DateTime64(3, 'UTC'),
    trigger_recv DateTime64(3, 'UTC'),
    edge_bps Float64,
    edge_score Float64,
    size Float64,
    notional Float64,
    legs_json String,
    evidence Map(String, String),
    summary String,
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (rule_id, ts, signal_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS intents
(
    intent_id String,
    signal_id String,
    status LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    reason String,
    legs_json String,
    notional Float64,
    mode LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (intent_id, ts, status)
SETTINGS non_replicated_deduplication_window = 1000;

-- partition/offset are the source message's; _partition/_offset the dead letter's own.
CREATE TABLE IF NOT EXISTS dead_letters
(
    stage LowCardinality(String),
    source String,
    partition Int32,
    offset Int64,
    error_kind LowCardinality(String),
    error String,
    key String,
    payload String,
    ts DateTime64(3, 'UTC'),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, source, partition, offset)
SETTINGS non_replicated_deduplication_window = 1000;

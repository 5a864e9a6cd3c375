-- 0002: market history, review items, and the rollups dashboards and the API read fast.
-- Never edit this file once applied anywhere: add 0003_….sql.
--
-- Why the rollups are exact under redelivery and replay: a materialized view sees every block
-- inserted into its source, including a redelivered one that the source's ReplacingMergeTree
-- later collapses (batch boundaries can differ after a crash, so the insert token does not always
-- catch it). Every aggregate below is therefore idempotent on the row's natural id:
-- argMin/argMax/min/max ignore a repeated row, uniqExact counts ids, and sums are taken over
-- groupUniqArray((id, value)) so a repeated (id, value) pair is kept once. The same property makes
-- the backfills at the end of this file safe to re-run.

-- Every version of every market (the `markets` table keeps only the latest): status changes,
-- resolution, end-time moves. Fed by a view on `markets`, so the sink needs no second mapping.
CREATE TABLE IF NOT EXISTS markets_history
(
    market_id String,
    event_id String,
    venue LowCardinality(String),
    question String,
    status LowCardinality(String),
    end_time Nullable(DateTime64(3, 'UTC')),
    winning_token_id Nullable(String),
    token_ids Array(String),
    updated DateTime64(3, 'UTC'),
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(updated)
ORDER BY (market_id, updated);

CREATE MATERIALIZED VIEW IF NOT EXISTS markets_history_mv TO markets_history AS
SELECT market_id, event_id, venue, question, status, end_time, winning_token_id, token_ids,
       updated
FROM markets;

-- Review items: signals a person must look at, and their decision (latest version wins).
CREATE TABLE IF NOT EXISTS review_items
(
    review_id String,
    signal_id String,
    rule_id LowCardinality(String),
    subject String,
    status LowCardinality(String),
    decided_by String,
    note String,
    ts DateTime64(3, 'UTC'),
    _partition UInt32,
    _offset UInt64,
    _inserted DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY review_id
SETTINGS non_replicated_deduplication_window = 1000;

-- 1-minute candles per token. OHLC from ticks (mid, else last trade price), ordered by
-- (ts, seq); volume and trade count from trades, summed over distinct trade ids. Two views write
-- into one AggregatingMergeTree; a column a view does not write holds the empty state.
CREATE TABLE IF NOT EXISTS candles_1m
(
    token_id String,
    minute DateTime('UTC'),
    market_id SimpleAggregateFunction(any, String),
    venue SimpleAggregateFunction(any, LowCardinality(String)),
    open AggregateFunction(argMin, Float64, Tuple(DateTime64(3, 'UTC'), UInt64)),
    high AggregateFunction(max, Float64),
    low AggregateFunction(min, Float64),
    close AggregateFunction(argMax, Float64, Tuple(DateTime64(3, 'UTC'), UInt64)),
    ticks AggregateFunction(uniqExact, UInt64),
    trades AggregateFunction(groupUniqArray, Tuple(String, Float64, Float64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (token_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS candles_1m_ticks_mv TO candles_1m AS
SELECT token_id,
       toStartOfMinute(ts) AS minute,
       any(market_id) AS market_id,
       any(venue) AS venue,
       argMinState(assumeNotNull(coalesce(mid, last_price)), (ts, seq)) AS open,
       maxState(assumeNotNull(coalesce(mid, last_price))) AS high,
       minState(assumeNotNull(coalesce(mid, last_price))) AS low,
       argMaxState(assumeNotNull(coalesce(mid, last_price)), (ts, seq)) AS close,
       uniqExactState(seq) AS ticks
FROM ticks
WHERE coalesce(mid, last_price) IS NOT NULL
GROUP BY token_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS candles_1m_trades_mv TO candles_1m AS
SELECT token_id,
       toStartOfMinute(ts) AS minute,
       any(market_id) AS market_id,
       any(venue) AS venue,
       groupUniqArrayState((trade_id, price, size)) AS trades
FROM trades
GROUP BY token_id, minute;

-- Per rule and day: signals, P1s, edge (mean and total, bps) and executable notional, over
-- distinct signal ids.
CREATE TABLE IF NOT EXISTS rule_kpi_daily
(
    rule_id LowCardinality(String),
    day Date,
    signal_ids AggregateFunction(uniqExact, String),
    p1_ids AggregateFunction(uniqExactIf, String, UInt8),
    edges AggregateFunction(groupUniqArray, Tuple(String, Float64, Float64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (rule_id, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS rule_kpi_daily_mv TO rule_kpi_daily AS
SELECT rule_id,
       toDate(ts) AS day,
       uniqExactState(signal_id) AS signal_ids,
       uniqExactIfState(signal_id, level = 'P1') AS p1_ids,
       groupUniqArrayState((signal_id, edge_bps, notional)) AS edges
FROM signals
GROUP BY rule_id, day;

-- Ingest lag (collector receive time − venue event time) per venue, Kafka partition ("shard")
-- and minute of receive time. Each tick counts once, by (token, seq), with its lag in ms. It holds
-- one entry per tick, so it expires like ticks: 30 days after loading (a replayed recording from
-- last year must not vanish at the next merge).
CREATE TABLE IF NOT EXISTS ingest_lag_1m
(
    venue LowCardinality(String),
    shard UInt32,
    minute DateTime('UTC'),
    lags AggregateFunction(groupUniqArray, Tuple(String, UInt64, Int64)),
    loaded SimpleAggregateFunction(max, DateTime('UTC')) DEFAULT now()
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (venue, shard, minute)
TTL loaded + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_lag_1m_mv TO ingest_lag_1m AS
SELECT venue,
       _partition AS shard,
       toStartOfMinute(recv) AS minute,
       groupUniqArrayState((token_id, seq, toUnixTimestamp64Milli(recv) - toUnixTimestamp64Milli(ts))) AS lags
FROM ticks
GROUP BY venue, shard, minute;

-- Backfill what the tables held before the views existed (idempotent, see the top).
INSERT INTO markets_history (market_id, event_id, venue, question, status, end_time,
                             winning_token_id, token_ids, updated)
SELECT market_id, event_id, venue, question, status, end_time, winning_token_id, token_ids,
       updated
FROM markets;

INSERT INTO candles_1m (token_id, minute, market_id, venue, open, high, low, close, ticks)
SELECT token_id, toStartOfMinute(ts) AS minute, any(market_id), any(venue),
       argMinState(assumeNotNull(coalesce(mid, last_price)), (ts, seq)),
       maxState(assumeNotNull(coalesce(mid, last_price))),
       minState(assumeNotNull(coalesce(mid, last_price))),
       argMaxState(assumeNotNull(coalesce(mid, last_price)), (ts, seq)),
       uniqExactState(seq)
FROM ticks
WHERE coalesce(mid, last_price) IS NOT NULL
GROUP BY token_id, minute;

INSERT INTO candles_1m (token_id, minute, market_id, venue, trades)
SELECT token_id, toStartOfMinute(ts) AS minute, any(market_id), any(venue),
       groupUniqArrayState((trade_id, price, size))
FROM trades
GROUP BY token_id, minute;

INSERT INTO rule_kpi_daily (rule_id, day, signal_ids, p1_ids, edges)
SELECT rule_id, toDate(ts) AS day, uniqExactState(signal_id),
       uniqExactIfState(signal_id, level = 'P1'),
       groupUniqArrayState((signal_id, edge_bps, notional))
FROM signals
GROUP BY rule_id, day;

INSERT INTO ingest_lag_1m (venue, shard, minute, lags)
SELECT venue, _partition AS shard, toStartOfMinute(recv) AS minute,
       groupUniqArrayState((token_id, seq, toUnixTimestamp64Milli(recv) - toUnixTimestamp64Milli(ts)))
FROM ticks
GROUP BY venue, shard, minute;

-- Lookups the API does by market rather than by token.
ALTER TABLE signals ADD INDEX IF NOT EXISTS idx_market_ids market_ids TYPE bloom_filter GRANULARITY 4;
ALTER TABLE signals ADD INDEX IF NOT EXISTS idx_signal_id signal_id TYPE bloom_filter GRANULARITY 4;
ALTER TABLE ticks ADD INDEX IF NOT EXISTS idx_market_id market_id TYPE bloom_filter GRANULARITY 4;
ALTER TABLE books ADD INDEX IF NOT EXISTS idx_market_id market_id TYPE bloom_filter GRANULARITY 4

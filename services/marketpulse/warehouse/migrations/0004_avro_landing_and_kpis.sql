-- 0004: the sink's Avro landing tables, and rollups the KPI API and dashboard read.
-- Never edit this file once applied anywhere: add 0005_….sql.
--
-- Landing tables. For its high-volume topics the sink does not decode messages in Python: it
-- hands ClickHouse the messages' Avro bodies in one Avro container per batch (each body followed
-- by the message's Kafka partition and offset), inserted into a Null table whose view maps the
-- record to the table's row, as `sink.py`'s Python mapping does (the tests check both give the
-- same rows). Null tables keep nothing: the views write the rows, and their inserts carry the
-- batch's dedup token. A value Python would refuse (an implausible time, a negative sequence)
-- makes `throwIf` fail the whole insert; the sink then maps that batch in Python, which
-- dead-letters the bad message with its reason and inserts the rest.
-- Columns are the Avro schema's fields by name, typed as ClickHouse reads Avro. In the views, a
-- source column that shares its name with an output alias (seq, rule_version, _partition,
-- _offset) is written qualified where it is checked: unqualified, ClickHouse reads the alias.

CREATE TABLE IF NOT EXISTS ticks_avro
(
    event_key String,
    market_id String,
    token_id String,
    venue String,
    ts_ms Int64,
    recv_ms Int64,
    seq Int64,
    best_bid Nullable(Float64),
    best_ask Nullable(Float64),
    bid_size Nullable(Float64),
    ask_size Nullable(Float64),
    last_price Nullable(Float64),
    _partition Int64,
    _offset Int64
)
ENGINE = Null;

-- Epoch-ms bounds as in sink.py: DateTime64(3) holds 1900..2299.
CREATE MATERIALIZED VIEW IF NOT EXISTS ticks_avro_mv TO ticks AS
SELECT event_key, market_id, token_id, venue,
       fromUnixTimestamp64Milli(ts_ms, 'UTC') AS ts,
       fromUnixTimestamp64Milli(recv_ms, 'UTC') AS recv,
       toUInt64(seq) AS seq,
       best_bid, best_ask, bid_size, ask_size, last_price,
       (best_bid + best_ask) / 2 AS mid,
       toUInt32(ticks_avro._partition) AS _partition,
       toUInt64(ticks_avro._offset) + throwIf(
           NOT (ts_ms BETWEEN -2208988800000 AND 10413791999999
                AND recv_ms BETWEEN -2208988800000 AND 10413791999999
                AND ticks_avro.seq >= 0),
           'out_of_range: a time or seq Python would refuse') AS _offset
FROM ticks_avro;

CREATE TABLE IF NOT EXISTS books_avro
(
    event_key String,
    market_id String,
    token_id String,
    venue String,
    ts_ms Int64,
    recv_ms Int64,
    seq Int64,
    bids Array(Tuple(price Float64, size Float64)),
    asks Array(Tuple(price Float64, size Float64)),
    hash Nullable(String),
    _partition Int64,
    _offset Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS books_avro_mv TO books AS
SELECT event_key, market_id, token_id, venue,
       fromUnixTimestamp64Milli(ts_ms, 'UTC') AS ts,
       fromUnixTimestamp64Milli(recv_ms, 'UTC') AS recv,
       toUInt64(seq) AS seq,
       arrayMap(l -> tupleElement(l, 1), bids) AS bid_prices,
       arrayMap(l -> tupleElement(l, 2), bids) AS bid_sizes,
       arrayMap(l -> tupleElement(l, 1), asks) AS ask_prices,
       arrayMap(l -> tupleElement(l, 2), asks) AS ask_sizes,
       hash,
       toUInt32(books_avro._partition) AS _partition,
       toUInt64(books_avro._offset) + throwIf(
           NOT (ts_ms BETWEEN -2208988800000 AND 10413791999999
                AND recv_ms BETWEEN -2208988800000 AND 10413791999999
                AND books_avro.seq >= 0),
           'out_of_range: a time or seq Python would refuse') AS _offset
FROM books_avro;

CREATE TABLE IF NOT EXISTS trades_avro
(
    event_key String,
    market_id String,
    token_id String,
    venue String,
    trade_id String,
    ts_ms Int64,
    recv_ms Int64,
    price Float64,
    size Float64,
    side String,
    wallet Nullable(String),
    tx_hash Nullable(String),
    _partition Int64,
    _offset Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS trades_avro_mv TO trades AS
SELECT event_key, market_id, token_id, venue, trade_id,
       fromUnixTimestamp64Milli(ts_ms, 'UTC') AS ts,
       fromUnixTimestamp64Milli(recv_ms, 'UTC') AS recv,
       price, size, side, wallet, tx_hash,
       toUInt32(trades_avro._partition) AS _partition,
       toUInt64(trades_avro._offset) + throwIf(
           NOT (ts_ms BETWEEN -2208988800000 AND 10413791999999
                AND recv_ms BETWEEN -2208988800000 AND 10413791999999),
           'out_of_range: a time Python would refuse') AS _offset
FROM trades_avro;

CREATE TABLE IF NOT EXISTS signals_avro
(
    signal_id String,
    rule_id String,
    rule_version Int32,
    level String,
    subject String,
    event_key String,
    market_ids Array(String),
    ts_ms Int64,
    trigger_recv_ms Int64,
    edge_bps Float64,
    edge_score Float64,
    size Float64,
    notional Float64,
    legs Array(Tuple(market_id String, token_id String, side String, price Float64, size Float64)),
    evidence Map(String, String),
    summary String,
    _partition Int64,
    _offset Int64
)
ENGINE = Null;

-- legs_json must be byte for byte what sink.py's json.dumps(sort_keys=True, compact) writes.
-- It is built here only where that is certain: strings of printable ASCII without a quote or
-- backslash (json.dumps writes those verbatim), and numbers that Python writes in fixed notation
-- (0, or 1e-4 <= |x| < 1e16), where ClickHouse writes the same shortest round-trip digits and
-- Python adds `.0` to whole numbers (the tests compare both over many values). Any other leg
-- fails the insert, and Python maps that batch.
CREATE MATERIALIZED VIEW IF NOT EXISTS signals_avro_mv TO signals AS
SELECT signal_id, rule_id,
       toUInt32(rule_version) AS rule_version,
       level, subject, event_key, market_ids,
       fromUnixTimestamp64Milli(ts_ms, 'UTC') AS ts,
       fromUnixTimestamp64Milli(trigger_recv_ms, 'UTC') AS trigger_recv,
       edge_bps, edge_score, size, notional,
       concat('[', arrayStringConcat(arrayMap(l -> concat(
           '{"market_id":"', l.market_id,
           '","price":', if(position(toString(l.price), '.') > 0, toString(l.price),
                            concat(toString(l.price), '.0')),
           ',"side":"', l.side,
           '","size":', if(position(toString(l.size), '.') > 0, toString(l.size),
                           concat(toString(l.size), '.0')),
           ',"token_id":"', l.token_id, '"}'), legs), ','), ']') AS legs_json,
       evidence, summary,
       toUInt32(signals_avro._partition) AS _partition,
       toUInt64(signals_avro._offset) + throwIf(
           NOT (ts_ms BETWEEN -2208988800000 AND 10413791999999
                AND trigger_recv_ms BETWEEN -2208988800000 AND 10413791999999
                AND signals_avro.rule_version >= 0
                AND arrayAll(l -> match(concat(l.market_id, l.token_id, l.side),
                                        '^[ !#-\\[\\]-~]*$')
                                  AND (l.price = 0 OR abs(l.price) BETWEEN 1e-4 AND 9999999999999998)
                                  AND (l.size = 0 OR abs(l.size) BETWEEN 1e-4 AND 9999999999999998),
                             legs)),
           'unsupported: a value only Python maps exactly') AS _offset
FROM signals_avro
;

-- Per signal, what the daily KPIs need, narrow: the rule and day, the P1 flag, edge, notional
-- and the legs as arrays. One row per signal after merges (ReplacingMergeTree on the signal's
-- natural key; `signal_key` is sipHash128(signal_id), the hash uniqExact itself keys strings
-- by), so `FINAL` reads are exact under redelivery and replay, and far cheaper than merging
-- rule_kpi_daily's id sets. The legs let the realised edge be computed once markets resolve.
CREATE TABLE IF NOT EXISTS signal_kpi
(
    rule_id LowCardinality(String),
    day Date,
    signal_key FixedString(16),
    p1 UInt8,
    edge_bps Float64,
    notional Float64,
    leg_market_ids Array(String),
    leg_token_ids Array(String),
    leg_sides Array(LowCardinality(String)),
    leg_prices Array(Float64),
    leg_sizes Array(Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (rule_id, day, signal_key);

CREATE MATERIALIZED VIEW IF NOT EXISTS signal_kpi_mv TO signal_kpi AS
SELECT rule_id, day, signal_key, p1, edge_bps, notional,
       arrayMap(l -> l.1, legs) AS leg_market_ids,
       arrayMap(l -> l.2, legs) AS leg_token_ids,
       arrayMap(l -> l.3, legs) AS leg_sides,
       arrayMap(l -> l.4, legs) AS leg_prices,
       arrayMap(l -> l.5, legs) AS leg_sizes
FROM (
    SELECT rule_id, toDate(ts) AS day, sipHash128(signal_id) AS signal_key,
           toUInt8(level = 'P1') AS p1, edge_bps, notional,
           JSONExtract(legs_json, 'Array(Tuple(market_id String, token_id String, side String, price Float64, size Float64))') AS legs
    FROM signals
);

INSERT INTO signal_kpi
SELECT rule_id, day, signal_key, p1, edge_bps, notional,
       arrayMap(l -> l.1, legs), arrayMap(l -> l.2, legs), arrayMap(l -> l.3, legs),
       arrayMap(l -> l.4, legs), arrayMap(l -> l.5, legs)
FROM (
    SELECT rule_id, toDate(ts) AS day, sipHash128(signal_id) AS signal_key,
           toUInt8(level = 'P1') AS p1, edge_bps, notional,
           JSONExtract(legs_json, 'Array(Tuple(market_id String, token_id String, side String, price Float64, size Float64))') AS legs
    FROM signals FINAL
);

-- Daily KPIs per rule, with the realised edge where the outcome is known. Realised is the
-- backtest's definition (backtest.realised and summarise; the tests hold both to the same
-- numbers): a signal is resolved when every leg's market has a winning token; its P&L is, per
-- leg, (payout - price) x size for a BUY and (price - payout) x size otherwise, payout 1 for the
-- winning token and 0 for the others, before fees, rounded to 6 places; a rule-day's realised
-- edge is its resolved signals' P&L over their notional (those with notional > 0), in bps,
-- NULL while none is resolved. Filter on rule_id and day: ClickHouse pushes the filter into the
-- FINAL read.
CREATE VIEW IF NOT EXISTS rule_kpi_daily_realised AS
WITH (
    SELECT CAST((groupArray(market_id), groupArray(assumeNotNull(winning_token_id))),
                'Map(String, String)')
    FROM markets FINAL
    WHERE coalesce(winning_token_id, '') != ''
) AS winners
SELECT rule_id, day,
       count() AS signals,
       sum(p1) AS p1,
       sum(edge_bps) AS total_edge_bps,
       total_edge_bps / signals AS mean_edge_bps,
       sum(notional) AS executable_notional,
       countIf(resolved) AS resolved_signals,
       if(resolved_signals > 0, round(sumIf(pnl, resolved), 6), NULL) AS realised_pnl,
       sumIf(notional, resolved AND notional > 0) AS resolved_notional,
       if(resolved_signals > 0 AND resolved_notional > 0,
          round(realised_pnl / resolved_notional * 10000, 4), NULL) AS realised_edge_bps
FROM (
    SELECT rule_id, day, p1, edge_bps, notional,
           arrayAll(m -> mapContains(winners, m), leg_market_ids) AS resolved,
           round(arraySum((m, t, s, p, q) -> if(s = 'BUY', 1, -1) * (if(t = winners[m], 1, 0) - p) * q,
                          leg_market_ids, leg_token_ids, leg_sides, leg_prices, leg_sizes), 6) AS pnl
    FROM signal_kpi FINAL
)
GROUP BY rule_id, day

"""Kalshi normalization over every real Kalshi payload in ../shared/fixtures/real/kalshi/ that it
claims to understand (REST markets/events/orderbook, WS snapshots/deltas/trades/tickers), with
values checked against the payloads themselves; plus property tests on random and mutated
frames (a record or a BadMessage, never another exception)."""

from __future__ import annotations

import contextlib
import copy
import csv
import itertools
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketpulse.catalog import CATALOG
from marketpulse.codec import codec
from marketpulse.errors import BadMessage
from marketpulse.venues.base import Frame, Out
from marketpulse.venues.kalshi import KalshiNormalizer, rest_channel

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real" / "kalshi"
pytestmark = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"real Kalshi fixtures not found at {REAL} (a checkout has none)"
)
GOLD_HEAD = REAL / "ws" / "gold15m_KXGOLD15M-26AUG101900-00_2026-08-10.head2000.jsonl"


def load(rel: str) -> Any:
    return json.loads((REAL / rel).read_text())


def ws(payload: Any, recv_ms: int = 1) -> Frame:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Frame("kalshi", "ws:kalshi", "test", recv_ms, raw)


def rest(path: str, payload: Any, recv_ms: int = 1) -> Frame:
    return Frame("kalshi", rest_channel(path), "test", recv_ms, json.dumps(payload).encode())


def encoded(outs: list[Out]) -> list[Out]:
    """Every record must encode with its topic's Avro schema (and round-trip unchanged)."""
    c = codec()
    for topic, _, rec in outs:
        schema = CATALOG.topic(topic).schema
        assert c.decode(schema, c.encode(schema, rec)) == rec
    return outs


def by_topic(outs: list[Out], topic: str) -> list[dict[str, Any]]:
    return [rec for t, _, rec in outs if t == topic]


def rebuilt(levels: dict[Decimal, Decimal], depth: int) -> list[dict[str, float]]:
    """Bids best first, as an independent reference."""
    top = sorted(levels.items(), reverse=True)[:depth]
    return [{"price": float(p), "size": float(q)} for p, q in top]


def complement(levels: dict[Decimal, Decimal], depth: int) -> list[dict[str, float]]:
    """The other side's bids as this side's asks (1 - price), best (lowest) first."""
    top = sorted(levels.items(), reverse=True)[:depth]
    return [{"price": float(1 - p), "size": float(q)} for p, q in top]


# REST ---------------------------------------------------------------------------------------


def test_single_market_and_its_orderbook() -> None:
    d = load("rest/cockpit_market_single_with_orderbook.json")
    n = KalshiNormalizer(depth=10)
    (market,) = by_topic(
        encoded(n.normalize(rest(f"/markets/{d['ticker']}", d["single"]))), "markets"
    )
    assert market["market_id"] == "ks:KXNCAAFGAME-26SEP19MSUND-ND"
    assert market["event_id"] == "ks:KXNCAAFGAME-26SEP19MSUND"
    assert [o["token_id"] for o in market["outcomes"]] == [
        "ks:KXNCAAFGAME-26SEP19MSUND-ND:yes",
        "ks:KXNCAAFGAME-26SEP19MSUND-ND:no",
    ]
    assert (market["status"], market["strike_type"], market["floor_strike"]) == (
        "active",
        "structured",
        None,
    )
    assert market["end_ms"] == 1790033400000  # close_time 2026-09-21T23:30:00Z
    assert market["fee"]["model"] == "kalshi"
    assert market["rules_text"].startswith("If Notre Dame wins the Michigan St. vs Notre Dame")
    assert "Kalshi is not affiliated" in market["rules_text"]  # rules_secondary kept too

    outs = encoded(n.normalize(rest(f"/markets/{d['ticker']}/orderbook", d["orderbook"])))
    yes, no = by_topic(outs, "books")
    assert (yes["token_id"], no["token_id"]) == (
        market["outcomes"][0]["token_id"],
        market["outcomes"][1]["token_id"],
    )
    # 10 YES bids and 6 NO bids in the payload; best YES bid is the last entry (0.89 x 343.49).
    assert (len(yes["bids"]), len(yes["asks"]), len(no["bids"]), len(no["asks"])) == (10, 6, 6, 10)
    assert yes["bids"][0] == {"price": 0.89, "size": 343.49}
    assert yes["asks"][0] == {"price": 0.94, "size": 641.0}  # 1 - best NO bid 0.06
    assert no["bids"][0] == {"price": 0.06, "size": 641.0}
    assert no["asks"][0] == {"price": 0.11, "size": 343.49}
    # The market payload's own quote agrees with the book turned into bid/ask.
    single = d["single"]["market"]
    assert yes["bids"][0]["price"] == float(single["yes_bid_dollars"])
    assert yes["asks"][0]["price"] == float(single["yes_ask_dollars"])
    assert yes["asks"][0]["size"] == float(single["yes_ask_size_fp"])
    assert no["asks"][0]["price"] == float(single["no_ask_dollars"])
    yes_tick, no_tick = by_topic(outs, "ticks")
    assert (yes_tick["best_bid"], yes_tick["best_ask"], yes_tick["bid_size"]) == (
        0.89,
        0.94,
        343.49,
    )
    assert (no_tick["best_bid"], no_tick["best_ask"]) == (0.06, 0.11)
    assert all(r["event_key"] == "ks:KXNCAAFGAME-26SEP19MSUND" for _, _, r in outs)


def test_nested_events_page() -> None:
    events = load("rest/cockpit_events_sports_nested.json")
    n = KalshiNormalizer()
    markets = by_topic(
        encoded(n.normalize(rest("/events", {"events": events, "cursor": ""}))), "markets"
    )
    assert len(markets) == 245 == sum(len(e["markets"]) for e in events)
    nba = [m for m in markets if m["event_id"] == "ks:KXNBA-27"]
    assert len(nba) == 30
    assert all(m["exclusive"] and m["event_market_count"] == 30 for m in nba)
    assert nba[0]["event_title"] == "2027 Pro Basketball Champion"
    assert nba[0]["question"] == "Will Atlanta win the 2027 Pro Basketball Finals?"
    # Strike fields kept as the venue gives them: 137 "greater" ladders with a floor strike.
    ladders = [m for m in markets if m["strike_type"] == "greater"]
    assert len(ladders) == 137
    assert all(m["floor_strike"] is not None and m["cap_strike"] is None for m in ladders)
    source = {m["ticker"]: m for e in events for m in e["markets"]}
    for m in ladders:
        assert m["floor_strike"] == source[m["market_id"][3:]]["floor_strike"]
    exclusive = {e["event_ticker"]: e["mutually_exclusive"] for e in events}
    assert all(m["exclusive"] == exclusive[m["event_id"][3:]] for m in markets)
    assert Counter(m["status"] for m in markets) == {"active": 245}


def test_settled_markets_page() -> None:
    d = load("rest/cockpit_markets_settled.json")
    n = KalshiNormalizer()
    markets = by_topic(
        encoded(n.normalize(rest("/markets", {"markets": d["markets"], "cursor": None}))), "markets"
    )
    assert len(markets) == 44
    assert Counter(m["status"] for m in markets) == {"resolved": 42, "closed": 2}
    for src, rec in zip(d["markets"], markets, strict=True):
        if src["status"] == "finalized":
            assert rec["winning_token_id"] == f"ks:{src['ticker']}:{src['result']}"
        else:
            assert rec["winning_token_id"] is None
        assert rec["exclusive"] is False  # a bare /markets page says nothing of the event
    first = markets[0]
    assert first["market_id"] == "ks:KXMLBGAME-26AUG081610LAAMIA-MIA"
    assert first["winning_token_id"] == "ks:KXMLBGAME-26AUG081610LAAMIA-MIA:yes"


def test_gold_event_keeps_its_strike() -> None:
    d = load("rest/gold15m_event_KXGOLD15M-26AUG101900.json")["response"]
    n = KalshiNormalizer()
    (m,) = by_topic(encoded(n.normalize(rest("/events/KXGOLD15M-26AUG101900", d))), "markets")
    assert m["market_id"] == "ks:KXGOLD15M-26AUG101900-00"
    assert (m["strike_type"], m["floor_strike"], m["cap_strike"]) == (
        "greater_or_equal",
        4395.85,
        None,
    )
    assert (m["status"], m["winning_token_id"]) == ("resolved", "ks:KXGOLD15M-26AUG101900-00:yes")
    assert m["end_ms"] == 1786402800000  # 2026-08-10T23:00:00Z
    assert m["event_title"] == "Gold 15 min · $4,395.85 target"
    # The source repo's own table (derived from the same responses) agrees.
    with (REAL / "rest" / "gold15m_MARKETS.csv").open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["window"] == "KXGOLD15M-26AUG101900-00")
    assert m["floor_strike"] == float(row["floor_strike"]) and row["result"] == "yes"


# WebSocket ----------------------------------------------------------------------------------


def test_orderbook_stream_rebuilds_every_book() -> None:
    d = load("ws/cockpit_ws_orderbook_stream.json")
    n = KalshiNormalizer(depth=10)
    ref: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
    last: dict[str, dict[str, Any]] = {}
    n_books = 0
    for item in d["frames"]:
        frame = item["frame"]
        outs = encoded(n.normalize(ws(frame, item["received_ms"])))
        msg = frame.get("msg", {})
        if frame["type"] == "orderbook_snapshot":
            ref[msg["market_ticker"]] = {
                s: {Decimal(p): Decimal(q) for p, q in msg[f"{s}_dollars_fp"]}
                for s in ("yes", "no")
            }
        elif frame["type"] == "orderbook_delta":
            side = ref[msg["market_ticker"]][msg["side"]]
            price = Decimal(msg["price_dollars"])
            side[price] = side.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
            if side[price] == 0:
                del side[price]
        for book in by_topic(outs, "books"):
            last[book["token_id"]] = book
            n_books += 1
    assert n.stats.gaps == 0 and n.stats.inconsistent == 0
    assert n_books == 2 * (12 + 245)  # one YES and one NO book per snapshot and per delta
    assert len(ref) == 12 == len(d["tickers"])
    for ticker, sides in ref.items():
        yes, no = last[f"ks:{ticker}:yes"], last[f"ks:{ticker}:no"]
        assert yes["bids"] == rebuilt(sides["yes"], 10) and yes["asks"] == complement(
            sides["no"], 10
        )
        assert no["bids"] == rebuilt(sides["no"], 10) and no["asks"] == complement(sides["yes"], 10)
    nym = last["ks:KXMLBGAME-26AUG071840NYMPIT-NYM:yes"]
    assert nym["event_key"] == "ks:KXMLBGAME-26AUG071840NYMPIT"
    nym_deltas = [
        f["frame"]["msg"]
        for f in d["frames"]
        if f["frame"]["type"] == "orderbook_delta"
        and f["frame"]["msg"]["market_ticker"] == "KXMLBGAME-26AUG071840NYMPIT-NYM"
    ]
    assert nym["ts_ms"] == nym_deltas[-1]["ts_ms"]  # venue time of the change, not receive time


def test_first_snapshot_levels() -> None:
    d = load("ws/cockpit_ws_orderbook_stream.json")
    snap = d["frames"][1]["frame"]
    n = KalshiNormalizer(depth=100)
    yes, _no = by_topic(encoded(n.normalize(ws(snap))), "books")
    msg = snap["msg"]
    assert (len(yes["bids"]), len(yes["asks"])) == (
        len(msg["yes_dollars_fp"]),
        len(msg["no_dollars_fp"]),
    )
    best_yes, best_no = msg["yes_dollars_fp"][-1], msg["no_dollars_fp"][-1]  # ascending: best last
    assert yes["bids"][0] == {"price": float(best_yes[0]), "size": float(best_yes[1])}
    assert yes["asks"][0] == {"price": float(1 - Decimal(best_no[0])), "size": float(best_no[1])}


def test_gold_capture_head() -> None:
    n = KalshiNormalizer(depth=10, gap_policy="count")
    counts: Counter[str] = Counter()
    trades = []
    for line in GOLD_HEAD.read_text().splitlines():
        rec = json.loads(line)
        outs = encoded(n.normalize(ws(rec["event"], rec["recv_ms"])))
        counts.update(t for t, _, _ in outs)
        trades += by_topic(outs, "trades")
    assert n.stats.types == {"orderbook_snapshot": 1, "orderbook_delta": 1895, "trade": 104}
    assert counts == {"books": 2 * 1896, "ticks": 2 * 1896, "trades": 104}
    assert n.stats.gaps > 0  # one ticker cut out of shared subscriptions: seq jumps
    first = trades[0]
    assert first["trade_id"] == "ba2632f9-7d17-66f5-2f82-7b085e54db40"
    assert (first["token_id"], first["price"], first["size"], first["side"]) == (
        "ks:KXGOLD15M-26AUG101900-00:yes",
        0.54,
        9.12,
        "BUY",
    )
    assert first["ts_ms"] == 1786401938602 and first["wallet"] is None


def test_ticker_messages() -> None:
    lines = (REAL / "ws" / "ssmd_kalshi_ticker.jsonl").read_text().splitlines()
    n = KalshiNormalizer()
    ticks = [
        t for line in lines for t in by_topic(encoded(n.normalize(ws(line.encode()))), "ticks")
    ]
    assert len(ticks) == 2 * len(lines) == 20
    yes, no = ticks[0], ticks[1]
    assert yes["token_id"] == "ks:KXXRP-26FEB1317-B1.3899500:yes"
    assert (yes["best_bid"], yes["best_ask"], yes["bid_size"], yes["ask_size"]) == (
        0.04,
        0.95,
        14.0,
        84.0,
    )
    assert yes["last_price"] == 0.14 and yes["ts_ms"] == 1770897976000
    # NO bid = 1 - YES ask (with the YES ask's size), NO ask = 1 - YES bid.
    assert (no["best_bid"], no["best_ask"], no["bid_size"], no["ask_size"]) == (
        0.05,
        0.96,
        84.0,
        14.0,
    )
    assert no["last_price"] == 0.86
    # "yes_ask_dollars": "1.0000" with size "0.00" is no ask at all.
    eth = next(t for t in ticks if t["token_id"] == "ks:KXETHD-26FEB1217-T1819.99:yes")
    assert (eth["best_bid"], eth["best_ask"]) == (0.98, None)


def test_trade_messages() -> None:
    lines = (REAL / "ws" / "ssmd_kalshi_trade.jsonl").read_text().splitlines()
    n = KalshiNormalizer()
    trades = [
        t for line in lines for t in by_topic(encoded(n.normalize(ws(line.encode()))), "trades")
    ]
    raw = [json.loads(line) for line in lines]
    assert len(trades) == 10
    for src, rec in zip(raw, trades, strict=True):
        msg = src["msg"]
        side = msg["taker_side"]
        assert rec["token_id"] == f"ks:{msg['market_ticker']}:{side}"
        assert rec["price"] == float(msg[f"{side}_price_dollars"])
        assert rec["size"] == float(msg["count_fp"]) and rec["trade_id"] == msg["trade_id"]
    assert (trades[0]["price"], trades[0]["size"]) == (0.77, 75.0)
    assert (trades[1]["token_id"], trades[1]["price"]) == ("ks:KXBTCD-26FEB1217-T67749.99:no", 0.43)
    seqs = [r["seq"] for r in raw]
    assert n.stats.gaps == sum(b != a + 1 for a, b in itertools.pairwise(seqs))


# Gaps, lifecycle, rejections ----------------------------------------------------------------


def _cockpit_frames() -> list[dict[str, Any]]:
    return [item["frame"] for item in load("ws/cockpit_ws_orderbook_stream.json")["frames"]]


def test_gap_holds_the_subscription_books_until_a_fresh_snapshot() -> None:
    frames = _cockpit_frames()
    gap_at = next(i for i, f in enumerate(frames) if f["type"] == "orderbook_delta") + 3
    n = KalshiNormalizer()
    for f in frames[:gap_at]:
        n.normalize(ws(f))
    # frames[gap_at] is lost: the next delta is a gap, and so are all books of sid 1
    after = [r for f in frames[gap_at + 1 :] for r in n.normalize(ws(f))]
    assert after == [] and n.stats.gaps == 1 and n.stats.held == len(frames) - gap_at - 1
    # The resubscription's snapshot (new sid, seq from 1) publishes that book again.
    snap = copy.deepcopy(frames[1])
    snap["sid"], snap["seq"] = 7, 1
    outs = n.normalize(ws(snap))
    assert len(by_topic(outs, "books")) == 2
    # ...and a late delta of the replaced subscription is not applied to it.
    late = copy.deepcopy(next(f for f in frames if f["type"] == "orderbook_delta"))
    late["msg"]["market_ticker"], late["seq"] = snap["msg"]["market_ticker"], 10**9
    assert n.normalize(ws(late)) == []


def test_gap_policy_count_keeps_applying() -> None:
    frames = _cockpit_frames()
    gap_at = next(i for i, f in enumerate(frames) if f["type"] == "orderbook_delta") + 3
    n = KalshiNormalizer(gap_policy="count")
    outs = [r for f in frames[:gap_at] + frames[gap_at + 1 :] for r in n.normalize(ws(f))]
    assert n.stats.gaps == 1 and n.stats.held == 0
    assert len(by_topic(outs, "books")) == 2 * (12 + 244)


def test_lifecycle_updates_a_known_market() -> None:
    d = load("rest/cockpit_market_single_with_orderbook.json")
    n = KalshiNormalizer()
    n.normalize(rest(f"/markets/{d['ticker']}", d["single"]))
    # Shape per Kalshi's AsyncAPI documentation (no real capture of this channel exists here).
    msg = {
        "market_ticker": d["ticker"],
        "event_type": "determined",
        "result": "no",
        "determination_ts": 1790000000,
    }
    (out,) = encoded(
        n.normalize(ws({"type": "market_lifecycle_v2", "sid": 3, "seq": 1, "msg": msg}, 5))
    )
    assert out[0] == "markets" and out[1] == f"ks:{d['ticker']}"
    assert (out[2]["status"], out[2]["winning_token_id"], out[2]["updated_ms"]) == (
        "resolved",
        f"ks:{d['ticker']}:no",
        5,
    )
    assert out[2]["rules_text"]  # the rest of the record is kept
    other = {"market_ticker": "KXOTHER-1", "event_type": "activated"}
    assert n.normalize(ws({"type": "market_lifecycle_v2", "sid": 3, "seq": 2, "msg": other})) == []


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{not json", "bad_json"),
        (
            {
                "type": "orderbook_snapshot",
                "sid": 1,
                "seq": 1,
                "msg": {"market_ticker": "A-1", "yes": [[42, 10]]},
            },
            "legacy_format",
        ),
        ({"type": "fill", "sid": 1, "seq": 1, "msg": {}}, "unknown_type"),
        (
            {
                "type": "orderbook_delta",
                "sid": 1,
                "seq": 1,
                "msg": {
                    "market_ticker": "A-1",
                    "price_dollars": 0.42,
                    "delta_fp": "1.00",
                    "side": "yes",
                },
            },
            "bad_field",
        ),
        (
            {
                "type": "orderbook_delta",
                "sid": 1,
                "seq": 1,
                "msg": {
                    "market_ticker": "A-1",
                    "price_dollars": "1.5",
                    "delta_fp": "1.00",
                    "side": "yes",
                },
            },
            "bad_price",
        ),
        (
            {
                "type": "trade",
                "sid": 2,
                "seq": 1,
                "msg": {"market_ticker": "A-1", "taker_side": "maybe"},
            },
            "bad_field",
        ),
        (
            {
                "type": "trade",
                "sid": 2,
                "seq": 1,
                "msg": {
                    "market_ticker": "A-1",
                    "taker_side": "yes",
                    "yes_price_dollars": "0.5",
                    "count_fp": "1.00",
                    "trade_id": "t",
                    "ts_ms": 10**20,
                },
            },
            "bad_field",
        ),
        ([1, 2, 3], "malformed"),
        ({"type": "ticker", "msg": "x"}, "malformed"),
    ],
)
def test_rejections_name_their_reason(payload: Any, kind: str) -> None:
    with pytest.raises(BadMessage) as err:
        KalshiNormalizer().normalize(ws(payload))
    assert err.value.kind == kind


def test_duplicate_seq_is_rejected_not_applied() -> None:
    frames = _cockpit_frames()
    n = KalshiNormalizer()
    for f in frames[:30]:
        n.normalize(ws(f))
    with pytest.raises(BadMessage) as err:
        n.normalize(ws(frames[29]))
    assert err.value.kind == "stale_seq"


def test_rest_unknown_endpoint_and_legacy_orderbook() -> None:
    n = KalshiNormalizer()
    with pytest.raises(BadMessage, match="unknown_endpoint"):
        n.normalize(rest("/portfolio/balance", {"balance": 1}))
    with pytest.raises(BadMessage, match="legacy_format"):
        n.normalize(rest("/markets/A-1/orderbook", {"orderbook": {"yes": [[42, 10]], "no": None}}))


# Properties ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
_SAMPLES = (
    [
        *(
            item["frame"]
            for item in json.loads((REAL / "ws" / "cockpit_ws_orderbook_stream.json").read_text())[
                "frames"
            ][:25]
        ),
        *(
            json.loads(line)
            for line in (REAL / "ws" / "ssmd_kalshi_trade.jsonl").read_text().splitlines()[:3]
        ),
        *(
            json.loads(line)
            for line in (REAL / "ws" / "ssmd_kalshi_ticker.jsonl").read_text().splitlines()[:3]
        ),
        *(json.loads(line)["event"] for line in GOLD_HEAD.read_text().splitlines()[:5]),
    ]
    if REAL.is_dir()
    else [{}]
)


def _mutate(value: Any, path: list[int], replacement: Any) -> Any:
    """Replace the node reached by following ``path`` (indices into keys/items) in a copy."""
    if not path or not isinstance(value, dict | list) or not value:
        return replacement
    out = copy.copy(value)
    keys = list(out.keys()) if isinstance(out, dict) else list(range(len(out)))
    key = keys[path[0] % len(keys)]
    out[key] = _mutate(out[key], path[1:], replacement)
    return out


def _check(n: KalshiNormalizer, frame: Frame) -> None:
    with contextlib.suppress(BadMessage):
        encoded(n.normalize(frame))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=json_values,
    channel=st.sampled_from(
        [
            "ws:kalshi",
            "rest:kalshi/markets",
            "rest:kalshi/events",
            "rest:kalshi/markets/A-1/orderbook",
            "rest:kalshi/events/E",
        ]
    ),
)
def test_random_payloads_are_records_or_rejections(value: Any, channel: str) -> None:
    _check(KalshiNormalizer(), Frame("kalshi", channel, "p", 1, json.dumps(value).encode()))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(_SAMPLES),
    path=st.lists(st.integers(min_value=0, max_value=50), max_size=4),
    replacement=json_values,
    prefix=st.integers(min_value=0, max_value=5),
)
def test_mutated_real_frames_are_records_or_rejections(
    sample: Any, path: list[int], replacement: Any, prefix: int
) -> None:
    n = KalshiNormalizer()
    for f in _SAMPLES[:prefix]:  # some state first, so deltas meet a book
        _check(n, ws(f))
    _check(n, ws(_mutate(sample, path, replacement)))


@settings(max_examples=200, deadline=None)
@given(sample=st.sampled_from(_SAMPLES), cut=st.integers(min_value=0, max_value=400))
def test_truncated_frames_are_rejected(sample: Any, cut: int) -> None:
    raw = json.dumps(sample).encode()
    _check(KalshiNormalizer(), ws(raw[: min(cut, len(raw) - 1)]))


def _rest_samples() -> list[tuple[str, Any]]:
    if not REAL.is_dir():
        return [("/markets", {})]
    single = load("rest/cockpit_market_single_with_orderbook.json")
    events = load("rest/cockpit_events_sports_nested.json")[:2]
    gold = load("rest/gold15m_event_KXGOLD15M-26AUG101900.json")["response"]
    return [
        (f"/markets/{single['ticker']}", single["single"]),
        (f"/markets/{single['ticker']}/orderbook", single["orderbook"]),
        ("/events", {"events": events, "cursor": "abc"}),
        ("/events/KXGOLD15M-26AUG101900", gold),
    ]


_REST_SAMPLES = _rest_samples()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(_REST_SAMPLES),
    path=st.lists(st.integers(min_value=0, max_value=60), max_size=5),
    replacement=json_values,
)
def test_mutated_real_rest_payloads_are_records_or_rejections(
    sample: tuple[str, Any], path: list[int], replacement: Any
) -> None:
    endpoint, payload = sample
    _check(KalshiNormalizer(), rest(endpoint, _mutate(payload, path, replacement)))

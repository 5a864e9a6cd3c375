"""The Polymarket normalizer over every real recorded payload it claims to understand
(../shared/fixtures/real/polymarket), with the values those payloads hold, and property tests:
random or mutated payloads give records or a BadMessage, never another exception."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketpulse import metrics
from marketpulse.catalog import CATALOG
from marketpulse.codec import codec
from marketpulse.errors import BadMessage
from marketpulse.venues.base import Frame, Out
from marketpulse.venues.polymarket.normalize import PolymarketNormalizer

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real" / "polymarket"

# Files this normalizer does NOT claim to understand (and why).
NOT_CLAIMED = {
    "data_api/polycopy_data_api_holders.json",  # holders: not a market-data topic
    "clob/nautilus_clob_markets_page.json",  # CLOB /markets listing: discovery is Gamma's
    "historical/aaimek_price_change_messages_202501302221.csv",  # a DB export, not frames
}
# Files that are deltas alone: they need a snapshot or a market first (the tests below give one).
NEEDS_STATE = {
    "ws/nautilus_ws_tick_size_change.json",
    "ws/originalgoku_ws_price_change_sample.json",
    "ws/aaimek_price_change_legacy_2025-01.json",
    "ws/nautilus_ws_price_change_legacy_2024.json",
}


def fixture(rel: str) -> bytes:
    path = REAL / rel
    if not path.is_file():
        pytest.skip(f"real fixtures absent ({REAL}): they live in ../shared, outside the repo")
    return path.read_bytes()


def run(norm: PolymarketNormalizer, channel: str, payload: bytes, recv_ms: int = 7) -> list[Out]:
    outs = norm.normalize(Frame("polymarket", channel, "pm-test", recv_ms, payload))
    c = codec()
    for topic, key, rec in outs:  # every record must be valid for its topic's schema
        assert c.decode(CATALOG.topic(topic).schema, c.encode(CATALOG.topic(topic).schema, rec))
        assert key
    return outs


def of(outs: list[Out], topic: str) -> list[dict[str, Any]]:
    return [rec for t, _, rec in outs if t == topic]


def ws_frames(rel: str) -> list[bytes]:
    """Frames of a capture: a JSON array of frames, JSONL, or one message per file."""
    raw = fixture(rel)
    if rel.endswith(".jsonl"):
        return [line for line in raw.splitlines() if line.strip()]
    if rel.endswith("capture.json"):
        return [json.dumps(f).encode() for f in json.loads(raw)]
    return [raw]


def test_every_claimed_fixture_is_understood() -> None:
    if not REAL.is_dir():
        pytest.skip(f"real fixtures absent ({REAL})")
    channels = {"gamma": "rest:gamma", "clob": "rest:books", "data_api": "data:trades"}
    claimed = [
        p.relative_to(REAL).as_posix()
        for p in sorted(REAL.rglob("*"))
        if p.is_file() and p.relative_to(REAL).as_posix() not in NOT_CLAIMED
    ]
    assert len(claimed) == 30
    for rel in claimed:
        norm = PolymarketNormalizer()
        channel = channels.get(rel.split("/")[0], "ws:market")
        outs = [o for frame in ws_frames(rel) for o in run(norm, channel, frame)]
        topics = Counter(t for t, _, _ in outs)
        assert topics["dlq"] == 0, rel
        # A lone delta or tick size change has nothing to publish without its book or market
        # (tested with them below); every other file yields records.
        assert bool(outs) == (rel not in NEEDS_STATE), rel


# -- Gamma ------------------------------------------------------------------------------------


def test_gamma_negrisk_event_has_every_outcome_market() -> None:
    norm = PolymarketNormalizer()
    markets = of(
        run(norm, "rest:gamma", fixture("gamma/polyarb_gamma_event_negrisk_world-cup-winner.json")),
        "markets",
    )
    assert len(markets) == 60
    assert Counter(m["status"] for m in markets) == {"active": 32, "resolved": 18, "closed": 10}
    spain = markets[0]
    assert (
        spain["market_id"]
        == "pm:0x7976b8dbacf9077eb1453a62bcefd6ab2df199acd28aad276ff0d920d6992892"
    )
    assert spain["event_id"] == "pm:30615"
    assert spain["question"] == "Will Spain win the 2026 FIFA World Cup?"
    assert [o["name"] for o in spain["outcomes"]] == ["Yes", "No"]
    assert spain["outcomes"][0]["token_id"].startswith("43943728873855182144716084482")
    assert (spain["neg_risk"], spain["neg_risk_augmented"], spain["exclusive"]) == (
        True,
        True,
        True,
    )
    assert spain["event_market_count"] == 60
    assert (spain["tick_size"], spain["min_size"]) == (0.001, 5.0)
    assert spain["fee"] == {"model": "polymarket", "rate": 0.03, "exponent": 1.0}
    assert spain["end_ms"] == 1784505600000  # 2026-07-20T00:00:00Z
    assert spain["rules_text"].startswith("This market will resolve according to the national team")
    resolved = [m for m in markets if m["status"] == "resolved"]
    assert all(m["winning_token_id"] == m["outcomes"][1]["token_id"] for m in resolved)  # "No" won
    assert len(norm.active_tokens()) == 64  # 32 active markets x YES/NO


def test_gamma_reconciliation_publishes_only_changes() -> None:
    norm = PolymarketNormalizer()
    payload = fixture("gamma/polyarb_gamma_event_negrisk_world-cup-winner.json")
    assert len(run(norm, "rest:gamma", payload)) == 60
    assert run(norm, "rest:gamma", payload, recv_ms=99) == []  # same again: nothing new
    event = json.loads(payload)
    event["markets"][0]["closed"] = True
    event["markets"][0]["outcomePrices"] = '["1", "0"]'
    changed = of(run(norm, "rest:gamma", json.dumps(event).encode()), "markets")
    assert [m["status"] for m in changed] == ["resolved"]
    assert changed[0]["winning_token_id"] == changed[0]["outcomes"][0]["token_id"]


def test_gamma_market_listings_never_claim_a_complete_set() -> None:
    norm = PolymarketNormalizer()
    markets = of(
        run(norm, "rest:gamma", fixture("gamma/polycopy_gamma_markets_categories_2026-04-18.json")),
        "markets",
    )
    assert len(markets) == 50
    assert sum(m["neg_risk"] for m in markets) == 48
    assert len({m["event_id"] for m in markets}) == 7
    assert not any(m["exclusive"] for m in markets)  # partial events: no multi-outcome set
    binary = of(
        run(
            PolymarketNormalizer(), "rest:gamma", fixture("gamma/polyarb_gamma_market_binary.json")
        ),
        "markets",
    )
    assert binary[0]["question"] == "Iran Nuke before 2027?"
    assert binary[0]["fee"]["model"] == "none"
    perry = of(
        run(
            PolymarketNormalizer(),
            "rest:gamma",
            fixture("gamma/perryboer_gamma_markets_active_2025-11-04.json"),
        ),
        "markets",
    )
    assert (len(perry), sum(m["neg_risk"] for m in perry)) == (100, 68)


# -- CLOB books -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "n_bids", "n_asks", "best_bid", "best_ask", "bid_size", "ask_size"),
    [
        ("clob/polyarb_clob_book_binary.json", 42, 126, 0.063, 0.068, 14.33, 10.66),
        ("clob/polyarb_clob_book_negrisk_outcome.json", 85, 254, 0.106, 0.107, 150249.67, 59634.46),
        ("clob/polycopy_clob_book.json", 1, 93, 0.001, 0.002, 15869947.58, 5765012.42),
        ("clob/nautilus_clob_book_2024-10.json", 5, 7, 0.1, 0.14, 125.0, 705.0),
        ("ws/nautilus_ws_book.json", 76, 86, 0.511, 0.514, 1304.72, 20230.87),
    ],
)
def test_book_snapshots(
    rel: str,
    n_bids: int,
    n_asks: int,
    best_bid: float,
    best_ask: float,
    bid_size: float,
    ask_size: float,
) -> None:
    norm = PolymarketNormalizer(depth=10)
    outs = run(norm, "rest:books", fixture(rel))
    (book,), (tick,) = of(outs, "books"), of(outs, "ticks")
    full = norm.books[book["token_id"]]
    assert (len(full.bids), len(full.asks)) == (n_bids, n_asks)
    assert len(book["bids"]) == min(10, n_bids) and len(book["asks"]) == min(10, n_asks)
    assert book["bids"][0] == {"price": best_bid, "size": bid_size}
    assert book["asks"][0] == {"price": best_ask, "size": ask_size}
    # best first whatever order the venue sent
    assert [lv["price"] for lv in book["bids"]] == sorted(
        (lv["price"] for lv in book["bids"]), reverse=True
    )
    assert [lv["price"] for lv in book["asks"]] == sorted(lv["price"] for lv in book["asks"])
    assert (tick["best_bid"], tick["best_ask"], tick["bid_size"], tick["ask_size"]) == (
        best_bid,
        best_ask,
        bid_size,
        ask_size,
    )


def test_books_batch_answer() -> None:
    norm = PolymarketNormalizer()
    books = of(run(norm, "rest:books", fixture("clob/originalgoku_clob_books_batch.json")), "books")
    sizes = [
        (len(norm.books[b["token_id"]].bids), len(norm.books[b["token_id"]].asks)) for b in books
    ]
    assert sizes == [(17, 70), (70, 17), (55, 26)]
    assert [(b["bids"][0]["price"], b["asks"][0]["price"]) for b in books] == [
        (0.046, 0.048),
        (0.952, 0.954),
        (0.55, 0.56),
    ]


def test_book_keyed_by_its_event_once_discovered() -> None:
    norm = PolymarketNormalizer()
    run(norm, "rest:gamma", fixture("gamma/polyarb_gamma_event_negrisk_world-cup-winner.json"))
    (book,) = of(
        run(norm, "rest:books", fixture("clob/polyarb_clob_book_negrisk_outcome.json")), "books"
    )
    assert book["event_key"] == "pm:30615"
    assert (
        book["market_id"] == "pm:0x7976b8dbacf9077eb1453a62bcefd6ab2df199acd28aad276ff0d920d6992892"
    )


# -- market channel ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "tops"),
    [
        (
            "ws/polyarb_ws_market_capture.json",
            {"285433": (0.001, 0.002), "647371": (0.998, 0.999), "112468": (0.922, 0.94)},
        ),
        ("ws/cepiokta_ws_market_capture.json", {"770799": (0.97, 0.98), "687034": (0.02, 0.03)}),
    ],
)
def test_current_price_changes_agree_with_the_venue(
    rel: str, tops: dict[str, tuple[float, float]]
) -> None:
    """Books rebuilt from the snapshot and every current-format delta match the best bid/ask the
    venue states in each delta: no mismatch, no resnapshot."""
    norm = PolymarketNormalizer()
    mismatches = metrics.COLLECTOR_BOOK_MISMATCHES.labels("polymarket")._value.get()
    ticks = [t for f in ws_frames(rel) for t in of(run(norm, "ws:market", f), "ticks")]
    assert metrics.COLLECTOR_BOOK_MISMATCHES.labels("polymarket")._value.get() == mismatches
    assert norm.wanted_snapshots == set()
    assert {t["token_id"][:6]: (t["best_bid"], t["best_ask"]) for t in ticks} == tops
    assert len(ticks) == {"ws/polyarb_ws_market_capture.json": 11}.get(rel, 12)


def test_legacy_price_change_formats() -> None:
    norm = PolymarketNormalizer()
    (snap,) = of(run(norm, "ws:market", fixture("ws/aaimek_book_legacy_2025-01.json")), "books")
    token = snap["token_id"]
    assert 0.644 in norm.books[token].bids
    (after,) = of(
        run(norm, "ws:market", fixture("ws/aaimek_price_change_legacy_2025-01.json")), "books"
    )
    assert 0.644 not in norm.books[token].bids  # changes[]: size "0" removed the level
    assert after["seq"] > snap["seq"] and after["ts_ms"] == 1737487191055

    flat = PolymarketNormalizer()
    (snap,) = of(run(flat, "ws:market", fixture("ws/nautilus_ws_book.json")), "books")
    before = flat.books[snap["token_id"]].asks.get(0.514)
    assert before == 20230.87
    payload = json.loads(fixture("ws/nautilus_ws_price_change_legacy_2024.json"))
    payload["asset_id"] = snap["token_id"]  # the 2024 delta is for the other token of the market
    (book,) = of(run(flat, "ws:market", json.dumps(payload).encode()), "books")
    assert flat.books[snap["token_id"]].asks[0.514] == 21574.08
    assert book["asks"][0] == {"price": 0.514, "size": 21574.08}


def test_delta_without_snapshot_asks_for_one() -> None:
    norm = PolymarketNormalizer()
    gaps = metrics.COLLECTOR_GAPS.labels("polymarket", "pm-test", "no_snapshot")._value.get()
    assert run(norm, "ws:market", fixture("ws/originalgoku_ws_price_change_sample.json")) == []
    assert len(norm.wanted_snapshots) == 2
    assert (
        metrics.COLLECTOR_GAPS.labels("polymarket", "pm-test", "no_snapshot")._value.get()
        == gaps + 2
    )


def test_disagreeing_delta_is_held_until_a_fresh_snapshot() -> None:
    norm = PolymarketNormalizer()
    book_msg = json.loads(fixture("ws/originalgoku_ws_book_sample.json"))
    run(norm, "ws:market", json.dumps(book_msg).encode())
    token, market = book_msg["asset_id"], book_msg["market"]
    bid = max(float(lv["price"]) for lv in book_msg["bids"])
    wrong = {
        "event_type": "price_change", "market": market, "timestamp": "1774375776049",
        "price_changes": [{"asset_id": token, "price": "0.001", "size": "5", "side": "BUY",
                           "hash": "x", "best_bid": str(round(bid + 0.01, 3)), "best_ask": "0.99"}],
    }  # fmt: skip
    before = metrics.COLLECTOR_BOOK_MISMATCHES.labels("polymarket")._value.get()
    assert run(norm, "ws:market", json.dumps(wrong).encode()) == []  # not published
    assert metrics.COLLECTOR_BOOK_MISMATCHES.labels("polymarket")._value.get() == before + 1
    assert norm.wanted_snapshots == {token}
    outs = run(norm, "rest:books", json.dumps(book_msg).encode())
    assert len(of(outs, "books")) == 1 and norm.wanted_snapshots == set()


def test_trade_tick_and_other_messages() -> None:
    norm = PolymarketNormalizer()
    (tick,) = of(
        run(norm, "ws:market", fixture("ws/originalgoku_ws_last_trade_price_sample.json")), "ticks"
    )
    raw = json.loads(fixture("ws/originalgoku_ws_last_trade_price_sample.json"))
    assert tick["last_price"] == float(raw["price"]) and tick["token_id"] == raw["asset_id"]
    (tick,) = of(run(norm, "ws:market", fixture("ws/nautilus_ws_best_bid_ask.json")), "ticks")
    assert (tick["best_bid"], tick["best_ask"], tick["ts_ms"]) == (0.73, 0.77, 1766789469958)
    last = [
        of(run(norm, "ws:market", f), "ticks")[0]["last_price"]
        for f in ws_frames("ws/ssmd_polymarket_last_trade_price.jsonl")
    ]
    assert last[0] == 0.46 and len(last) == 10

    (market,) = of(run(norm, "ws:market", fixture("ws/nautilus_ws_new_market.json")), "markets")
    assert (
        market["market_id"]
        == "pm:0x311d0c4b6671ab54af4970c06fcf58662516f5168997bdda209ec3db5aa6b0c1"
    )
    assert market["event_id"] == "pm:125819" and market["question"].startswith("Will NVIDIA (NVDA)")
    assert market["outcomes"][0]["token_id"].startswith("7604307375665367822637398")

    tick_change = json.loads(fixture("ws/nautilus_ws_tick_size_change.json"))
    tick_change["market"] = market["market_id"][3:]
    (changed,) = of(run(norm, "ws:market", json.dumps(tick_change).encode()), "markets")
    assert (changed["tick_size"], changed["updated_ms"]) == (0.001, 1739068041853)

    resolved = {"event_type": "market_resolved", "market": market["market_id"][3:],
                "assets_ids": [o["token_id"] for o in market["outcomes"]],
                "winning_asset_id": market["outcomes"][1]["token_id"], "winning_outcome": "No",
                "timestamp": "1766790999000"}  # fmt: skip
    (done,) = of(run(norm, "ws:market", json.dumps(resolved).encode()), "markets")
    assert (done["status"], done["winning_token_id"]) == (
        "resolved",
        market["outcomes"][1]["token_id"],
    )


def test_unknown_types_are_counted_not_published() -> None:
    norm = PolymarketNormalizer()
    counter = metrics.COLLECTOR_MESSAGES.labels("polymarket", "pm-test", "brand_new_type")
    before = counter._value.get()
    assert run(norm, "ws:market", b'{"event_type": "brand_new_type", "x": 1}') == []
    assert counter._value.get() == before + 1
    assert run(norm, "ws:market", b"PONG") == []


def test_bad_message_in_a_batch_becomes_its_own_dead_letter() -> None:
    good = json.loads(fixture("ws/originalgoku_ws_book_sample.json"))
    bad = {**good, "bids": [{"price": "1.7", "size": "3"}]}
    outs = run(PolymarketNormalizer(), "ws:market", json.dumps([good, bad]).encode())
    assert Counter(t for t, _, _ in outs) == {"books": 1, "ticks": 1, "dlq": 1}
    (dead,) = of(outs, "dlq")
    assert dead["error_kind"] == "bad_price" and b"1.7" in dead["payload"]
    with pytest.raises(BadMessage) as err:
        run(PolymarketNormalizer(), "ws:market", json.dumps(bad).encode())
    assert err.value.kind == "bad_price"


# -- Data API ---------------------------------------------------------------------------------


def test_data_api_trades_with_wallets_deduplicated() -> None:
    norm = PolymarketNormalizer()
    payload = fixture("data_api/polycopy_data_api_trades_global_2026-04-18.json")
    trades = of(run(norm, "data:trades", payload), "trades")
    rows = json.loads(payload)
    keys = {
        (
            r["transactionHash"],
            r["asset"],
            r["proxyWallet"],
            r["side"],
            str(r["size"]),
            str(r["price"]),
        )
        for r in rows
    }
    assert len(trades) == len(keys) == 500
    assert len({t["wallet"] for t in trades}) == 390
    assert Counter(t["side"] for t in trades) == {"BUY": 302, "SELL": 198}
    first = trades[0]
    assert first["wallet"] == "0xf201a19b43471261a3c1ba9247335d55270e527e"
    assert (first["price"], first["size"], first["side"]) == (0.3408574, 500.0, "SELL")
    assert first["ts_ms"] == 1776504298000  # seconds on the wire
    assert first["tx_hash"] == "0xebece63a02e3f51a996be362fabbca0abbe3ce6a6745672e564cc5ee69669744"
    # an overlapping window returns the same rows: nothing new
    assert run(norm, "data:trades", payload) == []
    activity = of(
        run(norm, "data:trades", fixture("data_api/polycopy_data_api_activity_one_wallet.json")),
        "trades",
    )
    assert len(activity) == 100 and len({t["wallet"] for t in activity}) == 1


# -- properties -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
_FIELDS = [
    "event_type", "asset_id", "market", "price", "size", "side", "timestamp", "bids", "asks",
    "price_changes", "changes", "best_bid", "best_ask", "hash", "conditionId", "markets",
    "outcomes", "clobTokenIds", "proxyWallet", "transactionHash", "new_tick_size",
]  # fmt: skip
_SEEDS = [
    "ws/originalgoku_ws_book_sample.json",
    "ws/originalgoku_ws_price_change_sample.json",
    "ws/aaimek_price_change_legacy_2025-01.json",
    "ws/nautilus_ws_last_trade_price.json",
    "ws/nautilus_ws_new_market.json",
    "gamma/polyarb_gamma_market_binary.json",
    "data_api/polyarb_data_api_trades_market.json",
]
_CHANNELS = st.sampled_from(["ws:market", "rest:books", "rest:gamma", "data:trades"])


def _outcome(channel: str, payload: bytes, norm: PolymarketNormalizer | None = None) -> None:
    """A record list (valid for its schemas) or a BadMessage; anything else fails the test."""
    with contextlib.suppress(BadMessage):
        run(norm or PolymarketNormalizer(), channel, payload)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channel=_CHANNELS, data=st.binary(max_size=200) | _json.map(lambda v: json.dumps(v).encode())
)
def test_random_payloads_never_escape(channel: str, data: bytes) -> None:
    _outcome(channel, data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(_SEEDS),
    field=st.sampled_from(_FIELDS),
    value=_json,
    channel=_CHANNELS,
    cut=st.integers(min_value=0, max_value=400),
)
def test_mutated_real_payloads_never_escape(
    seed: str, field: str, value: Any, channel: str, cut: int
) -> None:
    msg = json.loads(fixture(seed))
    target = msg[0] if isinstance(msg, list) else msg
    target[field] = value
    encoded = json.dumps(msg).encode()
    norm = PolymarketNormalizer()
    _outcome("ws:market", fixture("ws/originalgoku_ws_book_sample.json"), norm)  # some state
    _outcome(channel, encoded, norm)
    _outcome(channel, encoded[:cut], norm)  # truncated


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.sampled_from([*_SEEDS, "ws/polyarb_ws_market_capture.json"]))
def test_deeply_mutated_real_payloads_never_escape(data: st.DataObject, seed: str) -> None:
    """Any value anywhere in a real message (a level's price, one delta of price_changes[], a
    market inside an event) replaced by arbitrary JSON: records or a BadMessage."""
    doc = json.loads(fixture(seed))
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = data.draw(_json)
    norm = PolymarketNormalizer()
    _outcome("ws:market", fixture("ws/originalgoku_ws_book_sample.json"), norm)
    channel = {"gamma": "rest:gamma", "data_api": "data:trades"}.get(
        seed.split("/")[0], "ws:market"
    )
    frames = doc if seed.endswith("capture.json") else [doc]
    for frame in frames:
        _outcome(channel, json.dumps(frame).encode(), norm)

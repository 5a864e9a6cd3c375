"""The default spike and trend thresholds against real recorded price series and the mock venue:
they stay silent on a quiet real market and on the mock's random walk and injected
opportunities (which must remain the only signals of the end-to-end test), and fire on a real
fast move and on the mock's news moves."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from marketpulse.rules import RuleDef, load_rules
from marketpulse.rules.flow import FlowRules
from marketpulse.venues.mock import MockVenue
from marketpulse.worker import top_of_book

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real"
GOLD = REAL / "kalshi" / "ws" / "gold15m_KXGOLD15M-26AUG101900-00_2026-08-10.ndjson.gz"
QUIET = REAL / "polymarket" / "historical" / "aaimek_price_change_messages_202501302221.csv"
NO_FEE = {"fee": {"model": "none", "rate": 0.0, "exponent": 1.0}}


def tick_rules() -> list[RuleDef]:
    return [r for r in load_rules().values() if r.type in ("spike", "trend")]


def fire(ticks: Iterator[tuple[dict[str, Any], dict[str, Any]]]) -> Counter[str]:
    """Signals per rule id of the default tick rules over (tick, market) pairs, tables applied."""
    flow = FlowRules(tick_rules(), {}, {})
    fired: Counter[str] = Counter()
    for tick, market in ticks:
        signals, writes = flow.on_tick(tick, market)
        for table, key, value in writes:
            table[key] = value
        fired.update(s["rule_id"] for s in signals)
    return fired


def _tick(
    market: str, seq: int, ts: int, bids: dict[float, float], asks: dict[float, float]
) -> Any:
    bid, ask = max(bids), min(asks)
    return {
        "event_key": f"{market}:event",
        "market_id": market,
        "token_id": f"{market}:yes",
        "venue": market[:2],
        "ts_ms": ts,
        "recv_ms": ts,
        "seq": seq,
        "best_bid": bid,
        "best_ask": ask,
        "bid_size": bids[bid],
        "ask_size": asks[ask],
        "last_price": None,
    }


def gold_ticks() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Kalshi's 15-minute gold contract: books rebuilt from the snapshot and deltas (bids only:
    the YES ask is 1 - the best NO bid, sized by that NO bid)."""
    yes: dict[float, float] = {}
    no: dict[float, float] = {}
    with gzip.open(GOLD, "rt") as f:
        for seq, line in enumerate(f):
            event = json.loads(line)["event"]
            msg = event.get("msg", {})
            if event["type"] == "orderbook_snapshot":
                yes = {float(p): float(s) for p, s in msg.get("yes_dollars_fp", [])}
                no = {float(p): float(s) for p, s in msg.get("no_dollars_fp", [])}
            elif event["type"] == "orderbook_delta":
                side = yes if msg["side"] == "yes" else no
                price = float(msg["price_dollars"])
                side[price] = side.get(price, 0.0) + float(msg["delta_fp"])
                if side[price] <= 1e-9:
                    del side[price]
                if yes and no:
                    asks = {round(1 - p, 4): s for p, s in no.items()}
                    yield _tick("ks:gold", seq, int(msg["ts_ms"]), yes, asks), NO_FEE


def quiet_ticks() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """One Polymarket token over days of legacy price_change messages (levels as they
    change: the touch is what trades, so it is always among them)."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    with QUIET.open() as f:
        for seq, row in enumerate(csv.DictReader(f)):
            ts = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S.%f %z").timestamp()
            for change in json.loads(row["changes"]):
                side = bids if change["side"] == "BUY" else asks
                price, size = float(change["price"]), float(change["size"])
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
            if bids and asks and max(bids) < min(asks):
                yield _tick("pm:quiet", seq, int(ts * 1000), bids, asks), NO_FEE


def test_spike_and_trend_are_on_by_default() -> None:
    rules = tick_rules()
    assert {r.rule_id for r in rules} == {"spike", "trend_breakout", "trend_fade"}
    assert all(r.enabled and r.version >= 2 for r in rules)


@pytest.mark.parametrize("seed", [7, 11])  # the demo's seed and the end-to-end test's
def test_the_mock_venue_fires_tick_rules_on_its_news_moves_only(seed: int) -> None:
    venue = MockVenue(seed=seed, start_ms=1_767_225_600_000)
    markets = {m["market_id"]: m for m in venue.markets()}
    n = 5_000
    news = venue.news(n)
    assert len(news) == 6 and news[0].start_index > venue.n_updates_until_all_done() + 100
    flow = FlowRules(tick_rules(), {}, {})
    fired: list[tuple[str, str, int]] = []
    for book, _ in itertools.islice(venue.updates(), n):
        signals, writes = flow.on_tick(top_of_book(book), markets[book["market_id"]])
        for table, key, value in writes:
            table[key] = value
        fired += [(s["rule_id"], s["subject"], book["seq"]) for s in signals]
    # Each move is seen by the spike rule once; every tick-rule signal is inside a move.
    moves = {(m.market_id, i) for m in news for i in range(m.start_index, m.end_index)}
    assert all((subject, seq) in moves for _, subject, seq in fired), fired
    assert sorted(subject for rule, subject, _ in fired if rule == "spike") == sorted(
        m.market_id for m in news
    )
    assert Counter(rule for rule, _, _ in fired)["trend_breakout"] >= 3


def test_news_moves_keep_the_complete_set_invariants() -> None:
    venue = MockVenue(seed=7, start_ms=0)
    (move,) = venue.news(2_400)
    books: dict[str, dict[str, Any]] = {}
    for book, _ in itertools.islice(venue.updates(), move.end_index):
        books[book["token_id"]] = book
        if book["seq"] < move.start_index or book["market_id"] != move.market_id:
            continue
        yes, no = books[move.token_id], books[move.token_id.replace("-yes", "-no")]
        asks = yes["asks"][0]["price"] + no["asks"][0]["price"]
        bids = yes["bids"][0]["price"] + no["bids"][0]["price"]
        assert asks >= 1.03 - 1e-9 and bids <= 0.98 + 1e-9  # a pair never looks arbitrageable
        if book["token_id"] == move.token_id:
            assert book["asks"][0]["price"] - book["bids"][0]["price"] == pytest.approx(0.03)
            assert book["asks"][0]["size"] == book["bids"][0]["size"] == 500.0
    assert abs(move.to_price - move.from_price) == pytest.approx(0.12)


def test_a_quiet_real_market_fires_nothing_in_days() -> None:
    if not QUIET.exists():
        pytest.skip(f"real fixtures not found at {REAL} (see SOURCES.md there)")
    ticks = list(quiet_ticks())
    assert len(ticks) > 2_000 and ticks[-1][0]["ts_ms"] - ticks[0][0]["ts_ms"] > 3 * 86_400_000
    assert fire(iter(ticks)) == {}


def test_a_real_fast_move_fires_a_few_spikes() -> None:
    if not GOLD.exists():
        pytest.skip(f"real fixtures not found at {REAL} (see SOURCES.md there)")
    fired = fire(gold_ticks())
    # The contract went from about 0.5 to 1 in 12 minutes, at 30 ticks a second: spikes at
    # most once a minute (their cooldown), not one per tick, and the 10-minute trend rule sees
    # the breakout. (When windows kept only their last 256 ticks, both looked back ~8 s: 2
    # spikes and no trend.)
    assert 2 <= fired["spike"] <= 12, fired
    assert fired["trend_breakout"] >= 1, fired

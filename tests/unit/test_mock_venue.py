"""The mock venue: determinism, well-formed books, and the ground truth of injected
opportunities, checked by replaying the stream and looking at the books a rule would see."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import pytest

from marketpulse.codec import codec
from marketpulse.fees import taker_fee_per_share
from marketpulse.venues.mock import MockVenue, Opportunity, fee_per_share

START_MS = 1_700_000_000_000
Record = dict[str, Any]


def ticks(price: float) -> int:
    """Prices as integer ticks, so sums compare exactly."""
    return round(price * 100)


@pytest.fixture(scope="module")
def venue() -> MockVenue:
    return MockVenue(seed=7, start_ms=START_MS)


@pytest.fixture(scope="module")
def stream(venue: MockVenue) -> list[tuple[Record, Record]]:
    """Every update until all injected windows are over, and a margin after."""
    return list(itertools.islice(venue.updates(), venue.n_updates_until_all_done() + 500))


@pytest.fixture(scope="module")
def markets(venue: MockVenue) -> list[Record]:
    return venue.markets()


class Sets:
    """The outcome sets of the catalog, as a complete-set rule would build them from markets."""

    def __init__(self, markets: list[Record]) -> None:
        by_event: dict[str, list[Record]] = defaultdict(list)
        for m in markets:
            by_event[m["event_id"]].append(m)
        self.pairs = [tuple(o["token_id"] for o in m["outcomes"]) for m in markets]
        first = {e: ms[0] for e, ms in by_event.items()}
        self.yes_sets = {
            e: tuple(m["outcomes"][0]["token_id"] for m in ms)
            for e, ms in by_event.items()
            if len(ms) > 1 and first[e]["exclusive"] and not first[e]["neg_risk_augmented"]
        }
        self.no_sets = {
            e: tuple(m["outcomes"][1]["token_id"] for m in ms)
            for e, ms in by_event.items()
            if first[e]["neg_risk"] and not first[e]["neg_risk_augmented"]
        }
        self.not_arbitrage = {
            e: tuple(m["outcomes"][0]["token_id"] for m in ms)
            for e, ms in by_event.items()
            if first[e]["neg_risk_augmented"] or not first[e]["exclusive"]
        }

    def exclusive(self) -> list[tuple[str, ...]]:
        """Every set whose tokens pay exactly 1 in total: each market's pair, each event's YES."""
        return self.pairs + list(self.yes_sets.values())


def replay(stream: list[tuple[Record, Record]]) -> Any:
    """Yield (update index, latest book per token) after each update."""
    books: dict[str, Record] = {}
    for i, (book, _) in enumerate(stream):
        books[book["token_id"]] = book
        yield i, books


def best_asks(books: dict[str, Record], tokens: tuple[str, ...]) -> list[int] | None:
    if any(t not in books for t in tokens):
        return None  # not every leg has been published yet
    return [ticks(books[t]["asks"][0]["price"]) for t in tokens]


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_the_same_markets_and_stream() -> None:
    a, b = MockVenue(seed=7, start_ms=START_MS), MockVenue(seed=7, start_ms=START_MS)
    assert a.markets() == b.markets()
    assert list(itertools.islice(a.updates(), 2000)) == list(itertools.islice(b.updates(), 2000))
    assert a.opportunities() == b.opportunities()


def test_updates_restart_from_the_beginning_on_each_call(venue: MockVenue) -> None:
    first = list(itertools.islice(venue.updates(), 300))
    assert list(itertools.islice(venue.updates(), 300)) == first


def test_a_fractional_step_runs_event_time_at_a_given_rate() -> None:
    """`step_ms=1000/rate` (the paced benchmark's) keeps event time with the wall clock: the
    same books, each stamped start + int(i * step); ties are ordered by seq."""
    fast = MockVenue(seed=7, start_ms=START_MS)
    paced = MockVenue(seed=7, start_ms=START_MS, step_ms=1000 / 2000)
    a = list(itertools.islice(fast.updates(), 3000))
    b = list(itertools.islice(paced.updates(), 3000))
    assert [bk["ts_ms"] for bk, _ in b] == [START_MS + i // 2 for i in range(3000)]
    assert b[-1][0]["ts_ms"] - START_MS == 1499  # 3,000 updates at 2,000/s: 1.5 s
    strip = ("ts_ms", "recv_ms")
    assert [{k: v for k, v in bk.items() if k not in strip} for bk, _ in a] == [
        {k: v for k, v in bk.items() if k not in strip} for bk, _ in b
    ]
    for o in paced.opportunities():
        assert o.start_ms == START_MS + o.start_index // 2


def test_another_seed_gives_another_stream() -> None:
    a, b = MockVenue(seed=7, start_ms=START_MS), MockVenue(seed=8, start_ms=START_MS)
    assert list(itertools.islice(a.updates(), 2000)) != list(itertools.islice(b.updates(), 2000))


# -- layout -------------------------------------------------------------------------------------


def test_market_layout(markets: list[Record], venue: MockVenue) -> None:
    events: dict[str, list[Record]] = defaultdict(list)
    for m in markets:
        events[m["event_id"]].append(m)
        assert m["market_id"].startswith(m["event_id"] + "-m")
        assert [o["token_id"] for o in m["outcomes"]] == [
            m["market_id"] + "-yes",
            m["market_id"] + "-no",
        ]
        assert (m["venue"], m["status"], m["tick_size"], m["min_size"]) == (
            "mock",
            "active",
            0.01,
            5.0,
        )
        assert m["fee"]["model"] in ("polymarket", "none")
        assert m["updated_ms"] == START_MS < m["end_ms"] <= START_MS + 5 * 86_400_000
    multi = [e for e in events if e.startswith("mk:ev-")]
    binary = [e for e in events if e.startswith("mk:bin-")]
    assert len(multi) == 12 and len(binary) == 8
    for e in multi:
        assert 3 <= len(events[e]) <= 6
        assert all(m["exclusive"] and m["neg_risk"] for m in events[e])
    for ms in events.values():
        assert all(m["event_market_count"] == len(ms) for m in ms)
        assert len({m["fee"]["model"] for m in ms}) == 1, "one fee schedule per event"
    assert {m["neg_risk_augmented"] for m in events["mk:aug-000"]} == {True}
    assert {m["exclusive"] for m in events["mk:ladder-000"]} == {False}
    assert {m["fee"]["model"] for m in markets} == {"polymarket", "none"}
    tokens = [o["token_id"] for m in markets for o in m["outcomes"]]
    assert len(tokens) == len(set(tokens)) == venue.n_tokens


def test_opportunities_need_a_binary_and_two_multi_outcome_events() -> None:
    with pytest.raises(ValueError, match="n_binaries"):
        MockVenue(n_binaries=0)
    assert MockVenue(n_binaries=0, opportunities=False).opportunities() == []


# -- books --------------------------------------------------------------------------------------


def test_books_are_well_formed(stream: list[tuple[Record, Record]], venue: MockVenue) -> None:
    for i, (book, tick) in enumerate(stream):
        assert book["seq"] == tick["seq"] == i
        assert book["ts_ms"] == tick["ts_ms"] == START_MS + i * venue.step_ms
        bids = [ticks(level["price"]) for level in book["bids"]]
        asks = [ticks(level["price"]) for level in book["asks"]]
        assert 1 <= len(bids) <= 5 and 1 <= len(asks) <= 6  # 6 = cheap injected level + 5
        assert bids == sorted(set(bids), reverse=True) and asks == sorted(set(asks))
        assert bids[0] < asks[0]
        assert min(bids) >= 1 and max(asks) <= 99
        for level in book["bids"] + book["asks"]:
            assert level["price"] == ticks(level["price"]) / 100  # exactly on the tick grid
            assert 50 <= level["size"] <= 2000 or level["size"] in {150, 200, 80}
        assert (tick["best_bid"], tick["bid_size"]) == tuple(book["bids"][0].values())
        assert (tick["best_ask"], tick["ask_size"]) == tuple(book["asks"][0].values())
        assert tick["last_price"] is None or 0.01 <= tick["last_price"] <= 0.99
        assert isinstance(book["hash"], str) and len(book["hash"]) == 16


def test_snapshot_publishes_every_token_first(
    stream: list[tuple[Record, Record]], venue: MockVenue
) -> None:
    first = {book["token_id"] for book, _ in stream[: venue.n_tokens]}
    assert len(first) == venue.n_tokens


def test_prices_move(stream: list[tuple[Record, Record]]) -> None:
    asks_seen: dict[str, set[int]] = defaultdict(set)
    for book, _ in stream:
        asks_seen[book["token_id"]].add(ticks(book["asks"][0]["price"]))
    assert sum(len(s) > 3 for s in asks_seen.values()) > len(asks_seen) // 2


# -- ground truth -------------------------------------------------------------------------------


def test_only_the_injected_windows_have_asks_below_one(
    stream: list[tuple[Record, Record]], markets: list[Record], venue: MockVenue
) -> None:
    sets = Sets(markets)
    below: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, books in replay(stream):
        for tokens in sets.exclusive():
            asks = best_asks(books, tokens)
            if asks is not None and sum(asks) < 100:
                below[tokens].append(i)
    # The stream runs into the next cycle's first window (recurring injection): ask for the
    # ground truth of exactly the replayed updates.
    truth = venue.opportunities(len(stream))
    assert len(truth) == 4
    expected: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for o in truth:
        expected[o.token_ids].extend(range(o.start_index, min(o.end_index, len(stream))))
    assert dict(below) == dict(expected)


def test_sell_side_and_no_sets_never_fire(
    stream: list[tuple[Record, Record]], markets: list[Record]
) -> None:
    sets = Sets(markets)
    for _, books in replay(stream):
        for tokens in sets.exclusive():
            if all(t in books for t in tokens):
                assert sum(ticks(books[t]["bids"][0]["price"]) for t in tokens) < 100
        for tokens in sets.no_sets.values():
            asks = best_asks(books, tokens)
            if asks is not None:
                bids = [ticks(books[t]["bids"][0]["price"]) for t in tokens]
                assert sum(bids) < 100 * (len(tokens) - 1) < sum(asks)


def test_injected_books_hold_the_declared_prices_and_depth(
    stream: list[tuple[Record, Record]], venue: MockVenue
) -> None:
    opportunities = {o.start_index: o for o in venue.opportunities(len(stream))}
    live: Opportunity | None = None
    for i, books in replay(stream):
        live = opportunities.get(i, live)
        if live is None or not live.start_index <= i < live.end_index:
            continue
        legs = [books[t] for t in live.token_ids]
        assert [leg["asks"][0]["price"] for leg in legs] == list(live.leg_prices)
        assert [leg["asks"][0]["size"] for leg in legs] == [live.depth] * len(legs)
        # Beyond the depth, even one leg at its next level makes the set cost more than 1.
        cheap = sum(ticks(p) for p in live.leg_prices)
        for leg, price in zip(legs, live.leg_prices, strict=True):
            assert cheap - ticks(price) + ticks(leg["asks"][1]["price"]) > 100


def test_opportunity_ground_truth_values(venue: MockVenue) -> None:
    found = venue.opportunities()
    assert [(len(o.token_ids), round(sum(o.leg_prices), 2), o.depth) for o in found] == [
        (2, 0.95, 150.0),
        (3, 0.94, 200.0),
        (4, 0.97, 80.0),
    ]
    assert [o.fee["model"] for o in found] == ["polymarket", "polymarket", "none"]
    assert found[0].market_ids[0] == found[0].market_ids[1]  # the binary: YES + NO of one market
    for o in found:
        assert o.side == "buy"
        assert o.start_ms == START_MS + o.start_index * venue.step_ms
        assert o.end_ms == START_MS + o.end_index * venue.step_ms
        assert o.end_index - o.start_index > 150
        assert o.expected_edge_per_share() > 0
    starts = [o.start_index for o in found]
    assert starts[0] >= 300 and all(b - a >= 500 - 20 for a, b in itertools.pairwise(starts))
    assert venue.n_updates_until_all_done() > found[-1].end_index


def test_edge_is_one_minus_prices_minus_fees() -> None:
    fee = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}
    o = Opportunity(
        "mk:x", ("a", "a"), ("a-yes", "a-no"), "buy", 0, 1, (0.6, 0.35), 150.0, fee, 0, 1
    )
    assert o.expected_edge_per_share() == pytest.approx(1 - 0.95 - 0.02 * (0.24 + 0.2275))
    assert o.expected_profit() == pytest.approx(150 * o.expected_edge_per_share())
    assert fee_per_share({"model": "none", "rate": 0.0, "exponent": 1.0}, 0.5) == 0.0
    assert fee_per_share({**fee, "exponent": 2.0}, 0.5) == pytest.approx(0.02 * 0.0625)


def test_fee_oracle_agrees_with_the_shared_fee_module(venue: MockVenue) -> None:
    for o in venue.opportunities():
        for price in o.leg_prices:
            assert fee_per_share(o.fee, price) == pytest.approx(taker_fee_per_share(o.fee, price))
    with pytest.raises(ValueError, match="kalshi"):
        fee_per_share({"model": "kalshi", "rate": 0.07, "exponent": 1.0}, 0.5)


def test_augmented_and_ladder_asks_always_sum_below_one(
    stream: list[tuple[Record, Record]], markets: list[Record], venue: MockVenue
) -> None:
    sets = Sets(markets)
    assert set(sets.not_arbitrage) == {"mk:aug-000", "mk:ladder-000"}
    for i, books in replay(stream):
        if i < venue.n_tokens:
            continue
        for tokens in sets.not_arbitrage.values():
            asks = best_asks(books, tokens)
            assert asks is not None and sum(asks) < 100


def test_ladder_prices_fall_with_the_strike(
    stream: list[tuple[Record, Record]], markets: list[Record], venue: MockVenue
) -> None:
    ladder = sorted(
        (m for m in markets if m["event_id"] == "mk:ladder-000"), key=lambda m: m["floor_strike"]
    )
    yes = [m["outcomes"][0]["token_id"] for m in ladder]
    for i, books in replay(stream):
        if i < venue.n_tokens:
            continue
        for lower, higher in itertools.pairwise(yes):
            # "above a higher strike" implies "above a lower one": its bid stays below that ask
            assert books[higher]["bids"][0]["price"] < books[lower]["asks"][0]["price"]


def test_recurring_windows_and_counts(venue: MockVenue) -> None:
    done = venue.n_updates_until_all_done()
    assert venue.count_opportunities(done) == 3
    assert venue.count_opportunities(0) == 0
    assert venue.count_opportunities(10 * done) > 3
    later = venue.opportunities(3000)
    assert later[:3] == venue.opportunities()
    assert len(later) == venue.count_opportunities(3000)
    once = MockVenue(seed=7, start_ms=START_MS, recurring=False)
    assert once.count_opportunities(100_000) == 3


# -- wire format --------------------------------------------------------------------------------


def test_every_record_round_trips_through_the_codec(
    stream: list[tuple[Record, Record]], markets: list[Record]
) -> None:
    c = codec()
    for m in markets:
        assert c.decode("market", c.encode("market", m)) == m
    for book, tick in stream[::7]:
        assert c.decode("book", c.encode("book", book)) == book
        assert c.decode("tick", c.encode("tick", tick)) == tick

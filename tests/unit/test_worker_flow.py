"""The worker's wiring of the flow rules (ticks, trades, metadata changes) and of the ladder
rule, through `Evaluator` and `Pipeline` without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

from rule_inputs import market, rule, tick, trade

from marketpulse.codec import codec
from marketpulse.grouping import decode as decode_forwarded
from marketpulse.kafka import DeadLetters
from marketpulse.rules import load_rules
from marketpulse.settings import Settings
from marketpulse.worker import Evaluator, Pipeline

H = 3_600_000


def evaluator(*rule_ids: str, **overrides: Any) -> Evaluator:
    rules = [rule(r).model_copy(update={"enabled": True, **overrides}) for r in rule_ids]
    return Evaluator(rules, markets={}, books={}, trackers={})


def near_end(end_ms: int = 10 * H, **extra: Any) -> dict[str, Any]:
    return market(end_ms=end_ms, event_market_count=1, **extra)


def test_ticks_are_held_until_metadata_then_evaluated_in_order() -> None:
    ev = evaluator("longshot_near_certain")
    t = tick(9 * H, 0.94, 0.95, size=100)
    assert ev.on_tick(t).signals == [] and ev.held["pm:e1"] == [("tick", t)]
    step = ev.on_market(near_end())
    (sig,) = step.signals
    assert sig["rule_id"] == "longshot_near_certain" and sig["ts_ms"] == 9 * H
    step.apply()
    assert ev.held == {}


def test_spike_state_lives_in_the_flow_table_and_cooldown_marks_only_on_signal() -> None:
    ev = evaluator("spike")
    ev.on_market(near_end()).apply()
    px = "px|pm:e1|pm:m1:y"
    first = ev.on_tick(tick(1_000, 0.50, 0.51))
    assert first.signals == [] and [k for _, k, _ in first.writes] == [px]
    first.apply()
    # Another price in the same time bucket: only the bucket's later value is written.
    again = ev.on_tick(tick(1_010, 0.50, 0.52))
    assert again.signals == [] and [k for _, k, _ in again.writes] == [px + "+"]
    again.apply()
    jump = ev.on_tick(tick(20_000, 0.57, 0.58))
    assert [s["rule_id"] for s in jump.signals] == ["spike"]
    assert [k for _, k, _ in jump.writes] == [px, "cd|pm:e1"]
    jump.apply()
    assert ev.flow.state[px] == [[1_010, 0.51], [20_000, 0.575]]
    assert ev.flow.state["cd|pm:e1"] == {"spike": {"pm:m1": 20_000}}


def test_trades_feed_whale_and_wallet_first_seen() -> None:
    ev = evaluator("whale")
    ev.on_market(near_end()).apply()
    step = ev.on_trade(trade(5_000, 0.5, 30_000, wallet="0xabc"))
    (sig,) = step.signals
    assert sig["evidence"]["kinds"] == "whale,new_wallet,large_for_market"
    step.apply()
    assert ev.flow.wallets == {"0xabc": 5_000}
    earlier = ev.on_trade(trade(4_000, 0.5, 1, wallet="0xabc"))
    earlier.apply()
    assert ev.flow.wallets == {"0xabc": 4_000}


def test_endgame_fires_on_a_tick_size_change_to_0_001() -> None:
    ev = evaluator("endgame")
    ev.on_market(near_end()).apply()
    step = ev.on_market(near_end(tick_size=0.001, updated_ms=7_000))
    assert [s["evidence"]["trigger"] for s in step.signals] == ["tick_size"]


def test_without_flow_rules_ticks_and_trades_are_neither_held_nor_stored() -> None:
    ev = Evaluator([load_rules()["complete_set"]], markets={}, books={}, trackers={})
    assert not ev.flow.wants_ticks and not ev.flow.wants_trades
    assert ev.on_tick(tick(1, 0.4, 0.5)).writes == ev.on_trade(trade(1, 0.4, 5)).writes == []
    assert ev.held == {}


def ladder_market(mid: str, strike: float) -> dict[str, Any]:
    return market(
        mid,
        event_id="ks:EV",
        end_ms=5 * H,
        strike_type="greater",
        floor_strike=strike,
        exclusive=False,
        event_market_count=2,
    )


def kalshi_book(token: str, bids: list[tuple[float, float]], seq: int) -> dict[str, Any]:
    return {
        "event_key": "ks:EV",
        "market_id": token.rsplit(":", 1)[0],
        "token_id": token,
        "venue": "kalshi",
        "ts_ms": 1_000 + seq,
        "recv_ms": 1_005 + seq,
        "seq": seq,
        "bids": [{"price": p, "size": s} for p, s in bids],
        "asks": [],
        "hash": None,
    }


def test_ladder_violation_on_bids_only_books() -> None:
    ev = evaluator("logical")
    for m in (ladder_market("ks:T100", 100), ladder_market("ks:T90", 90)):
        ev.on_market(m).apply()
    # T100 YES bid 0.62 > T90 YES ask (1 - NO bid 0.45 = 0.55): buy T90 YES + T100 NO.
    ev.on_book(kalshi_book("ks:T100:y", [(0.62, 40)], 1)).apply()
    step = ev.on_book(kalshi_book("ks:T90:n", [(0.45, 50)], 2))
    (sig,) = step.signals
    assert sig["subject"] == "ks:T100" and sig["size"] == 40
    assert sig["evidence"]["leg0.asks_from"] == "inverted:ks:T90:n"
    assert abs(sig["edge_score"] - 40 * (0.62 - 0.55)) < 1e-6


class Rec:
    def __init__(self) -> None:
        self.signals: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []

    async def emit(self, key: bytes, value: bytes) -> None:
        self.signals.append(codec().decode("signal", value))

    async def forward(self, key: bytes, value: bytes) -> None:
        pass

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.dead.append(codec().decode("dead_letter", value))


class Msg:
    def __init__(self, topic: str, value: bytes, key: bytes | None = b"pm:e1") -> None:
        self.topic, self.value, self.key, self.partition, self.offset = topic, value, key, 0, 0


def test_pipeline_routes_ticks_and_trades_and_checks_their_keys() -> None:
    ev = evaluator("whale")
    rec = Rec()
    dlq = DeadLetters(Settings(topic_prefix="x."), rec, stage="worker")  # type: ignore[arg-type]
    pipe = Pipeline(
        ev,
        books_topic="b",
        by_event_topic="m",
        forward=rec.forward,
        emit=rec.emit,
        dead_letters=dlq,
        ticks_topic="t",
        trades_topic="tr",
    )
    enc = codec().encode

    async def run() -> None:
        await pipe.handle(Msg("m", enc("market", near_end())))
        await pipe.handle(Msg("tr", enc("trade", trade(5_000, 0.5, 30_000))))
        await pipe.handle(Msg("tr", enc("trade", trade(6_000, 0.5, 30_000)), key=b"pm:other"))
        await pipe.handle(Msg("t", enc("tick", tick(6_000, 0.5, 0.51))))

    asyncio.run(run())
    assert [s["rule_id"] for s in rec.signals] == ["whale"]
    assert [d["error_kind"] for d in rec.dead] == ["key_mismatch"]


def test_uncertain_polymarket_questions_go_to_review_once() -> None:
    ev = evaluator("logical")
    m = near_end(question="Will Zohran Mamdani win by 0-10%?", venue="polymarket")
    step = ev.on_market(m)
    (item,) = step.reviews
    assert item["review_id"] == "proposition:pm:m1" and item["status"] == "open"
    assert "unrecognised 'by' clause" in item["note"] and item["ts_ms"] == m["updated_ms"]
    assert codec().decode("review_item", codec().encode("review_item", item)) == item
    step.apply()
    assert ev.on_market({**m, "updated_ms": 9_000}).reviews == []  # seen already
    clear = near_end(question="Will the price of Bitcoin be above $124,000 on November 4?")
    assert evaluator("logical").on_market({**clear, "venue": "polymarket"}).reviews == []
    assert evaluator("complete_set").on_market(m).reviews == []  # no logical rule: no parsing


def test_books_held_for_metadata_are_routed_by_their_question_once_released() -> None:
    ev = evaluator("logical")
    forwarded: list[tuple[bytes, str]] = []

    async def to_group(key: bytes, value: bytes) -> None:
        kind, record = decode_forwarded(codec(), value)
        forwarded.append((key, record["token_id"] if kind == "book" else record["market_id"]))

    rec = Rec()
    dlq = DeadLetters(Settings(topic_prefix="x."), rec, stage="worker")  # type: ignore[arg-type]
    pipe = Pipeline(
        ev,
        books_topic="b",
        by_event_topic="m",
        forward=rec.forward,
        emit=rec.emit,
        dead_letters=dlq,
        to_group=to_group,
    )
    q = "Will Gemini 3.0 be released by November 15?"
    m = near_end(question=q, venue="polymarket")
    b = {**tick(1_000, 0.5, 0.6), "bids": [{"price": 0.6, "size": 5}], "asks": [], "hash": None}
    b = {k: v for k, v in b.items() if k not in ("best_bid", "best_ask", "bid_size", "ask_size")}
    b.pop("last_price")
    enc = codec().encode

    async def run() -> None:
        await pipe.handle(Msg("b", enc("book", b)))  # held: no metadata yet, no route yet
        assert forwarded == []
        await pipe.handle(Msg("m", enc("market", m)))

    asyncio.run(run())
    key = b"prop:gemini 3.0 be released|by"
    assert forwarded == [(key, "pm:m1"), (key, "pm:m1:y")]  # the market, then its held book

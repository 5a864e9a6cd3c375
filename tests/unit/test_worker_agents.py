"""The worker's message handling without a broker: the Evaluator and Pipeline over plain dicts,
and the Faust agents themselves through `agent.test_context()` with the memory store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from test_complete_set import book, market  # same directory: pytest puts it on sys.path

from marketpulse.codec import codec
from marketpulse.kafka import DeadLetters
from marketpulse.rules import RuleDef, load_rules
from marketpulse.settings import Settings
from marketpulse.worker import Evaluator, Pipeline, book_key
from marketpulse.worker.app import create_app, freeze_heap, repartition_topic

BOOKS = "x.mpx.books.v1"
BY_EVENT = "w-markets-by-event-repartition"
MARKETS = "x.mpx.markets.v1"


def rules(**overrides: Any) -> list[RuleDef]:
    base = load_rules()["complete_set"]
    return [base.model_copy(update=overrides)] if overrides else [base]


def evaluator(rs: list[RuleDef] | None = None) -> Evaluator:
    return Evaluator(rs or rules(), markets={}, books={}, trackers={})


def arbitrage_books(ts_ms: int = 1_000) -> list[dict[str, Any]]:
    """YES 0.40 + NO 0.50 on pm:m1: 10 sets at 1111 bps, no fees."""
    return [
        book("pm:m1:y", asks=[(0.40, 10)], ts_ms=ts_ms, seq=ts_ms),
        book("pm:m1:n", asks=[(0.50, 10)], ts_ms=ts_ms, seq=ts_ms + 1),
    ]


# --------------------------------------------------------------------------------------------
# Evaluator
# --------------------------------------------------------------------------------------------


def test_books_before_metadata_are_held_then_fire_when_metadata_arrives() -> None:
    ev = evaluator()
    books = arbitrage_books()
    for b in books:
        step = ev.on_book(b)
        assert step.signals == []
        step.apply()
    assert set(ev.books) == set()  # held, not evaluated against missing metadata
    step = ev.on_market(market("pm:m1"))
    (sig,) = step.signals
    assert sig["subject"] == "pm:m1" and sig["size"] == 10
    assert step.trigger_recv_ms == books[-1]["recv_ms"]  # latency includes the wait
    step.apply()
    assert set(ev.books) == {book_key("pm:e1", "pm:m1:y"), book_key("pm:e1", "pm:m1:n")}
    assert ev.markets["pm:e1"]["pm:m1"]["event_id"] == "pm:e1"
    assert "question" not in ev.markets["pm:e1"]["pm:m1"]  # only what rules need is kept
    assert ev.held == {}


def test_an_opportunity_that_opened_and_closed_before_metadata_still_fires() -> None:
    """A worker starting on a backlog sees books before the repartitioned metadata; every
    held version is evaluated in order, so the signals equal those of an in-order run."""
    ev = evaluator()
    yes, no = arbitrage_books()
    closed = book(
        "pm:m1:n", asks=[(0.9, 10)], bids=[(0.1, 10)], ts_ms=no["ts_ms"] + 1, seq=no["seq"] + 1
    )
    for b in (yes, no, closed):
        ev.on_book(b).apply()
    step = ev.on_market(market("pm:m1"))
    assert len(step.signals) == 1
    step.apply()
    assert ev.books[book_key("pm:e1", "pm:m1:n")]["seq"] == closed["seq"]


def test_metadata_before_books_fires_on_the_completing_book() -> None:
    ev = evaluator()
    ev.on_market(market("pm:m1")).apply()
    first, second = arbitrage_books()
    ev.on_book(first).apply()
    step = ev.on_book(second)
    assert len(step.signals) == 1 and step.trigger_recv_ms == second["recv_ms"]


def test_redelivered_or_older_books_change_nothing() -> None:
    ev = evaluator()
    ev.on_market(market("pm:m1")).apply()
    for b in arbitrage_books(ts_ms=2_000):
        ev.on_book(b).apply()
    again = ev.on_book(arbitrage_books(ts_ms=2_000)[1])
    older = ev.on_book(arbitrage_books(ts_ms=1_000)[1])
    assert again.signals == again.writes == older.signals == older.writes == []


def test_tracker_state_is_written_only_when_it_changes() -> None:
    ev = evaluator()
    step = ev.on_market(market("pm:m1"))
    assert [t for t, _, _ in step.writes] == [ev.markets]  # no trackers entry for nothing
    step.apply()
    yes, no = arbitrage_books()
    ev.on_book(yes).apply()
    step = ev.on_book(no)
    assert [t for t, _, _ in step.writes] == [ev.books, ev.trackers]
    step.apply()
    same = {**yes, "seq": 99, "ts_ms": 1_500}
    assert [t for t, _, _ in ev.on_book(same).writes] == [ev.books]


def test_closing_a_market_drops_its_books() -> None:
    ev = evaluator()
    ev.on_market(market("pm:m1")).apply()
    for b in arbitrage_books():
        ev.on_book(b).apply()
    ev.on_market(market("pm:m1", status="closed")).apply()
    assert ev.books == {}
    assert ev.markets["pm:e1"]["pm:m1"]["status"] == "closed"


def test_disabled_rules_do_not_evaluate() -> None:
    ev = evaluator(rules(enabled=False))
    ev.on_market(market("pm:m1")).apply()
    assert [ev.on_book(b).signals for b in arbitrage_books()] == [[], []]


def test_books_are_trimmed_to_the_deepest_walk() -> None:
    ev = evaluator(rules(params={"max_levels": 2}))
    ev.on_market(market("pm:m1")).apply()
    deep = book("pm:m1:y", asks=[(0.5, 1), (0.3, 1), (0.4, 1)], bids=[(0.1, 1), (0.2, 1)])
    ev.on_book(deep).apply()
    stored = ev.books[book_key("pm:e1", "pm:m1:y")]
    assert [lv["price"] for lv in stored["asks"]] == [0.3, 0.4]
    assert [lv["price"] for lv in stored["bids"]] == [0.2, 0.1]


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class Msg:
    topic: str
    value: bytes | None
    key: bytes | None = b"pm:e1"
    partition: int = 2
    offset: int = 0


class Recorder:
    """Stands in for the signal topic, the repartition topic and the DLQ producer."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        self.signals: list[dict[str, Any]] = []
        self.forwarded: list[tuple[bytes, bytes]] = []
        self.dead: list[dict[str, Any]] = []
        self.tracker_written_before_emit = False

    async def emit(self, key: bytes, value: bytes) -> None:
        sig = codec().decode("signal", value)
        assert key == sig["subject"].encode()
        self.tracker_written_before_emit |= sig["event_key"] in self.ev.trackers
        self.signals.append(sig)

    async def forward(self, key: bytes, value: bytes) -> None:
        self.forwarded.append((key, value))

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.dead.append({"topic": topic, **codec().decode("dead_letter", value)})


@pytest.fixture
def wired() -> Iterator[tuple[Pipeline, Recorder]]:
    ev = evaluator()
    rec = Recorder(ev)
    dlq = DeadLetters(Settings(topic_prefix="x."), rec, stage="worker")  # type: ignore[arg-type]
    yield (
        Pipeline(
            ev,
            books_topic=BOOKS,
            by_event_topic=BY_EVENT,
            forward=rec.forward,
            emit=rec.emit,
            dead_letters=dlq,
        ),
        rec,
    )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_pipeline_emits_then_writes(wired: tuple[Pipeline, Recorder]) -> None:
    pipe, rec = wired
    seen_before = counter("mpx_worker_messages_total", topic=BOOKS)
    fired_before = counter("mpx_worker_signals_total", rule="complete_set", level="P1")
    await pipe.handle(Msg(BY_EVENT, codec().encode("market", market("pm:m1"))))
    for b in arbitrage_books():
        await pipe.handle(Msg(BOOKS, codec().encode("book", b)))
    assert [s["subject"] for s in rec.signals] == ["pm:m1"]
    assert not rec.tracker_written_before_emit  # the signal is out before state says so
    assert "pm:e1" in pipe.evaluator.trackers
    assert counter("mpx_worker_messages_total", topic=BOOKS) == seen_before + 2
    assert counter("mpx_worker_signals_total", rule="complete_set", level="P1") == fired_before + 1


async def test_bad_input_goes_to_the_dlq_and_the_next_message_is_processed(
    wired: tuple[Pipeline, Recorder],
) -> None:
    pipe, rec = wired
    dead_before = counter("mpx_dead_letters_total", stage="worker", reason="bad_magic")
    await pipe.handle(Msg(BY_EVENT, codec().encode("market", market("pm:m1"))))
    await pipe.handle(Msg(BOOKS, b"not avro", offset=7))
    wrong_key = codec().encode("book", arbitrage_books()[0])
    await pipe.handle(Msg(BOOKS, wrong_key, key=b"pm:other", offset=8))
    await pipe.handle(Msg(BOOKS, codec().encode("market", market("pm:m1")), offset=9))
    for b in arbitrage_books():
        await pipe.handle(Msg(BOOKS, codec().encode("book", b)))
    assert [(d["error_kind"], d["offset"]) for d in rec.dead] == [
        ("bad_magic", 7),
        ("key_mismatch", 8),
        ("wrong_schema", 9),
    ]
    first = rec.dead[0]
    assert first["topic"] == "x.mpx.dlq.v1" and first["source"] == BOOKS
    assert first["partition"] == 2 and first["payload"] == b"not avro"
    assert counter("mpx_dead_letters_total", stage="worker", reason="bad_magic") == dead_before + 1
    assert len(rec.signals) == 1  # and the pipeline carried on


async def test_an_unexpected_error_is_a_dead_letter_too(
    wired: tuple[Pipeline, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe, rec = wired

    def boom(_record: dict[str, Any]) -> None:
        raise RuntimeError("rule bug")

    monkeypatch.setattr(pipe.evaluator, "on_book", boom)
    assert await pipe.handle(Msg(BOOKS, codec().encode("book", arbitrage_books()[0]))) is None
    assert [d["error_kind"] for d in rec.dead] == ["RuntimeError"]


async def test_repartition_keys_markets_by_event(wired: tuple[Pipeline, Recorder]) -> None:
    pipe, rec = wired
    value = codec().encode("market", market("pm:m1", event_id="pm:e9"))
    await pipe.repartition(Msg(MARKETS, value, key=b"pm:m1"))
    await pipe.repartition(Msg(MARKETS, None, key=b"pm:m2"))  # a compaction tombstone
    await pipe.repartition(Msg(MARKETS, b"\x00junk", key=b"pm:m3"))
    assert rec.forwarded == [(b"pm:e9", value)]
    assert [d["error_kind"] for d in rec.dead] == ["unknown_schema"]


# --------------------------------------------------------------------------------------------
# The Faust agents, through test_context (memory tables, no broker)
# --------------------------------------------------------------------------------------------


async def test_faust_agents_with_test_context(tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9",  # never contacted
        topic_prefix="x.",
        worker_id="w",
        worker_web_port=0,
        worker_data_dir=tmp_path,
    )
    app = create_app(settings)
    app.finalize()
    pipe: Pipeline = app.pipeline  # type: ignore[attr-defined]
    rec = Recorder(pipe.evaluator)
    pipe.emit, pipe.forward = rec.emit, rec.forward
    pipe.dead_letters = DeadLetters(settings, rec, stage="worker")  # type: ignore[arg-type]
    try:
        async with app.agents["repartition-markets"].test_context() as agent:
            await agent.put(codec().encode("market", market("pm:m1")), key=b"pm:m1")
        assert [k for k, _ in rec.forwarded] == [b"pm:e1"]

        # The agent reads two topics; test_context's messages carry the topic of the agent's
        # channel, so point it at the one each message comes from.
        async with app.agents["complete-set"].test_context() as agent:
            agent.original_channel = app.topic(repartition_topic(settings))
            await agent.put(codec().encode("market", market("pm:m1")), key=b"pm:e1")
            agent.original_channel = app.topic(settings.topic("books"))
            for b in arbitrage_books():
                await agent.put(codec().encode("book", b), key=b"pm:e1")
            await agent.put(b"junk", key=b"pm:e1")
            await agent.put(codec().encode("book", arbitrage_books(2_000)[0]), key=b"pm:e1")
        assert [s["size"] for s in rec.signals] == [10]
        assert [d["error_kind"] for d in rec.dead] == ["bad_magic"]
        # State went to the Faust tables (changelog-backed in the real worker).
        assert pipe.evaluator.books[book_key("pm:e1", "pm:m1:y")]["ts_ms"] == 2_000
        assert pipe.evaluator.trackers["pm:e1"]["complete_set"]["open"]
    finally:
        # test_context starts the agents, not the app: the consumer thread Faust creates
        # on the way owns an event loop that only a started app would close.
        app.consumer._thread.thread_loop.close()  # type: ignore[attr-defined]


def test_the_heap_alive_at_start_is_frozen_out_of_full_collections() -> None:
    import gc

    gc.unfreeze()
    try:
        kept = {"recovered": [object() for _ in range(100)]}
        freeze_heap()
        assert gc.get_freeze_count() > 100  # what was alive is frozen, kept's list included
        assert not any(kept["recovered"] is o for o in gc.get_objects(2))
    finally:
        gc.unfreeze()

"""In-process benchmark of the worker's evaluation with every default rule enabled.

Drives `worker.Pipeline` (decode, evaluate, encode signals, table writes; plain dicts as tables,
so no changelog and no broker) over the mock venue's stream with thousands of markets, plus
synthetic trades (one per `TRADE_EVERY` updates, wallets from a pool) and approved groups
pairing binaries, so that every rule type does its work. `measure()` returns a JSON-ready dict:

- throughput: market-data messages the worker reads (books, trades) per second, and updates/s
  (an update is one book: the collector also publishes its tick, which the worker does not
  read, since tick rules evaluate each book's top of book);
- per-message handling latency p50/p99 (ms), and the input-to-signal latency p50/p99 of a
  single worker fed evenly at 2,000 and 5,000 messages/s (a queue over the measured handling
  times: Kafka's own hops come on top, see `marketpulse bench`);
- RSS of this process after loading the state of `state_markets` markets (books, prices,
  volumes of every token).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil

from marketpulse.codec import codec
from marketpulse.grouping import GroupEvaluator, routes
from marketpulse.rules import RuleDef, load_rules
from marketpulse.rules.cross_market import Group, Member

TRADE_EVERY = 5  # one synthetic trade per this many updates
WALLETS = 5_000


@dataclass
class _Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 0


class _Null:
    """Stands in for the signal, repartition and dead-letter producers."""

    def __init__(self) -> None:
        self.signals = 0

    async def emit(self, key: bytes, value: bytes) -> None:
        self.signals += 1

    async def forward(self, key: bytes, value: bytes) -> None:
        pass

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        pass


def all_rules_enabled() -> list[RuleDef]:
    return [r.model_copy(update={"enabled": True}) for r in load_rules().values()]


def _groups(markets: list[dict[str, Any]], n: int) -> dict[str, Group]:
    binaries = [m["market_id"] for m in markets if m["event_id"].startswith("mk:bin-")]
    pairs = list(zip(binaries[0::2], binaries[1::2], strict=False))[:n]
    return {
        f"g{i}": Group(
            group_id=f"g{i}",
            relation="identity",
            resolution_source="bench",
            approved=True,
            members=(Member(market_id=a), Member(market_id=b, orientation="yes")),
        )
        for i, (a, b) in enumerate(pairs)
    }


def _pipeline(markets: list[dict[str, Any]], n_groups: int) -> tuple[Any, _Null]:
    from marketpulse.kafka import DeadLetters
    from marketpulse.settings import Settings
    from marketpulse.worker import Evaluator, Pipeline

    rules = all_rules_enabled()
    sink = _Null()
    groups = _groups(markets, n_groups)
    pipe = Pipeline(
        Evaluator(rules, {}, {}, {}),
        books_topic="books",
        by_event_topic="markets",
        forward=sink.forward,
        emit=sink.emit,
        dead_letters=DeadLetters(Settings(), sink, stage="bench"),  # type: ignore[arg-type]
        ticks_topic="ticks",
        trades_topic="trades",
        groups=GroupEvaluator(rules, groups, {}, {}, {}),
        group_routes=routes(groups),
        to_group=None,
    )
    return pipe, sink


def _stream(venue: Any, n: int) -> Iterator[_Msg]:
    """Pre-encoded messages as the worker reads them: each book (the ticks topic is not read:
    tick rules evaluate each book's top) and every TRADE_EVERY updates a trade."""
    cdc = codec()
    for i, (book, tick) in enumerate(itertools.islice(venue.updates(), n)):
        key = book["event_key"].encode()
        yield _Msg("books", key, cdc.encode("book", book))  # tick rules read its top of book
        if i % TRADE_EVERY == 0 and tick["best_ask"] is not None:
            trade = {
                **{k: tick[k] for k in ("event_key", "market_id", "token_id", "venue")},
                "trade_id": f"b{i}",
                "ts_ms": tick["ts_ms"],
                "recv_ms": tick["recv_ms"],
                "price": tick["best_ask"],
                "size": float(50 + (i * 7919) % 3000),
                "side": "BUY",
                "wallet": f"0x{(i * 104729) % WALLETS:040x}",
                "tx_hash": None,
            }
            yield _Msg("trades", key, cdc.encode("trade", trade))


async def _run(
    pipe: Any, sink: _Null, markets: list[dict[str, Any]], msgs: list[_Msg]
) -> dict[str, Any]:
    cdc = codec()
    for m in markets:
        await pipe.handle(_Msg("markets", m["event_id"].encode(), cdc.encode("market", m)))
    plain: list[float] = []
    firing: list[float] = []
    order: list[tuple[float, bool]] = []  # (handling ms, fired) in input order
    started = time.perf_counter()
    for msg in msgs:
        before = sink.signals
        t = time.perf_counter()
        await pipe.handle(msg)
        took = (time.perf_counter() - t) * 1000
        fired = sink.signals > before
        (firing if fired else plain).append(took)
        order.append((took, fired))
    elapsed = time.perf_counter() - started
    return {"elapsed_s": elapsed, "plain_ms": plain, "firing_ms": firing, "order": order}


def paced_latency_ms(order: list[tuple[float, bool]], rate: float) -> list[float]:
    """Input-to-signal latency of the firing messages if the inputs arrived evenly at `rate`
    per second into one worker (a single-server queue over the measured handling times)."""
    gap, free_at, out = 1000.0 / rate, 0.0, []
    for i, (took, fired) in enumerate(order):
        arrival = i * gap
        done = max(arrival, free_at) + took
        free_at = done
        if fired:
            out.append(done - arrival)
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 4)


def measure(
    *,
    n_events: int = 400,
    n_binaries: int = 1_600,
    updates: int = 60_000,
    state_markets: int = 10_000,
) -> dict[str, Any]:
    """Throughput and latency on a mix of ~3,000 markets, then RSS with `state_markets`."""
    from marketpulse.venues.mock import MockVenue

    venue = MockVenue(seed=7, n_events=n_events, n_binaries=n_binaries, start_ms=1_767_225_600_000)
    markets = venue.markets()
    pipe, sink = _pipeline(markets, n_groups=200)
    msgs = list(_stream(venue, updates))
    run = asyncio.run(_run(pipe, sink, markets, msgs))
    n_updates = sum(1 for m in msgs if m.topic == "books")
    result: dict[str, Any] = {
        "markets": len(markets),
        "rules": [r.rule_id for r in all_rules_enabled()],
        "messages": len(msgs),
        "messages_per_s": round(len(msgs) / run["elapsed_s"]),
        "updates_per_s": round(n_updates / run["elapsed_s"]),
        "signals": sink.signals,
        "handle_ms_p50": _pct(run["plain_ms"] + run["firing_ms"], 50),
        "handle_ms_p99": _pct(run["plain_ms"] + run["firing_ms"], 99),
        "signal_handle_ms_p50": _pct(run["firing_ms"], 50),
        "signal_handle_ms_p99": _pct(run["firing_ms"], 99),
    }
    for rate in (2_000, 5_000):
        lat = paced_latency_ms(run["order"], rate)
        result[f"tick_to_signal_ms_at_{rate}_per_s"] = {"p50": _pct(lat, 50), "p99": _pct(lat, 99)}
    del pipe, msgs, run
    gc.collect()
    result.update(state_rss(state_markets))
    return result


def state_rss(n_markets: int) -> dict[str, Any]:
    """RSS after every token of `n_markets` binary markets has a book, prices and trades."""
    from marketpulse.venues.mock import MockVenue

    venue = MockVenue(
        seed=3, n_events=0, n_binaries=n_markets, start_ms=1_767_225_600_000, opportunities=False
    )
    markets = venue.markets()
    pipe, sink = _pipeline(markets, n_groups=0)
    # Snapshot (one update per token) and as many updates again, so windows hold samples.
    msgs = _stream(venue, 2 * venue.n_tokens)
    asyncio.run(_run(pipe, sink, markets, list(msgs)))
    gc.collect()
    rss = psutil.Process().memory_info().rss / 2**20
    ev = pipe.evaluator
    return {
        "state_markets": len(markets),
        "state_books": len(ev.books),
        "state_flow_keys": len(ev.flow.state),
        "rss_mb": round(rss),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure()))

"""A small, realistic paper-trading history as the execution stage publishes it: signals, intent
v2 lifecycle events (risk checks, fills) and position versions, produced to the real topics.
Shared by the API and dashboard tests; every figure is a dyadic fraction, so sums are exact.

Lifecycles (rule, level, market):
  a  complete_set P1 mk:m1  suggested                          (waits for approval)
  b  complete_set P1 mk:m1  suggested → approved → filled      (two legs, its fill redelivered)
  c  complete_set P2 mk:m2  suggested → rejected               (total_exposure failed)
  d  spike        P2 mk:m3  suggested → approved → partially_filled
  e  spike        P3 mk:m3  suggested → expired
  f  spike        P2 mk:m4  suggested → approved               (can still be cancelled)
plus `bulk` suggested intents of rule ladder, two per created time (pagination ties)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from marketpulse.codec import codec
from marketpulse.execution.ids import intent_id_for
from marketpulse.settings import Settings

MINUTE = 60_000
DAY = 86_400_000
LIFECYCLES = "abcdef"
PASSING = [
    {"name": "order_notional", "passed": True, "value": 5.0, "limit": 100.0},
    {"name": "total_exposure", "passed": True, "value": 5.0, "limit": 1000.0},
]
FAILED = [
    {"name": "order_notional", "passed": True, "value": 5.0, "limit": 100.0},
    {"name": "total_exposure", "passed": False, "value": 1250.0, "limit": 1000.0, "detail": "x"},
]
META = {
    "a": ("complete_set", "P1", "mk:m1"),
    "b": ("complete_set", "P1", "mk:m1"),
    "c": ("complete_set", "P2", "mk:m2"),
    "d": ("spike", "P2", "mk:m3"),
    "e": ("spike", "P3", "mk:m3"),
    "f": ("spike", "P2", "mk:m4"),
}
STATUS = {
    "a": "suggested",
    "b": "filled",
    "c": "rejected",
    "d": "partially_filled",
    "e": "expired",
    "f": "approved",
}


def signal_id(name: str) -> str:
    return f"sig-{name}"


def legs(market: str) -> list[dict[str, Any]]:
    return [
        {"market_id": market, "token_id": f"{market}:y", "side": "BUY", "price": 0.5, "size": 10.0},
        {
            "market_id": market,
            "token_id": f"{market}:n",
            "side": "BUY",
            "price": 0.375,
            "size": 10.0,
        },
    ]


def signal(name: str, t0: int) -> dict[str, Any]:
    rule, level, market = META.get(name, ("ladder", "P3", "mk:m9"))
    return {
        "signal_id": signal_id(name),
        "rule_id": rule,
        "rule_version": 1,
        "level": level,
        "subject": "mk:e1",
        "event_key": "mk:e1",
        "market_ids": [market],
        "ts_ms": t0,
        "trigger_recv_ms": t0 + 3,
        "edge_bps": 125.0,
        "size": 10.0,
        "notional": 8.75,
        "legs": legs(market),
        "evidence": {"sum_asks": "0.875"},
        "summary": f"signal {name}",
    }


def fill(market: str, side: str, price: float, size: float, t: int) -> dict[str, Any]:
    token = f"{market}:{side}"
    return {
        "market_id": market,
        "token_id": token,
        "side": "BUY",
        "price": price,
        "size": size,
        "fee": 0.125,
        "levels": 1,
        "book_ts_ms": t - 5,
    }


def event(name: str, seq: int, status: str, ts: int, **over: Any) -> dict[str, Any]:
    rule, level, market = META.get(name, ("ladder", "P3", "mk:m9"))
    return {
        "intent_id": intent_id_for(signal_id(name)),
        "signal_id": signal_id(name),
        "status": status,
        "ts_ms": ts,
        "reason": "",
        "legs": legs(market),
        "notional": 8.75,
        "mode": "paper",
        "approval": "semi_auto",
        "seq": seq,
        "rule_id": rule,
        "level": level,
        "subject": "mk:e1",
        "event_key": "mk:e1",
        "venue": "polymarket",
        "sizing": "fixed",
        "edge_bps": 125.0,
        "checks": PASSING,
        "expires_ms": ts + 10 * MINUTE if seq == 0 else 0,
        "actor": "risk" if seq == 0 else "api:ana",
        **over,
    }


def created(name: str, t0: int) -> int:
    return t0 + LIFECYCLES.index(name) * MINUTE


def intent_events(t0: int, bulk: int = 0) -> list[dict[str, Any]]:
    """Every lifecycle event, in the order the stage would publish them."""
    out = [event(n, 0, "suggested", created(n, t0)) for n in LIFECYCLES]
    t = t0 + 30 * MINUTE
    b_fills = [fill("mk:m1", "y", 0.5, 10.0, t), fill("mk:m1", "n", 0.375, 10.0, t)]
    d_fills = [fill("mk:m3", "y", 0.5, 4.0, t)]
    out += [
        event("b", 1, "approved", t),
        event("b", 2, "filled", t + 1, fills=b_fills, filled_size=20.0, fee=0.25),
        event("c", 1, "rejected", t, checks=FAILED, actor="risk", reason="total_exposure"),
        event("d", 1, "approved", t),
        event("d", 2, "partially_filled", t + 1, fills=d_fills, filled_size=4.0, fee=0.125),
        event("e", 1, "expired", t, actor="expiry"),
        event("f", 1, "approved", t),
        event("b", 2, "filled", t + 1, fills=b_fills, filled_size=20.0, fee=0.25),  # redelivered
    ]
    out += [event(f"bulk{i}", 0, "suggested", t0 + DAY + (i // 2) * MINUTE) for i in range(bulk)]
    return out


def position(token: str, rule: str, t: int, **figures: Any) -> dict[str, Any]:
    market = token.rpartition(":")[0]
    return {
        "position_id": f"{rule}|{token}",
        "rule_id": rule,
        "venue": "polymarket",
        "event_key": "mk:e1",
        "market_id": market,
        "token_id": token,
        "size": 0.0,
        "avg_price": 0.0,
        "cost": 0.0,
        "fees": 0.0,
        "realised_pnl": 0.0,
        "unrealised_pnl": 0.0,
        "mark_price": None,
        "status": "open",
        "ts_ms": t,
        **figures,
    }


def positions(t0: int) -> list[dict[str, Any]]:
    """Position versions; cs|mk:m1:y has an older version (day 0) and a newer one (day 1)."""
    y = {"size": 10.0, "avg_price": 0.5, "cost": 5.0, "fees": 0.25}
    return [
        position("mk:m1:y", "complete_set", t0 + MINUTE, **y, unrealised_pnl=0.5, mark_price=0.55),
        position(
            "mk:m1:n",
            "complete_set",
            t0 + MINUTE,
            size=10.0,
            avg_price=0.375,
            cost=3.75,
            fees=0.125,
            unrealised_pnl=-0.25,
            mark_price=0.35,
        ),
        position(
            "mk:m3:y",
            "spike",
            t0 + MINUTE,
            status="closed",
            fees=0.5,
            realised_pnl=2.5,
            mark_price=0.75,
        ),
        position(
            "mk:m4:y",
            "spike",
            t0 + MINUTE,
            size=-8.0,
            avg_price=0.5,
            cost=-4.0,
            fees=0.25,
            unrealised_pnl=0.5,
            mark_price=0.4375,
        ),
        position("mk:m5:y", "spike", t0 + MINUTE, status="settled", fees=0.0625, realised_pnl=-1.5),
        position("mk:m1:y", "complete_set", t0 + DAY, **y, unrealised_pnl=1.0, mark_price=0.6),
        position("mk:m1:y", "complete_set", t0 + DAY, **y, unrealised_pnl=1.0, mark_price=0.6),
    ]


N_POSITIONS = 5


async def publish(
    settings: Settings, t0: int, bulk: int = 0, with_signals: bool = True
) -> tuple[int, int]:
    """Produce intent events and positions, and unless `with_signals` is False their signals
    (plus one without an intent: sig-new); returns (intent events, distinct ones) produced."""
    events = intent_events(t0, bulk)
    names = [*LIFECYCLES, "new", *(f"bulk{i}" for i in range(bulk))] if with_signals else []
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for name in names:
            rec = signal(name, t0)
            await producer.send(
                settings.topic("signals"),
                codec().encode("signal", rec),
                key=rec["event_key"].encode(),
            )
        for rec in events:
            await producer.send(
                settings.topic("intents"),
                codec().encode("intent", rec),
                key=rec["intent_id"].encode(),
            )
        for rec in positions(t0):
            await producer.send(
                settings.topic("positions"),
                codec().encode("position", rec),
                key=rec["position_id"].encode(),
            )
        await producer.flush()
    finally:
        await producer.stop()
    return len(events), len(events) - 1

"""What every rule shares: the Signal record builder, per-subject cooldown on event time, and
the price of a tick. Pure functions over plain data (rule state is JSON: it lives in tables)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from marketpulse.rules import RuleDef
from marketpulse.rules.complete_set import signal_id

# Prices on a cent grid subtract to 0.030000000000000027: compare thresholds with this slack.
PRICE_EPSILON = 1e-9

__all__ = [
    "PRICE_EPSILON",
    "cooling",
    "leg",
    "make_signal",
    "mark",
    "num",
    "signal_id",
    "tick_price",
]


def num(x: float) -> str:
    """Stable, short text of a number for evidence (same input, same text)."""
    return f"{x:.10g}"


def cooling(last: Mapping[str, int], subject: str, ts_ms: int, cooldown_ms: int) -> bool:
    """Whether `subject` signalled less than `cooldown_ms` of event time before `ts_ms`."""
    prev = last.get(subject)
    return cooldown_ms > 0 and prev is not None and 0 <= ts_ms - prev < cooldown_ms


def mark(last: MutableMapping[str, int], subject: str, ts_ms: int) -> None:
    """Remember a signal's event time for the cooldown (never moves backwards)."""
    last[subject] = max(ts_ms, last.get(subject, ts_ms))


def market_signal(
    rule: RuleDef,
    source: Mapping[str, Any],
    last_signals: MutableMapping[str, int],
    ts_ms: int,
    **fields: Any,
) -> dict[str, Any] | None:
    """A signal about the one market of a tick or trade (`source`), unless that market is still
    in the rule's cooldown; a signal returned is remembered for the next cooldown check."""
    subject = source["market_id"]
    if cooling(last_signals, subject, ts_ms, rule.cooldown_ms):
        return None
    mark(last_signals, subject, ts_ms)
    return make_signal(
        rule,
        subject=subject,
        event_key=source["event_key"],
        market_ids=[subject],
        ts_ms=ts_ms,
        trigger_recv_ms=int(source["recv_ms"]),
        **fields,
    )


def tick_price(tick: Mapping[str, Any]) -> float | None:
    """Mid of a two-sided top of book, else the last trade price, else None."""
    bid, ask = tick.get("best_bid"), tick.get("best_ask")
    if bid is not None and ask is not None and 0 < bid <= ask < 1:
        return (float(bid) + float(ask)) / 2.0
    last = tick.get("last_price")
    return float(last) if last is not None and 0 < last < 1 else None


def leg(market_id: str, token_id: str, side: str, price: float, size: float) -> dict[str, Any]:
    return {
        "market_id": market_id,
        "token_id": token_id,
        "side": side,
        "price": float(price),
        "size": float(size),
    }


def make_signal(
    rule: RuleDef,
    *,
    subject: str,
    event_key: str,
    market_ids: Sequence[str],
    ts_ms: int,
    trigger_recv_ms: int,
    edge_bps: float,
    edge_score: float,
    id_parts: Sequence[str],
    legs: Sequence[Mapping[str, Any]] = (),
    size: float = 0.0,
    notional: float = 0.0,
    evidence: Mapping[str, str] | None = None,
    summary: str = "",
) -> dict[str, Any]:
    """A Signal record (signal.avsc). The id hashes rule id+version, subject, event time and
    `id_parts` (what distinguishes two firings at one time: input seqs, trade ids, modes).
    The rule's thresholds join the evidence, so a signal explains itself without the config."""
    ev = {f"param.{k}": _text(v) for k, v in sorted(rule.params.items())}
    ev["cooldown_ms"] = str(rule.cooldown_ms)
    ev["levels"] = f"P1>={num(rule.levels.P1)},P2>={num(rule.levels.P2)}"
    ev.update(evidence or {})
    return {
        "signal_id": signal_id(rule.rule_id, rule.version, subject, ts_ms, *id_parts),
        "rule_id": rule.rule_id,
        "rule_version": rule.version,
        "level": rule.levels.level_for(edge_bps),
        "subject": subject,
        "event_key": event_key,
        "market_ids": list(dict.fromkeys(market_ids)),
        "ts_ms": int(ts_ms),
        "trigger_recv_ms": int(trigger_recv_ms),
        "edge_bps": round(float(edge_bps), 4),
        "edge_score": round(float(edge_score), 6),
        "size": float(size),
        "notional": round(float(notional), 6),
        "legs": [dict(lg) for lg in legs],
        "evidence": ev,
        "summary": summary,
    }


def _text(value: Any) -> str:
    if isinstance(value, float):
        return num(value)
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)

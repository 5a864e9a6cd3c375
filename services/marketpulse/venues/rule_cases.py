"""Injected cases for every rule of the catalog, with the signals they must produce: a small,
deterministic stream of markets, books and trades (venue prefixes pm:/ks:, mock-like),
separate from the mock venue's own stream (which stays byte-identical).

`cases()` returns the records per topic and the expected firings as (rule id, subject,
trigger) triples; `rules_yaml()` is a rules file enabling every rule with thresholds the cases
sit on the right side of, and `groups_yaml()` the registry of the cross-market case.
Event times are relative to `start_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

H = 3_600_000
NO_FEE = {"model": "none", "rate": 0.0, "exponent": 1.0}

Record = dict[str, Any]


@dataclass
class Cases:
    markets: list[Record] = field(default_factory=list)  # in publish order (updates included)
    books: list[Record] = field(default_factory=list)
    trades: list[Record] = field(default_factory=list)
    expected: list[tuple[str, str, str]] = field(default_factory=list)


def _market(mid: str, event: str, start_ms: int, **extra: Any) -> Record:
    return {
        "market_id": mid,
        "event_id": event,
        "venue": "kalshi" if mid.startswith("ks:") else "polymarket",
        "question": f"{mid}?",
        "event_title": "",
        "slug": None,
        "outcomes": [
            {"name": "Yes", "token_id": f"{mid}:y"},
            {"name": "No", "token_id": f"{mid}:n"},
        ],
        "status": "active",
        "end_ms": None,
        "neg_risk": False,
        "neg_risk_augmented": False,
        "exclusive": True,
        "event_market_count": 1,
        "tick_size": 0.01,
        "min_size": 1.0,
        "fee": dict(NO_FEE),
        "rules_text": None,
        "strike_type": None,
        "floor_strike": None,
        "cap_strike": None,
        "winning_token_id": None,
        "updated_ms": start_ms,
        **extra,
    }


def _ids(token: str, event: str, ts: int, seq: int) -> Record:
    return {
        "event_key": event,
        "market_id": token.rsplit(":", 1)[0],
        "token_id": token,
        "venue": "kalshi" if token.startswith("ks:") else "polymarket",
        "ts_ms": ts,
        "recv_ms": ts + 5,
        "seq": seq,
    }


def _book(token: str, event: str, ts: int, seq: int, asks: Any = (), bids: Any = ()) -> Record:
    return {
        **_ids(token, event, ts, seq),
        "asks": [{"price": p, "size": s} for p, s in asks],
        "bids": [{"price": p, "size": s} for p, s in bids],
        "hash": None,
    }


def _top(token: str, event: str, ts: int, seq: int, bid: float, ask: float) -> Record:
    """A one-level book: what the tick rules read (the worker takes each book's top)."""
    return _book(token, event, ts, seq, asks=[(ask, 500.0)], bids=[(bid, 500.0)])


def _trade(
    token: str, event: str, ts: int, n: int, price: float, size: float, wallet: Any
) -> Record:
    return {
        **_ids(token, event, ts, n),
        "trade_id": f"{token}#{n}",
        "price": price,
        "size": size,
        "side": "BUY",
        "wallet": wallet,
        "tx_hash": None,
    }


def cases(start_ms: int = 1_767_225_600_000) -> Cases:  # one case per block
    t0, c = start_ms, Cases()

    # complete set: YES 0.40 + NO 0.50 on a binary, 10 sets.
    c.markets.append(_market("pm:cs", "pm:CS", t0))
    c.books += [
        _book("pm:cs:y", "pm:CS", t0 + 1_000, 1, asks=[(0.40, 10)], bids=[(0.30, 10)]),
        _book("pm:cs:n", "pm:CS", t0 + 1_001, 2, asks=[(0.50, 10)], bids=[(0.40, 10)]),
    ]
    c.expected.append(("complete_set", "pm:cs", "buy"))

    # spike: 0.505 -> 0.605 within 20 s on a one-tick-wide book.
    c.markets.append(_market("pm:sp", "pm:SP", t0))
    c.books += [
        _top("pm:sp:y", "pm:SP", t0 + 1_000, 1, 0.50, 0.51),
        _top("pm:sp:y", "pm:SP", t0 + 21_000, 2, 0.60, 0.61),
    ]
    c.expected.append(("spike", "pm:sp", "up"))

    # trend: ten prices at 0.505, 100 s apart (no spike window holds two), then 0.625.
    c.markets.append(_market("pm:tr", "pm:TR", t0))
    c.books += [_top("pm:tr:y", "pm:TR", t0 + i * 100_000, 10 + i, 0.50, 0.51) for i in range(10)]
    c.books.append(_top("pm:tr:y", "pm:TR", t0 + 1_000_000, 20, 0.62, 0.63))
    c.expected += [("trend_breakout", "pm:tr", "up"), ("trend_fade", "pm:tr", "down")]

    # endgame sweep: volumes 10, 20, 30 in three 5-minute buckets, then 1000 at 0.97,
    # 2 h before the end; then the tick size drops to 0.001.
    eg = _market("pm:eg", "pm:EG", t0, end_ms=t0 + 3 * H)
    c.markets.append(eg)
    for i, size in enumerate((10.0, 20.0, 30.0)):
        c.trades.append(_trade("pm:eg:y", "pm:EG", t0 + i * 300_000, i, 0.96, size, None))
    c.trades.append(_trade("pm:eg:y", "pm:EG", t0 + 900_000, 3, 0.97, 1_000.0, None))
    c.expected.append(("endgame", "pm:eg", "sweep"))
    c.markets.append({**eg, "tick_size": 0.001, "updated_ms": t0 + 950_000})
    c.expected.append(("endgame", "pm:eg", "tick_size"))

    # resolution
    rs = _market("pm:rs", "pm:RS", t0)
    c.markets += [
        rs,
        {**rs, "status": "resolved", "winning_token_id": "pm:rs:y", "updated_ms": t0 + 5_000},
    ]
    c.expected.append(("endgame", "pm:rs", "resolution"))

    # whale and new wallet: 30,000 shares at 0.50 by a wallet never seen before.
    c.markets.append(_market("pm:wh", "pm:WH", t0))
    c.trades.append(_trade("pm:wh:y", "pm:WH", t0 + 2_000, 1, 0.50, 30_000.0, "0xnew"))
    c.expected.append(("whale", "pm:wh", "whale,new_wallet,large_for_market"))

    # longshots: YES asked 0.95 a day before the end; another bid 0.04.
    c.markets += [
        _market("pm:nc", "pm:NC", t0, end_ms=t0 + 24 * H),
        _market("pm:lo", "pm:LO", t0, end_ms=t0 + 24 * H),
    ]
    c.books += [
        _top("pm:nc:y", "pm:NC", t0 + 3_000, 1, 0.94, 0.95),
        _top("pm:lo:y", "pm:LO", t0 + 3_000, 1, 0.04, 0.05),
    ]
    c.expected += [
        ("longshot_near_certain", "pm:nc", "near_certain"),
        ("longshot_overpriced", "pm:lo", "overpriced_longshot"),
    ]

    # ladder on Kalshi-like bids-only books: above-100 bid 0.62 > above-90 ask 0.55.
    for mid, strike in (("ks:T100", 100.0), ("ks:T90", 90.0)):
        c.markets.append(
            _market(
                mid,
                "ks:EV",
                t0,
                end_ms=t0 + 48 * H,
                strike_type="greater",
                floor_strike=strike,
                exclusive=False,
                event_market_count=2,
            )
        )
    c.books += [
        _book("ks:T100:y", "ks:EV", t0 + 4_000, 1, bids=[(0.62, 40)]),
        _book("ks:T90:n", "ks:EV", t0 + 4_001, 2, bids=[(0.45, 50)]),
    ]
    c.expected.append(("logical", "ks:T100", "ladder"))

    # cross-venue identity group: Polymarket YES ask 0.40, Kalshi YES bid 0.50 (NO ask 0.50).
    c.markets += [_market("pm:xa", "pm:XA", t0), _market("ks:XB", "ks:XB", t0)]
    c.books += [
        _book("pm:xa:y", "pm:XA", t0 + 6_000, 1, asks=[(0.40, 100)]),
        _book("ks:XB:y", "ks:XB", t0 + 6_001, 1, bids=[(0.50, 60)]),
    ]
    c.expected.append(("cross_market", "xgrp", "identity"))

    # term structure from parsed questions: "by November 15" bid 0.60 > "by November 30" ask
    # 0.50 (buy the later YES and the earlier NO, its ask inverted from the YES bid).
    for day in (15, 30):
        question = f"Will Gemini 3.0 be released by November {day}?"
        c.markets.append(
            _market(f"pm:ts{day}", f"pm:TS{day}", t0, end_ms=t0 + 48 * H, question=question)
        )
    c.books += [
        _book("pm:ts15:y", "pm:TS15", t0 + 7_000, 1, bids=[(0.60, 30)]),
        _book("pm:ts30:y", "pm:TS30", t0 + 7_001, 1, asks=[(0.50, 80)]),
    ]
    c.expected.append(("logical", "pm:ts15", "term"))

    # Kalshi term structure across two events of one series (deadline title and rules):
    # "by Oct 31" YES bid 0.60 > "by Dec 31" YES ask 0.45 (1 - its NO bid 0.55).
    for month, day, nxt in (("OCT", 31, "Nov 1"), ("DEC", 31, "Jan 1")):
        mid = f"ks:KXGPT5-25{month}"
        c.markets.append(
            _market(
                mid,
                f"ks:KXGPT5-25{month}",
                t0,
                end_ms=t0 + 48 * H,
                question=f"Will OpenAI release GPT-5 by {month.title()} {day}, 2025?",
                rules_text=f"If OpenAI releases GPT-5 before {nxt}, the market resolves to Yes.",
            )
        )
    c.books += [
        _book("ks:KXGPT5-25OCT:y", "ks:KXGPT5-25OCT", t0 + 8_000, 1, bids=[(0.60, 30)]),
        _book("ks:KXGPT5-25DEC:n", "ks:KXGPT5-25DEC", t0 + 8_001, 1, bids=[(0.55, 30)]),
    ]
    c.expected.append(("logical", "ks:KXGPT5-25OCT", "term"))
    return c


def groups_yaml() -> str:
    return """groups:
  - group_id: xgrp
    relation: identity
    resolution_source: test oracle
    approved: true
    members:
      - {market_id: "pm:xa", orientation: "yes"}
      - {market_id: "ks:XB", orientation: "yes"}
"""


def rules_yaml(groups_file: str) -> str:
    """Every rule on; trend windows long enough for the 100 s-spaced trend case."""
    return f"""rules:
  - {{rule_id: complete_set, version: 1, type: complete_set}}
  - {{rule_id: spike, version: 1, type: spike, cooldown_ms: 60000,
      params: {{window_ms: 60000, min_move: 0.05, min_depth: 100, max_spread: 0.03}}}}
  - {{rule_id: trend_breakout, version: 1, type: trend,
      params: {{mode: breakout, window_ms: 2000000, threshold: 0.08, min_samples: 10}}}}
  - {{rule_id: trend_fade, version: 1, type: trend,
      params: {{mode: fade, window_ms: 2000000, threshold: 0.10, min_samples: 10,
               min_edge_bps: 500}}}}
  - {{rule_id: endgame, version: 1, type: endgame}}
  - {{rule_id: whale, version: 1, type: whale}}
  - {{rule_id: longshot_near_certain, version: 1, type: longshot,
      params: {{strategy: near_certain, horizon_ms: 172800000}}}}
  - {{rule_id: longshot_overpriced, version: 1, type: longshot,
      params: {{strategy: overpriced_longshot, min_price: 0.001, max_price: 0.05,
               horizon_ms: 172800000}}}}
  - {{rule_id: cross_market, version: 1, type: cross_market,
      params: {{groups_file: "{groups_file}"}}}}
  - {{rule_id: logical, version: 1, type: logical}}
"""


def trigger_of(signal: Record) -> str:
    """The trigger a signal reports, comparable with `Cases.expected`."""
    ev = signal["evidence"]
    rule = signal["rule_id"]
    if rule == "complete_set":
        return ev["direction"]
    if rule == "spike":
        return "up" if float(ev["move"]) > 0 else "down"
    if rule.startswith("trend"):
        return "up" if signal["legs"][0]["side"] == "BUY" else "down"
    if rule == "endgame":
        return ev["trigger"]
    if rule == "whale":
        return ev["kinds"]
    if rule.startswith("longshot"):
        return ev["strategy"]
    if rule == "logical":
        return ev["constraint"]
    return ev.get("relation", "")

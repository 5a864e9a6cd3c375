"""Two-leg hedges that pay at least 1 in every outcome, evaluated like a complete set's buy side.

Cross-market groups and logical constraints both reduce to this: buy a token that pays when a
proposition holds and a token that pays when it does not (identity across markets), or buy the
weaker claim's YES and the stronger claim's NO (an implication: the state in between pays 2).
Either way buying both below 1 net of fees is an arbitrage, sized by walking both ask ladders
(`complete_set.evaluate_buy`), with episodes and cooldown from `OpportunityTracker`.

A token whose own book has no asks is priced from the other outcome of its market: Kalshi
publishes bids only, and the YES ask is 1 - the best NO bid (`inverted_asks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marketpulse.rules import RuleDef
from marketpulse.rules.common import make_signal, num
from marketpulse.rules.complete_set import LegInput, Opportunity, OpportunityTracker, evaluate_buy
from marketpulse.rules.params import PairParams


@dataclass(frozen=True)
class Hedge:
    """Tokens whose joint purchase pays at least 1: `tokens` are (market_id, token_id)."""

    key: str
    subject: str  # group id, or the stronger market of an implication
    event_key: str
    tokens: tuple[tuple[str, str], ...]
    relation: str  # identity | complement | implies
    evidence: tuple[tuple[str, str], ...] = ()


def sibling(market: Mapping[str, Any], token_id: str) -> str | None:
    """The other outcome's token of a binary market."""
    tokens = [o["token_id"] for o in market.get("outcomes", [])]
    if len(tokens) != 2 or token_id not in tokens:
        return None
    return tokens[1] if tokens[0] == token_id else tokens[0]


def inverted_asks(bids: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]:
    """Asks of a token implied by its sibling's bids: selling NO at b = buying YES at 1 - b."""
    return [{"price": round(1.0 - float(b["price"]), 10), "size": float(b["size"])} for b in bids]


def asks_of(
    market: Mapping[str, Any], token_id: str, books: Mapping[str, Mapping[str, Any]]
) -> tuple[list[Mapping[str, float]], str, Mapping[str, Any]] | None:
    """(asks, how, book) of a token: its own asks, else its sibling's inverted bids."""
    own = books.get(token_id)
    if own is not None and own.get("asks"):
        return list(own["asks"]), "own", own
    other = sibling(market, token_id)
    book = books.get(other) if other else None
    if book is not None and book.get("bids"):
        return list(inverted_asks(book["bids"])), f"inverted:{other}", book
    return None


def evaluate(
    rule: RuleDef,
    params: PairParams,
    hedges: Sequence[Hedge],
    markets: Mapping[str, Mapping[str, Any]],
    books: Mapping[str, Mapping[str, Any]],
    tracker: OpportunityTracker,
    *,
    touched_market: str | None = None,
    trigger_recv_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Signals of `hedges` after a change (all of them, or those holding `touched_market`).
    `markets` by market id, `books` by token id. Updates `tracker` in place."""
    signals = []
    for hedge in hedges:
        if touched_market is not None and all(m != touched_market for m, _ in hedge.tokens):
            continue
        if any(m not in markets or markets[m].get("status") != "active" for m, _ in hedge.tokens):
            continue
        priced = [asks_of(markets[m], t, books) for m, t in hedge.tokens]
        if any(p is None for p in priced):
            continue
        legs = [
            LegInput(markets[m], t, p[0], markets[m].get("fee") or {"model": "none"})
            for (m, t), p in zip(hedge.tokens, priced, strict=True)
            if p is not None
        ]
        used = [p[2] for p in priced if p is not None]
        ts = max(int(b["ts_ms"]) for b in used)
        opp = evaluate_buy(legs, params.min_edge_bps, params.max_levels)
        fp = opp.fingerprint() if opp else None
        if tracker.observe(hedge.key, hedge.subject, fp, ts) and opp is not None:
            how = [p[1] for p in priced if p is not None]
            recv = trigger_recv_ms or max(int(b["recv_ms"]) for b in used)
            signals.append(_signal(rule, hedge, opp, used, how, ts, recv))
    return signals


def _signal(
    rule: RuleDef,
    hedge: Hedge,
    opp: Opportunity,
    used: list[Mapping[str, Any]],
    how: list[str],
    ts: int,
    recv: int,
) -> dict[str, Any]:
    ev = {
        "relation": hedge.relation,
        "hedge": hedge.key,
        "size": num(opp.size),
        "value": num(opp.value),
        "fees": num(opp.fees),
        "outlay": num(opp.outlay),
        "profit": num(opp.profit),
        **dict(hedge.evidence),
    }
    seqs = []
    for i, (fill, book, source) in enumerate(zip(opp.legs, used, how, strict=True)):
        ev[f"leg{i}.market"] = fill.market_id
        ev[f"leg{i}.token"] = fill.token_id
        ev[f"leg{i}.asks_from"] = source
        ev[f"leg{i}.levels"] = ",".join(f"{num(p)}x{num(s)}" for p, s in fill.fills)
        ev[f"leg{i}.fee_paid"] = num(fill.fee)
        ev[f"leg{i}.book_seq"] = str(book["seq"])
        ev[f"leg{i}.book_ts_ms"] = str(book["ts_ms"])
        seqs.append(f"{fill.token_id}@{book['seq']}")
    return make_signal(
        rule,
        subject=hedge.subject,
        event_key=hedge.event_key,
        market_ids=[f.market_id for f in opp.legs],
        ts_ms=ts,
        trigger_recv_ms=recv,
        edge_bps=opp.edge_bps,
        edge_score=opp.profit,
        id_parts=[hedge.key, *seqs],
        legs=[
            {
                "market_id": f.market_id,
                "token_id": f.token_id,
                "side": "BUY",
                "price": f.worst_price,
                "size": opp.size,
            }
            for f in opp.legs
        ],
        size=opp.size,
        notional=opp.outlay,
        evidence=ev,
        summary=(
            f"{hedge.relation} hedge {hedge.key}: buy "
            + " + ".join(f"{f.token_id}@{f.worst_price:.3f}" for f in opp.legs)
            + f", {opp.size:g} each, profit {opp.profit:.2f} on {opp.outlay:.2f} "
            f"({opp.edge_bps:.0f} bps)"
        ),
    )

"""Cross-market evaluation by equivalence group, the worker's second stage (no Faust here).

The first stage (one agent per event key) forwards the metadata and books of every member of an
approved group to an internal topic keyed by group id (`routes`); this stage keeps each group's
members and books in tables keyed by group and runs the cross_market rules over them. A market
in several groups is forwarded once per group. Like the first stage, a message's signals are
delivered before its table writes are applied (at least once, deterministic ids).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from marketpulse.codec import Codec
from marketpulse.errors import BadMessage, ConfigError
from marketpulse.rules import RuleDef, cross_market, hedge, kalshi_claims, logical, propositions
from marketpulse.rules.complete_set import OpportunityTracker
from marketpulse.rules.params import CrossMarketParams, LogicalParams, PairParams

log = logging.getLogger(__name__)

Table = MutableMapping[str, Any]
Write = tuple[Table, str, Any]


def rules_of(rules: Sequence[RuleDef]) -> list[RuleDef]:
    return [r for r in rules if r.enabled and r.type == "cross_market"]


def registry(rules: Sequence[RuleDef]) -> dict[str, cross_market.Group]:
    """The groups of every enabled cross_market rule: its registry file's, then the groups
    approved after review that the rule carries (`params.groups`, published to the rules topic
    by `marketpulse groups approve`), which replace a file group of the same id."""
    groups: dict[str, cross_market.Group] = {}
    for rule in rules_of(rules):
        params = rule.params_as(CrossMarketParams)
        groups.update(
            cross_market.load_groups(Path(params.groups_file) if params.groups_file else None)
        )
        for item in params.groups:
            group = cross_market.Group.model_validate(item)
            groups[group.group_id] = group
    return groups


PROP_PREFIX = "prop:"


def proposition_rules(rules: Sequence[RuleDef]) -> list[RuleDef]:
    """Logical rules that compare parsed questions (term structure, touch ladders)."""
    return [
        r
        for r in rules
        if r.enabled and r.type == "logical" and r.params_as(LogicalParams).term_structure
    ]


def claim_of(market: Mapping[str, Any], rules: Sequence[RuleDef]) -> logical.Claim | None:
    """The claim of a Polymarket question, or the deadline claim of a Kalshi market
    (`kalshi_claims`: term structure across the events of a series), confident enough for
    every proposition rule."""
    if not rules:
        return None
    venue = market.get("venue")
    if venue == "polymarket":
        parsed = propositions.parse(market)
    elif venue == "kalshi":
        parsed = kalshi_claims.parse_deadline(market)
    else:
        return None
    if parsed is None or parsed.claim is None:
        return None
    bar = max(r.params_as(LogicalParams).min_confidence for r in rules)
    return None if parsed.needs_review(bar) else parsed.claim


def proposition_key(claim: logical.Claim) -> str:
    """Claims that may imply one another share this key (same underlying and kind)."""
    return f"{PROP_PREFIX}{claim.underlying}|{claim.kind}"


def proposition_hedges(claims: Sequence[logical.Claim]) -> list[hedge.Hedge]:
    """Hedges of a proposition group, less those between two Kalshi markets of one event at
    one date: the event's strike ladder (first stage) already compares them."""
    by_id = {c.market_id: c for c in claims}

    def ladder_of_one_event(h: hedge.Hedge) -> bool:
        a, b = (by_id[market_id] for market_id, _ in h.tokens)
        return (
            a.event_key == b.event_key
            and a.date_ms == b.date_ms
            and a.source.startswith("kalshi:")
            and b.source.startswith("kalshi:")
        )

    return [h for h in logical.hedges(claims) if not ladder_of_one_event(h)]


def routes(groups: Mapping[str, cross_market.Group]) -> dict[str, list[str]]:
    """market id -> group ids to forward its metadata and books to."""
    return cross_market.group_of_markets(groups)


def decode(cdc: Codec, value: bytes | None) -> tuple[str, dict[str, Any]]:
    """A forwarded record: a book or a market (the wire format names its schema)."""
    try:
        return "book", cdc.decode("book", value)
    except BadMessage as exc:
        if exc.kind != "wrong_schema":
            raise
    return "market", cdc.decode("market", value)


class GroupEvaluator:
    """Members' metadata and books per group, and the cross_market rules over them."""

    def __init__(
        self,
        rules: Sequence[RuleDef],
        groups: Mapping[str, cross_market.Group],
        markets: Table,
        books: Table,
        trackers: Table,
    ) -> None:
        self.groups = dict(groups)
        self.set_rules(rules, refresh_groups=False)
        self.markets = markets  # group id -> {market id: market}
        self.books = books  # group id|token id -> book
        self.trackers = trackers  # group id -> {rule id: tracker state}

    def set_rules(self, rules: Sequence[RuleDef], *, refresh_groups: bool = True) -> None:
        """Put a rule set in force; the registry follows it (a group approved at runtime is
        compared from its members' next forwarded records on)."""
        self.rules = rules_of(rules)
        self.proposition_rules = proposition_rules(rules)
        if refresh_groups:
            try:
                self.groups = registry(rules)
            except ConfigError as exc:  # e.g. the registry file edited badly since the start
                log.warning("registry unchanged: %s", exc)

    def on_record(
        self, group_id: str, kind: str, record: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[Write]]:
        """One forwarded record of a registry group, or of a proposition group (key
        `prop:<underlying>|<kind>`: parsed claims comparable by logic, term structure)."""
        is_prop = group_id.startswith(PROP_PREFIX)
        group = self.groups.get(group_id)
        rules = self.proposition_rules if is_prop else self.rules
        if (group is None and not is_prop) or not rules:
            return [], []  # the registry or the rules changed since the record was forwarded
        markets = dict(self.markets.get(group_id) or {})
        writes: list[Write] = []
        touched = None
        books = self._books_of(group_id, markets)
        if kind == "market":
            markets[record["market_id"]] = {
                k: record[k]
                for k in ("market_id", "event_id", "outcomes", "status", "min_size", "fee")
                if k in record
            }
            if is_prop:
                claim = claim_of(record, rules)
                if claim is None:
                    del markets[record["market_id"]]  # reworded: no longer comparable
                else:
                    markets[record["market_id"]]["claim"] = asdict(claim)
            writes.append((self.markets, group_id, markets))
            books = self._books_of(group_id, markets)
        else:
            key = f"{group_id}|{record['token_id']}"
            previous = self.books.get(key)
            if previous is not None and (previous["ts_ms"], previous["seq"]) >= (
                record["ts_ms"],
                record["seq"],
            ):
                return [], []  # redelivered or late
            slim = {
                k: record[k]
                for k in ("market_id", "token_id", "ts_ms", "recv_ms", "seq", "asks", "bids")
            }
            writes.append((self.books, key, slim))
            books[record["token_id"]] = slim
            touched = record["market_id"]
        if is_prop:
            claims = [logical.Claim(**m["claim"]) for m in markets.values() if "claim" in m]
            hedges = proposition_hedges(claims)
        else:
            assert group is not None
            hedges = cross_market.hedges(group, markets)
        before = self.trackers.get(group_id) or {}
        after = {}
        signals: list[dict[str, Any]] = []
        for rule in rules:
            params: PairParams = rule.params_as(
                LogicalParams if rule.type == "logical" else CrossMarketParams
            )
            tracker = OpportunityTracker.from_state(
                before.get(rule.rule_id),
                cooldown_ms=rule.cooldown_ms,
                update_on_change=params.update_on_change,
            )
            if touched is None:
                tracker.retain(h.key for h in hedges)
            signals += hedge.evaluate(
                rule, params, hedges, markets, books, tracker, touched_market=touched
            )
            if (state := tracker.saved()) is not None:
                after[rule.rule_id] = state
        if after != before:
            writes.append((self.trackers, group_id, after))
        return signals, writes

    def _books_of(
        self, group_id: str, markets: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Mapping[str, Any]]:
        out = {}
        for market in markets.values():
            for outcome in market.get("outcomes", []):
                book = self.books.get(f"{group_id}|{outcome['token_id']}")
                if book is not None:
                    out[outcome["token_id"]] = book
        return out

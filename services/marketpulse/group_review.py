"""Candidate groups through review into the registry (what `marketpulse groups` runs).

1. `load_markets` (Gamma or Kalshi REST payloads in a file) or `read_markets` (the markets topic)
   give Market records; `candidates.suggest` proposes pairs.
2. `publish_candidates` writes each new candidate to the review topic as an open review item
   (`review_id` "group:<candidate id>", `subject` its spec, `rule_id` cross_market): it shows in
   `GET /api/review` and fires nothing. A candidate already on the topic (whatever its status)
   is not written again, so re-running a suggestion never reopens a decided item.
3. `approve` turns an item into an approved group: the cross_market rule in force is published
   again, one version up, carrying the group in `params.groups`; then the decision (approved, by
   whom) goes to the review topic. Rules-topic records are what every worker reads before any
   market data, and follows at runtime (`rulebook`), so the group is in the registry of every
   worker from then on, with no file to edit or ship. `reject` records a rejection only.

A later cross_market definition replaces the one in force whole: whoever publishes a new
version from a file must carry the approved groups over (`marketpulse rules list --json` shows
them under params.groups), or they leave the registry.

Why the rules topic rather than the registry file: it is the one place runtime configuration
already lives (compacted, versioned, validated by every worker's RuleBook), and the version bump
makes the change visible in every signal's `rule_version`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from marketpulse.candidates import Candidate, parse_spec
from marketpulse.codec import codec
from marketpulse.errors import BadMessage, ConfigError, TransientError
from marketpulse.kafka import producer, read_topic
from marketpulse.rulebook import current, publish
from marketpulse.rules import RuleDef, load_rules
from marketpulse.rules.cross_market import Group
from marketpulse.settings import Settings
from marketpulse.venues.kalshi import markets as kalshi
from marketpulse.venues.polymarket import gamma

Record = dict[str, Any]
REVIEW_PREFIX = "group:"
RULE_ID = "cross_market"


# --------------------------------------------------------------------------------------------
# Markets in
# --------------------------------------------------------------------------------------------


def load_markets(path: Path) -> tuple[list[Record], int]:
    """Market records of every Gamma market and Kalshi market found anywhere in a JSON file
    (a page, a list, an event with nested markets, a recorder's wrapper), de-duplicated by id;
    and how many market-like objects could not be read."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read markets file {path}: {exc}") from exc
    found: dict[str, Record] = {}
    bad = 0
    for kind, market, event in _walk(payload, None):
        try:
            if kind == "gamma":
                record = gamma.market_record(market, event, 0)
            else:
                info = kalshi.event_info(event, len(event["markets"])) if event else None
                record = kalshi.market_record(market, info, 0)
        except (BadMessage, KeyError, TypeError, ValueError):
            bad += 1
            continue
        found[record["market_id"]] = record
    return list(found.values()), bad


def _walk(node: Any, event: Record | None) -> Iterator[tuple[str, Record, Record | None]]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, event)
        return
    if not isinstance(node, dict):
        return
    if "conditionId" in node and "question" in node:
        yield "gamma", node, event
        return
    if {"ticker", "event_ticker", "status"} <= node.keys():  # not a wrapper naming one
        yield "kalshi", node, event
        return
    is_event = isinstance(node.get("markets"), list) and ("title" in node or "slug" in node)
    for value in node.values():
        yield from _walk(value, node if is_event else event)


async def read_markets(settings: Settings, timeout_s: float = 30.0) -> list[Record]:
    """The latest record of every market on the markets topic (compacted, keyed by id)."""
    latest: dict[bytes, Record | None] = {}
    for key, value in (await read_topic(settings, "markets", timeout_s))[0]:
        if key is not None:
            latest[key] = codec().decode("market", value) if value is not None else None
    return [m for m in latest.values() if m is not None]


# --------------------------------------------------------------------------------------------
# Review
# --------------------------------------------------------------------------------------------


def review_item(candidate: Candidate, ts_ms: int) -> Record:
    return {
        "review_id": REVIEW_PREFIX + candidate.candidate_id,
        "signal_id": "",
        "rule_id": RULE_ID,
        "subject": candidate.spec(),
        "status": "open",
        "decided_by": "",
        "note": candidate.describe()[:2000],
        "ts_ms": ts_ms,
    }


async def review_items(settings: Settings, timeout_s: float = 30.0) -> dict[str, Record]:
    """The latest version (by ts_ms) of every group review item on the review topic."""
    out: dict[str, Record] = {}
    for _, value in (await read_topic(settings, "review", timeout_s))[0]:
        if value is None:
            continue
        item = codec().decode("review_item", value)
        rid = item["review_id"]
        if rid.startswith(REVIEW_PREFIX) and item["ts_ms"] >= out.get(rid, {}).get("ts_ms", -1):
            out[rid] = item
    return out


async def publish_candidates(settings: Settings, candidates: list[Candidate]) -> tuple[int, int]:
    """Open review items for the candidates not on the review topic yet: (written, known)."""
    known = await review_items(settings)
    now = int(time.time() * 1000)
    new = [c for c in candidates if REVIEW_PREFIX + c.candidate_id not in known]
    await _send(settings, [review_item(c, now) for c in new])
    return len(new), len(candidates) - len(new)


async def approve(
    settings: Settings, review_id: str, *, by: str, resolution_source: str, note: str = ""
) -> tuple[Group, RuleDef]:
    """Approve a candidate: publish the cross_market rule one version up with the group, then
    the decision. Returns the group and the rule now in force."""
    item = await _item(settings, review_id)
    relation, members = parse_spec(item["subject"])
    group = Group.model_validate(
        {
            "group_id": item["review_id"].removeprefix(REVIEW_PREFIX),
            "relation": relation,
            "resolution_source": resolution_source,
            "approved": True,
            "note": f"approved by {by}" + (f": {note}" if note else ""),
            "members": [{"market_id": m, "orientation": o} for m, o in members],
        }
    )
    book, _ = await current(settings, load_rules(settings.rules_file))
    rule = with_group(book.rules.get(RULE_ID), group)
    await publish(settings, {RULE_ID: rule})
    await _decide(settings, item, "approved", by, note)
    return group, rule


async def reject(settings: Settings, review_id: str, *, by: str, note: str = "") -> None:
    await _decide(settings, await _item(settings, review_id), "rejected", by, note)


def with_group(rule: RuleDef | None, group: Group) -> RuleDef:
    """The cross_market rule one version up, carrying `group` (replacing one of its id)."""
    if rule is None or not rule.enabled:
        raise ConfigError(f"no enabled {RULE_ID!r} rule in force: enable it before approving")
    kept = [g for g in rule.params.get("groups", []) if g["group_id"] != group.group_id]
    params = {**rule.params, "groups": [*kept, group.model_dump(mode="json")]}
    return RuleDef.model_validate(
        {**rule.model_dump(), "version": rule.version + 1, "params": params}
    )


async def _item(settings: Settings, review_id: str) -> Record:
    rid = review_id if review_id.startswith(REVIEW_PREFIX) else REVIEW_PREFIX + review_id
    item = (await review_items(settings)).get(rid)
    if item is None:
        raise ConfigError(f"no group candidate {rid!r} on {settings.topic('review')}")
    return item


async def _decide(settings: Settings, item: Record, status: str, by: str, note: str) -> None:
    decided = {**item, "status": status, "decided_by": by, "ts_ms": int(time.time() * 1000)}
    if note:
        decided["note"] = f"{note[:500]} | {item['note']}"[:2000]
    await _send(settings, [decided])


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------


async def _send(settings: Settings, items: list[Record]) -> None:
    if not items:
        return
    prod = producer(settings)
    try:
        await prod.start()
    except Exception as exc:
        raise TransientError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        for item in items:
            value = codec().encode("review_item", item)
            await prod.send_and_wait(
                settings.topic("review"), value, key=item["review_id"].encode()
            )
    finally:
        await prod.stop()

"""Approved groups carried by the cross_market rule: the registry merges them over the file's,
the by-group stage picks them up when the rules change, and `with_group` bumps the version."""

from __future__ import annotations

from typing import Any

import pytest

from marketpulse.errors import ConfigError
from marketpulse.group_review import with_group
from marketpulse.grouping import GroupEvaluator, registry
from marketpulse.rules import RuleDef, load_rules
from marketpulse.rules.cross_market import Group

GROUP = Group.model_validate(
    {
        "group_id": "cand-0123456789ab",
        "relation": "identity",
        "resolution_source": "FOMC statement",
        "approved": True,
        "members": [
            {"market_id": "pm:a", "orientation": "yes"},
            {"market_id": "ks:B", "orientation": "yes"},
        ],
    }
)


def cross_market_rule() -> RuleDef:
    return load_rules()["cross_market"]


def market(mid: str) -> dict[str, Any]:
    return {
        "market_id": mid,
        "event_id": mid,
        "outcomes": [{"token_id": f"{mid}:y"}, {"token_id": f"{mid}:n"}],
        "status": "active",
        "min_size": 1.0,
        "fee": {"model": "none", "rate": 0.0, "exponent": 1.0},
    }


def book(token: str, asks: Any = (), bids: Any = ()) -> dict[str, Any]:
    return {
        "market_id": token.rsplit(":", 1)[0],
        "token_id": token,
        "ts_ms": 1_000,
        "recv_ms": 1_001,
        "seq": 1,
        "asks": [{"price": p, "size": s} for p, s in asks],
        "bids": [{"price": p, "size": s} for p, s in bids],
    }


def test_with_group_publishes_one_version_up_and_replaces_a_group_of_the_same_id() -> None:
    base = cross_market_rule()
    once = with_group(base, GROUP)
    assert once.version == base.version + 1 and once.rule_id == "cross_market"
    assert [g["group_id"] for g in once.params["groups"]] == [GROUP.group_id]
    again = with_group(once, GROUP.model_copy(update={"resolution_source": "Fed press release"}))
    assert again.version == base.version + 2
    assert [g["resolution_source"] for g in again.params["groups"]] == ["Fed press release"]
    assert RuleDef.from_record(again.to_record()) == again  # survives the rules topic
    with pytest.raises(ConfigError, match="no enabled 'cross_market' rule"):
        with_group(base.model_copy(update={"enabled": False}), GROUP)
    with pytest.raises(ConfigError):
        with_group(None, GROUP)


def test_registry_merges_rule_groups_over_the_file() -> None:
    rule = with_group(cross_market_rule(), GROUP)
    assert registry([cross_market_rule()]) == {}  # the packaged file has no group
    assert registry([rule]) == {GROUP.group_id: GROUP}
    assert registry([rule.model_copy(update={"enabled": False})]) == {}


def test_an_invalid_group_makes_the_rule_invalid() -> None:
    data = cross_market_rule().model_dump()
    data["params"]["groups"] = [{"group_id": "x", "relation": "identity", "members": []}]
    with pytest.raises(ValueError, match=r"params\.groups"):
        RuleDef.model_validate(data)


def test_the_by_group_stage_fires_on_a_group_approved_at_runtime() -> None:
    rules = list(load_rules().values())
    tables: list[dict[str, Any]] = [{}, {}, {}]
    stage = GroupEvaluator(rules, registry(rules), *tables)

    def feed() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for kind, record in (
            ("market", market("pm:a")),
            ("market", market("ks:B")),
            ("book", book("pm:a:y", asks=[(0.40, 100)])),
            ("book", book("ks:B:y", bids=[(0.50, 60)])),  # NO ask 0.50 from the YES bid
        ):
            signals, writes = stage.on_record(GROUP.group_id, kind, record)
            for table, key, value in writes:
                table[key] = value
            out += signals
        return out

    assert feed() == []  # not in the registry yet: nothing is compared
    approved = [
        with_group(cross_market_rule(), GROUP) if r.rule_id == "cross_market" else r for r in rules
    ]
    stage.set_rules(approved)
    for table in tables:
        table.clear()
    (signal,) = feed()
    assert signal["rule_id"] == "cross_market" and signal["subject"] == GROUP.group_id
    assert signal["rule_version"] == cross_market_rule().version + 1
    assert signal["size"] == pytest.approx(60)
